"""A small sampler for the trainer's validation clips: DDIM on trailing timesteps with image/text guidance.

The same recipe the Zero-SNR V Sampler runs inside ComfyUI (trailing timesteps that start at the pure-noise step of
a zero-terminal-SNR schedule, DreamVideo's guidance ``u + s_I (i - u) + s_T (it - i)`` with Lin et al.'s CFG rescale
in v-space, the given frames in the image channels in the module's layout, and the given frames locked as ComfyUI's
denoise mask locks them), written against the trainer's model so validation needs no ComfyUI. Deterministic DDIM
(``eta = 0``): ``x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps``.

The lock (``lock_given``) is ComfyUI's denoise mask (``KSamplerX0Inpaint``): before every model call the given
frames' sample is their clean latent noised to the current step with the sampler's own initial noise, and after it
their prediction is the clean latent, so their noise estimate is that initial noise and the last step returns them
exactly.
"""

from __future__ import annotations

import torch

from ..conditioning import atomovideo_concat
from ..guidance import cfg_rescale, combine_guidance, guidance_passes
from ..schedules import eps_from_v, trailing_timesteps, x0_from_eps, x0_from_v


@torch.no_grad()
def sample_clip(model, alphas_cumprod: torch.Tensor, given_latents: torch.Tensor, frames: int, context: torch.Tensor,
                empty_context: torch.Tensor, steps: int = 20, cfg: float = 7.5, image_cfg: float = 1.0,
                prediction_type: str = "v_prediction", generator: torch.Generator | None = None,
                lock_given: bool = True, rescale: float = 0.0, image_layout: str = "given_only") -> torch.Tensor:
    """One clip's latents ``[F, 4, h, w]``.

    ``model(x [N, 9, h, w], timesteps [N], context [N, 77, C], frames)`` is a ``TemporalUNet``; ``given_latents
    [L, 4, h, w]`` the scaled latents of the first ``L`` frames (the input image for ``L = 1``); ``context`` and
    ``empty_context`` ``[1, 77, C]`` the caption's and the empty prompt's embeddings. ``rescale``: CFG rescale's
    ``phi`` (the nodes use 0.7 on zero-terminal-SNR schedules, 0 otherwise), applied to the whole guided
    prediction against the fully conditioned one.
    """
    device = given_latents.device
    ab = alphas_cumprod.to(device=device, dtype=torch.float32)
    given = given_latents.shape[0]
    concat = atomovideo_concat(given_latents.float(), frames, list(range(given)), image_layout)
    branches = {"it": (concat, context), "i": (concat, empty_context), "u": (torch.zeros_like(concat), empty_context)}
    passes = guidance_passes(cfg, image_cfg, True)
    noise = torch.randn(frames, *given_latents.shape[1:], generator=generator, device="cpu").to(device)
    clean = given_latents.float()
    x = noise.clone()
    schedule = trailing_timesteps(steps, len(ab)).tolist()
    for index, t in enumerate(schedule):
        a = ab[int(t)]
        if lock_given:  # the denoise mask: the given frames re-noised to this step with the initial noise
            x[:given] = a.sqrt() * clean + (1 - a).sqrt() * noise[:given]
        inputs = torch.cat([torch.cat([x, branches[p][0]], dim=1) for p in passes])
        ctx = torch.cat([branches[p][1].expand(frames, -1, -1) for p in passes])
        timesteps = torch.full((inputs.shape[0],), int(t), device=device, dtype=torch.long)
        out = model(inputs, timesteps, ctx.to(inputs.dtype), frames).float().chunk(len(passes))
        if prediction_type == "v_prediction":
            preds = {p: (x0_from_v(x, o, a), eps_from_v(x, o, a)) for p, o in zip(passes, out, strict=True)}
        else:
            preds = {p: (x0_from_eps(x, o, a), o) for p, o in zip(passes, out, strict=True)}
        x0 = combine_guidance({p: v[0] for p, v in preds.items()}, cfg, image_cfg)
        eps = combine_guidance({p: v[1] for p, v in preds.items()}, cfg, image_cfg)
        if rescale > 0:  # in v-space, v = (sqrt(ab) x_t - x0) / sqrt(1 - ab), as the nodes (and RescaleCFG) do
            to_v = (1 - a).sqrt()
            v = cfg_rescale((a.sqrt() * x - x0) / to_v, (a.sqrt() * x - preds["it"][0]) / to_v, rescale)
            x0 = a.sqrt() * x - to_v * v
            eps = (1 - a).sqrt() * x + a.sqrt() * v
        if lock_given:
            x0[:given] = clean
            eps[:given] = noise[:given]
        a_prev = ab[int(schedule[index + 1])] if index + 1 < len(schedule) else torch.tensor(1.0, device=device)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x
