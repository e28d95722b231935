"""Write the example workflows in both of ComfyUI's formats from one description each.

    python tools/make_workflows.py [--comfyui PATH]

For every graph below this writes ``example_workflows/TITLE.json`` (the UI format the template browser and the editor
load: nodes with positions, sockets, links and widget values) and ``example_workflows/api/NAME.json`` (the API format
that ``tools/run_workflow.py`` executes and the tests run). Widget order and socket types are read from the
node definitions of a booted ComfyUI, so the files match what ComfyUI itself would save.

The template browser (ComfyUI front end 1.27) shows a custom node pack's template by its file name: the title is
the name, the description the name with ``-`` and ``_`` as spaces, the thumbnail ``TITLE.jpg`` next to it. So
TITLE is a phrase, and it may contain spaces (the front end puts it into the URLs unencoded; the browser
encodes the spaces) but none of the characters a URL or Windows gives a meaning to (``\\ / : * ? " < > | # %``).

Layout (every node's rectangle includes the 30 px title bar LiteGraph draws above ``pos``): a node's column is
one right of its rightmost input (or the column of a node the description names, never left of an input), the
columns run left to right, and the nodes of a column are stacked top to bottom in the order they were added,
each as tall as the front end draws it (20 px per socket row, 24 per widget, a text box or an image preview
where the node has one), with a gap between them; the graph's note is the first node of the first column and
Load Image the last of its column, so that a bigger preview has room to grow.
So no two nodes overlap, and ``tests/test_workflow_files.py`` checks it on the files.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_workflow  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
UNSAFE_IN_TITLES = re.compile(r'[\\/:*?"<>|#%]')

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
CLIP_VISION = "CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors"
IPADAPTER = "ip-adapter_sd15.safetensors"
PIA = "pia.ckpt"
V3 = "v3_sd15_mm.ckpt"
ATOMO = "atomovideo_sd15.safetensors"
POSITIVE = "a photo, gentle natural motion, high quality, detailed"
T2V_PROMPT = "a red fox walking through fresh snow in a pine forest, morning light, high quality, detailed"
NEGATIVE = "blurry, low quality, distorted, watermark, static"

# The front end's node sizes (LiteGraph's computeSize in ComfyUI front end 1.27, measured in the browser).
TITLE_HEIGHT = 30  # drawn above pos
SLOT_HEIGHT, WIDGET_HEIGHT, BOTTOM_PADDING, BOTTOM_PADDING_NO_WIDGETS = 20, 24, 14, 6
TEXT_BOX_HEIGHT = 100  # a multiline text widget (the front end's minimum is 54)
IMAGE_PREVIEW_HEIGHT = 240  # room for Load Image's preview: the front end makes the node >= 314 tall with one
NOTE_LINE_HEIGHT, NOTE_LINE_CHARACTERS, NOTE_PADDING = 16, 64, 40  # the note's 10 px text, with room
WIDTHS = {"AtomoLoadMotionModule": 400, "CLIPTextEncode": 400, "VAEDecode": 220, "VAEEncode": 220, "MarkdownNote": 440}
DEFAULT_WIDTH = 340
COLUMN_GAP, ROW_GAP, MARGIN = 60, 30, 40  # ROW_GAP: room for the pack badge drawn above our nodes' titles


class Node:
    def __init__(self, graph, node_id, class_type, title, values, column: Node | None = None):
        self.graph, self.id, self.class_type, self.title, self.values = graph, node_id, class_type, title, values
        self.column = column

    def __getitem__(self, slot: int):
        return (self, slot)


class Graph:
    """``name``: the API file's name (what the runner and tests use); ``title``: the UI file's name, which the
    template browser shows as the template's title and description; ``note``: Markdown for the graph's note."""

    def __init__(self, name: str, title: str, description: str, note: str):
        if UNSAFE_IN_TITLES.search(title) or title != title.strip():
            raise ValueError(f"{title!r}: a template title is a file name and a URL path; avoid \\/:*?\"<>|#%")
        self.name, self.title, self.description, self.note, self.nodes = name, title, description, note, []

    def add(self, class_type: str, title: str | None = None, column: Node | None = None, **values) -> Node:
        """``column``: put the node in that node's column, below it, instead of right of its inputs."""
        node = Node(self, len(self.nodes) + 1, class_type, title, values, column)
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
        if node.class_type == "SaveVideo" and "codec" in values:
            # ComfyUI 0.3.64 takes format and codec as plain combos; current ComfyUI (0.38) made format a dynamic
            # combo whose chosen option carries a required nested codec ("format.codec" in the API format) and kept
            # "codec" as a hidden legacy input. Both are given: each version reads its own and drops unknown keys.
            values["format.codec"] = values["codec"]
        title = node.title or nodes_module.NODE_DISPLAY_NAME_MAPPINGS.get(node.class_type) or node.class_type
        prompt[str(node.id)] = {"class_type": node.class_type, "inputs": values, "_meta": {"title": title}}
    return prompt


