"""Quality gates for the stage-1 image model: is the base good enough to build a video model on?

An image model made from a caption is judged on what the world lets us check exactly:

- ``noise_like``: the image's total variation (mean absolute difference of neighbouring pixels) is above the
  largest the world ever draws (the 99.9th percentile of rendered frames, plus 20 %): colour noise, not a picture;
- ``saturation`` (mean of max - min over RGB) and ``brightness`` against the same statistics of rendered frames;
- ``colour_drawn``: the caption's colour covers at least half of the shape's area, and at most three times it;
- ``shape_drawn``: among the five shapes, the caption's fits the figure best: the correlation of the figure's weight
  map with each shape's pixel coverage, at the best of 25 placements within a pixel of the figure's centroid, is
  highest for the caption's shape and at least ``SHAPE_FLOOR``. Checked on rendered frames (``tests``): the truth is
  judged right in about 95 % of frames, a frame drawn with another training shape almost never passes;
- ``trail_behind``: the caption's motion words drawn: more of the caption's colour in the two pixels behind the
  shape (along the caption's direction) than in the two ahead of it. Background texture makes this noisy: rendered
  frames with a trail pass in about 3 of 4 cases, frames without one (frame 0) in about 1 of 3.

``gate_figures`` returns the fractions over sampled images beside the same figures of rendered truth, and
``GATES`` the pass criteria the report applies.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F

from . import world

SHAPES = world.TRAIN_SHAPES + world.HELD_OUT_SHAPES
TRAIL_MARGIN = 0.05  # colour weight; the backgrounds' texture alone gives 0.34 of frames 0 (no trail) this much
FIGURE_PIXELS = 12  # about half a shape's area (the shapes cover 16 to 30 pixels)
# the caption's shape must correlate at least this well: rendered frames' own shape scores 0.68 at the least (median
# 0.96), uniform noise and bare backgrounds score at most 0.18 and 0.26 with any shape (48 frames each, measured)
SHAPE_FLOOR = 0.5

# criteria: (figure, comparison, threshold); chance for shape_drawn is 1/3 among the training shapes
GATES = (("noise_like", "<=", 0.10), ("colour_drawn", ">=", 0.75), ("shape_drawn", ">=", 0.6),
         ("trail_behind", ">=", 0.55), ("saturation_gap", "<=", 0.05))


def total_variation(image: torch.Tensor) -> float:
    """``[3, H, W]`` -> mean absolute difference between neighbouring pixels."""
    return float(((image[:, 1:] - image[:, :-1]).abs().mean() + (image[:, :, 1:] - image[:, :, :-1]).abs().mean()) / 2)


def saturation(image: torch.Tensor) -> float:
    return float((image.amax(0) - image.amin(0)).mean())


def _figure(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Where the figure is: ``(weight [H, W], mask [H, W], colour [3])``. The background's colour is the image's
    median; the figure is the ``FIGURE_PIXELS`` pixels farthest from it, its colour their mean; ``weight`` is each
    pixel's position along the line from the background's colour to the figure's (1 at the figure's, 0 at the
    background's; a trail drawn at opacity a sits at a), ``mask`` where it exceeds 0.5. A projection, not a distance:
    the shapes' own stripes (25 % darker) stay on the figure's side of the line, where a distance to the figure's
    colour put them in holes."""
    background = image.flatten(1).median(dim=1).values.view(3, 1, 1)
    distance = (image - background).norm(dim=0)
    top = distance.flatten().topk(FIGURE_PIXELS).indices
    colour = image.flatten(1)[:, top].mean(dim=1).view(3, 1, 1)
    axis = colour - background
    weight = (((image - background) * axis).sum(0) / axis.pow(2).sum().clamp_min(1e-6)).clamp(0, 1)
    return weight, weight > 0.5, colour.flatten()


def coverage(kind: str, cx: float, cy: float) -> torch.Tensor:
    """``[H, W]``: the fraction of each pixel a ``kind`` centred at ``(cx, cy)`` covers, as the world renders it."""
    x, y = world._grid(world.SIZE)
    shape = world._shape_mask(kind, x, y, cx, cy, world.RADIUS).float()
    return F.avg_pool2d(shape[None, None], world.SUPERSAMPLE)[0, 0]


def shape_scores(weight: torch.Tensor, cx: float, cy: float) -> dict[str, float]:
    """Each shape's fit to a figure's ``weight`` map: the best correlation of the map with the shape's coverage over
    placements within a pixel of ``(cx, cy)``, in half-pixel steps."""
    a = weight.flatten() - weight.mean()
    scores = {}
    for kind in SHAPES:
        templates = torch.stack([coverage(kind, cx + dx, cy + dy).flatten() for dx in OFFSETS for dy in OFFSETS])
        t = templates - templates.mean(dim=1, keepdim=True)
        scores[kind] = float(((t @ a) / (t.norm(dim=1) * a.norm()).clamp_min(1e-6)).max())
    return scores


OFFSETS = (-1.0, -0.5, 0.0, 0.5, 1.0)


