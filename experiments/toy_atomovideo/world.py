"""The toy world: textured shapes on textured backgrounds, moving with the velocity their caption states.

Every clip is rendered from a ``Case``: a shape (its kind, colour, radius and fill texture), a background (its kind,
colour and texture), a start position and a velocity (one of four directions, "slowly" = 0.5 px/frame or "fast" =
1.0 px/frame). Frames are rendered at 4x and box-filtered down, so sub-pixel motion is drawn exactly and the truth
(where the shape is in every frame) is known to the pixel fraction. The start position is chosen so the shape stays
inside the frame for the whole clip.

The split: training cases use the shapes ``TRAIN_SHAPES`` and backgrounds ``TRAIN_BACKGROUNDS``; held-out cases use
``HELD_OUT_SHAPES`` and ``HELD_OUT_BACKGROUNDS``, kinds no training clip contains. Colours are shared (their names
are words of the captions).

Captions: the image model (stage 1) learns ``"a red square on stripes"``; the video model (stage 2) learns
``"moves left fast a red square on stripes"``. The motion words come first: the toy's text encoder is causal (as
CLIP is), so every later token's embedding carries them.

Images are ``[3, H, W]`` in 0..1; ``clip`` returns ``[F, 3, H, W]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

SIZE = 16  # pixels = latent cells (the toy codec has no spatial factor)
SUPERSAMPLE = 4
RADIUS = 2.75

TRAIN_SHAPES = ("square", "disc", "cross")
HELD_OUT_SHAPES = ("diamond", "triangle")
TRAIN_BACKGROUNDS = ("stripes", "checker")
HELD_OUT_BACKGROUNDS = ("blobs",)
COLOURS = {
    "red": (0.9, 0.15, 0.1), "green": (0.1, 0.8, 0.2), "blue": (0.15, 0.25, 0.95), "yellow": (0.95, 0.9, 0.1),
    "white": (0.97, 0.97, 0.97), "cyan": (0.1, 0.85, 0.9), "magenta": (0.9, 0.15, 0.85), "black": (0.03, 0.03, 0.03),
}
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
SPEEDS = {"slowly": 0.5, "fast": 1.0}
MIN_CONTRAST = 0.45  # RGB distance between a shape's colour and its background's


@dataclass(frozen=True)
class Case:
    shape: str
    colour: str
    background: str
    background_rgb: tuple[float, float, float]
    texture_seed: int
    start: tuple[float, float]  # (x, y) of the shape's centre at frame 0, in pixels
    direction: str
    speed: str

    @property
    def velocity(self) -> tuple[float, float]:
        """(vx, vy) in pixels per frame (y grows downwards, as in images)."""
        dx, dy = DIRECTIONS[self.direction]
        return dx * SPEEDS[self.speed], dy * SPEEDS[self.speed]

    def image_caption(self) -> str:
        return f"a {self.colour} {self.shape} on {self.background}"

    def video_caption(self, direction: str | None = None) -> str:
        return f"moves {direction or self.direction} {self.speed} {self.image_caption()}"

    def centre(self, frame: int) -> tuple[float, float]:
        vx, vy = self.velocity
        return self.start[0] + vx * frame, self.start[1] + vy * frame


def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates ``(x, y)`` of a ``size``-square grid drawn at ``SUPERSAMPLE``x, in output pixels."""
    n = size * SUPERSAMPLE
    coords = (torch.arange(n, dtype=torch.float32) + 0.5) / SUPERSAMPLE
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    return x, y


def _shape_mask(kind: str, x: torch.Tensor, y: torch.Tensor, cx: float, cy: float, r: float) -> torch.Tensor:
    dx, dy = x - cx, y - cy
    if kind == "square":
        return (dx.abs() <= r * 0.85) & (dy.abs() <= r * 0.85)
    if kind == "disc":
        return dx**2 + dy**2 <= r**2
    if kind == "cross":
        arm = r * 0.38
        return ((dx.abs() <= arm) & (dy.abs() <= r)) | ((dy.abs() <= arm) & (dx.abs() <= r))
    if kind == "diamond":
        return dx.abs() + dy.abs() <= r * 1.1
    if kind == "triangle":  # pointing up
        return (dy <= r * 0.8) & (dy >= -r) & (dx.abs() <= (dy + r) * 0.6)
    raise ValueError(f"unknown shape {kind!r}")


