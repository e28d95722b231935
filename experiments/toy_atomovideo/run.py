"""The toy AtomoVideo experiment, end to end: ``python -m experiments.toy_atomovideo [--reduced] [--out DIR]``.

Stage 1 trains the toy image model, stage 2 trains the temporal layers twice on it with the trainer (v-prediction on
zero terminal SNR, and epsilon on the base's own schedule, same budget), then every measurement of ``evaluate`` runs
on held-out first frames for both and for the untrained layers, and ``report`` writes ``report.md``, the figures as
PNG and ``results.json`` into ``--out``. ``--reduced`` is the same pipeline at test size (the test suite runs it).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from dataclasses import asdict, dataclass, replace

import torch

from . import evaluate, report, stage2, toybase


@dataclass(frozen=True)
class Settings:
    stage1_steps: int = 600
    stage1_batch: int = 32
    stage2_steps: int = 700
    batch: int = 4
    frames: int = 6  # 3x as long (18) must fit a slow shape in the 16-pixel frame: 0.5 x 17 + 2 x 3.5 <= 16
    lr: float = 1e-3
    sampling_steps: int = 12
    cfg: float = 3.0
    image_cfg: float = 1.5
    test_cases: int = 16
    pairs: int = 8
    grid_cases: int = 3
    cfgs: tuple[float, ...] = (1.0, 3.0, 6.0)
    image_cfgs: tuple[float, ...] = (1.0, 2.0, 3.0)
    prediction_cases: int = 8
    given: int = 3
    long_cases: int = 4
    long_total: int = 18
    seed: int = 0


FULL = Settings()
REDUCED = Settings(stage1_steps=40, stage1_batch=16, stage2_steps=30, batch=2, sampling_steps=6, test_cases=3,
                   pairs=1, grid_cases=1, cfgs=(3.0,), image_cfgs=(1.0, 3.0), prediction_cases=1, long_cases=1)


def run(settings: Settings, out: str, log=print) -> dict:
    os.makedirs(out, exist_ok=True)
    torch.manual_seed(settings.seed)
    clock = {"start": time.perf_counter()}
    s = settings

    base = toybase.make_base(settings.seed)
    saved = _load_trained(out, settings)
    if saved is not None:
        log(f"reusing the trained weights in {os.path.join(out, TRAINED)} (same settings)")
        base.unet.load_state_dict(saved["unet"])
        image_losses = saved["losses"]["stage1"]
    else:
        log(f"stage 1: the image model, {s.stage1_steps} steps of {s.stage1_batch} frames")
        image_losses = toybase.train_image_model(base, s.stage1_steps, s.stage1_batch, seed=s.seed + 1, log=log)
    base.freeze()
    clock["stage1"] = time.perf_counter()
    image_samples = toybase.sample_images(base, [c.image_caption() for c in
                                                 evaluate.held_out_cases(4, 1, s.seed + 5)]
                                          + [c.image_caption() for c in _training_cases(4, s.seed + 6)])

    configs = {
        "v_ztsnr": stage2.stage2_config("v_prediction", s.stage2_steps, s.frames, s.batch, s.lr, s.seed, out),
        "eps": stage2.stage2_config("epsilon", s.stage2_steps, s.frames, s.batch, s.lr, s.seed, out),
    }
    states, losses, seconds = {}, {}, {}
    for name, config in configs.items():
        if saved is not None:
            states[name], losses[name], seconds[name] = saved["states"][name], saved["losses"][name], \
                saved["seconds"][f"stage2_{name}"]
            continue
        log(f"stage 2 ({name}): {s.stage2_steps} steps of {s.batch} clips x {s.frames} frames")
        t0 = time.perf_counter()
        states[name], losses[name] = stage2.train_temporal(base, config, log=log)
        seconds[name] = time.perf_counter() - t0
    clock["stage2"] = time.perf_counter()
    if saved is None:
        stage1_seconds = clock["stage1"] - clock["start"]
        torch.save({"settings": asdict(s), "unet": base.unet.state_dict(), "states": states,
                    "losses": {"stage1": image_losses, **losses},
                    "seconds": {"stage1": stage1_seconds, **{f"stage2_{k}": v for k, v in seconds.items()}}},
                   os.path.join(out, TRAINED))
    else:
        clock["stage1"] = clock["start"] + saved["seconds"]["stage1"]  # the training run's times, for the report
        clock["stage2"] = clock["stage1"] + sum(seconds.values())
        clock["start_eval"] = time.perf_counter()
    # the untrained layers (identity at init) sampled the way the base was trained: frames of the image model
    models = {**{k: (configs[k], states[k]) for k in configs}, "untrained": (configs["eps"], None)}

    sampling = evaluate.Sampling(s.sampling_steps, s.cfg, s.image_cfg)
    cases = evaluate.held_out_cases(s.test_cases, s.frames, s.seed + 11)
    pairs = evaluate.paired_cases(s.pairs, s.frames, s.seed + 12)
    grid_cases = evaluate.held_out_cases(s.grid_cases, s.frames, s.seed + 13)
    fp_cases = evaluate.held_out_cases(s.prediction_cases, s.frames, s.seed + 14)
    long_cases = evaluate.held_out_cases(s.long_cases, s.long_total, s.seed + 15, speed="slowly")
    results = {"settings": asdict(s), "tracker": evaluate.tracker_check(64, s.frames, s.seed + 10),
               "truth": evaluate.truth_figures(cases, s.frames), "models": {}, "machine": _machine()}
    strips = {}
    for name, (config, state) in models.items():
        log(f"evaluating {name}")
        with stage2.attached(base, config, state) as (model, ab, prediction_type):
            sampler = evaluate.Sampler(base, model, ab, prediction_type, sampling)
            figures = {"image_to_video": evaluate.image_to_video(sampler, cases, s.frames, s.seed + 100),
                       "text_control": evaluate.text_control(sampler, pairs, s.frames, s.seed + 200),
                       "frame_prediction": evaluate.frame_prediction(sampler, fp_cases, s.frames, s.given,
                                                                     s.seed + 300)}
            if name != "untrained":
                figures["guidance"] = evaluate.guidance_grid(sampler, grid_cases, s.frames, s.seed + 400, s.cfgs,
                                                             s.image_cfgs)
                figures["long_video"] = evaluate.long_video(sampler, long_cases, s.frames, s.given, s.long_total,
                                                            s.seed + 500)
            strips[name] = {part: figures[part].pop("videos") for part in ("image_to_video", "text_control",
                                                                            "long_video") if part in figures}
        results["models"][name] = figures
    clock["end"] = time.perf_counter()
    results["losses"] = {"stage1": image_losses, **losses}
    evaluation = clock["end"] - clock.get("start_eval", clock["stage2"])
    results["seconds"] = {"stage1": clock["stage1"] - clock["start"], **{f"stage2_{k}": v for k, v in seconds.items()},
                          "evaluation": evaluation,
                          "total": clock["stage1"] - clock["start"] + sum(seconds.values()) + evaluation}
    results["reused_training"] = saved is not None
    report.write(out, results, strips, cases, pairs, image_samples)
    log(f"done in {results['seconds']['total']:.0f} s: {os.path.join(out, 'report.md')}")
    return results


TRAINED = "trained.pt"  # the trained weights and losses, so that the evaluation can be run again alone


def _load_trained(out: str, settings: Settings):
    path = os.path.join(out, TRAINED)
    if not os.path.isfile(path):
        return None
    saved = torch.load(path, weights_only=True)
    keys = ("stage1_steps", "stage1_batch", "stage2_steps", "batch", "frames", "lr", "seed")
    return saved if all(saved["settings"][k] == asdict(settings)[k] for k in keys) else None


def _training_cases(count: int, seed: int):
    from . import world

    gen = torch.Generator().manual_seed(seed)
    return [world.random_case(gen, 1) for _ in range(count)]


def _machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reduced", action="store_true", help="the test-size run (about a minute)")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results"),
                        help="folder for report.md, the PNG figures and results.json")
    parser.add_argument("--stage2-steps", type=int, default=None, help="override the stage-2 budget")
    args = parser.parse_args(argv)
    settings = REDUCED if args.reduced else FULL
    if args.stage2_steps:
        settings = replace(settings, stage2_steps=args.stage2_steps)
    run(settings, args.out)
    return 0
