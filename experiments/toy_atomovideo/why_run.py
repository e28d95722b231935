"""The study's bug-or-budget runs (``--budget STEPS``, ``--mechanism``): the measurements of ``budget.py`` on the
study's own base and recipe, written to ``budget.json`` and ``mechanism.json`` beside ``results.json`` (the report
reads them). Stages are cached as the main run's are."""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict

import torch

from . import budget, diagnose, evaluate, ladder, report, stage2
from .run import (
    PAPER_LAYERS,
    RECIPE,
    Cache,
    Settings,
    _hash,
    _machine,
    _pure_noise,
    base_cache_key,
    sampler_for,
    train_base,
    train_stage2,
)

DIAGNOSTIC_STEPS = 800  # the first study's stage-2 budget: the bug-or-budget runs were measured at it


def _steps(s: Settings) -> int:
    """The diagnostic runs' stage-2 budget (less in the reduced study)."""
    return min(s.stage2_steps, DIAGNOSTIC_STEPS)


def run_budget(s: Settings, out: str, steps: int, log=print, text_film: bool = False) -> dict:
    """Bug or budget for the motion words (``budget.py``): whether the caption's direction can be read linearly at the
    temporal sites, and the recipe trained ``steps`` steps with the probe along the way. Writes ``budget.json``.
    These are the paper's layers (``PAPER_LAYERS``). ``text_film``: instead, the recipe (its temporal convolutions read
    the caption, ``temporal_text: film``) trained ``steps`` steps with the probe along the way and held-out clips
    sampled at the end; writes ``budget_text_film.json``."""
    base, info = train_base(s, Cache(out), log)
    if text_film:
        return _text_film_budget(base, s, out, steps, log)
    t0 = time.perf_counter()
    log("reading the caption's direction at the temporal sites (linear classifiers)")
    decodable = budget.direction_decodable(base, s.frames, s.seed + 30)
    for t, entry in decodable.items():
        log(f"{t}: caption best {entry['caption']['best']:.2f} mean {entry['caption']['mean']:.2f}; empty prompt "
            f"best {entry['empty']['best']:.2f} mean {entry['empty']['mean']:.2f}")
    decode_seconds = time.perf_counter() - t0
    config = stage2.stage2_config(PAPER_LAYERS, steps, s.frames, s.batch, s.seed, "(toy)")
    sampling = evaluate.Sampling(s.sampling_steps, s.cfg, s.image_cfg, s.cfg_rescale)
    cases = {"world": ladder.fixed_cases(s.probe_cases, s.frames, s.seed + 12, held_out=False),
             "held_out": ladder.fixed_cases(s.probe_cases, s.frames, s.seed + 11, held_out=True)}
    t0 = time.perf_counter()
    _, curve = budget.budget_curve(base, config, s, sampling, cases, log)
    result = {"settings": asdict(s), "recipe": asdict(PAPER_LAYERS), "steps": steps, "study_steps": _steps(s),
              "decodable": decodable, "curve": curve["points"], "held_out_loss": curve["losses"]["held_out"],
              "seconds": {"decodable": decode_seconds, "curve": time.perf_counter() - t0}, "machine": _machine()}
    with open(os.path.join(out, "budget.json"), "w") as f:
        json.dump(report.jsonable(result), f, indent=1)
    return result


def _text_film_budget(base, s: Settings, out: str, steps: int, log) -> dict:
    config = stage2.stage2_config(RECIPE, steps, s.frames, s.batch, s.seed, "(toy)")
    sampling = evaluate.Sampling(s.sampling_steps, s.cfg, s.image_cfg, s.cfg_rescale)
    world_cases = ladder.fixed_cases(s.probe_cases, s.frames, s.seed + 12, held_out=False)
    held = ladder.fixed_cases(s.probe_cases, s.frames, s.seed + 11, held_out=True)
    t0 = time.perf_counter()
    state, curve = budget.budget_curve(base, config, s, sampling, {"world": world_cases, "held_out": held}, log)
    seconds = time.perf_counter() - t0
    final = _variant(base, config, {"state": state, "seconds": seconds}, s, world_cases, held,
                     evaluate.held_out_cases(s.test_cases, s.frames, s.seed + 13))
    log(f"text-FiLM at {steps} steps, sampled held-out clips: " + json.dumps(report.jsonable(final["sampled"])))
    result = {"settings": asdict(s), "recipe": asdict(RECIPE), "steps": steps, "study_steps": _steps(s),
              "curve": curve["points"], "held_out_loss": curve["losses"]["held_out"], "final": final,
              "seconds": {"curve": seconds}, "machine": _machine()}
    with open(os.path.join(out, "budget_text_film.json"), "w") as f:
        json.dump(report.jsonable(result), f, indent=1)
    return result


