"""The learning probe: is the model using the image (and the caption) yet? One model call per case, no sampler.

At a few fixed timesteps (by default the pure-noise step ``T - 1`` and the middle one ``T // 2``) every frame of a
clip is noised with fixed noise, the first ``given`` frames are given in the image channels (as Image Inject
Conditioning gives them; their own noisy input is the noised truth, as ComfyUI's denoise mask makes it) and the
model's one-step clean prediction ``x0_hat`` of the generated frames (``given..F-1``) is compared with the truth:

- ``with_image``: the mean squared error of ``x0_hat`` with the image channels as trained;
- ``without_image``: the same with the image channels zeroed (the "no image" condition of image guidance);
- ``copy_given``: the error of copying the last given frame into every generated frame (holding the image still);
- ``mean_frame``: the error of the probe batch's mean frame (the best guess that knows nothing of the clip);
- ``image_gain``: ``without_image / with_image`` (1: the image is ignored).

A model that learned image-to-video has ``with_image`` well below ``without_image`` at the pure-noise step (there the
noisy input holds nothing of the clip, so everything it knows of the clip comes through the image channels), and
below ``copy_given`` once it predicts the motion too. These figures move long before sampled clips look right, so
the trainer logs them at every validation. ``one_step_x0`` is the single evaluation behind them, for callers that
measure more on the predictions (the toy experiment tracks its shapes in them).
"""

from __future__ import annotations

import torch

from ..conditioning import atomovideo_concat
from ..schedules import x0_from_eps, x0_from_v


@torch.no_grad()
def one_step_x0(model, alphas_cumprod: torch.Tensor, prediction_type: str, latents: torch.Tensor,
                context: torch.Tensor, t: int, noise: torch.Tensor, given: int, with_image: bool,
                image_layout: str = "given_only", first_frames: torch.Tensor | None = None) -> torch.Tensor:
    """``x0_hat [B, F, 4, h, w]`` of clips ``latents [B, F, 4, h, w]`` noised to timestep ``t`` with ``noise`` (same
    shape); ``context [B, 77, C]``; the first ``given`` frames in the image channels (zeros if not ``with_image``).
    ``model(x [(B F), 9, h, w], timesteps, context, frames)`` is a ``TemporalUNet`` (or anything called alike);
    ``first_frames [B, 3, H, W]`` (-1..1) are its IP-Adapter's images when it has one (tokens with the image only
    ``with_image``, the rule of the nodes)."""
    b, f = latents.shape[:2]
    a = alphas_cumprod[int(t)].to(latents)
    x_t = (a.sqrt() * latents + (1 - a).sqrt() * noise).flatten(0, 1)
    concat = torch.cat([atomovideo_concat(clip[:given], f, list(range(given)), image_layout) for clip in latents])
    if not with_image:
        concat = torch.zeros_like(concat)
    timesteps = torch.full((b * f,), int(t), dtype=torch.long, device=latents.device)
    dtype = next(model.parameters()).dtype
    extra = {}
    if first_frames is not None:
        extra = {"first_frames": first_frames, "with_image": torch.full((b,), with_image, device=latents.device)}
    out = model(torch.cat([x_t, concat], dim=1).to(dtype), timesteps, context.repeat_interleave(f, 0).to(dtype), f,
                **extra).float()
    x0 = x0_from_v(x_t, out, a) if prediction_type == "v_prediction" else x0_from_eps(x_t, out, a.clamp_min(1e-8))
    return x0.view(b, f, *x0.shape[1:])


def default_timesteps(steps: int) -> tuple[int, int]:
    """The pure-noise step and the middle one."""
    return steps - 1, steps // 2


@torch.no_grad()
def learning_probe(model, alphas_cumprod: torch.Tensor, prediction_type: str, latents: torch.Tensor,
                   context: torch.Tensor, given: int = 1, timesteps: tuple[int, ...] | None = None, seed: int = 0,
                   image_layout: str = "given_only", keep_predictions: bool = False,
                   first_frames: torch.Tensor | None = None) -> dict:
    """The probe's figures per timestep: ``{"t999": {"with_image", "without_image", "copy_given", "mean_frame",
    "image_gain"}, ...}`` for clips ``latents [B, F, 4, h, w]`` (scaled, clean) and their captions' ``context
    [B, 77, C]``. The noise is drawn from ``seed`` (the same at every call, so values at different training steps
    compare). With ``keep_predictions`` each entry also holds ``"x0_with_image" [B, F, 4, h, w]``."""
    b, f = latents.shape[:2]
    if not 1 <= given < f:
        raise ValueError(f"the probe needs 1 <= given < frames, got given={given} for {f} frames")
    latents = latents.float()
    steps = len(alphas_cumprod)
    timesteps = timesteps or default_timesteps(steps)
    generator = torch.Generator().manual_seed(seed)
    truth = latents[:, given:]
    copy = latents[:, given - 1 : given].expand_as(truth)
    mean = latents.mean(dim=(0, 1), keepdim=True).expand_as(truth)
    out = {}
    for t in timesteps:
        noise = torch.randn(latents.shape, generator=generator).to(latents)
        figures = {}
        for name, with_image in (("with_image", True), ("without_image", False)):
            x0 = one_step_x0(model, alphas_cumprod, prediction_type, latents, context, t, noise, given, with_image,
                             image_layout, first_frames)
            figures[name] = float((x0[:, given:] - truth).pow(2).mean())
            if with_image and keep_predictions:
                figures["x0_with_image"] = x0
        figures["copy_given"] = float((copy - truth).pow(2).mean())
        figures["mean_frame"] = float((mean - truth).pow(2).mean())
        figures["image_gain"] = figures["without_image"] / max(figures["with_image"], 1e-12)
        out[f"t{int(t)}"] = figures
    return out


def summary_line(probe: dict) -> str:
    """``t999: with image 0.031, without 0.180 (x5.8), copy 0.052, mean 0.144; t500: ...`` for logs."""
    parts = []
    for key, p in probe.items():
        parts.append(f"{key}: with image {p['with_image']:.4f}, without {p['without_image']:.4f} "
                     f"(x{p['image_gain']:.1f}), copy given {p['copy_given']:.4f}, mean frame {p['mean_frame']:.4f}")
    return "; ".join(parts)
