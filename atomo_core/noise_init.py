"""FrameInit (ConsistI2V, Ren et al. 2024): start sampling from noise that carries the first frame's layout.

The first-frame latent is repeated over all frames (a static video), noised to a level ``tau`` with the
very noise that sampling will start from, and the low spatio-temporal frequencies of that noised static
video replace the low frequencies of the noise (3-D FFT over frames, height and width; Gaussian
low-pass). The high frequencies stay pure noise, so the sampler can still create motion and detail.

``tau`` is only the level the static video is noised to before mixing (ConsistI2V's
``frameinit_noise_level``, default timestep 850 of the training schedule, i.e. ``alpha_cumprod_tau =
alphas_cumprod[850]``). It does not shorten sampling: the mixed tensor replaces the initial noise and
sampling still starts at the top of the schedule (in ComfyUI: it is the noise that the sampler scales by
``sigma_max``). The mix is not exactly unit-variance noise; that is the method.

Frames are the batch dimension here (ComfyUI's ``[F, C, H, W]``); the FFT works on ``[C, F, H, W]``.
"""

from __future__ import annotations

import math

import torch
import torch.fft as fft
from einops import rearrange, repeat

_FFT_DIMS = (-3, -2, -1)  # frames, height, width of a [C, F, H, W] volume


def gaussian_low_pass_filter(
    frames: int, height: int, width: int, d_s: float = 0.25, d_t: float = 0.25
) -> torch.Tensor:
    """ConsistI2V's Gaussian low-pass mask ``[frames, height, width]`` (float32) for an fftshifted spectrum.

    ``mask[t, h, w] = exp(-d^2 / (2 d_s^2))`` with
    ``d^2 = ((d_s / d_t)(2t/F - 1))^2 + (2h/H - 1)^2 + (2w/W - 1)^2``: normalised frequency coordinates in
    [-1, 1) centred on index ``n // 2`` (where ``fftshift`` puts the zero frequency of an even axis); the
    temporal axis is stretched by ``d_s / d_t`` so ``d_t`` is its own cut-off. ``d_s == 0`` or ``d_t == 0``
    gives an all-zero mask (keep no low frequencies), as in the original.
    """
    if d_s == 0 or d_t == 0:
        return torch.zeros(frames, height, width)

    def axis(n: int) -> torch.Tensor:
        return 2.0 * torch.arange(n, dtype=torch.float64) / n - 1.0

    t = (d_s / d_t) * axis(frames)
    d_square = t[:, None, None] ** 2 + axis(height)[None, :, None] ** 2 + axis(width)[None, None, :] ** 2
    return torch.exp(-1.0 / (2.0 * d_s**2) * d_square).to(torch.float32)


def freq_mix_3d(x: torch.Tensor, noise: torch.Tensor, low_pass: torch.Tensor) -> torch.Tensor:
    """Low frequencies of ``x``, high frequencies of ``noise``: ``ifft(L * fft(x) + (1 - L) * fft(noise))``.

    ``x, noise: [..., F, H, W]``; ``low_pass: [F, H, W]`` (or broadcastable) in fftshifted order, as
    ``gaussian_low_pass_filter`` makes it. FFT over the last three dims; returns the real part, in float32
    or wider.
    """
    dtype = torch.promote_types(torch.promote_types(x.dtype, noise.dtype), torch.float32)
    x_freq = fft.fftshift(fft.fftn(x.to(dtype), dim=_FFT_DIMS), dim=_FFT_DIMS)
    noise_freq = fft.fftshift(fft.fftn(noise.to(dtype), dim=_FFT_DIMS), dim=_FFT_DIMS)
    low_pass = low_pass.to(device=x.device, dtype=dtype)
    mixed = x_freq * low_pass + noise_freq * (1.0 - low_pass)
    return fft.ifftn(fft.ifftshift(mixed, dim=_FFT_DIMS), dim=_FFT_DIMS).real


def noise_static_video(noise: torch.Tensor, first_latent: torch.Tensor, alpha_cumprod_tau: float) -> torch.Tensor:
    """The first-frame latent repeated over frames and noised to ``tau`` with ``noise``.

    ``z_tau = sqrt(ab_tau) * repeat(first_latent) + sqrt(1 - ab_tau) * noise``;
    ``noise: [F, C, H, W]``, ``first_latent: [C, H, W]`` -> ``[F, C, H, W]``.
    """
    static = repeat(first_latent, "c h w -> f c h w", f=noise.shape[0]).to(noise)
    return math.sqrt(alpha_cumprod_tau) * static + math.sqrt(1.0 - alpha_cumprod_tau) * noise


def frame_init(
    noise: torch.Tensor,
    first_latent: torch.Tensor,
    alpha_cumprod_tau: float,
    d_s: float = 0.25,
    d_t: float = 0.25,
) -> torch.Tensor:
    """ConsistI2V's FrameInit: the new initial noise ``[F, C, H, W]``.

    ``noise: [F, C, H, W]`` is the unit-variance noise sampling would start from; ``first_latent: [C, H, W]``
    the (scaled) latent of the first frame; ``alpha_cumprod_tau`` the training schedule's alpha-bar at the
    FrameInit level ``tau`` (see the module docstring). Low frequencies (cut-offs ``d_s`` spatial, ``d_t``
    temporal, both in normalised frequency 0..1) come from ``noise_static_video``, high ones from ``noise``.
    Returns ``noise``'s dtype.
    """
    if noise.ndim != 4 or first_latent.shape != noise.shape[1:]:
        raise ValueError(
            f"frame_init needs noise [F, C, H, W] and first_latent [C, H, W] of the same C, H, W; "
            f"got {tuple(noise.shape)} and {tuple(first_latent.shape)}"
        )
    if not 0.0 <= alpha_cumprod_tau <= 1.0:
        raise ValueError(f"alpha_cumprod_tau must be in [0, 1], got {alpha_cumprod_tau}")
    frames, _, height, width = noise.shape
    z_tau = noise_static_video(noise, first_latent, alpha_cumprod_tau)
    low_pass = gaussian_low_pass_filter(frames, height, width, d_s, d_t)
    mixed = freq_mix_3d(rearrange(z_tau, "f c h w -> c f h w"), rearrange(noise, "f c h w -> c f h w"), low_pass)
    return rearrange(mixed, "c f h w -> f c h w").to(noise.dtype)


def freenoise(noise: torch.Tensor, context_length: int, context_overlap: int, seed: int) -> torch.Tensor:
    """FreeNoise (Qiu et al. 2024) for context windows: ``noise [F, ...]`` (frames first) -> a copy in which only the
    first window's ``context_length`` frames are drawn noise; every later block of ``context_length -
    context_overlap`` frames is a shuffle of the block ``context_length`` frames before it (so every window holds a
    local re-ordering of the first window's noise: long videos keep one look). ``seed`` makes the shuffles repeat
    exactly. Clips no longer than one window are returned unchanged (as a copy)."""
    frames = noise.shape[0]
    step = context_length - context_overlap
    if step < 1:
        raise ValueError(f"context_overlap ({context_overlap}) must be smaller than context_length ({context_length})")
    out = noise.clone()
    generator = torch.Generator().manual_seed(int(seed) % 2**63)
    for start in range(context_length, frames, step):
        count = min(step, frames - start)
        source = start - context_length
        order = torch.randperm(count, generator=generator) + source
        out[start : start + count] = out[order.to(noise.device)]
    return out
