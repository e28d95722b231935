"""Every workflow in example_workflows/ loads in ComfyUI's terms (node ids exist, links type-check, widget values fit the
node definitions, the files are what tools/make_workflows.py writes) and the API-format ones run headless end to
end on random real-size weights at tiny latents, producing finite frames of the requested count."""

from __future__ import annotations

import gc
import json
import pathlib
import sys

import pytest
import torch
from host_models import random_atomovideo

REPO = pathlib.Path(__file__).resolve().parents[2]
UI = sorted((REPO / "example_workflows").glob("*.json"))
API = sorted((REPO / "example_workflows" / "api").glob("*.json"))
FRONT_END_ONLY = {"Note", "MarkdownNote"}  # nodes of the front end alone: no class in ComfyUI's node list
sys.path.insert(0, str(REPO / "tools"))


def _spec(cls, name):
    spec = cls.INPUT_TYPES()
    return spec.get("required", {}).get(name) or spec.get("optional", {}).get(name)


def test_there_are_workflows_for_each_use():
    names = {p.stem for p in API}
    assert {"animatediff_text_to_video", "animatediff_long_text_to_video", "animatediff_prompt_travel",
            "pia_image_to_video",
            "atomovideo_image_to_video", "atomovideo_refine", "atomovideo_long_video"} <= names
    twins = {json.loads(p.read_text())["extra"]["info"]["api_workflow"] for p in UI}  # UI files are named by title
    assert twins == {f"api/{name}.json" for name in names} and len(UI) == len(API)


@pytest.mark.parametrize("path", UI, ids=[p.stem for p in UI])
def test_ui_workflow_node_ids_links_and_widgets(pack, path):
    import nodes

    workflow = json.loads(path.read_text())
    workflow["nodes"] = [n for n in workflow["nodes"] if n["type"] not in FRONT_END_ONLY]  # the notes
    by_id = {n["id"]: n for n in workflow["nodes"]}
    for node in workflow["nodes"]:
        assert node["type"] in nodes.NODE_CLASS_MAPPINGS, f"{path.name}: unknown node {node['type']}"
    for link_id, src, src_slot, dst, dst_slot, link_type in workflow["links"]:
        source, target = by_id[src], by_id[dst]
        source_cls = nodes.NODE_CLASS_MAPPINGS[source["type"]]
        assert source_cls.RETURN_TYPES[src_slot] == link_type
        assert link_id in source["outputs"][src_slot]["links"]
        socket = target["inputs"][dst_slot]
        assert socket["link"] == link_id and socket["type"] == link_type
        declared = _spec(nodes.NODE_CLASS_MAPPINGS[target["type"]], socket["name"])
        assert declared is not None and declared[0] in (link_type, "*"), f"{target['type']}.{socket['name']}"
    for node in workflow["nodes"]:  # every required socket is connected
        cls = nodes.NODE_CLASS_MAPPINGS[node["type"]]
        linked = {s["name"] for s in node["inputs"] if s["link"] is not None}
        for name, kind in cls.INPUT_TYPES().get("required", {}).items():
            if not isinstance(kind[0], list) and kind[0] not in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"):
                assert name in linked, f"{path.name}: {node['type']}.{name} is not connected"


def test_committed_files_are_what_the_generator_writes(pack, tmp_path):
    import make_workflows

    import nodes

    written = make_workflows.write_all(nodes, tmp_path)
    for new in written:
        committed = REPO / "example_workflows" / new.relative_to(tmp_path)
        assert json.loads(committed.read_text()) == json.loads(new.read_text()), f"regenerate {committed.name}"


