"""A stage-1 try on another world: is the base's blob a world whose shapes are too alike to learn apart?

``python -m experiments.toy_atomovideo.world_try [--trail-opacity 0.7] [--base FILE]`` trains the study's base
(same settings, seed 0) in a world whose training shapes are a square, a horizontal bar and a vertical column
(``pixels_apart`` in the output: how many pixels two shapes at the same place differ by) and whose trail is drawn
at the given opacity (the world's: 0.45), then judges it with the study's gates. Writes ``world_try.json`` beside
``results.json`` (the report reads it). ``--base FILE`` judges a base saved by an earlier try instead of training
one (20 minutes here).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time

import torch

from . import gates, ladder, report, toybase, world

SHAPES = ("square", "bar", "column")
THICKNESS = 0.42  # a bar's half-height as a fraction of ``world.RADIUS`` (its half-length): 5.5 by 2.3 pixels


def _mask(kind, x, y, cx, cy, r, original=world._shape_mask):
    dx, dy = x - cx, y - cy
    if kind == "bar":
        return (dx.abs() <= r) & (dy.abs() <= r * THICKNESS)
    if kind == "column":
        return (dy.abs() <= r) & (dx.abs() <= r * THICKNESS)
    return original(kind, x, y, cx, cy, r)


@contextlib.contextmanager
def elongated_world(trail_opacity: float):
    """The world with ``SHAPES`` for training and trails at ``trail_opacity``, restored on exit."""
    saved = world._shape_mask, world.TRAIN_SHAPES, world.TRAIL_OPACITY, gates.SHAPES
    world._shape_mask, world.TRAIN_SHAPES, world.TRAIL_OPACITY = _mask, SHAPES, trail_opacity
    gates.SHAPES = SHAPES + world.HELD_OUT_SHAPES
    try:
        yield
    finally:
        world._shape_mask, world.TRAIN_SHAPES, world.TRAIL_OPACITY, gates.SHAPES = saved


def main(argv: list[str] | None = None) -> int:
    from .run import FULL, _machine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trail-opacity", type=float, default=0.7)
    parser.add_argument("--base", help="a UNet state dict (torch.save) from an earlier try: judge it, train nothing")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    s = FULL
    with elongated_world(args.trail_opacity):
        base = toybase.make_base(s.seed, s.stage1_norm_groups)
        seconds, loss = None, None
        if args.base:
            base.unet.load_state_dict(torch.load(args.base, weights_only=True))
        else:
            start = time.perf_counter()
            losses = toybase.train_image_model(base, s.stage1_steps, s.stage1_batch, seed=s.seed + 1,
                                               prediction_type=s.stage1_prediction, ema=s.stage1_ema, log=print)
            seconds, loss = time.perf_counter() - start, sum(losses[-20:]) / 20
            os.makedirs(os.path.join(args.out, "cache"), exist_ok=True)
            torch.save(base.unet.state_dict(), os.path.join(args.out, "cache", "world_try_base.pt"))
        base.freeze()
        truth = gates.truth_statistics(256, s.seed + 1)
        cases = ladder.fixed_cases(s.gate_samples, world.STAGE1_CLIP, s.seed + 5, held_out=False)
        samples = toybase.sample_images(base, [c.video_caption() for c in cases], cfg=3.0, seed=s.seed + 5,
                                        prediction_type=s.stage1_prediction)
        judged = gates.sampled_statistics(samples, cases, truth)
        centre = world.SIZE / 2
        apart = {f"{a}-{b}": float((gates.coverage(a, centre, centre) - gates.coverage(b, centre, centre)).abs().sum())
                 for a, b in (("bar", "column"), ("square", "bar"), ("square", "disc"), ("disc", "cross"))}
    result = {"shapes": SHAPES, "trail_opacity": args.trail_opacity, "truth": truth, "samples": judged,
              "pixels_apart": apart,
              "stage1_seconds": seconds, "final_loss": loss, "machine": _machine(),
              "made_by": "python -m experiments.toy_atomovideo.world_try" + (f" --base {args.base}" if args.base else "")}
    with open(os.path.join(args.out, "world_try.json"), "w") as f:
        json.dump(report.jsonable(result), f, indent=1)
    print(", ".join(f"{name} {judged[name]:.3f}" for name, _, _ in gates.GATES), "passes:", judged["passes"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
