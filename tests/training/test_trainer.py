"""The trainer on its tiny base, end to end on CPU: steps run, the loss falls on a fixed batch, only the intended
weights change, a stopped run resumes bit-identically, two gloo processes train the same weights, the export loads."""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from tolerances import FLOAT32_REORDERED, assert_close_scaled

from atomo_core.formats import load_motion_module
from atomo_core.training.config import ConfigError, load_config
from atomo_core.training.distributed import World
from atomo_core.training.setup import build_run
from atomo_core.training.trainer import micro_step, train

REPO = pathlib.Path(__file__).resolve().parents[2]
SITE = pathlib.Path(__file__).resolve().parent / "site"


def _write_videos(root: pathlib.Path, count: int = 4, frames: int = 14, size: int = 64) -> None:
    """Small H.264 clips of a coloured square moving right over grey, each with a sidecar caption; plus a broken
    file, a text file and a too-short clip, which the index must skip and count."""
    import av

    root.mkdir(parents=True, exist_ok=True)
    for v in range(count + 1):
        n = frames if v < count else 3
        with av.open(str(root / f"clip{v}.mp4"), "w") as container:
            stream = container.add_stream("libx264", rate=8)
            stream.width = stream.height = size
            stream.pix_fmt = "yuv420p"
            for i in range(n):
                a = np.full((size, size, 3), 60, np.uint8)
                x = (4 + 3 * i + 9 * v) % (size - 16)
                a[20:36, x : x + 16] = (200, (60 + 40 * v) % 256, 80)
                container.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
            container.mux(stream.encode(None))
        (root / f"clip{v}.txt").write_text(f"a square moves right, clip {v}")
    (root / "broken.mp4").write_bytes(os.urandom(2000))
    (root / "notes.mov").write_text("not a video")


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("train") / "videos"
    _write_videos(root)
    return root


def _config(videos, out, **extra):
    overrides = {"base_model": "tiny", "output_dir": str(out), "data.videos": str(videos), "steps": 4, "frames": 6,
                 "resolution": 64, "batch_size": 2, "save_every": 2, "validate_every": 0, "precision": "fp32",
                 "data.workers": 0, "conditioning.max_given": 2, "max_frames": 16, "data.stride": 2,
                 "gradient_checkpointing": False, "log_every": 1, **extra}
    return load_config(None, [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()])


WORLD = World(0, 1, 0, torch.device("cpu"))


def test_a_run_trains_saves_exports_and_counts_bad_files(videos, tmp_path):
    bird = str(REPO / "tests" / "data" / "bird.png")
    config = _config(videos, tmp_path / "run", gradient_checkpointing=True, validate_every=4,
                     **{"validation.images": f"[{bird}]", "validation.steps": 2, "validation.image_cfg": 2.0})
    last = train(config, WORLD)
    assert last["step"] == 4 and np.isfinite(last["loss"])
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    start = log[0]
    assert start["event"] == "start" and start["videos"] == 4
    reasons = sorted(r.split(":")[0] for _, r in start["skipped"])
    assert reasons == ["not a video", "too short", "unreadable"]
    assert [r["step"] for r in log if r.get("event") == "save"] == [2, 4]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_00000002.pt",
                                                                                    "step_00000004.pt"]
    module = load_motion_module(str(tmp_path / "run" / "motion_module.safetensors"))
    assert module.config.family == "atomovideo" and module.config.prediction_type == "v_prediction"
    assert module.config.widths == (32, 64, 64, 64) and module.conv_in_weight.shape == (32, 9, 3, 3)
    assert module.config.temporal_text_dim == 32  # temporal_text: film (the default) reads the tiny base's captions
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "motion_module_step00000004.safetensors"), "pt") as f:
        header = f.metadata()
    assert header["training_step"] == "4" and json.loads(header["training_config"])["frames"] == 6
    (validation,) = [r for r in log if r.get("event") == "validation"]
    (clip,) = validation["clips"]
    assert pathlib.Path(clip["path"]).is_file() and clip["frames"] == 6 and 0 <= clip["first_frame_ssim"] <= 1


def test_gradient_accumulation_consumes_its_micro_batches(videos, tmp_path):
    from atomo_core.training.trainer import train_step

    run = build_run(_config(videos, tmp_path / "accumulate", grad_accumulation=3, batch_size=1), WORLD)
    figures = train_step(run, iter(run.loader))
    assert figures["data"]["position"] == 3 and np.isfinite(figures["loss"])