@pytest.fixture(scope="module")
def models_dir(pack, ours, tmp_path_factory):
    """Random real-size files under the names the workflows use."""
    import random_checkpoint
    from ipadapter_weights import flat, image_proj_shapes, ip_layer_shapes, nested, random_weights
    from safetensors.torch import save_file
    from weights import animatediff_state_dict

    root = tmp_path_factory.mktemp("models")
    random_checkpoint.link_into(root, "checkpoints", random_checkpoint.sd15_checkpoint(), "v1-5-pruned-emaonly.safetensors")
    random_checkpoint.link_into(root, "clip_vision", random_checkpoint.clip_vision_h(),
                                "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors")
    (root / "motion_modules").mkdir()
    torch.save({"state_dict": animatediff_state_dict("pia", seed=1, dtype=torch.float16)},
               root / "motion_modules" / "pia.ckpt")
    torch.save(animatediff_state_dict("v3", seed=4, dtype=torch.float16), root / "motion_modules" / "v3_sd15_mm.ckpt")
    fmt = ours("atomo_core.atomovideo_format")
    atomo = random_atomovideo(ours, seed=2)
    fmt.save_atomovideo(atomo, str(root / "motion_modules" / "atomovideo_sd15.safetensors"), dtype=torch.float16)
    del atomo
    (root / "ipadapter").mkdir()
    save_file(flat(nested(image_proj_shapes("base"), ip_layer_shapes(), random_weights(3))),
              str(root / "ipadapter" / "ip-adapter_sd15.safetensors"))
    gc.collect()
    from comfy.cli_args import args

    old, args.fp16_unet = args.fp16_unet, True  # halves the CPU RAM of the UNet; compute stays fp32 on CPU
    yield root
    args.fp16_unet = old


# name -> (node inputs to set by class, frames expected)
TINY = {
    "animatediff_text_to_video": ({"EmptyLatentImage": dict(width=64, height=64, batch_size=8)}, 8),
    "animatediff_long_text_to_video": ({"EmptyLatentImage": dict(width=64, height=64, batch_size=24),
                                        "AtomoContextWindows": dict(context_length=8, context_overlap=2)}, 24),
    # all 48 frames (the schedule's last keyframe is frame 47), windows of 16 with FreeNoise, 64x64
    "animatediff_prompt_travel": ({"EmptyLatentImage": dict(width=64, height=64)}, 48),
    "pia_image_to_video": ({"AtomoImageInjectConditioning": dict(width=64, height=64, frames=8)}, 8),
    "atomovideo_image_to_video": ({"AtomoImageInjectConditioning": dict(width=64, height=64, frames=8)}, 8),
    "atomovideo_refine": ({"AtomoImageInjectConditioning": dict(width=64, height=64, frames=6)}, 6),
    "atomovideo_long_video": ({"AtomoImageInjectConditioning": dict(width=64, height=64, frames=8),
                               "AtomoPredictNextFrames": dict(context_frames=4, new_frames=6, total_frames=20)}, 20),
}


@pytest.mark.parametrize("path", API, ids=[p.stem for p in API])
def test_api_workflow_runs_headless(pack, models_dir, path):
    import run_workflow

    prompt = json.loads(path.read_text())
    settings, frames = TINY[path.stem]
    for node in prompt.values():
        node["inputs"].update(settings.get(node["class_type"], {}))
        if "steps" in node["inputs"]:
            node["inputs"]["steps"] = 2
        if node["class_type"] == "AtomoImageInjectConditioning" and "refine" in node["_meta"]["title"]:
            node["inputs"].update(width=128, height=128)  # the x2 upscale of the 64x64 first pass
    overrides = {"seed": 7}
    if any(node["class_type"] == "LoadImage" for node in prompt.values()):  # image to video
        overrides["image"] = str(REPO / "tests" / "data" / "bird.png")
    result = run_workflow.run_workflow(prompt, models_dirs=[str(models_dir)], overrides=overrides)
    out = result["frames"]
    size = 128 if "refine" in path.stem else 64
    assert out.shape == (frames, size, size, 3)
    assert torch.isfinite(out).all()
    # the file Save Video wrote: an H.264 mp4 with every frame, at the size made
    (video,) = [f for f in result["files"] if f.suffix == ".mp4"]
    import av

    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    assert len(decoded) == frames and decoded[0].shape == (size, size, 3)
    assert abs(decoded[0].astype(float) / 255 - out[0].numpy()).mean() < 0.08  # the same picture, H.264-compressed
    run_workflow.release()
    gc.collect()
