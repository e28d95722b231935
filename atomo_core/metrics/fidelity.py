"""Fidelity to the input image: MSE, PSNR and SSIM on 8-bit frames, as AIGCBench measures image-to-video.

AIGCBench compares the first frame with the input image using scikit-image's ``structural_similarity``
(``win_size=7``, colour channels, 8-bit data range) after resizing the video to the image. Its SSIM is Wang et
al.'s with a *uniform* 7x7 window and sample covariances (``N / (N - 1)``), averaged over the window positions
that lie inside the image and over the channels. kornia's SSIM uses a Gaussian window (another figure), so it
is written here in torch (it runs on a GPU as well) and tested against scikit-image.

Inputs are 8-bit levels as float tensors ``[..., H, W, 3]`` (``frames.working_frames``); MSE is in squared
8-bit levels, PSNR in dB against 255 (``inf`` for identical images).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange

DATA_RANGE = 255.0
WIN_SIZE = 7
K1, K2 = 0.01, 0.03


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image over pixels and channels: ``[..., H, W, 3] -> [...]``."""
    return (a.double() - b.double()).pow(2).mean(dim=(-3, -2, -1))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB per image (``inf`` where the images are identical)."""
    error = mse(a, b)
    return torch.where(error > 0, 10.0 * torch.log10(DATA_RANGE**2 / error.clamp_min(1e-300)),
                       torch.full_like(error, math.inf))


def ssim(a: torch.Tensor, b: torch.Tensor, win_size: int = WIN_SIZE) -> torch.Tensor:
    """scikit-image's ``structural_similarity(a, b, win_size=7, channel_axis=-1, data_range=255)`` per image.

    ``a, b [..., H, W, C]`` (broadcast against each other), at least ``win_size`` pixels on each side.
    """
    a, b = torch.broadcast_tensors(a, b)
    lead, (height, width) = a.shape[:-3], a.shape[-3:-1]
    if min(height, width) < win_size:
        raise ValueError(f"SSIM needs images of at least {win_size}x{win_size} pixels, got {height}x{width}.")
    dtype = torch.float64 if a.device.type == "cpu" else torch.float32
    x = rearrange(a.to(dtype), "... h w c -> (...) c h w")
    y = rearrange(b.to(dtype), "... h w c -> (...) c h w")

    def mean(t: torch.Tensor) -> torch.Tensor:  # the uniform filter at the positions inside the image
        return F.avg_pool2d(t, win_size, stride=1)

    ux, uy = mean(x), mean(y)
    n = win_size * win_size
    cov_norm = n / (n - 1)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (K1 * DATA_RANGE) ** 2, (K2 * DATA_RANGE) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(-3, -2, -1)).reshape(lead).float() if lead else s.mean().float()


def fidelity(video: torch.Tensor, reference: torch.Tensor) -> dict:
    """First-frame MSE/PSNR/SSIM against ``reference`` and the per-frame SSIM to it (appearance retention).

    ``video [F, H, W, 3]`` and ``reference [H, W, 3]``, 8-bit levels, the same size.
    """
    if video.shape[1:] != reference.shape:
        raise ValueError(f"The reference is {list(reference.shape)} but the frames are {list(video.shape[1:])}: "
                         "resize the frames to the reference first.")
    per_frame = ssim(video, reference[None])
    return {
        "first_frame_mse": float(mse(video[0], reference)),
        "first_frame_psnr": float(psnr(video[0], reference)),
        "first_frame_ssim": float(per_frame[0]),
        "retention_ssim": per_frame.tolist(),
        "retention_ssim_mean": float(per_frame.mean()),
    }