def test_loss_falls_on_a_fixed_batch_and_only_the_trainable_weights_move(videos, tmp_path):
    run = build_run(_config(videos, tmp_path / "fixed", learning_rate=1e-3), WORLD)
    frozen = {k: v.clone() for k, v in run.base.unet.state_dict().items() if "image_weight" not in k}
    frozen_vae = {k: v.clone() for k, v in run.base.vae.state_dict().items()}
    trainable_before = {k: v.clone() for k, v in run.model.trainable_state_dict().items()}
    batch = next(iter(run.loader))
    state = run.generator.get_state()
    losses = []
    for _ in range(8):
        run.generator.set_state(state)  # the same noise, timesteps, given frames and dropout every time
        loss = micro_step(run, batch)
        loss.backward()
        run.optimizer.step()
        run.optimizer.zero_grad()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses
    after = run.base.unet.state_dict()
    assert all(torch.equal(after[k], v) for k, v in frozen.items())  # the base UNet is bit-identical
    assert all(torch.equal(run.base.vae.state_dict()[k], v) for k, v in frozen_vae.items())
    moved = [k for k, v in run.model.trainable_state_dict().items() if not torch.equal(v, trainable_before[k])]
    assert "conv_in.image_weight" in moved and any(".temporal_convs." in k for k in moved)
    assert any(".text_film." in k for k in moved)  # the caption's FiLM learns (temporal_text: film, the default)
    assert any("motion_modules" in k and "proj_out" in k for k in moved)


def test_temporal_text_none_builds_the_papers_layers_and_film_reads_the_caption(videos, tmp_path):
    from atomo_core.training.setup import motion_module_for

    def reading(config):
        module = motion_module_for(config, (32, 64, 64, 64), text_dim=32)
        return [getattr(layer, "reads_text", False) for site, layer in module.placements()
                if site.kind == "temporal_conv"]

    assert all(reading(_config(videos, tmp_path / "film")))
    assert not any(reading(_config(videos, tmp_path / "none", temporal_text="none")))
    with pytest.raises(ConfigError, match=r"temporal_text must be film \| none, got 'cross'"):
        _config(videos, tmp_path / "bad", temporal_text="cross").validate()


def test_a_stopped_run_resumes_bit_identically(videos, tmp_path):
    straight = _config(videos, tmp_path / "straight")
    train(straight, WORLD)
    stopped = _config(videos, tmp_path / "stopped")
    train(stopped, WORLD, stop_after=3)  # dies after step 3; the newest checkpoint is step 2
    assert sorted(p.name for p in (tmp_path / "stopped" / "checkpoints").iterdir()) == ["step_00000002.pt"]
    train(stopped, WORLD)  # the same command again: resumes at 2, redoes 3 and 4
    a = load_motion_module(str(tmp_path / "straight" / "motion_module.safetensors"))
    b = load_motion_module(str(tmp_path / "stopped" / "motion_module.safetensors"))
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa) and torch.equal(a.conv_in_weight, b.conv_in_weight)
    log = [json.loads(x) for x in (tmp_path / "stopped" / "log.jsonl").read_text().splitlines()]
    straight_log = [json.loads(x) for x in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    loss = {r["step"]: r["loss"] for r in straight_log if "loss" in r}
    resumed = [r for r in log if "loss" in r][-2:]
    assert [(r["step"], r["loss"]) for r in resumed] == [(3, loss[3]), (4, loss[4])]
    # The comparison has teeth: another seed (other data order, noise and dropout) ends elsewhere.
    other = dataclasses.replace(straight, output_dir=str(tmp_path / "other"), seed=1)
    train(other, WORLD)
    w = load_motion_module(str(tmp_path / "other" / "motion_module.safetensors")).state_dict()
    assert not all(torch.equal(w[k], sa[k]) for k in sa)


def test_two_gloo_processes_train_identical_weights(videos, tmp_path):
    out = tmp_path / "ddp"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    sets = ["base_model=tiny", f"output_dir={out}", f"data.videos={videos}", "steps=2", "frames=6", "resolution=64",
            "batch_size=1", "save_every=2", "validate_every=0", "precision=fp32", "data.workers=0",
            "conditioning.max_given=2", "max_frames=16", "data.stride=2", "gradient_checkpointing=false"]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29517",
               str(REPO / "tools" / "train.py"), *[a for s in sets for a in ("--set", s)]]
    proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2
    (save,) = [r for r in log if r.get("event") == "save"]
    assert save["ranks"] == 2 and save["ranks_identical"]
    assert load_motion_module(str(out / "motion_module.safetensors")).config.family == "atomovideo"