def _background(kind: str, rgb: tuple[float, float, float], seed: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``[3, h, w]``: a low-contrast texture (amplitude 0.12) around ``rgb``."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.rand(4, generator=gen)
    if kind == "stripes":
        angle, period = float(u[0]) * math.pi, 3.0 + 3.0 * float(u[1])
        pattern = torch.sin(2 * math.pi * (x * math.cos(angle) + y * math.sin(angle)) / period + 6.28 * float(u[2]))
    elif kind == "checker":
        period = 3.0 + 3.0 * float(u[1])
        pattern = torch.sign(torch.sin(math.pi * (x + 5 * u[2]) / period) * torch.sin(math.pi * (y + 5 * u[3]) / period))
    elif kind == "blobs":
        noise = torch.randn(1, 1, 5, 5, generator=gen)
        pattern = F.interpolate(noise, size=x.shape, mode="bicubic", align_corners=False)[0, 0]
        pattern = pattern / pattern.abs().amax().clamp_min(1e-6)
    else:
        raise ValueError(f"unknown background {kind!r}")
    base = torch.tensor(rgb).view(3, 1, 1)
    return (base + 0.12 * pattern.unsqueeze(0)).clamp(0, 1)


TRAIL_FRAMES = 4.0  # a moving shape's trail covers where it was over the last 4 frames (a long exposure)
TRAIL_OPACITY = 0.45  # at the shape's edge, fading linearly to 0 at the trail's end
TRAIL_SAMPLES = 12  # positions per frame of trail


def render(case: Case, frames: int) -> torch.Tensor:
    """``[frames, 3, SIZE, SIZE]`` in 0..1.

    The shape starts at rest at frame 0; from frame 1 on it leaves a fading trail over where it was during the last
    ``TRAIL_FRAMES`` frames (never before frame 0), drawn in its colour under the shape: what a long exposure of a
    moving thing looks like. So one frame of a moving shape shows which way it moves (what a caption's motion words
    mean), while frame 0, the image a video starts from, does not."""
    return torch.stack([render_frame(case, f) for f in range(frames)])


def _layers(case: Case, f: int, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Frame ``f``'s figure on the 4x grid: the trail's opacity ``alpha`` and the shape's ``mask`` (``[4H, 4W]``)."""
    cx, cy = case.centre(f)
    alpha = torch.zeros_like(x)
    span = min(float(f), TRAIL_FRAMES)
    for k in range(1, TRAIL_SAMPLES + 1 if span > 0 else 1):  # ghosts back in time, fading
        back = span * k / TRAIL_SAMPLES
        gx, gy = case.centre(f - back)
        ghost = _shape_mask(case.shape, x, y, gx, gy, RADIUS).float()
        alpha = torch.maximum(alpha, ghost * TRAIL_OPACITY * (1 - back / TRAIL_FRAMES))
    return alpha, _shape_mask(case.shape, x, y, cx, cy, RADIUS).float()


def render_frame(case: Case, f: int) -> torch.Tensor:
    """Frame ``f`` of ``render(case, ...)``: ``[3, SIZE, SIZE]`` in 0..1."""
    x, y = _grid(SIZE)
    background = _background(case.background, case.background_rgb, case.texture_seed, x, y)
    colour = torch.tensor(COLOURS[case.colour]).view(3, 1, 1)
    cx, cy = case.centre(f)
    alpha, mask = _layers(case, f, x, y)
    trailed = background * (1 - alpha) + colour * alpha
    mask = mask.unsqueeze(0)
    # the shape's own texture moves with it: fine diagonal stripes, 25 % darker
    stripes = 0.75 + 0.25 * (torch.sin(2 * math.pi * ((x - cx) + (y - cy)) / 2.0) > 0).float().unsqueeze(0)
    frame = trailed * (1 - mask) + (colour * stripes) * mask
    return F.avg_pool2d(frame.unsqueeze(0), SUPERSAMPLE)[0]


def figure_coverage(case: Case, f: int) -> torch.Tensor:
    """``[SIZE, SIZE]``: the fraction of each pixel of frame ``f`` that the shape or its trail covers (what the
    caption's words draw; the rest is background)."""
    x, y = _grid(SIZE)
    alpha, mask = _layers(case, f, x, y)
    return F.avg_pool2d(torch.maximum(mask, (alpha > 0).float())[None, None], SUPERSAMPLE)[0, 0]


def shape_mask(case: Case, frame: int = 0) -> torch.Tensor:
    """``[4H, 4W]`` (float 0/1): where the shape is at ``frame``, on the 4x render grid."""
    x, y = _grid(SIZE)
    cx, cy = case.centre(frame)
    return _shape_mask(case.shape, x, y, cx, cy, RADIUS).float()


def random_case(gen: torch.Generator, frames: int, held_out: bool = False, direction: str | None = None,
                speed: str | None = None) -> Case:
    """A case whose shape stays inside the frame for ``frames`` frames."""
    shapes = HELD_OUT_SHAPES if held_out else TRAIN_SHAPES
    backgrounds = HELD_OUT_BACKGROUNDS if held_out else TRAIN_BACKGROUNDS

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=gen))]

    direction = direction or pick(tuple(DIRECTIONS))
    speed = speed or pick(tuple(SPEEDS))
    grey = 0.25 + 0.5 * float(torch.rand(1, generator=gen))
    tint = (torch.rand(3, generator=gen) - 0.5) * 0.2
    background_rgb = tuple(float(v) for v in (grey + tint).clamp(0.05, 0.95))
    visible = [c for c, rgb in COLOURS.items() if math.dist(rgb, background_rgb) >= MIN_CONTRAST]
    colour = pick(tuple(visible))  # a shape that stands out from its background (the truth must be visible)
    dx, dy = DIRECTIONS[direction]
    travel = SPEEDS[speed] * (frames - 1)
    margin = RADIUS + 0.75
    lo, hi = margin, SIZE - margin

    def coordinate(d: float) -> float:
        if d > 0:
            span = (lo, hi - travel)
        elif d < 0:
            span = (lo + travel, hi)
        else:
            span = (lo, hi)
        if span[1] < span[0]:
            raise ValueError(f"a {speed} shape cannot stay in a {SIZE}-pixel frame for {frames} frames")
        return span[0] + (span[1] - span[0]) * float(torch.rand(1, generator=gen))

    start = (coordinate(dx), coordinate(dy))
    return Case(pick(shapes), colour, pick(backgrounds), background_rgb,
                int(torch.randint(2**31 - 1, (1,), generator=gen)), start, direction, speed)