def run_mechanism(s: Settings, out: str, log=print) -> dict:
    """Which mechanism stops the study's model (``budget.py``): the probe with 1-3 given frames on the study's
    v-pred + ZTSNR run, and how much the frozen base follows its input at each timestep. Writes ``mechanism.json``."""
    import contextlib

    cache = Cache(out)
    base, info = train_base(s, cache, log)
    config, trained = train_stage2(base, _hash(info["losses"][-5:], s.seed), PAPER_LAYERS, s, _steps(s), cache,
                                   "v_ztsnr", log)
    cases = ladder.fixed_cases(s.probe_cases, s.frames, s.seed + 12, held_out=False)
    with contextlib.ExitStack() as stack:
        sampler = sampler_for(base, config, trained["state"], s, stack)
        given = budget.given_frames_probe(sampler, cases, s.frames, s.seed + 21)
        latents = torch.stack([sampler.latents(c) for c in diagnose.probe_clips(cases, s.frames)])
        context = base.encode_text([c.video_caption() for c in cases])
        leak = {"model_with_image": budget.noise_leak(sampler.model, sampler.ab, sampler.prediction_type, latents,
                                                      context, s.seed + 24, sampler.layout),
                "model_without_image": budget.noise_leak(sampler.model, sampler.ab, sampler.prediction_type, latents,
                                                         context, s.seed + 24, sampler.layout, with_image=False)}
    leak["base_alone"] = budget.base_noise_leak(base, cases, s.frames, s.seed + 24)
    # the same recipe and budget with temporal convolutions that reach 3x3 pixels (a diagnostic, not AtomoVideo's
    # layer): if the caption's direction is learned then, what stops the recipe is moving things, not reading words
    held = ladder.fixed_cases(s.probe_cases, s.frames, s.seed + 11, held_out=True)
    test_cases = evaluate.held_out_cases(s.test_cases, s.frames, s.seed + 13)
    with stage2.spatial_reach():
        reach_config, reach = train_stage2(base, _hash(info["losses"][-5:], s.seed), PAPER_LAYERS, s, _steps(s),
                                           cache, "spatial-reach", log)
        spatial = _variant(base, reach_config, reach, s, cases, held, test_cases, given_frames=True)
    one_motion = _one_motion(base, info, s, cache, log)
    # the caption as the temporal convolutions' own input (temporal_text: film, the recipe's layers) at this budget
    film_config, film = train_stage2(base, _hash(info["losses"][-5:], s.seed), RECIPE, s, _steps(s), cache,
                                     "text-film", log)
    text_film = _variant(base, film_config, film, s, cases, held, test_cases)
    result = {"settings": asdict(s), "given_frames": given, "noise_leak": leak, "spatial_reach": spatial,
              "one_motion": one_motion, "text_film": text_film,
              "input_gain": budget.input_gain(base, cases, s.frames, s.seed + 23), "machine": _machine()}
    log(json.dumps(report.jsonable(result["given_frames"])) + "\n" + json.dumps(result["input_gain"]) + "\n"
        + json.dumps(leak) + "\n" + json.dumps(report.jsonable(spatial)))
    with open(os.path.join(out, "mechanism.json"), "w") as f:
        json.dump(report.jsonable(result), f, indent=1)
    return result


def _one_motion(base, info, s: Settings, cache: Cache, log) -> dict:
    """The recipe at the study's budget on clips that all move one way (``budget.one_motion_batches``): can the
    temporal layers displace a shape at all when no cue has to be read? Probed and sampled on clips of that motion."""
    config = stage2.stage2_config(PAPER_LAYERS, _steps(s), s.frames, s.batch, s.seed, "(toy)")
    key = _hash("one-motion", _hash(info["losses"][-5:], s.seed), PAPER_LAYERS.key(), _steps(s), s.frames, s.batch,
                s.seed, budget.ONE_MOTION)

    def make():
        log(f"stage 2 (one motion, {' '.join(budget.ONE_MOTION)}): {_steps(s)} steps")
        t0 = time.perf_counter()
        state, losses = stage2.train_temporal(base, config, log=log, batches=budget.one_motion_batches(config))
        return {"state": state, "losses": losses, "seconds": time.perf_counter() - t0}

    trained = cache.get("stage2-one-motion", key, make, log)
    world_cases = budget.one_motion_cases(s.probe_cases, s.frames, s.seed + 12, held_out=False)
    held = budget.one_motion_cases(s.probe_cases, s.frames, s.seed + 11, held_out=True)
    out = _variant(base, config, trained, s, world_cases, held, held)
    out["motion"] = " ".join(budget.ONE_MOTION)
    return out


SAMPLED = ("direction_accuracy", "median_along", "appearance_kept", "warp_error", "truth_psnr", "hold_psnr")


def _variant(base, config, trained: dict, s: Settings, world_cases, held, sampled_cases,
             given_frames: bool = False) -> dict:
    """A diagnostic run's figures: the probe at the pure-noise step on ``world_cases`` and ``held`` (and with 1-3
    given frames), clips sampled from the first frames of ``sampled_cases``, and its training minutes. Call it inside
    the run's own context (``stage2.spatial_reach``) where it has one."""
    import contextlib

    with contextlib.ExitStack() as stack:
        sampler = sampler_for(base, config, trained["state"], s, stack)
        pure = _pure_noise(sampler)
        out = {"probe_world": diagnose.toy_probe(sampler, world_cases, s.frames, seed=s.seed + 21)[pure],
               "probe_held_out": diagnose.toy_probe(sampler, held, s.frames, seed=s.seed + 22)[pure]}
        if given_frames:
            out["given_frames"] = budget.given_frames_probe(sampler, world_cases, s.frames, s.seed + 21)
        sampled = evaluate.image_to_video(sampler, sampled_cases, s.frames, s.seed + 100)["summary"]
    out["sampled"] = {k: sampled[k] for k in SAMPLED}
    out["seconds"] = trained["seconds"]
    return out


