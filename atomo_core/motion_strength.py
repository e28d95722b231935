"""Motion strength: how much the temporal layers change each frame (AnimateDiff-Evolved's scale/effect idea).

Every temporal layer is residual, ``y = x + r(x)``. With a strength ``s`` the host runs ``y = x + s * r(x)``:
``s = 0`` leaves ``x`` as it is (the image model alone, frame by frame), ``s = 1`` is the module as trained,
``s > 1`` amplifies its change. ``s`` is one number, a list with one value per frame (stretched by linear
interpolation when shorter than the video, its first values used when longer), or a mask batch (per frame and per
pixel, resized to each layer's feature map; a video longer than the batch repeats its last mask). A constant
``scale`` multiplies the list or the mask.

The residual of one layer at frame ``i`` is computed from all frames before any strength is applied, so within one
layer a per-frame strength gives frame ``i`` exactly what the constant strength ``s_i`` would give it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .errors import AtomoError


class MotionStrengthError(AtomoError):
    """A strength list or mask that cannot be used."""


def parse_strength_list(text: str) -> tuple[float, ...]:
    """``"1, 0.8, 0.5"`` (commas, spaces or new lines between numbers) -> ``(1.0, 0.8, 0.5)``; ``""`` -> ``()``."""
    values = []
    for item in text.replace("\n", ",").replace(";", ",").split(","):
        for word in item.split():
            try:
                values.append(float(word))
            except ValueError:
                raise MotionStrengthError(
                    f"motion strength list: {word!r} is not a number. Write one number per frame separated by "
                    "commas, e.g. '0, 0.5, 1, 1' (a shorter list is stretched over the video)."
                ) from None
    bad = [v for v in values if not (v == v and abs(v) != float("inf"))]
    if bad:
        raise MotionStrengthError(f"motion strength list: {bad[0]} is not a finite number; use values like 0 to 2.")
    return tuple(values)


def stretch(values: tuple[float, ...], frames: int) -> list[float]:
    """``values`` over ``frames`` frames: as they are when as long, the first ``frames`` when longer, linearly
    interpolated end to end when shorter (one value: constant)."""
    if not values:
        raise MotionStrengthError("motion strength list is empty: give at least one number.")
    if len(values) >= frames:
        return list(values[:frames])
    if len(values) == 1 or frames == 1:
        return [values[0]] * frames
    out = []
    for i in range(frames):
        position = i * (len(values) - 1) / (frames - 1)
        low = min(int(position), len(values) - 2)
        t = position - low
        out.append(values[low] * (1 - t) + values[low + 1] * t)
    return out


@dataclass(frozen=True, eq=False)
class MotionStrength:
    """A strength for the temporal layers (never mutated once made: clones of a MODEL may share it)."""

    scale: float = 1.0
    per_frame: tuple[float, ...] = ()
    mask: torch.Tensor | None = None  # [N, H, W], any size; values used as they are (times scale)

    def __post_init__(self):
        if self.mask is not None and (self.mask.ndim != 3 or self.mask.shape[0] < 1):
            raise MotionStrengthError(
                f"motion strength mask must be a MASK batch [frames, height, width], got {tuple(self.mask.shape)}.")
        if self.per_frame and self.mask is not None:
            raise MotionStrengthError("give the motion strength either as a list or as a mask, not both.")

    @property
    def is_constant(self) -> bool:
        return not self.per_frame and self.mask is None

    def frame_values(self, frames: list[int], total: int) -> list[float]:
        """The list's strength (times scale) of the video frames ``frames`` of a ``total``-frame video."""
        if not self.per_frame:
            return [self.scale] * len(frames)
        values = stretch(self.per_frame, max(total, max(frames) + 1))
        return [self.scale * values[i] for i in frames]

    def factor(self, frames: list[int], total: int, videos: int, size: tuple[int, int],
               like: torch.Tensor) -> torch.Tensor | float:
        """What to multiply a layer's residual ``[(videos x len(frames)), c, h, w]`` by: a number, or a tensor
        ``[(videos x frames), 1, 1 or h, 1 or w]`` in ``like``'s dtype and device."""
        if self.is_constant:
            return self.scale
        if self.mask is None:
            per = torch.tensor(self.frame_values(frames, total), dtype=like.dtype, device=like.device)
            return per.view(-1, 1, 1, 1).repeat(videos, 1, 1, 1)
        index = torch.tensor([min(i, self.mask.shape[0] - 1) for i in frames], dtype=torch.long)
        chosen = self.mask.index_select(0, index).to(device=like.device, dtype=torch.float32)[:, None]
        if tuple(chosen.shape[-2:]) != tuple(size):
            chosen = F.interpolate(chosen, size=size, mode="bilinear", align_corners=False)
        return (self.scale * chosen).to(like.dtype).repeat(videos, 1, 1, 1)

    def all_zero(self, frames: list[int], total: int) -> bool:
        """Whether every frame of this call has strength 0 (the temporal layers can be skipped)."""
        if self.scale == 0:
            return True
        if self.mask is not None:
            index = torch.tensor([min(i, self.mask.shape[0] - 1) for i in frames], dtype=torch.long)
            return bool((self.mask.index_select(0, index) == 0).all())
        return all(v == 0 for v in self.frame_values(frames, total))


def apply_strength(x: torch.Tensor, y: torch.Tensor, factor) -> torch.Tensor:
    """``x + factor * (y - x)``: a temporal layer's output ``y`` for input ``x`` at strength ``factor``."""
    if isinstance(factor, (int, float)) and factor == 1:
        return y
    return x + factor * (y - x)
