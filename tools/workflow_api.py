"""Editing and checking API-format ComfyUI workflows (plain dicts; nothing here imports ComfyUI).

Override convention (``apply_overrides``; ``tools/run_workflow.py`` exposes it as command-line options):
- ``image``: a file copied into ComfyUI's input folder; every ``LoadImage`` node's ``image`` names it.
- ``prompt`` / ``negative``: the ``text`` of the ``CLIPTextEncode`` nodes whose ``_meta.title`` contains
  "Positive" / "Negative" (any case); without such titles, of the ``CLIPTextEncode`` nodes that feed a
  ``positive`` / ``negative`` input, directly or through conditioning nodes (``conditioning*`` inputs).
- ``seed``: every ``seed`` and ``noise_seed`` input.
- ``frames``: every ``frames`` and ``total_frames`` input, and ``batch_size`` of ``EmptyLatentImage``.
- ``set``: ``{"12.steps": 20}`` or ``["12.steps=20", ...]``: any input of any node; a string value is read
  as JSON when it parses, else kept as a string.
Inputs wired to another node are never overwritten, and an override that matches nothing is an error.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import pathlib
import shutil

OUTPUT_CLASSES = ("SaveImage", "PreviewImage", "SaveAnimatedWEBP", "SaveAnimatedPNG")
VIDEO_OUTPUT_CLASSES = ("SaveVideo", "SaveWEBM")


class WorkflowError(RuntimeError):
    """The workflow cannot run or failed; the message names the node id, its class and ComfyUI's error."""


class WorkflowInterrupted(WorkflowError):
    """The run was cancelled (``interrupt()``, ComfyUI's Cancel, Ctrl-C)."""


def is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2


def _set_all(prompt: dict, names, value, classes=None) -> int:
    count = 0
    for node in prompt.values():
        if classes is not None and node.get("class_type") not in classes:
            continue
        for name in names:
            if name in node.get("inputs", {}) and not is_link(node["inputs"][name]):
                node["inputs"][name] = value
                count += 1
    return count


def text_encoders(prompt: dict, role: str) -> list[str]:
    """Ids of the CLIPTextEncode nodes for ``role`` ("positive" or "negative"): by title, else by wiring."""
    encoders = [i for i, n in prompt.items() if n.get("class_type") == "CLIPTextEncode"]
    titled = [i for i in encoders if role in str(prompt[i].get("_meta", {}).get("title", "")).lower()]
    if titled:
        return titled
    found, seen = [], set()
    todo = [v[0] for n in prompt.values() for k, v in n.get("inputs", {}).items() if k == role and is_link(v)]
    while todo:
        node_id = str(todo.pop())
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        if node_id in encoders:
            found.append(node_id)
            continue
        for k, v in prompt[node_id].get("inputs", {}).items():
            if is_link(v) and (k == role or k.startswith("conditioning")):
                todo.append(v[0])
    return sorted(found)


def apply_overrides(prompt: dict, overrides: dict | None, input_dir=None) -> dict:
    """A copy of ``prompt`` with the overrides of the module docstring; ``input_dir`` is ComfyUI's input folder."""
    prompt = copy.deepcopy(prompt)
    o = {k: v for k, v in (overrides or {}).items() if v is not None}
    if "image" in o:
        name = copy_to_input(o["image"], input_dir)
        if not _set_all(prompt, ["image"], name, classes={"LoadImage"}):
            raise WorkflowError("--image: the workflow has no LoadImage node")
    for option, role in (("prompt", "positive"), ("negative", "negative")):
        if option in o:
            targets = text_encoders(prompt, role)
            if not targets:
                raise WorkflowError(
                    f"--{option}: no CLIPTextEncode titled '{role.title()}' or feeding a '{role}' "
                    "input; use --set ID.text=..."
                )
            for node_id in targets:
                prompt[node_id]["inputs"]["text"] = str(o[option])
    if "seed" in o and not _set_all(prompt, ["seed", "noise_seed"], int(o["seed"])):
        raise WorkflowError("--seed: no node has a seed or noise_seed input")
    if "frames" in o:
        n = int(o["frames"])
        if not _set_all(prompt, ["frames", "total_frames"], n) + _set_all(
            prompt, ["batch_size"], n, {"EmptyLatentImage"}
        ):
            raise WorkflowError("--frames: no frames/total_frames input and no EmptyLatentImage")
    sets = o.get("set", {})
    for key, value in sets.items() if isinstance(sets, dict) else map(_parse_set, sets):
        node_id, _, name = str(key).partition(".")
        if node_id not in prompt or not name:
            raise WorkflowError(f"--set {key}: the workflow has no node '{node_id}' (ids: {', '.join(prompt)})")
        prompt[node_id].setdefault("inputs", {})[name] = value
    return prompt