def rejudge_base_gates(out: str, names=("results.json", "base_norm_groups_8.json"), log=print) -> dict:
    """A finished study's base gates judged again with the current ``gates.py``: the same base (from the cache; a
    study whose base is not cached is left as it is), the same gate cases and sampling seed, hence the same pictures;
    only the judging is new. Figures the change cannot touch (noise-like, colour drawn, saturation) must come back
    equal, or the pictures were not the same and nothing is written. Each file keeps what it said before under
    ``base.samples.judged_before`` / ``base.truth.judged_before``."""
    from . import gates, toybase, world

    done = {}
    for name in names:
        path = os.path.join(out, name)
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            results = json.load(f)
        known = {k: tuple(v) if isinstance(v, list) else v for k, v in results["settings"].items()
                 if k in Settings.__dataclass_fields__}
        s = Settings(**known)
        cache = Cache(out)
        if not os.path.isfile(os.path.join(cache.dir, f"base-{s.stage1_prediction}-{base_cache_key(s)}.pt")):
            log(f"{name}: its base is not in the cache; left as it is")
            continue
        base, info = train_base(s, cache, log=lambda line: None)
        truth = gates.truth_statistics(256, s.seed + 1)
        cases = ladder.fixed_cases(s.gate_samples, world.STAGE1_CLIP, s.seed + 5, held_out=False)
        samples = toybase.sample_images(base, [c.video_caption() for c in cases], cfg=3.0, seed=s.seed + 5,
                                        prediction_type=info["prediction_type"])
        judged = gates.sampled_statistics(samples, cases, truth)
        before = results["base"]["samples"]
        for key in ("noise_like", "colour_drawn", "saturation"):
            if abs(judged[key] - before[key]) > 1e-6:
                raise RuntimeError(f"{name}: {key} came back {judged[key]:.6f}, not {before[key]:.6f}: these are "
                                   "not the study's pictures (another base or sampler); nothing written")
        # the first judging's figures stay "before" (judged again twice, the second must not call the first "old")
        judged["judged_before"] = before.get("judged_before") or {k: before[k] for k in ("shape_drawn",
                                                                                           "trail_behind", "passes")}
        results["base"]["samples"] = judged
        if "truth" in results["base"]:
            old_truth = results["base"]["truth"]
            truth["judged_before"] = old_truth.get("judged_before") or {k: old_truth[k] for k in ("shape_drawn",
                                                                                                  "trail_behind")}
            results["base"]["truth"] = truth
        with open(path, "w") as f:
            json.dump(report.jsonable(results), f, indent=1)
        done[name] = judged
        log(f"{name}: shape drawn {before['shape_drawn']:.3f} -> {judged['shape_drawn']:.3f}, trail behind "
            f"{before['trail_behind']:.3f} -> {judged['trail_behind']:.3f}; passes: {judged['passes']}")
    return done


def run_summary(results: dict, made_by: str) -> dict:
    """What the report compares of another whole run (another seed, another base): its settings, machine, minutes,
    base gates, stage-2 held-out losses, ladder and verdicts, from that run's ``results.json``."""
    results = copy.deepcopy(results)  # the summary is its own: editing it leaves the run's results as they were
    return {"made_by": made_by, "settings": results["settings"], "recipe": results["recipe"],
            "machine": results["machine"], "seconds": results["seconds"],
            "base": {"final_loss": sum(results["losses"]["stage1"][-20:]) / 20, "samples": results["base"]["samples"],
                     "motion_words": results["base"]["motion_words"]},
            "stage2_held_out_loss": {name: results["losses"][name]["held_out"][-1][1] for name in ("v_ztsnr", "eps")},
            "ladder": [{k: r[k] for k in ("rung", "holds", "figures")} for r in results["ladder"]],
            "verdicts": results["verdicts"]}


def keep_seed(path: str, out: str, made_by: str) -> str:
    """``run_summary`` of the finished study at ``path`` written as ``seed_N.json`` in ``out``; refuses a study with
    the seed of ``out``'s own (that is the study itself, not another seed)."""
    with open(path) as f:
        other = json.load(f)
    seed = other["settings"]["seed"]
    own = os.path.join(out, "results.json")
    if os.path.isfile(own):
        with open(own) as f:
            if json.load(f)["settings"]["seed"] == seed:
                raise SystemExit(f"{path} has seed {seed}, the seed of {own}: not another seed")
    target = os.path.join(out, f"seed_{seed}.json")
    with open(target, "w") as f:
        json.dump(report.jsonable(run_summary(other, made_by or path)), f, indent=1)
    return target