def image_figures(image: torch.Tensor, case: world.Case) -> dict:
    """The gate figures of one image ``[3, H, W]`` (0..1) drawn for ``case``'s caption (with ``shape_scores``, each
    shape's fit, when a figure is found)."""
    weight, solid, colour = _figure(image)
    palette = {name: torch.tensor(rgb) for name, rgb in world.COLOURS.items()}
    # the figure's colour (stripes make a shape up to 25 % darker than its name) is nearest the caption's
    nearest = min(palette, key=lambda n: min(float((colour - palette[n]).norm()),
                                             float((colour - 0.87 * palette[n]).norm())))
    figures = {"tv": total_variation(image), "saturation": saturation(image), "brightness": float(image.mean()),
               "colour_drawn": nearest == case.colour, "shape_drawn": False, "trail_behind": False}
    if solid.sum() >= 3:
        ys, xs = torch.nonzero(solid, as_tuple=True)
        cx, cy = float(xs.float().mean()) + 0.5, float(ys.float().mean()) + 0.5
        scores = figures["shape_scores"] = shape_scores(weight, cx, cy)
        figures["shape_drawn"] = max(scores, key=scores.get) == case.shape and scores[case.shape] >= SHAPE_FLOOR
        dx, dy = world.DIRECTIONS[case.direction]

        def shifted(mask, pixels):
            return torch.roll(mask, (int(dy * pixels), int(dx * pixels)), (0, 1))

        core = weight > 0.8
        behind = (shifted(core, -1) | shifted(core, -2)) & ~solid
        ahead = (shifted(core, 1) | shifted(core, 2)) & ~solid
        if behind.any() and ahead.any():  # more of the figure's colour in the 2 px behind it than in the 2 ahead
            figures["trail_behind"] = float(weight[behind].mean() - weight[ahead].mean()) > TRAIL_MARGIN
    return figures


def summary(images: torch.Tensor, cases: list[world.Case], data_saturation: float | None = None) -> dict:
    rows = [image_figures(img, c) for img, c in zip(images, cases, strict=True)]
    out = {k: sum(float(r[k]) for r in rows) / len(rows) for k in ("colour_drawn", "shape_drawn", "saturation",
                                                                    "brightness", "tv")}
    out["count"] = len(rows)
    out["_tv"] = [r["tv"] for r in rows]
    if data_saturation is not None:
        out["saturation_gap"] = abs(out["saturation"] - data_saturation)
    return out


def truth_statistics(count: int, seed: int) -> dict:
    """Rendered frames as stage 1 sees them: their gate figures, the noise threshold (TV's 99.9th percentile
    + 20 %), and ``other_shape_drawn``: how often the same frames drawn with another training shape pass the shape
    gate for the caption's (the gate's false passes)."""
    gen = torch.Generator().manual_seed(seed)
    cases = [world.random_case(gen, world.STAGE1_CLIP) for _ in range(count)]
    frames = [int(torch.randint(1, world.STAGE1_CLIP, (1,), generator=gen)) for _ in range(count)]
    images = torch.stack([world.render_frame(c, f) for c, f in zip(cases, frames, strict=True)])
    truth = summary(images, cases)
    tvs = sorted(truth.pop("_tv"))
    truth["noise_threshold"] = 1.2 * tvs[min(len(tvs) - 1, math.ceil(0.999 * len(tvs)) - 1)]
    truth["trail_behind"] = _trail_fraction(images, cases)
    # the shape gate's false passes: the same frames drawn with the next training shape, judged for the caption's
    others = [replace(c, shape=world.TRAIN_SHAPES[(world.TRAIN_SHAPES.index(c.shape) + 1) % len(world.TRAIN_SHAPES)])
              for c in cases]
    truth["other_shape_drawn"] = sum(float(image_figures(world.render_frame(o, f), c)["shape_drawn"])
                                     for o, c, f in zip(others, cases, frames, strict=True)) / count
    return truth


def _trail_fraction(images, cases) -> float:
    return sum(float(image_figures(i, c)["trail_behind"]) for i, c in zip(images, cases, strict=True)) / len(cases)


def sampled_statistics(images: torch.Tensor, cases: list[world.Case], truth: dict) -> dict:
    """The gate figures of ``images`` sampled for ``cases``' captions, judged against ``truth``."""
    out = summary(images, cases, truth["saturation"])
    tvs = out.pop("_tv")
    out["noise_like"] = sum(tv > truth["noise_threshold"] for tv in tvs) / len(tvs)
    out["trail_behind"] = _trail_fraction(images, cases)
    out["gates"] = {name: _passes(out[name], op, threshold) for name, op, threshold in GATES}
    out["passes"] = all(out["gates"].values())
    return out


def _passes(value: float, op: str, threshold: float) -> bool:
    return value <= threshold if op == "<=" else value >= threshold


def blurred(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images`` ``[N, 3, H, W]`` under a separable Gaussian blur of ``sigma`` pixels (5 taps, edges replicated):
    how much of the gates' figures a slightly soft drawing of the truth keeps."""
    taps = torch.arange(-2, 3, dtype=images.dtype)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).view(1, 1, 1, 5).repeat(3, 1, 1, 1)
    out = F.conv2d(F.pad(images, (2, 2, 0, 0), mode="replicate"), kernel, groups=3)
    return F.conv2d(F.pad(out, (0, 0, 2, 2), mode="replicate"), kernel.transpose(2, 3), groups=3)

