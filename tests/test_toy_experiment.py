"""The toy AtomoVideo experiment (experiments/toy_atomovideo): its world, the truth it measures with, and the whole
pipeline at test size (stage 1, both stage-2 runs, every measurement, the report)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from experiments.toy_atomovideo import measure, run, world
from experiments.toy_atomovideo.toybase import LinearCodec


def test_codec_is_an_exact_round_trip():
    # latents = M x with orthonormal-column M: decoding is exact up to float32 round-off of a 4x3 product (~1e-7)
    x = torch.rand(2, 3, world.SIZE, world.SIZE) * 2 - 1
    codec = LinearCodec()
    z = codec.encode(x).latent_dist.mean
    assert z.shape == (2, 4, world.SIZE, world.SIZE)
    assert torch.allclose(codec.decode(z).sample, x, atol=1e-6)
    assert 0.5 < float(z.std()) < 1.5  # about unit variance, as SD latents after scaling


def test_world_truth_and_split():
    assert not set(world.HELD_OUT_SHAPES) & set(world.TRAIN_SHAPES)
    assert not set(world.HELD_OUT_BACKGROUNDS) & set(world.TRAIN_BACKGROUNDS)
    gen = torch.Generator().manual_seed(0)
    for i in range(40):
        held_out = i % 2 == 1
        case = world.random_case(gen, 8, held_out=held_out)
        assert (case.shape in world.HELD_OUT_SHAPES) == held_out
        assert world.fits(case, 8)
        assert case.video_caption().startswith(f"moves {case.direction} {case.speed} a {case.colour} {case.shape}")
        assert math.dist(world.COLOURS[case.colour], case.background_rgb) >= world.MIN_CONTRAST
        if case.shape in ("square", "disc", "cross", "diamond"):  # symmetric: the mask's centroid is the centre
            for frame in (0, 7):
                mask = world.shape_mask(case, frame)
                ys, xs = torch.nonzero(mask, as_tuple=True)
                centroid = ((xs.float() + 0.5).mean() / world.SUPERSAMPLE, (ys.float() + 0.5).mean() / world.SUPERSAMPLE)
                assert math.dist(centroid, case.centre(frame)) < 0.15  # the 4x grid's quantisation


def test_tracker_recovers_the_known_velocity():
    gen = torch.Generator().manual_seed(1)
    errors = []
    for i in range(60):
        case = world.random_case(gen, 8, held_out=i % 2 == 0)
        video = world.render(case, 8)
        estimated = measure.velocity(measure.track(video, video[0], case))
        errors.append(math.dist(estimated, case.velocity))
        assert measure.motion_figures(estimated, case.velocity)["direction_ok"], case
        # a deliberate bug, time reversed: the same tracker must call the direction wrong
        backwards = measure.velocity(measure.track(video.flip(0), video[-1], _at_end(case, 8)))
        assert not measure.motion_figures(backwards, case.velocity)["direction_ok"]
    assert sum(errors) / len(errors) < 0.03 and max(errors) < 0.15  # px/frame; speeds are 0.5 and 1.0
    still = world.render(case, 1).expand(8, -1, -1, -1)
    figures = measure.motion_figures(measure.velocity(measure.track(still, still[0], case)), case.velocity)
    assert figures["speed"] < measure.MIN_SPEED and not figures["direction_ok"] and abs(figures["along"]) < 0.05


def _at_end(case: world.Case, frames: int) -> world.Case:
    from dataclasses import replace

    return replace(case, start=case.centre(frames - 1))


def test_motion_figures():
    assert measure.motion_figures((0.0, -1.0), (0.0, -1.0)) == {"direction_ok": True, "speed": 1.0,
                                                                  "speed_error": 0.0, "along": 1.0}
    diagonal = measure.motion_figures((0.6, 0.5), (1.0, 0.0))  # 39.8 degrees off: right
    assert diagonal["direction_ok"] and diagonal["along"] == pytest.approx(0.6)
    assert not measure.motion_figures((0.5, 0.6), (1.0, 0.0))["direction_ok"]  # 50.2 degrees off
    assert not measure.motion_figures((0.05, 0.0), (1.0, 0.0))["direction_ok"]  # too slow to count as moving


def test_reduced_run_learns(tmp_path):
    """The whole pipeline at test size: the properties that hold even here, with margins taken from this run's own
    figures (held-out v loss 0.43 -> 0.34, epsilon 0.186 -> 0.179, frame-0 MSE 0.04 against the untrained layers'
    0.25, whose frame 0 is at 6 dB)."""
    results = run.run(run.REDUCED, str(tmp_path), log=lambda _line: None)
    for name in ("report.md", "results.json", "loss_curves.png", "image_to_video.png", "text_control.png",
                 "long_video.png", "image_model_samples.png"):
        assert (tmp_path / name).stat().st_size > 0, name
    stage1 = results["losses"]["stage1"]
    assert sum(stage1[-5:]) / 5 < 0.5 * sum(stage1[:5]) / 5
    v_start, v_end = (p[1] for p in results["losses"]["v_ztsnr"]["held_out"][::len(
        results["losses"]["v_ztsnr"]["held_out"]) - 1])
    assert v_end < 0.9 * v_start
    eps = results["losses"]["eps"]["held_out"]
    assert eps[-1][1] < eps[0][1]
    i2v = {k: m["image_to_video"]["summary"] for k, m in results["models"].items()}
    assert i2v["untrained"]["frame0_psnr"] < 10.0  # it ignores the image: a frame of the image model
    assert i2v["v_ztsnr"]["frame0_mse"] < 0.5 * i2v["untrained"]["frame0_mse"]
    report = (tmp_path / "report.md").read_text()
    assert "## Verdicts" in report and "first-frame fidelity" in report
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["models"]["v_ztsnr"]["image_to_video"]["summary"]["count"] == run.REDUCED.test_cases