def _parse_set(item: str):
    key, sep, raw = item.partition("=")
    if not sep:
        raise WorkflowError(f"--set {item!r}: expected NODE_ID.INPUT=VALUE")
    with contextlib.suppress(json.JSONDecodeError):
        return key.strip(), json.loads(raw)
    return key.strip(), raw


def copy_to_input(path, input_dir) -> str:
    """Copy an image into ComfyUI's input folder (renamed if a different file has its name); returns the name."""
    src = pathlib.Path(path)
    if not src.is_file():
        raise WorkflowError(f"--image: no such file {src}")
    if input_dir is None:
        raise WorkflowError("--image: no ComfyUI input folder to copy it into")
    data = src.read_bytes()
    dest = pathlib.Path(input_dir) / src.name
    if dest.exists() and dest.read_bytes() != data:
        dest = dest.with_name(f"{src.stem}_{hashlib.sha256(data).hexdigest()[:8]}{src.suffix}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not dest.exists():
        shutil.copyfile(src, dest)
    return dest.name


def check_format(prompt) -> None:
    if not isinstance(prompt, dict) or "nodes" in prompt and "links" in prompt:
        raise WorkflowError("not an API-format workflow: in ComfyUI use Workflow > Export (API)")
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            raise WorkflowError(f"node {node_id}: not an API-format node (no class_type)")


def check_graph(prompt: dict, node_classes: dict) -> None:
    """Unknown classes and dangling links, reported against the node at fault (ComfyUI blames the output node)."""
    for node_id, node in prompt.items():
        cls = node["class_type"]
        if cls not in node_classes:
            raise WorkflowError(
                f"node {node_id} ({cls}): unknown node class {cls!r}; is the pack that provides it installed?"
            )
        for name, value in node.get("inputs", {}).items():
            if not is_link(value):
                continue
            src, slot = str(value[0]), value[1]
            if src not in prompt:
                raise WorkflowError(
                    f"node {node_id} ({cls}): input '{name}' is linked to node {src}, which is not in the workflow"
                )
            returns = node_classes[prompt[src]["class_type"]].RETURN_TYPES
            if not isinstance(slot, int) or not 0 <= slot < len(returns):
                raise WorkflowError(
                    f"node {node_id} ({cls}): input '{name}' is linked to output {slot!r} of node {src} "
                    f"({prompt[src]['class_type']}), which has outputs 0..{len(returns) - 1}"
                )


def validation_message(error: dict | None, node_errors: dict, prompt: dict) -> str:
    """ComfyUI's ``validate_prompt`` result as lines naming each node, its class and the reason."""
    lines = [f"invalid workflow: {error.get('message', '')}" if error else "invalid workflow:"]
    for node_id, info in node_errors.items():
        cls = info.get("class_type", prompt.get(node_id, {}).get("class_type"))
        lines += [f"  node {node_id} ({cls}): {r.get('message')}: {r.get('details')}" for r in info.get("errors", [])]
    if len(lines) == 1 and error:
        lines.append(f"  {error.get('details', '')}")
    return "\n".join(lines)


def image_sources(prompt: dict, output_node=None) -> dict[str, tuple[str, int]]:
    """``{output node id: (id of the node feeding its IMAGE, output slot)}``; ``output_node`` may be any node,
    whose ``images`` input (if wired) or else own first output is taken."""
    if output_node is not None:
        output_node = str(output_node)
        if output_node not in prompt:
            raise WorkflowError(f"--output-node {output_node}: not a node of the workflow")
        link = prompt[output_node].get("inputs", {}).get("images")
        return {output_node: (str(link[0]), link[1]) if is_link(link) else (output_node, 0)}
    found = {
        i: (str(n["inputs"]["images"][0]), n["inputs"]["images"][1])
        for i, n in prompt.items()
        if n.get("class_type") in OUTPUT_CLASSES and is_link(n.get("inputs", {}).get("images"))
    }
    for i, n in prompt.items():  # Save Video <- Create Video <- IMAGE: the frames are Create Video's images
        video = n.get("inputs", {}).get("video")
        if n.get("class_type") in VIDEO_OUTPUT_CLASSES and is_link(video):
            source = prompt.get(str(video[0]), {})
            images = source.get("inputs", {}).get("images")
            if source.get("class_type") == "CreateVideo" and is_link(images):
                found[i] = (str(images[0]), images[1])
    return found
