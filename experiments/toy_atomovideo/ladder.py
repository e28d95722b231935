"""The diagnostic ladder: three rungs, each a figure of the learning probe with a pass criterion, so that a failure
says where the recipe stops learning (and, with the probe's figures, why) without sampling a clip.

1. ``memorise``: the temporal layers trained on one fixed batch of training clips; probed on that batch. If even
   this fails, no budget will help: the layers cannot carry the image to the generated frames at all (a bug, or a
   mechanism that cannot work).
2. ``fit``: the main run, probed on fresh clips of the training world (shapes and backgrounds it trained on).
3. ``generalise``: the same run, probed on held-out shapes and backgrounds.

The criterion at every rung, at the pure-noise step (where everything the model knows of the clip comes through the
image channels and the caption): the prediction with the image beats copying the given frame and is at most half the
error of the prediction without the image; from rung 2 on the shape must also move the caption's way in at least 75 %
of the clips (in the one-step prediction).
"""

from __future__ import annotations

import torch

from . import diagnose, world

DIRECTION_SHARE = 0.75


def rung(name: str, probe: dict, pure_noise: str, motion: bool) -> dict:
    """The rung's verdict from a ``diagnose.toy_probe`` result; ``why`` names the probe figure that fails."""
    p = probe[pure_noise]
    checks = {"beats copying the given frame": p["with_image"] < p["copy_given"],
              "uses the image (at most half the error without it)": p["with_image"] <= 0.5 * p["without_image"]}
    if motion:
        checks["moves the caption's way in 75 % of clips"] = p["direction_ok"] >= DIRECTION_SHARE
    failed = [k for k, ok in checks.items() if not ok]
    figures = (f"with image {p['with_image']:.4f}, without {p['without_image']:.4f}, copy given "
               f"{p['copy_given']:.4f}, mean frame {p['mean_frame']:.4f}")
    if "direction_ok" in p:
        figures += (f"; direction right {p['direction_ok']:.0%}, speed along the caption {p['along']:.2f}, with the "
                    f"opposite caption {p['opposite_along']:.2f}")
    why = ""
    if failed:
        reasons = []
        if p["with_image"] > 0.9 * p["without_image"]:
            reasons.append("the image is ignored: the prediction is no better with it than without")
        elif p["with_image"] >= p["copy_given"]:
            reasons.append("the image is used but not reproduced: copying it would be closer")
        if motion and p.get("direction_ok", 1.0) < DIRECTION_SHARE:
            if abs(p.get("along", 0.0) - p.get("opposite_along", 0.0)) < 0.2:
                reasons.append("the motion words do not move the prediction (the same speed along the caption "
                               "with the opposite caption)")
            else:
                reasons.append("the caption moves the prediction, but not far or consistently enough")
        why = "; ".join(reasons)
    return {"rung": name, "holds": not failed, "failed": failed, "figures": figures, "why": why, "probe": probe}


def fixed_cases(count: int, frames: int, seed: int, held_out: bool) -> list[world.Case]:
    gen = torch.Generator().manual_seed(seed)
    directions = tuple(world.DIRECTIONS)
    return [world.random_case(gen, frames, held_out=held_out, direction=directions[i % 4]) for i in range(count)]


def probe_run(sampler, cases, frames: int, seed: int) -> dict:
    return diagnose.toy_probe(sampler, cases, frames, given=1, seed=seed)


def one_caption_batch(clips: int, frames: int, seed: int, speed: str = "fast") -> list[world.Case]:
    """``clips`` training-world clips under one caption (shape, colour, background kind, direction and speed the
    same; the background's tint and texture and the start differ), so that only the image tells them apart: a model
    that memorises them without reading the image can do no better than their average."""
    from dataclasses import replace

    gen = torch.Generator().manual_seed(seed)
    first = world.random_case(gen, frames, speed=speed)
    cases = [first]
    while len(cases) < clips:
        other = world.random_case(gen, frames, direction=first.direction, speed=speed)
        if _visible(first.colour, other):  # the shape must stand out from the new background too
            cases.append(replace(first, background_rgb=other.background_rgb, texture_seed=other.texture_seed,
                                 start=other.start))
    return cases


def _visible(colour: str, case: world.Case) -> bool:
    import math

    return math.dist(world.COLOURS[colour], case.background_rgb) >= world.MIN_CONTRAST


def batches_of(cases: list[world.Case], frames: int):
    """The trainer's batch of ``cases`` at every step."""
    pixels = torch.stack([world.render(c, frames) for c in cases]) * 2 - 1
    batch = {"pixels": pixels, "caption": [c.video_caption() for c in cases]}
    while True:
        yield dict(batch)
