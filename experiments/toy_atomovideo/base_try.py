"""Stage-1 tries: which change to the base's training makes it draw what its captions say?

``python -m experiments.toy_atomovideo.base_try [--figure-weight K] [--width W] [--steps N] [--shapes S,...]
[--unet FILE [--trained-by TEXT]] [--out DIR]`` trains the study's base (its stage-1 settings and seed) with one or two
things changed, then judges it (``--study``: judges the study's own base, trained or reused as the study does):

- the study's gates (``gates.py``) on the study's 64 samples at cfg 3;
- what the shape words do: the same 24 captions sampled with the same noise once per training shape word, each
  sample classed by the study's training shape that fits its figure best (``gates.shape_scores``, without the
  floor). A base that reads the word draws each word's shape; one that does not draws the same shape whatever the
  word;
- what the denoiser keeps of a true frame it sees (the one-step clean prediction from the true frame noised to t=5,
  100, 300): a base that rounds a shape it can see cannot draw one from noise.

``--figure-weight K``: pixels the shape or its trail covers count 1 + K times in the loss (``toybase``);
``--width W``: the UNet's four levels W channels wide (the study's: 32; the text encoder stays the study's).
``--shapes cross``: train (and judge) in the world with only these training shapes (comma-separated): whether the
UNet can draw a shape at all, apart from reading which one a caption names.
A try's weights are kept in ``cache/base_try-TAG.pt`` (with its settings) and reused when the same try is asked again;
``--radius R``: every shape R pixels in radius (the world's: 2.75; at most 3.5, so a fast shape's 8-frame clip
still fits the 16-pixel frame): whether larger shapes are drawn crisply at the same budget.
``--unet FILE``: judge weights saved elsewhere (``--trained-by``: how they were made) under the settings given.
Each try is an entry of ``base_tries.json`` beside ``results.json`` (the report reads it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shlex
import time
from dataclasses import replace

import torch

from . import gates, ladder, report, toybase, world

WORD_CASES = 24
SEEN_STEPS = (5, 100, 300)
CLASSES = world.TRAIN_SHAPES  # the study's training shapes: what a sample is classed as, whatever world trained it


@contextlib.contextmanager
def training_shapes(shapes: tuple[str, ...], radius: float | None = None):
    """The world with ``shapes`` as its training shapes (the gates still choose among all five) and shapes of
    ``radius`` pixels (None: the world's), restored on exit."""
    saved = world.TRAIN_SHAPES, world.RADIUS
    world.TRAIN_SHAPES, world.RADIUS = shapes, radius or world.RADIUS
    try:
        yield
    finally:
        world.TRAIN_SHAPES, world.RADIUS = saved


def make_base(seed: int, width: int, norm_groups: int):
    """The study's untrained base with its UNet ``width`` channels wide at every level (``toybase.make_base``'s text
    encoder: the UNet is built after it from the same seed, so the text side is the study's)."""
    base = toybase.make_base(seed, norm_groups)
    if width != toybase.TOY_WIDTHS[0]:
        from diffusers import UNet2DConditionModel

        torch.manual_seed(seed)
        widths = (width,) * len(toybase.TOY_WIDTHS)
        base.unet = UNet2DConditionModel(**dict(toybase.TOY_UNET, block_out_channels=widths,
                                                norm_num_groups=norm_groups))
        base.widths = widths
    return base


def shape_words(base, seed: int, prediction: str, count: int = WORD_CASES) -> dict:
    """``{"drawn_as": {word: {shape: fraction}}, "right": {word: fraction}, "shape_word_change",
    "colour_word_change"}`` over ``count`` captions sampled once per training shape word with the same noise (cfg 3);
    ``right``: the shape gate passed for that word; the changes: the mean absolute pixel difference (0..1) between
    samples whose captions differ only in the shape word (averaged over the pairs of words), and only in the colour
    word (each caption's colour swapped for another that stands out from its background): how much each kind of
    word moves what the base draws."""
    cases = ladder.fixed_cases(count, world.STAGE1_CLIP, seed + 5, held_out=False)
    drawn_as, right, drawn = {}, {}, {}

    def sample(worded):
        return toybase.sample_images(base, [c.video_caption() for c in worded], cfg=3.0, seed=seed + 11,
                                     prediction_type=prediction)

    for word in world.TRAIN_SHAPES:
        worded = [replace(c, shape=word) for c in cases]
        images = drawn[word] = sample(worded)
        counts = dict.fromkeys(CLASSES, 0)
        hits = 0
        for image, case in zip(images, worded, strict=True):
            figures = gates.image_figures(image, case)
            hits += figures["shape_drawn"]
            if "shape_scores" in figures:  # a figure was found (at least 3 solid pixels)
                counts[max(CLASSES, key=figures["shape_scores"].get)] += 1
        drawn_as[word] = {shape: n / len(cases) for shape, n in counts.items()}
        right[word] = hits / len(cases)
    first = [replace(c, shape=world.TRAIN_SHAPES[0]) for c in cases]
    recoloured = sample([replace(c, colour=_other_colour(c)) for c in first])
    words = world.TRAIN_SHAPES
    pairs = [(a, b) for i, a in enumerate(words) for b in words[i + 1:]]
    return {"drawn_as": drawn_as, "right": right, "cases": len(cases),
            "shape_word_change": (sum(float((drawn[a] - drawn[b]).abs().mean()) for a, b in pairs) / len(pairs)
                                  if pairs else None),  # one training shape: no other word to change to
            "colour_word_change": float((drawn[words[0]] - recoloured).abs().mean())}


def _other_colour(case: world.Case) -> str:
    """The next colour after ``case``'s (in ``world.COLOURS``' order) that stands out from its background."""
    names = list(world.COLOURS)
    for k in range(1, len(names)):
        name = names[(names.index(case.colour) + k) % len(names)]
        if math.dist(world.COLOURS[name], case.background_rgb) >= world.MIN_CONTRAST:
            return name
    raise ValueError(f"no other colour stands out from {case.background_rgb}")


def judge(base, seed: int, gate_samples: int, prediction: str) -> dict:
    """The gates, the shape words and the one-step figures of a trained base."""
    truth = gates.truth_statistics(256, seed + 1)
    cases = ladder.fixed_cases(gate_samples, world.STAGE1_CLIP, seed + 5, held_out=False)
    samples = toybase.sample_images(base, [c.video_caption() for c in cases], cfg=3.0, seed=seed + 5,
                                    prediction_type=prediction)
    judged = gates.sampled_statistics(samples, cases, truth)
    gen = torch.Generator().manual_seed(seed + 6)  # the frames and noise of ``run.base_gate_sweep``'s "seen"
    images = torch.stack([world.render_frame(c, int(torch.randint(1, world.STAGE1_CLIP, (1,), generator=gen)))
                          for c in cases])
    seen = {}
    for t in SEEN_STEPS:
        predicted = toybase.one_step_images(base, images, [c.video_caption() for c in cases], t, seed + t, prediction)
        stats = gates.sampled_statistics(predicted, cases, truth)
        seen[f"t={t}"] = {n: stats[n] for n in ("colour_drawn", "shape_drawn", "trail_behind")}
    return {"gates": {n: judged[n] for n, _, _ in gates.GATES} | {"passes": judged["passes"]},
            "truth": {n: truth[n] for n in ("colour_drawn", "shape_drawn", "trail_behind")},  # rendered frames
            "samples": gate_samples, "shape_words": shape_words(base, seed, prediction), "seen": seen}


def _save(value, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(value, path + ".tmp")
    os.replace(path + ".tmp", path)


def main(argv: list[str] | None = None) -> int:
    from .run import FULL, Cache, _machine, train_base

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--figure-weight", type=float, default=0.0)
    parser.add_argument("--width", type=int, default=toybase.TOY_WIDTHS[0])
    parser.add_argument("--steps", type=int, default=FULL.stage1_steps)
    parser.add_argument("--shapes", default="", help="comma-separated training shapes (default: the world's)")
    parser.add_argument("--radius", type=float, default=world.RADIUS, help="the shapes' radius in pixels")
    parser.add_argument("--unet", help="weights saved elsewhere ({'unet', 'seconds', 'final_loss'}): judge them")
    parser.add_argument("--study", action="store_true", help="judge the study's own base (nothing else changed)")
    parser.add_argument("--trained-by", default="", help="with --unet: how that file was made")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"))
    args = parser.parse_args(argv)
    shapes = tuple(w for w in args.shapes.split(",") if w) or world.TRAIN_SHAPES
    if [w for w in shapes if w not in gates.SHAPES]:
        parser.error(f"unknown shapes in {args.shapes!r}: the world draws {', '.join(gates.SHAPES)}")
    if args.figure_weight < 0:
        parser.error(f"--figure-weight must be at least 0 (0: the plain loss), got {args.figure_weight:g}")
    if not 1.0 <= args.radius <= 3.5:
        parser.error(f"--radius must be in 1 .. 3.5 (a fast shape's 8-frame clip must fit 16 pixels), got {args.radius:g}")
    changed = (args.figure_weight, args.width, args.steps, shapes, args.radius) != (
        0.0, toybase.TOY_WIDTHS[0], FULL.stage1_steps, world.TRAIN_SHAPES, world.RADIUS)
    if args.study and (changed or args.unet or args.trained_by):
        parser.error("--study judges the study's own base: give it alone (a changed setting is a try of its own)")
    if args.trained_by and not args.unet:
        parser.error("--trained-by says how a --unet file was made: give it with --unet")
    s = replace(FULL, stage1_steps=args.steps)
    settings = {"figure_weight": args.figure_weight, "width": args.width, "steps": args.steps}
    name = f"figure weight {args.figure_weight:g}, width {args.width}, {args.steps} steps"
    tag = f"w{args.width}-k{args.figure_weight:g}-{args.steps}"
    if shapes != world.TRAIN_SHAPES:
        settings["shapes"] = list(shapes)
        name += f", only {' and '.join(shapes)} in training"
        tag += "-" + "-".join(shapes)
    if args.radius != world.RADIUS:
        settings["radius"] = args.radius
        name += f", shapes of radius {args.radius:g}"
        tag += f"-r{args.radius:g}"
    with training_shapes(shapes, args.radius):
        if args.study:
            name = "the study's base"
            base, info = train_base(FULL, Cache(args.out))
            trained = {"seconds": info["seconds"], "final_loss": sum(info["losses"][-20:]) / 20}
        else:
            base = make_base(s.seed, args.width, s.stage1_norm_groups)
            path = os.path.join(args.out, "cache", f"base_try-{tag}.pt")
            if args.unet or os.path.isfile(path):
                saved = torch.load(args.unet or path, weights_only=True)
                if saved.get("settings", settings) != settings:
                    parser.error(f"{args.unet or path} was trained with {saved['settings']}, not {settings}")
            else:
                start = time.perf_counter()
                losses = toybase.train_image_model(base, s.stage1_steps, s.stage1_batch, seed=s.seed + 1,
                                                   prediction_type=s.stage1_prediction, ema=s.stage1_ema,
                                                   figure_weight=args.figure_weight, log=print)
                saved = {"unet": base.unet.state_dict(), "seconds": time.perf_counter() - start,
                         "final_loss": sum(losses[-20:]) / 20, "settings": settings}
                _save(saved, path)
            base.unet.load_state_dict(saved["unet"])
            trained = {"seconds": saved["seconds"], "final_loss": saved["final_loss"]}
        base.freeze()
        judged = judge(base, s.seed, s.gate_samples, s.stage1_prediction)
    command = ["--study"] if args.study else (
        [f"--figure-weight={args.figure_weight:g}", f"--width={args.width}", f"--steps={args.steps}"]
        + ([f"--shapes={','.join(shapes)}"] if "shapes" in settings else [])
        + ([f"--radius={args.radius:g}"] if "radius" in settings else []) + ([f"--unet={args.unet}"] if args.unet
                                                                              else []))
    entry = {"settings": settings, "study": args.study, **trained, **judged, "machine": _machine(),
             "judged_by": shlex.join(["python", "-m", "experiments.toy_atomovideo.base_try", *command])}
    if args.trained_by:
        entry["trained_by"] = args.trained_by
    file = os.path.join(args.out, "base_tries.json")
    tries = {}
    if os.path.isfile(file):
        with open(file) as f:
            tries = json.load(f)
    tries[name] = report.jsonable(entry)
    with open(file, "w") as f:
        json.dump(tries, f, indent=1)
    print(name, json.dumps(entry["gates"]), json.dumps(entry["shape_words"]["drawn_as"]), json.dumps(entry["seen"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
