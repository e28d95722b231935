"""A small sampler for the trainer's validation clips: DDIM on trailing timesteps with image/text guidance.

The same recipe the Zero-SNR V Sampler runs inside ComfyUI (trailing timesteps that start at the pure-noise step of
a zero-terminal-SNR schedule, DreamVideo's guidance ``u + s_I (i - u) + s_T (it - i)``, the given frames in the
image channels), written against the trainer's model so validation needs no ComfyUI. Deterministic DDIM
(``eta = 0``): ``x_prev = sqrt(ab_prev) x0 + sqrt(1 - ab_prev) eps``.
"""

from __future__ import annotations

import torch

from ..conditioning import atomovideo_concat
from ..guidance import combine_guidance, guidance_passes
from ..schedules import eps_from_v, trailing_timesteps, x0_from_eps, x0_from_v


@torch.no_grad()
def sample_clip(model, alphas_cumprod: torch.Tensor, given_latents: torch.Tensor, frames: int, context: torch.Tensor,
                empty_context: torch.Tensor, steps: int = 20, cfg: float = 7.5, image_cfg: float = 1.0,
                prediction_type: str = "v_prediction", generator: torch.Generator | None = None,
                lock_given: bool = True) -> torch.Tensor:
    """One clip's latents ``[F, 4, h, w]``.

    ``model(x [N, 9, h, w], timesteps [N], context [N, 77, C], frames)`` is a ``TemporalUNet``; ``given_latents
    [L, 4, h, w]`` the scaled latents of the first ``L`` frames (the input image for ``L = 1``); ``context`` and
    ``empty_context`` ``[1, 77, C]`` the caption's and the empty prompt's embeddings.
    """
    device = given_latents.device
    ab = alphas_cumprod.to(device=device, dtype=torch.float32)
    given = given_latents.shape[0]
    concat = atomovideo_concat(given_latents.float(), frames, list(range(given)))
    branches = {"it": (concat, context), "i": (concat, empty_context), "u": (torch.zeros_like(concat), empty_context)}
    passes = guidance_passes(cfg, image_cfg, True)
    x = torch.randn(frames, *given_latents.shape[1:], generator=generator, device="cpu").to(device)
    schedule = trailing_timesteps(steps, len(ab)).tolist()
    for index, t in enumerate(schedule):
        inputs = torch.cat([torch.cat([x, branches[p][0]], dim=1) for p in passes])
        ctx = torch.cat([branches[p][1].expand(frames, -1, -1) for p in passes])
        timesteps = torch.full((inputs.shape[0],), int(t), device=device, dtype=torch.long)
        out = model(inputs, timesteps, ctx.to(inputs.dtype), frames).float().chunk(len(passes))
        a = ab[int(t)]
        if prediction_type == "v_prediction":
            preds = {p: (x0_from_v(x, o, a), eps_from_v(x, o, a)) for p, o in zip(passes, out, strict=True)}
        else:
            preds = {p: (x0_from_eps(x, o, a), o) for p, o in zip(passes, out, strict=True)}
        x0 = combine_guidance({p: v[0] for p, v in preds.items()}, cfg, image_cfg)
        eps = combine_guidance({p: v[1] for p, v in preds.items()}, cfg, image_cfg)
        if lock_given:
            x0[:given] = given_latents.float()  # the given frames are kept, as the node's lock does
        a_prev = ab[int(schedule[index + 1])] if index + 1 < len(schedule) else torch.tensor(1.0, device=device)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return x
