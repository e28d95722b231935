"""Frames for the metrics: a fixed working size and 8-bit values, so figures compare across resolutions.

Videos come in as ComfyUI IMAGE batches, ``[F, H, W, 3]`` floats in 0..1 (any device). Every metric works on
the frames resized (antialiased bilinear) so that their short side is ``size`` pixels (256 by default) and
rounded to 8 bits, as the videos a user saves would be: ``working_frames`` returns them as float32 0..255.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

DEFAULT_SIZE = 256


def working_shape(height: int, width: int, size: int = DEFAULT_SIZE) -> tuple[int, int]:
    """``(h, w)`` with the short side ``size`` and the aspect ratio kept (rounded to whole pixels)."""
    if size < 16:
        raise ValueError(f"The working size must be at least 16 pixels, got {size}.")
    scale = size / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def as_video(frames) -> torch.Tensor:
    """``[F, H, W, 3]`` float32 in 0..1 from an IMAGE batch, one image ``[H, W, 3]``, uint8 or numpy."""
    video = torch.as_tensor(np.array(frames)) if not isinstance(frames, torch.Tensor) else frames
    if video.ndim == 3:
        video = video[None]
    if video.ndim != 4 or video.shape[-1] not in (1, 3, 4):
        raise ValueError(f"Expected frames [F, H, W, 3] (ComfyUI IMAGE), got shape {list(video.shape)}.")
    if video.dtype == torch.uint8:
        video = video.float() / 255.0
    video = video[..., :3].float()
    if video.shape[-1] == 1:
        video = video.expand(*video.shape[:-1], 3)
    if not torch.isfinite(video).all():
        raise ValueError("The frames contain NaN or infinite values.")
    return video


def resize(video: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """``[F, H, W, 3]`` in 0..1 resized to ``shape`` (antialiased bilinear; unchanged if already that size)."""
    if tuple(video.shape[1:3]) == tuple(shape):
        return video
    x = rearrange(video, "f h w c -> f c h w")
    x = F.interpolate(x, size=shape, mode="bilinear", antialias=True, align_corners=False)
    return rearrange(x, "f c h w -> f h w c").clamp(0.0, 1.0)


def quantize(video: torch.Tensor) -> torch.Tensor:
    """0..1 floats to 8-bit levels, returned as float32 0..255 (exact integers)."""
    return (video * 255.0).round().clamp(0.0, 255.0)


def working_frames(frames, size: int = DEFAULT_SIZE, shape: tuple[int, int] | None = None) -> torch.Tensor:
    """The frames at the working size (or at ``shape``), 8-bit levels as float32 ``[F, h, w, 3]``."""
    video = as_video(frames)
    return quantize(resize(video, shape or working_shape(video.shape[1], video.shape[2], size)))


def gray_uint8(video: torch.Tensor) -> np.ndarray:
    """``[F, h, w, 3]`` 0..255 -> ``[F, h, w]`` uint8 luma (ITU-R BT.601, as OpenCV's RGB2GRAY)."""
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=video.dtype, device=video.device)
    return (video @ weights).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