def fits(case: Case, frames: int) -> bool:
    margin = RADIUS + 0.25
    return all(margin <= c <= SIZE - margin for f in (0, frames - 1) for c in case.centre(f))


def training_batch(gen: torch.Generator, batch: int, frames: int) -> dict:
    """A trainer batch: ``pixels [B, F, 3, H, W]`` in -1..1 and the video captions."""
    cases = [random_case(gen, frames) for _ in range(batch)]
    pixels = torch.stack([render(c, frames) for c in cases]) * 2 - 1
    return {"pixels": pixels, "caption": [c.video_caption() for c in cases], "cases": cases}


STAGE1_CLIP = 8  # stage 1's frames come from clips this long: 1 in 8 at rest (frame 0), the rest with a trail


def image_batch(gen: torch.Generator, batch: int, frames: int = STAGE1_CLIP, figures: bool = False):
    """Stage 1: single frames ``[B, 3, H, W]`` in -1..1, each a random frame of a random training clip, with that
    clip's video caption (so the image model learns what "moves left fast" looks like in one frame: the trail).
    ``figures``: also each frame's ``figure_coverage`` ``[B, H, W]`` (a third element; the same draws)."""
    cases = [random_case(gen, frames) for _ in range(batch)]
    index = torch.randint(frames, (batch,), generator=gen).tolist()
    pixels = torch.stack([render_frame(c, f) for c, f in zip(cases, index, strict=True)])
    captions = [c.video_caption() for c in cases]
    if figures:
        return pixels * 2 - 1, captions, torch.stack([figure_coverage(c, f) for c, f in zip(cases, index, strict=True)])
    return pixels * 2 - 1, captions
