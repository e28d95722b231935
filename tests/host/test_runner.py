"""tools/run_workflow.py, the headless runner: a core-nodes SD-1.5 workflow on a random checkpoint, run
in-process with overrides (seed, frames, prompt), its video and strip files, Cancel, clear errors for invalid
workflows, and the command line in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import comfy_host
import pytest
import torch

RUNNER = comfy_host.REPO / "tools" / "run_workflow.py"
CKPT = "random_sd15.safetensors"


def workflow(ckpt: str = CKPT) -> dict:
    """CheckpointLoaderSimple -> CLIPTextEncode x2 -> EmptyLatentImage (64x64, 4) -> KSampler (2 steps)
    -> VAEDecode -> SaveImage, with the text encoders titled "Positive" and "Negative"."""
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a red fox", "clip": ["1", 1]},
            "_meta": {"title": "Positive"},
        },
        "3": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "blurry", "clip": ["1", 1]},
            "_meta": {"title": "Negative"},
        },
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 4}},
        "5": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["1", 0],
                "positive": ["2", 0],
                "negative": ["3", 0],
                "latent_image": ["4", 0],
                "seed": 0,
                "steps": 2,
                "cfg": 5.0,
                "sampler_name": "euler",
                "scheduler": "normal",
                "denoise": 1.0,
            },
        },
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "SaveImage", "inputs": {"images": ["6", 0], "filename_prefix": "runner_test"}},
    }


@pytest.fixture(scope="module")
def models_dir(pack, tmp_path_factory):
    """A models root whose checkpoints/ holds the cached random SD-1.5 file, and fp16 UNet storage while we run."""
    import random_checkpoint
    from comfy.cli_args import args

    root = tmp_path_factory.mktemp("models")
    random_checkpoint.link_into(root, "checkpoints", random_checkpoint.sd15_checkpoint(seed=0), CKPT)
    old, args.fp16_unet = args.fp16_unet, True  # halves the CPU RAM of the fp32 UNet; compute stays fp32
    yield root
    args.fp16_unet = old


def run(rw, models_dir, **overrides):
    return rw.run_workflow(workflow(), overrides=overrides, models_dirs=[models_dir])


def executed(result) -> set[str]:
    for event, data in result["status"]["messages"]:
        if event == "execution_cached":
            return set(workflow()) - set(data["nodes"])
    return set()


@pytest.fixture(scope="module")
def runs(rw, models_dir):
    """Seeds 1, 2, 1: the third run re-executes the sampler (its cache entry was dropped by the second)."""
    return [run(rw, models_dir, seed=seed, frames=3, prompt="a grey wolf") for seed in (1, 2, 1)]


def test_frames_come_back_with_overrides_applied(runs):
    result = runs[0]
    frames = result["frames"]
    assert frames.shape == (3, 64, 64, 3) and frames.dtype == torch.float32
    assert torch.isfinite(frames).all() and 0 <= frames.min() and frames.max() <= 1 and frames.std() > 0.01
    prompt = result["prompt"]
    assert prompt["5"]["inputs"]["seed"] == 1 and prompt["4"]["inputs"]["batch_size"] == 3
    assert prompt["2"]["inputs"]["text"] == "a grey wolf" and prompt["3"]["inputs"]["text"] == "blurry"
    assert list(result["images"]) == ["7"] and len(result["outputs"]["7"]["images"]) == 3
    assert result["status"]["success"]


def test_seed_override_is_deterministic_and_seeds_differ(runs):
    first, other, again = (r["frames"] for r in runs)
    assert "5" in executed(runs[2]), "the repeat run must sample again, not read the cache"
    assert torch.equal(first, again)
    assert (first - other).abs().mean() > 1e-3


def test_save_video_workflow_gives_its_frames_and_mp4(rw, models_dir):
    """Create Video -> Save Video (the shipped workflows' output): the frames are Create Video's images and the
    written mp4 decodes to them."""
    import av

    prompt = workflow()
    prompt["7"] = {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 8.0}}
    prompt["8"] = {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "runner_test/video",
                                                         "format": "mp4", "codec": "h264"}}
    result = rw.run_workflow(prompt, overrides={"seed": 3, "frames": 5}, models_dirs=[models_dir])
    frames = result["frames"]
    assert frames.shape == (5, 64, 64, 3) and list(result["images"]) == ["8"]
    (video,) = result["files"]
    assert video.suffix == ".mp4" and video.is_file()
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and float(stream.average_rate) == 8.0
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 5 and decoded[0].shape == (64, 64, 3)
    assert abs(decoded[2].astype(float) / 255 - frames[2].numpy()).mean() < 0.1


def test_cancel_from_progress_callback(rw, models_dir, runs):
    steps = []

    def cancel(node_id, value, total):
        steps.append((node_id, value, total))
        rw.interrupt()

    with pytest.raises(rw.WorkflowInterrupted, match=r"node 5 \(KSampler\)"):
        rw.run_workflow(workflow(), overrides={"seed": 7, "frames": 3}, models_dirs=[models_dir], progress=cancel)
    assert steps == [("5", 1, 2)]  # stopped after the first of two steps


def test_write_video_and_strip(runs, tmp_path, rw):
    import av
    from PIL import Image

    frames = runs[0]["frames"]
    path = rw.write_video(frames, tmp_path / "clip.mp4", fps=8)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name in ("h264", "libx264") and stream.codec_context.pix_fmt == "yuv420p"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(decoded) == 3 and decoded[0].shape == (64, 64, 3)
    assert abs(decoded[0].astype(float) / 255 - frames[0].numpy()).mean() < 0.1
    odd = rw.write_video(torch.rand(2, 33, 35, 3), tmp_path / "odd.mp4", fps=12.5)
    with av.open(str(odd)) as container:
        assert [f.to_ndarray(format="rgb24").shape for f in container.decode(video=0)] == [(32, 34, 3)] * 2
    webp = Image.open(rw.write_video(frames, tmp_path / "clip.webp", fps=8))
    assert webp.n_frames == 3 and webp.size == (64, 64)
    strip = Image.open(rw.write_strip(frames, tmp_path / "strip.png"))
    assert strip.size == (3 * 64, 64)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda w: w["5"].update(class_type="NoSuchSampler"), r"node 5 \(NoSuchSampler\): unknown node class"),
        (
            lambda w: w["6"]["inputs"].update(samples=["42", 0]),
            r"node 6 \(VAEDecode\): input 'samples' is linked to node 42",
        ),
        (
            lambda w: w["6"]["inputs"].update(vae=["1", 7]),
            r"node 6 \(VAEDecode\): input 'vae' is linked to output 7 of node 1",
        ),
        (
            lambda w: w["1"]["inputs"].update(ckpt_name="missing.safetensors"),
            r"node 1 \(CheckpointLoaderSimple\): Value not in list",
        ),
        (lambda w: w["5"]["inputs"].pop("steps"), r"node 5 \(KSampler\): Required input is missing: steps"),
    ],
)
def test_invalid_workflow_raises_naming_the_node(rw, models_dir, change, message):
    prompt = workflow()
    change(prompt)
    with pytest.raises(rw.WorkflowError, match=message):
        rw.run_workflow(prompt, models_dirs=[models_dir])


def test_overrides_found_by_wiring_and_errors_for_no_match(rw):
    untitled = workflow()
    for node in untitled.values():
        node.pop("_meta", None)
    changed = rw.apply_overrides(
        untitled, {"prompt": "p", "negative": "n", "set": ["5.steps=3", "7.filename_prefix=x"]}
    )
    assert (changed["2"]["inputs"]["text"], changed["3"]["inputs"]["text"]) == ("p", "n")  # found by wiring
    assert changed["5"]["inputs"]["steps"] == 3 and changed["7"]["inputs"]["filename_prefix"] == "x"
    with pytest.raises(rw.WorkflowError, match="--set 99.steps"):
        rw.apply_overrides(workflow(), {"set": {"99.steps": 3}})
    with pytest.raises(rw.WorkflowError, match="--image"):
        rw.apply_overrides(workflow(), {"image": "/nonexistent.png"})


def test_image_override_feeds_every_load_image(rw, tmp_path):
    from PIL import Image

    pixels = (torch.rand(24, 40, 3) * 255).to(torch.uint8)
    Image.fromarray(pixels.numpy()).save(tmp_path / "still.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }
    result = rw.run_workflow(prompt, overrides={"image": tmp_path / "still.png"})
    assert result["prompt"]["1"]["inputs"]["image"] == "still.png"
    assert torch.allclose(result["frames"][0], 1 - pixels.float() / 255, atol=1e-6)
    unwired = rw.run_workflow(prompt, overrides={"image": tmp_path / "still.png"}, output_node="1")
    assert torch.allclose(unwired["frames"][0], pixels.float() / 255, atol=1e-6)  # a non-output node's own IMAGE


def _cli(*argv, timeout=600):
    env = dict(os.environ, COMFYUI_PATH=str(comfy_host.require_comfyui()))
    return subprocess.run(
        [sys.executable, str(RUNNER), *argv], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_cli_end_to_end(rw, models_dir, tmp_path, runs):
    rw.release()  # free this process's model before the subprocess loads its own
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow()))
    out, strip = tmp_path / "clip.mp4", tmp_path / "strip.png"
    dirs = [f"--{d}-directory={tmp_path / d}" for d in ("output", "input", "temp")]
    options = f"--models-dir {models_dir} --seed 3 --frames 2 --set 5.steps=1 --out {out} --strip {strip} --fp16-unet"
    proc = _cli(str(path), *options.split(), *dirs)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "2 frames of 64x64" in proc.stdout and out.stat().st_size > 0
    assert len(list((tmp_path / "output").glob("runner_test_*.png"))) == 2
    from PIL import Image

    assert Image.open(strip).size == (2 * 64, 64)


def test_cli_missing_workflow_file(tmp_path):
    proc = _cli(str(tmp_path / "nope.json"), timeout=120)
    assert proc.returncode == 2 and "cannot read workflow" in proc.stderr and "nope.json" in proc.stderr


def test_cli_invalid_workflow_exits_1(tmp_path):
    path = tmp_path / "bad.json"
    bad = workflow()
    bad["5"]["class_type"] = "NoSuchSampler"
    path.write_text(json.dumps(bad))
    proc = _cli(str(path), f"--output-directory={tmp_path}", timeout=300)
    assert proc.returncode == 1 and "node 5 (NoSuchSampler)" in proc.stderr


def test_random_clip_vision_h_loads_in_comfyui(rw):
    """The optional random CLIP-vision ViT-H file: CLIPVisionLoader's loader accepts it and encodes to the
    SD-1.5 IP-Adapter shapes, finite and image-dependent."""
    import comfy.clip_vision
    import random_checkpoint

    rw.release()
    clip_vision = comfy.clip_vision.load(str(random_checkpoint.clip_vision_h(seed=0)))
    images = torch.rand(2, 224, 224, 3, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():  # as ComfyUI runs nodes (without it autograd keeps fp32 copies of every weight)
        out = clip_vision.encode_image(images)
    assert out["image_embeds"].shape == (2, 1024) and out["penultimate_hidden_states"].shape == (2, 257, 1280)
    assert torch.isfinite(out["penultimate_hidden_states"]).all()
    assert (out["image_embeds"][0] - out["image_embeds"][1]).abs().mean() > 1e-2 * out["image_embeds"].abs().mean()
