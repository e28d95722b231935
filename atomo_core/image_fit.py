"""Fitting input images to the video size without silent distortion.

Images are ComfyUI IMAGE tensors ``[B, H, W, C]`` in 0..1. Three modes:

- ``crop`` (default): scale so the image covers the target, then cut the overflow equally from both sides;
- ``pad``: scale so the image fits inside the target, then pad the borders (with ``pad_value``);
- ``stretch``: resize to the target as is (distorts when the aspect ratios differ; the user asked for it).

Sizes must be multiples of 8 (the VAE's downscale factor): a wrong size is an error naming the nearest
valid sizes, never a silent change.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from .errors import ConditioningError

FIT_MODES = ("crop", "pad", "stretch")


def check_video_size(width: int, height: int, multiple: int = 8) -> None:
    for name, value in (("width", width), ("height", height)):
        if value < multiple or value % multiple:
            lower = max(multiple, value // multiple * multiple)
            raise ConditioningError(
                f"The video {name} {value} is not a multiple of {multiple} (the VAE works in blocks of "
                f"{multiple} pixels). Use {lower} or {lower + multiple}."
            )


def _resize(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``[B, H, W, C] -> [B, height, width, C]``, bilinear with antialiasing when shrinking."""
    x = rearrange(images, "b h w c -> b c h w")
    x = F.interpolate(x.float(), size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return rearrange(x, "b c h w -> b h w c").clamp(0.0, 1.0).to(images.dtype)


def fit_images(
    images: torch.Tensor, width: int, height: int, mode: str = "crop", pad_value: float = 0.5
) -> torch.Tensor:
    """Fit ``images [B, H, W, C]`` to ``[B, height, width, C]`` by ``mode`` (see the module docstring)."""
    if mode not in FIT_MODES:
        raise ConditioningError(f"Unknown fit mode {mode!r}; choose one of {', '.join(FIT_MODES)}.")
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise ConditioningError(f"Expected an IMAGE batch [B, H, W, C], got shape {list(images.shape)}.")
    check_video_size(width, height)
    images = images[..., :3] if images.shape[-1] == 4 else images
    _, src_h, src_w, _ = images.shape
    if (src_h, src_w) == (height, width):
        return images
    if mode == "stretch":
        return _resize(images, height, width)
    scale = max(width / src_w, height / src_h) if mode == "crop" else min(width / src_w, height / src_h)
    new_w = max(1, round(src_w * scale))
    new_h = max(1, round(src_h * scale))
    if mode == "crop":
        new_w, new_h = max(new_w, width), max(new_h, height)
        resized = _resize(images, new_h, new_w)
        top, left = (new_h - height) // 2, (new_w - width) // 2
        return resized[:, top : top + height, left : left + width]
    new_w, new_h = min(new_w, width), min(new_h, height)
    resized = _resize(images, new_h, new_w)
    out = torch.full((images.shape[0], height, width, images.shape[-1]), pad_value, dtype=images.dtype)
    top, left = (height - new_h) // 2, (width - new_w) // 2
    out[:, top : top + new_h, left : left + new_w] = resized
    return out
