"""Write the example workflows in both of ComfyUI's formats from one description each.

    python tools/make_workflows.py [--comfyui PATH]

For every graph below this writes ``workflows/NAME.json`` (the UI format the template browser and the editor
load: nodes with positions, sockets, links and widget values) and ``workflows/api/NAME.json`` (the API format
that ``tools/run_workflow.py`` executes and the tests run). Widget order and socket types are read from the
node definitions of a booted ComfyUI, so the files match what ComfyUI itself would save.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_workflow  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
CLIP_VISION = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
IPADAPTER = "ip-adapter_sd15.safetensors"
PIA = "pia.ckpt"
ATOMO = "atomovideo_sd15.safetensors"
POSITIVE = "a photo, gentle natural motion, high quality, detailed"
NEGATIVE = "blurry, low quality, distorted, watermark, static"


class Node:
    def __init__(self, graph, node_id, class_type, title, values):
        self.graph, self.id, self.class_type, self.title, self.values = graph, node_id, class_type, title, values

    def __getitem__(self, slot: int):
        return (self, slot)


class Graph:
    def __init__(self, name: str, description: str):
        self.name, self.description, self.nodes = name, description, []

    def add(self, class_type: str, title: str | None = None, **values) -> Node:
        node = Node(self, len(self.nodes) + 1, class_type, title, values)
        self.nodes.append(node)
        return node


def _definition(nodes_module, class_type):
    cls = nodes_module.NODE_CLASS_MAPPINGS[class_type]
    spec = cls.INPUT_TYPES()
    inputs = [(name, kind, "required") for name, kind in spec.get("required", {}).items()]
    inputs += [(name, kind, "optional") for name, kind in spec.get("optional", {}).items()]
    return cls, inputs, list(cls.RETURN_TYPES), list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)


def _input_type(kind) -> str:
    return "COMBO" if isinstance(kind[0], list) else str(kind[0])


def _default(kind):
    options = kind[1] if len(kind) > 1 and isinstance(kind[1], dict) else {}
    if isinstance(kind[0], list):
        return options.get("default", kind[0][0] if kind[0] else "")
    if kind[0] == "COMBO":
        return options.get("default", (options.get("options") or [""])[0])
    return options.get("default", {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind[0]))


def to_api(graph: Graph, nodes_module) -> dict:
    prompt = {}
    for node in graph.nodes:
        cls, inputs, _, _ = _definition(nodes_module, node.class_type)
        values = {}
        for name, kind, required in inputs:
            value = node.values.get(name)
            if isinstance(value, tuple):
                values[name] = [str(value[0].id), value[1]]
            elif value is not None:
                values[name] = value
            elif _input_type(kind) in WIDGET_TYPES and required == "required":
                values[name] = _default(kind)
        unknown = set(node.values) - {name for name, _, _ in inputs}
        if unknown:
            raise ValueError(f"{graph.name}: {node.class_type} has no inputs {sorted(unknown)}")
        title = node.title or nodes_module.NODE_DISPLAY_NAME_MAPPINGS.get(node.class_type) or node.class_type
        prompt[str(node.id)] = {"class_type": node.class_type, "inputs": values, "_meta": {"title": title}}
    return prompt


def _depths(graph: Graph) -> dict[int, int]:
    depth = {}
    for node in graph.nodes:  # nodes are added after their inputs
        parents = [v[0].id for v in node.values.values() if isinstance(v, tuple)]
        depth[node.id] = 1 + max((depth[p] for p in parents), default=-1)
    return depth


def to_ui(graph: Graph, nodes_module) -> dict:
    links, ui_nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    depth, rows = _depths(graph), {}
    for node in graph.nodes:
        _, inputs, _, _ = _definition(nodes_module, node.class_type)
        for name, _kind, _ in inputs:
            value = node.values.get(name)
            if isinstance(value, tuple):
                link_id = len(links) + 1
                source, slot = value
                _, _, source_types, _ = _definition(nodes_module, source.class_type)
                links.append([link_id, source.id, slot, node.id, None, source_types[slot], name])
                out_links.setdefault((source.id, slot), []).append(link_id)
    for order, node in enumerate(graph.nodes):
        cls, inputs, types, names = _definition(nodes_module, node.class_type)
        sockets, widgets = [], []
        for name, kind, _ in inputs:
            kind_name = _input_type(kind)
            value = node.values.get(name)
            if kind_name in WIDGET_TYPES and not isinstance(value, tuple):
                widgets.append(value if value is not None else _default(kind))
                options = kind[1] if len(kind) > 1 and isinstance(kind[1], dict) else {}
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                if options.get("image_upload"):
                    widgets.append("image")  # the upload button's value, as ComfyUI saves LoadImage
                continue
            link = next((entry for entry in links if entry[3] == node.id and entry[6] == name), None)
            if link is not None:
                link[4] = len(sockets)
            sockets.append({"name": name, "type": kind_name, "link": link[0] if link else None})
        outputs = [{"name": n, "type": t, "links": out_links.get((node.id, i), []), "slot_index": i}
                   for i, (t, n) in enumerate(zip(types, names, strict=True))]
        column = depth[node.id]
        row = rows.get(column, 0)
        height = 60 + 24 * max(len(sockets), len(outputs)) + 26 * len(widgets)
        rows[column] = row + height + 40
        entry = {"id": node.id, "type": node.class_type, "pos": [40 + 380 * column, 40 + row],
                 "size": [340, height], "flags": {}, "order": order, "mode": 0, "inputs": sockets,
                 "outputs": outputs, "properties": {"Node name for S&R": node.class_type},
                 "widgets_values": widgets}
        if node.title:
            entry["title"] = node.title
        ui_nodes.append(entry)
    return {
        "last_node_id": len(graph.nodes), "last_link_id": len(links), "nodes": ui_nodes,
        "links": [entry[:6] for entry in links], "groups": [], "config": {},
        "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}, "info": {"description": graph.description}},
        "version": 0.4,
    }


def _front(g: Graph, motion_module: str, prompt: str = POSITIVE):
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    motion = g.add("AtomoLoadMotionModule", model=ckpt[0], motion_module_name=motion_module)
    positive = g.add("CLIPTextEncode", title="Positive", text=prompt, clip=ckpt[1])
    negative = g.add("CLIPTextEncode", title="Negative", text=NEGATIVE, clip=ckpt[1])
    image = g.add("LoadImage", image="example.png")
    return ckpt, motion, positive, negative, image


def _save(g: Graph, vae, latent, prefix: str, fps: float = 8.0):
    decoded = g.add("VAEDecode", samples=latent, vae=vae)
    g.add("SaveAnimatedWEBP", images=decoded[0], filename_prefix=f"AtomoVideo/{prefix}", fps=fps, lossless=False,
          quality=90, method="default")
    return decoded


def pia_image_to_video() -> Graph:
    g = Graph("pia_image_to_video", "Image to video with PIA weights (pia.ckpt): 16 frames at 512x512.")
    ckpt, motion, positive, negative, image = _front(g, PIA)
    inject = g.add("AtomoImageInjectConditioning", model=motion[0], positive=positive[0], negative=negative[0],
                   vae=ckpt[2], image=image[0], frames=16, width=512, height=512, fit="crop", first_frame=0,
                   pia_motion="moderate motion")
    sampler = g.add("AtomoZeroSNRVSampler", model=inject[0], positive=inject[1], negative=inject[2],
                    latent_image=inject[3], seed=42, steps=25, cfg=7.5, image_cfg=1.0, cfg_rescale=0.0,
                    sampler_name="ddim", scheduler="trailing", denoise=1.0)
    _save(g, ckpt[2], sampler[0], "pia")
    return g


def _atomovideo_clip(g: Graph, frames: int, size: int):
    ckpt, motion, positive, negative, image = _front(g, ATOMO)
    clip_vision = g.add("CLIPVisionLoader", clip_name=CLIP_VISION)
    inject = g.add("AtomoImageInjectConditioning", model=motion[0], positive=positive[0], negative=negative[0],
                   vae=ckpt[2], image=image[0], frames=frames, width=size, height=size, fit="crop", first_frame=0,
                   lock_given_frames=True, clip_vision=clip_vision[0], ipadapter=IPADAPTER, ipadapter_weight=0.8)
    sampler = g.add("AtomoZeroSNRVSampler", model=inject[0], positive=inject[1], negative=inject[2],
                    latent_image=inject[3], seed=42, steps=25, cfg=7.5, image_cfg=2.5, cfg_rescale=0.7,
                    sampler_name="ddim", scheduler="trailing", denoise=1.0, noise_init="FrameInit")
    return ckpt, motion, positive, negative, image, clip_vision, inject, sampler


def atomovideo_image_to_video() -> Graph:
    g = Graph("atomovideo_image_to_video",
              "Image to video with AtomoVideo weights: VAE latent + IP-Adapter injection, v-prediction on a "
              "zero-terminal-SNR schedule, image/text guidance, FrameInit. 24 frames at 512x512.")
    ckpt, *_, sampler = _atomovideo_clip(g, 24, 512)
    _save(g, ckpt[2], sampler[0], "atomovideo")
    return g


def atomovideo_refine() -> Graph:
    g = Graph("atomovideo_refine",
              "Two stages, after I2VGen-XL: a 256x256 clip, upscaled x2 and refined by a low-denoise video-to-video "
              "pass of the same sampler at 512x512.")
    ckpt, motion, positive, negative, image, clip_vision, _, first = _atomovideo_clip(g, 24, 256)
    decoded = g.add("VAEDecode", samples=first[0], vae=ckpt[2])
    upscaled = g.add("ImageScaleBy", image=decoded[0], upscale_method="bicubic", scale_by=2.0)
    encoded = g.add("VAEEncode", pixels=upscaled[0], vae=ckpt[2])
    inject = g.add("AtomoImageInjectConditioning", title="Image Inject Conditioning (refine)", model=motion[0],
                   positive=positive[0], negative=negative[0], vae=ckpt[2], image=image[0], frames=24, width=512,
                   height=512, fit="crop", first_frame=0, lock_given_frames=False, clip_vision=clip_vision[0],
                   ipadapter=IPADAPTER, ipadapter_weight=0.8)
    refine = g.add("AtomoZeroSNRVSampler", title="Zero-SNR V Sampler (refine)", model=inject[0],
                   positive=inject[1], negative=inject[2], latent_image=encoded[0], seed=43, steps=20, cfg=7.5,
                   image_cfg=2.5, cfg_rescale=0.7, sampler_name="ddim", scheduler="trailing", denoise=0.4)
    _save(g, ckpt[2], refine[0], "atomovideo_refined")
    return g


def atomovideo_long_video() -> Graph:
    g = Graph("atomovideo_long_video",
              "A 64-frame video: a 24-frame image-to-video clip, then Predict Next Frames (8 given frames, 16 new per "
              "segment) until 64 frames, handing over in latent space.")
    ckpt, motion, positive, negative, image, clip_vision, inject, first = _atomovideo_clip(g, 24, 512)
    longer = g.add("AtomoPredictNextFrames", model=inject[0], positive=positive[0], negative=negative[0],
                   context_frames=8, new_frames=16, total_frames=64, seed=42, steps=25, cfg=7.5, image_cfg=2.5,
                   cfg_rescale=0.7, sampler_name="ddim", scheduler="trailing", denoise=1.0, latent=first[0],
                   vae=ckpt[2], handover="latent", anchor_strength=0.2)
    _save(g, ckpt[2], longer[0], "atomovideo_long")
    return g


GRAPHS = (pia_image_to_video, atomovideo_image_to_video, atomovideo_refine, atomovideo_long_video)


def write_all(nodes_module, out_dir: pathlib.Path = REPO / "workflows") -> list[pathlib.Path]:
    written = []
    (out_dir / "api").mkdir(parents=True, exist_ok=True)
    for make in GRAPHS:
        graph = make()
        for path, data in ((out_dir / f"{graph.name}.json", to_ui(graph, nodes_module)),
                           (out_dir / "api" / f"{graph.name}.json", to_api(graph, nodes_module))):
            path.write_text(json.dumps(data, indent=1) + "\n")
            written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=None, help="ComfyUI source tree (default $COMFYUI_PATH)")
    args = parser.parse_args(argv)
    nodes_module = run_workflow.boot(args.comfyui, cpu=True)
    for path in write_all(nodes_module):
        print(path.relative_to(REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
