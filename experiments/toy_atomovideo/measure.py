"""What the toy's truth lets us measure: where the shape is in every generated frame, hence its velocity.

``track`` finds the given frame's shape (a template cut around its known start position) in every frame by
normalised cross-correlation on a 4x upsampled copy, refined to sub-pixel by a parabola through the peak.
``velocity`` is the least-squares slope of the positions. ``motion_figures`` compares it with the caption's
velocity: the direction is right when the angle between the two is under 45 degrees and the shape moves at least
0.1 px/frame; the speed error is relative to the true speed. The tracker is checked against rendered truth (see
the tests and the report's first table).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import world

UP = 4  # tracking resolution: 4x the frame
MIN_SPEED = 0.1  # px/frame: slower than this counts as "does not move"


def _upsample(frames: torch.Tensor) -> torch.Tensor:
    return F.interpolate(frames.float(), scale_factor=UP, mode="bilinear", align_corners=False)


def _peak_offset(values: torch.Tensor, i: int) -> float:
    """Sub-sample offset of a maximum at ``i`` from a parabola through ``values[i-1..i+1]``."""
    if i <= 0 or i >= values.numel() - 1:
        return 0.0
    a, b, c = float(values[i - 1]), float(values[i]), float(values[i + 1])
    denominator = a - 2 * b + c
    return 0.0 if abs(denominator) < 1e-12 else max(-0.5, min(0.5, 0.5 * (a - c) / denominator))


APPEARANCE_MSE = 0.02  # per RGB channel over the shape (an RMS of 0.14): the given shape is still there, recognisably


def appearance_kept(video: torch.Tensor, reference: torch.Tensor, case: world.Case) -> bool:
    """Whether the given frame's shape is found in every frame: at the tracked position the shape's pixels differ from
    the reference's by at most ``APPEARANCE_MSE`` (mean squared, per channel)."""
    _, residual = track(video, reference, case, with_residual=True)
    return bool(residual.max() <= APPEARANCE_MSE)


def track(video: torch.Tensor, reference: torch.Tensor, case: world.Case, with_residual: bool = False):
    """``video [F, 3, H, W]`` and ``reference [3, H, W]`` (0..1, the shape of ``case`` at its start in the
    reference) -> the shape's centre ``[F, 2]`` (x, y, pixels) in every frame (and, ``with_residual``, the mean
    squared difference per channel between the shape's pixels and the frame there, ``[F]``).

    The template is the reference's pixels under the shape's known mask (the background does not move with the
    shape, so it is left out); the score is the masked sum of squared differences, so the shape's colour counts
    (a normalised correlation let low-contrast background texture win over a white shape on grey)."""
    assert UP == world.SUPERSAMPLE  # the mask comes from the render grid, which is the tracking grid
    half = math.ceil((world.RADIUS + 1.0) * UP)
    start = case.start
    jx, jy = int(start[0] * UP), int(start[1] * UP)

    def window(image: torch.Tensor) -> torch.Tensor:
        padded = F.pad(image.unsqueeze(0), (half, half, half, half))[0]
        return padded[..., jy : jy + 2 * half + 1, jx : jx + 2 * half + 1]

    weight = window(world.shape_mask(case, 0).unsqueeze(0))  # [1, k, k]
    template = window(_upsample(reference.unsqueeze(0))[0])  # [3, k, k]
    delta = (start[0] - (jx + 0.5) / UP, start[1] - (jy + 0.5) / UP)
    frames = F.pad(_upsample(video), (half, half, half, half), mode="replicate")
    kernel = (template * weight).unsqueeze(0)  # [1, 3, k, k]
    # masked sum of squared differences, sum_w (P - T)^2 = sum_w P^2 - 2 sum_w P T + sum_w T^2, per position
    # (index (iy, ix) = the template centred on pixel (ix, iy)); the score is its negative
    squares = F.conv2d(frames**2, weight.expand(3, -1, -1).unsqueeze(0))[:, 0]
    cross = F.conv2d(frames, kernel)[:, 0]
    score = -(squares - 2 * cross + (template**2 * weight).sum())
    residual = (-score.flatten(1).amax(1)).clamp_min(0) / (3 * weight.sum())
    positions = []
    for f in range(score.shape[0]):
        s = score[f]
        iy, ix = divmod(int(s.argmax()), s.shape[1])
        ox, oy = _peak_offset(s[iy], ix), _peak_offset(s[:, ix], iy)
        positions.append(((ix + ox + 0.5) / UP + delta[0], (iy + oy + 0.5) / UP + delta[1]))
    return (torch.tensor(positions), residual) if with_residual else torch.tensor(positions)


def velocity(positions: torch.Tensor, frames: list[int] | None = None) -> tuple[float, float]:
    """Least-squares slope ``(vx, vy)`` px/frame of ``positions [F, 2]`` (over ``frames`` if given)."""
    index = torch.arange(positions.shape[0], dtype=torch.float64) if frames is None else \
        torch.tensor(frames, dtype=torch.float64)
    p = positions.double() if frames is None else positions[frames].double()
    t = index - index.mean()
    slope = (t.unsqueeze(1) * (p - p.mean(0))).sum(0) / (t**2).sum()
    return float(slope[0]), float(slope[1])


def motion_figures(estimated: tuple[float, float], true: tuple[float, float]) -> dict:
    """``direction_ok`` (angle < 45 degrees and moving), ``speed``, ``speed_error`` (relative), ``along``
    (the estimated velocity's component along the true direction, as a fraction of the true speed)."""
    speed = math.hypot(*estimated)
    true_speed = math.hypot(*true)
    along = (estimated[0] * true[0] + estimated[1] * true[1]) / true_speed
    cos = along / speed if speed > 0 else -1.0
    return {
        "direction_ok": bool(speed >= MIN_SPEED and cos > math.cos(math.pi / 4)),
        "speed": speed,
        "speed_error": abs(speed - true_speed) / true_speed,
        "along": along / true_speed,
    }