def _columns(graph: Graph) -> dict[int, int]:
    """One right of the rightmost input, or the column of the node named by ``column=`` (stacked below it)."""
    column = {}
    for node in graph.nodes:  # nodes are added after their inputs
        parents = [v[0].id for v in node.values.values() if isinstance(v, tuple)]
        natural = 1 + max((column[p] for p in parents), default=-1)
        if node.column is None:
            column[node.id] = natural
        elif natural - 1 <= column[node.column.id]:
            column[node.id] = column[node.column.id]
        else:
            raise ValueError(f"{graph.name}: node {node.id} ({node.class_type}) would sit left of an input")
    return column


def _height(sockets: int, outputs: int, widget_heights: list[int], extra: int = 0) -> int:
    """The node's body height below its title bar, as the front end computes it, plus ``extra`` room."""
    padding = BOTTOM_PADDING if widget_heights else BOTTOM_PADDING_NO_WIDGETS
    return SLOT_HEIGHT * max(sockets, outputs) + sum(widget_heights) + padding + extra


def _note(graph: Graph, node_id: int, order: int) -> dict:
    """The graph's Markdown note: a node of the front end alone (the API file has no such node)."""
    lines = sum(1 + len(line) // NOTE_LINE_CHARACTERS for line in graph.note.splitlines())
    size = [WIDTHS["MarkdownNote"], NOTE_PADDING + NOTE_LINE_HEIGHT * lines]
    return {"id": node_id, "type": "MarkdownNote", "pos": [0, 0], "size": size, "flags": {}, "order": order, "mode": 0,
            "inputs": [], "outputs": [], "title": "About this workflow", "properties": {},
            "widgets_values": [graph.note]}


def _place(ui_nodes: list[dict], columns: dict[int, int]) -> None:
    """Columns left to right, each as wide as its widest node; in a column, nodes top to bottom with title bars."""
    widths: dict[int, int] = {}
    for node in ui_nodes:
        widths[columns[node["id"]]] = max(widths.get(columns[node["id"]], 0), node["size"][0])
    x, left = MARGIN, {}
    for column in range(max(widths) + 1):
        left[column] = x
        x += widths.get(column, 0) + COLUMN_GAP if column in widths else 0
    tops: dict[int, int] = {}
    # a node whose preview grows with the picked image (Load Image) goes last in its column: nothing is below it
    for node in sorted(ui_nodes, key=lambda node: node["type"] == "LoadImage"):
        column = columns[node["id"]]
        top = tops.get(column, MARGIN)
        node["pos"] = [left[column], top + TITLE_HEIGHT]
        tops[column] = top + TITLE_HEIGHT + node["size"][1] + ROW_GAP


def to_ui(graph: Graph, nodes_module) -> dict:
    links, ui_nodes = [], []
    out_links: dict[tuple[int, int], list[int]] = {}
    columns = _columns(graph)
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
        _, inputs, types, names = _definition(nodes_module, node.class_type)
        sockets, widgets, widget_heights, preview = [], [], [], 0
        for name, kind, _ in inputs:
            kind_name = _input_type(kind)
            value = node.values.get(name)
            if kind_name in WIDGET_TYPES and not isinstance(value, tuple):
                options = kind[1] if len(kind) > 1 and isinstance(kind[1], dict) else {}
                widgets.append(value if value is not None else _default(kind))
                widget_heights.append(TEXT_BOX_HEIGHT if options.get("multiline") else WIDGET_HEIGHT)
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                    widget_heights.append(WIDGET_HEIGHT)
                if options.get("image_upload"):
                    widgets.append("image")  # the upload button's value, as ComfyUI saves LoadImage
                    widget_heights.append(WIDGET_HEIGHT)
                    preview = IMAGE_PREVIEW_HEIGHT
                continue
            link = next((entry for entry in links if entry[3] == node.id and entry[6] == name), None)
            if link is not None:
                link[4] = len(sockets)
            sockets.append({"name": name, "type": kind_name, "link": link[0] if link else None})
        outputs = [{"name": n, "type": t, "links": out_links.get((node.id, i), []), "slot_index": i}
                   for i, (t, n) in enumerate(zip(types, names, strict=True))]
        size = [WIDTHS.get(node.class_type, DEFAULT_WIDTH), _height(len(sockets), len(outputs), widget_heights, preview)]
        entry = {"id": node.id, "type": node.class_type, "pos": [0, 0], "size": size, "flags": {}, "order": order,
                 "mode": 0, "inputs": sockets, "outputs": outputs,
                 "properties": {"Node name for S&R": node.class_type}, "widgets_values": widgets}
        if node.title:
            entry["title"] = node.title
        ui_nodes.append(entry)
    note = _note(graph, len(graph.nodes) + 1, len(graph.nodes))
    columns[note["id"]] = 0
    _place([note, *ui_nodes], columns)
    ui_nodes.append(note)
    right = max(n["pos"][0] + n["size"][0] for n in ui_nodes) + MARGIN
    bottom = max(n["pos"][1] + n["size"][1] for n in ui_nodes) + MARGIN
    # the whole graph on a 1920x1080 screen, but not below 0.6, where the front end stops drawing text
    scale = round(max(0.6, min(1.0, 1800 / right, 950 / bottom)), 2)
    return {
        "last_node_id": note["id"], "last_link_id": len(links), "nodes": ui_nodes,
        "links": [entry[:6] for entry in links], "groups": [], "config": {},
        "extra": {"ds": {"scale": scale, "offset": [0, 0]},
                  "info": {"description": graph.description, "api_workflow": f"api/{graph.name}.json"}},
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
    """VAE Decode -> core Create Video -> Save Video (mp4, H.264): a file every player, editor and site takes, with
    the frame rate in the file, and ComfyUI shows it on the node."""
    decoded = g.add("VAEDecode", samples=latent, vae=vae)
    video = g.add("CreateVideo", column=decoded, images=decoded[0], fps=fps)
    g.add("SaveVideo", column=decoded, video=video[0], filename_prefix=f"AtomoVideo/{prefix}", format="mp4",
          codec="h264")
    return decoded


PIA_FILES = (f"Files, under `ComfyUI/models/`: `checkpoints/{CHECKPOINT}` (or any SD-1.5 checkpoint) and "
             f"`motion_modules/{PIA}` (PIA's weights).")
ATOMO_FILES = (f"Files, under `ComfyUI/models/`: `checkpoints/{CHECKPOINT}` (or any SD-1.5 checkpoint), "
               f"`motion_modules/{ATOMO}` (AtomoVideo weights; none are public yet), `ipadapter/{IPADAPTER}` and "
               f"`clip_vision/{CLIP_VISION}`.")
USE = "Pick your image in Load Image, write the prompt and press Run; the clip goes to `output/AtomoVideo/`."


def pia_image_to_video() -> Graph:
    g = Graph("pia_image_to_video", "PIA - image to video (16 frames)",
              "Image to video with PIA weights (pia.ckpt): 16 frames at 512x512.",
              f"**PIA: one image becomes a 16-frame clip at 512x512.**\n\n{PIA_FILES}\n\n{USE}")
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
    g = Graph("atomovideo_image_to_video", "AtomoVideo - image to video with IP-Adapter",
              "Image to video with AtomoVideo weights: VAE latent + IP-Adapter injection, v-prediction on a "
              "zero-terminal-SNR schedule, image/text guidance, FrameInit. 24 frames at 512x512.",
              "**AtomoVideo: one image becomes 24 frames at 512x512**, guided by its VAE latent and, through the "
              f"IP-Adapter, its CLIP-vision semantics (v-prediction, zero terminal SNR, FrameInit).\n\n{ATOMO_FILES}"
              f"\n\n{USE}")
    ckpt, *_, sampler = _atomovideo_clip(g, 24, 512)
    _save(g, ckpt[2], sampler[0], "atomovideo")
    return g


def atomovideo_refine() -> Graph:
    g = Graph("atomovideo_refine", "AtomoVideo - refine 256 to 512 (two stages)",
              "Two stages, after I2VGen-XL: a 256x256 clip, upscaled x2 and refined by a low-denoise video-to-video "
              "pass of the same sampler at 512x512.",
              "**Two stages, after I2VGen-XL: a 24-frame clip at 256x256, upscaled x2 and refined at 512x512** by a "
              f"second pass of the sampler with denoise 0.4.\n\n{ATOMO_FILES}\n\n{USE}")
    ckpt, motion, positive, negative, image, clip_vision, _, first = _atomovideo_clip(g, 24, 256)
    decoded = g.add("VAEDecode", samples=first[0], vae=ckpt[2])
    # decode, upscale and encode stacked in one column, so that the graph stays about a screen wide
    upscaled = g.add("ImageScaleBy", column=decoded, image=decoded[0], upscale_method="bicubic", scale_by=2.0)
    encoded = g.add("VAEEncode", column=decoded, pixels=upscaled[0], vae=ckpt[2])
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
    g = Graph("atomovideo_long_video", "AtomoVideo - long video (Predict Next Frames)",
              "A 64-frame video: a 24-frame image-to-video clip, then Predict Next Frames (8 given frames, 16 new per "
              "segment) until 64 frames, handing over in latent space.",
              "**A 64-frame video: a 24-frame clip from the image, continued by Predict Next Frames** (given frames "
              f"automatic: 8 for AtomoVideo; 16 new per segment), handing over in latent space.\n\n{ATOMO_FILES}"
              f"\n\n{USE}")
    ckpt, motion, positive, negative, image, clip_vision, inject, first = _atomovideo_clip(g, 24, 512)
    # the continuation's sampling, from the core custom-sampling pieces: the first clip's settings
    guider = g.add("AtomoVideoGuider", model=inject[0], positive=positive[0], negative=negative[0], cfg=7.5,
                   image_cfg=2.5, cfg_rescale=0.7)
    sampler = g.add("KSamplerSelect", column=guider, sampler_name="ddim")
    sigmas = g.add("AtomoTrailingSigmas", column=guider, model=inject[0], steps=25, denoise=1.0)
    noise = g.add("RandomNoise", column=guider, noise_seed=42)
    longer = g.add("AtomoPredictNextFrames", guider=guider[0], sampler=sampler[0], sigmas=sigmas[0], noise=noise[0],
                   context_frames=0, new_frames=16, total_frames=64, latent=first[0], vae=ckpt[2],
                   handover="latent", anchor_strength=0.2)
    _save(g, ckpt[2], longer[0], "atomovideo_long")
    return g


V3_FILES = (f"Files, under `ComfyUI/models/`: `checkpoints/{CHECKPOINT}` (or any SD-1.5 checkpoint) and "
            f"`motion_modules/{V3}` (AnimateDiff v3's motion module).")
T2V_USE = "Write the prompt and press Run; the clip goes to `output/AtomoVideo/` as mp4."


def _text_to_video(g: Graph, frames: int):
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    motion = g.add("AtomoLoadMotionModule", model=ckpt[0], motion_module_name=V3)
    positive = g.add("CLIPTextEncode", title="Positive", text=T2V_PROMPT, clip=ckpt[1])
    negative = g.add("CLIPTextEncode", title="Negative", text=NEGATIVE, clip=ckpt[1])
    latent = g.add("EmptyLatentImage", width=512, height=512, batch_size=frames)
    return ckpt, motion, positive, negative, latent


def _ksampler(g: Graph, model, positive, negative, latent):
    # AnimateDiff's own sampling: its schedule (set by Load Motion Module), 25 DDIM-like steps, cfg 7.5
    return g.add("KSampler", model=model, seed=42, steps=25, cfg=7.5, sampler_name="euler_ancestral",
                 scheduler="simple", positive=positive, negative=negative, latent_image=latent, denoise=1.0)


def animatediff_text_to_video() -> Graph:
    g = Graph("animatediff_text_to_video", "AnimateDiff - text to video (16 frames)",
              "Text to video with AnimateDiff v3 and core KSampler: 16 frames at 512x512, saved as mp4.",
              "**Text to video: AnimateDiff v3 makes the 16 frames of one latent batch a clip**, sampled by core "
              f"KSampler and saved as mp4.\n\n{V3_FILES}\n\n{T2V_USE}")
    ckpt, motion, positive, negative, latent = _text_to_video(g, 16)
    sampler = _ksampler(g, motion[0], positive[0], negative[0], latent[0])
    _save(g, ckpt[2], sampler[0], "text_to_video")
    return g


def animatediff_long_text_to_video() -> Graph:
    g = Graph("animatediff_long_text_to_video", "AnimateDiff - long text to video (64 frames)",
              "64 frames of text to video with AnimateDiff v3 through Context Windows (video frames): windows of 16 "
              "frames, overlapping by 4, fused into one clip at every step.",
              "**64 frames of text to video**: *Context Windows (video frames)* runs the module on overlapping "
              "windows of 16 frames (the length it was trained on) and fuses them at every step, so the clip can be "
              "longer than the module's window; the uniform schedule moves the windows from step to step, so no "
              "seam stays in one place. For image to video, use Predict Next Frames instead (see the README)."
              f"\n\n{V3_FILES}\n\n{T2V_USE}")
    ckpt, motion, positive, negative, latent = _text_to_video(g, 64)
    windows = g.add("AtomoContextWindows", model=motion[0], context_length=16, context_overlap=4,
                    context_schedule="standard_uniform", context_stride=1, closed_loop=False, fuse_method="pyramid")
    sampler = _ksampler(g, windows[0], positive[0], negative[0], latent[0])
    _save(g, ckpt[2], sampler[0], "long_text_to_video")
    return g


TRAVEL = ("0: a flower bud, closed, green sepals, macro photo, soft morning light\n"
          "16: a flower opening its petals, macro photo, soft morning light\n"
          "32: a flower in full bloom, pink petals wide open, macro photo, soft morning light\n"
          "47: a flower in full bloom, petals falling, macro photo, golden evening light")


def animatediff_prompt_travel() -> Graph:
    g = Graph("animatediff_prompt_travel", "AnimateDiff - prompt travel (48 frames)",
              "48 frames of text to video with AnimateDiff v3 whose prompt travels from keyframe to keyframe (Prompt "
              "Travel), through Context Windows (video frames) with FreeNoise.",
              "**A prompt that travels over 48 frames**: *Prompt Travel* turns the schedule (`frame: prompt`, one "
              "per line) into one prompt per frame, blended between keyframes; *Context Windows (video frames)* runs "
              "windows of 16 frames, each seeing its own frames' prompts, and *FreeNoise* starts every window from "
              "the first window's noise, reshuffled, so the long clip keeps one look while the prompt changes. Keep "
              "Prompt Travel's `frames` equal to the latent's batch size."
              f"\n\n{V3_FILES}\n\nEdit the schedule and press Run; the clip goes to `output/AtomoVideo/` as mp4.")
    ckpt = g.add("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    motion = g.add("AtomoLoadMotionModule", model=ckpt[0], motion_module_name=V3)
    travel = g.add("AtomoPromptTravel", title="Prompt schedule", clip=ckpt[1], schedule=TRAVEL, frames=48,
                   interpolation="linear")
    negative = g.add("CLIPTextEncode", title="Negative", text=NEGATIVE, clip=ckpt[1])
    latent = g.add("EmptyLatentImage", width=512, height=512, batch_size=48)
    windows = g.add("AtomoContextWindows", model=motion[0], context_length=16, context_overlap=4,
                    context_schedule="standard_uniform", context_stride=1, closed_loop=False, fuse_method="pyramid",
                    freenoise=True)
    sampler = _ksampler(g, windows[0], travel[0], negative[0], latent[0])
    _save(g, ckpt[2], sampler[0], "prompt_travel")
    return g


GRAPHS = (animatediff_text_to_video, animatediff_long_text_to_video, animatediff_prompt_travel, pia_image_to_video,
          atomovideo_image_to_video, atomovideo_refine, atomovideo_long_video)


def write_all(nodes_module, out_dir: pathlib.Path = REPO / "example_workflows") -> list[pathlib.Path]:
    """Write ``TITLE.json`` (UI) and ``api/NAME.json`` (API) for every graph; return the paths written."""
    written = []
    (out_dir / "api").mkdir(parents=True, exist_ok=True)
    for make in GRAPHS:
        graph = make()
        for path, data in ((out_dir / f"{graph.title}.json", to_ui(graph, nodes_module)),
                           (out_dir / "api" / f"{graph.name}.json", to_api(graph, nodes_module))):
            path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
            written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comfyui", default=None, help="ComfyUI source tree (default $COMFYUI_PATH)")
    args = parser.parse_args(argv)
    nodes_module = run_workflow.boot(args.comfyui, cpu=True)
    written = write_all(nodes_module)
    for path in written:
        print(path.relative_to(REPO))
    out_dir = REPO / "example_workflows"
    for stale in sorted({*out_dir.glob("*.json"), *(out_dir / "api").glob("*.json")} - set(written)):
        print(f"not written by this script (remove it if it is an old name): {stale.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