def test_latent_cache_encodes_each_clip_once(videos, tmp_path):
    from atomo_core.training.trainer import encode_clips

    run = build_run(_config(videos, tmp_path / "cache", **{"data.cache_latents": True}), WORLD)
    calls = []
    real = run.base.encode_video

    def counting(pixels):
        calls.append(pixels.shape[0])
        return real(pixels)

    run.base.encode_video = counting
    batch = next(iter(run.loader))
    first = encode_clips(run, batch)
    assert len(calls) == 2 and len(list((tmp_path / "cache" / "latent_cache").rglob("*.safetensors"))) == 2
    again = encode_clips(run, batch)
    assert len(calls) == 2 and torch.equal(first, again)  # read back, not encoded again
    run.latent_cache = None
    # what the VAE gives for the whole batch at once: another batch shape, so float32 round-off apart
    assert_close_scaled(encode_clips(run, batch), first, FLOAT32_REORDERED, "cached vs batch-encoded latents")


def _torchrun(nproc: int, out, videos, steps: int, port: int):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(SITE), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1")
    sets = ["base_model=tiny", f"output_dir={out}", f"data.videos={videos}", f"steps={steps}", "frames=6",
            "resolution=64", "batch_size=1", "save_every=2", "validate_every=0", "precision=fp32", "data.workers=0",
            "max_frames=16", "data.stride=2", "gradient_checkpointing=false", "log_every=1"]
    launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={port}"] \
        if nproc > 1 else [sys.executable]
    proc = subprocess.run([*launcher, str(REPO / "tools" / "train.py"), *[a for s in sets for a in ("--set", s)]],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def test_a_run_resumes_on_another_number_of_processes(tmp_path):
    """2 processes -> 1 -> 2: weights, optimiser and schedule continue; the data continue from the same global
    position of the same order (nothing of the epoch repeated or skipped); the log says what changed."""
    from atomo_core.training.data import permutation

    videos = tmp_path / "nine"
    _write_videos(videos, count=9)
    out = tmp_path / "elastic"
    _torchrun(2, out, videos, steps=2, port=29519)  # global samples 0..3 of epoch 0 (rank 0 logs 0 and 2)
    _torchrun(1, out, videos, steps=6, port=0)  # one process: samples 4..7 of the same epoch, in order
    _torchrun(2, out, videos, steps=8, port=29521)  # two again: sample 8 is drop_last's remainder; epoch 1 begins
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    starts = [r for r in log if r.get("event") == "start"]
    assert [s["world_size"] for s in starts] == [2, 1, 2] and [s["step"] for s in starts] == [0, 2, 6]
    assert starts[1]["resized"]["saved_world_size"] == 2 and starts[1]["resized"]["global_position"] == 4
    assert starts[2]["resized"]["saved_world_size"] == 1 and starts[2]["resized"]["global_position"] == 8
    steps = {r["step"]: r for r in log if "loss" in r}
    assert sorted(steps) == list(range(1, 9)) and all(np.isfinite(r["loss"]) for r in steps.values())
    order = permutation(9, 0, 0).tolist()
    assert [steps[s]["samples"][0] for s in (1, 2)] == [order[0], order[2]]  # rank 0's share on two processes
    assert [steps[s]["samples"][0] for s in (3, 4, 5, 6)] == order[4:8]  # one process: the rest, in order
    assert [steps[s]["global_position"] for s in (3, 4, 5, 6)] == [5, 6, 7, 8]
    assert [(steps[s]["epoch"], steps[s]["global_position"]) for s in (7, 8)] == [(1, 2), (1, 4)]
    assert [steps[s]["samples"][0] for s in (7, 8)] == [permutation(9, 0, 1).tolist()[k] for k in (0, 2)]
    saves = [r for r in log if r.get("event") == "save"]
    assert [s["step"] for s in saves] == [2, 4, 6, 8] and [s["ranks"] for s in saves] == [2, 1, 1, 2]
    module = load_motion_module(str(out / "motion_module.safetensors"))
    assert module.config.family == "atomovideo"
