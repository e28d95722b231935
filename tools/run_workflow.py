"""Run an API-format ComfyUI workflow headlessly (no server, no browser) and save its frames as a video.

    python tools/run_workflow.py WORKFLOW_API.json [--comfyui PATH] [--image PATH] [--prompt TEXT]
        [--negative TEXT] [--seed N] [--frames N] [--set NODE_ID.INPUT=VALUE ...] [--models-dir DIR ...]
        [--output-node NODE_ID] [--out PATH.mp4|.webp|.gif] [--fps 8] [--strip PATH.png] [--cpu]
        [--custom-nodes] [--verbose] [ComfyUI options, e.g. --fp16-unet --lowvram --output-directory DIR]

ComfyUI (``--comfyui``, default ``$COMFYUI_PATH``) is imported as a library with its built-in nodes and this
repository as the custom node pack ``ComfyUI-AtomoVideo`` (``--custom-nodes`` also loads the other packs in its
``custom_nodes`` folder). Options this script does not know go to ComfyUI's own argument parser. Export the
workflow from ComfyUI with *Export (API)*; the UI format (``nodes``/``links`` lists) is refused.

Overrides (``--image``, ``--prompt``/``--negative``, ``--seed``, ``--frames``, ``--set``) edit a copy of the
workflow before it is validated, by the convention in ``tools/workflow_api.py``: ``--prompt``/``--negative`` set
the CLIPTextEncode nodes titled "Positive"/"Negative" (else those wired to a sampler's positive/negative),
``--seed`` every seed/noise_seed, ``--frames`` every frames/total_frames and EmptyLatentImage's batch_size,
``--image`` every LoadImage (the file is copied into ComfyUI's input folder), ``--set 12.steps=20`` anything.

The frames are the IMAGE batch reaching the output node(s) (SaveImage, PreviewImage, SaveAnimatedWEBP,
SaveAnimatedPNG, or Save Video / Save WEBM fed by core Create Video: its images), or the first IMAGE output of
``--output-node``, read from the executor's output cache. ``files`` lists what the output nodes wrote.
Ctrl-C cancels at the next progress step (a second Ctrl-C aborts at once). Exit status: 0 done, 1 ComfyUI
could not start or the workflow failed (the message names the node, its class and ComfyUI's error), 2 bad
usage or an unreadable file, 130 cancelled. Give ComfyUI's options after the workflow, or as ``--opt=value``.
``--comfyui`` may also name the source of hiddenswitch/pip-and-uv-installable-ComfyUI installed in the Python
that runs this script (recognised by its layout, ``comfy/cmd/folder_paths.py``); there ComfyUI's own options
are not parsed and only this pack is loaded.

In Python: ``run_workflow(prompt, comfyui_path=None, overrides=None, models_dirs=(), output_node=None,
progress=None)`` returns ``dict(frames=Tensor[F,H,W,3], images={node_id: Tensor}, files=[paths written], outputs=ui_outputs,
status=..., prompt=the prompt as run)`` and raises ``WorkflowError`` (``WorkflowInterrupted`` on Cancel; any
invalid node is an error, where ComfyUI's server would still run the valid outputs). ComfyUI is booted once
per process (``boot()``, which adopts a ComfyUI already imported); the executor and its cache are kept between
runs like ComfyUI's server does, and ``release()`` frees them and unloads the models.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import pathlib
import signal
import sys
import tempfile
import types
import uuid

if __package__:
    from . import workflow_api as api
else:  # run as a script, or loaded from its file path: the sibling module sits next to this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import workflow_api as api

REPO = pathlib.Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-AtomoVideo"
MODEL_FOLDERS = ("checkpoints", "vae", "clip_vision", "motion_modules", "ipadapter", "controlnet", "loras")
_STATE: dict = {}
WorkflowError, WorkflowInterrupted, apply_overrides = api.WorkflowError, api.WorkflowInterrupted, api.apply_overrides


def _import_torchvision() -> None:
    """A CUDA torchvision wheel on CPU torch fails at import on its ``nms`` fake kernels; define their schemas."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return
    import torch

    try:
        import torchvision  # noqa: F401
    except RuntimeError as error:
        if "torchvision::nms" not in str(error):
            return  # leave it to ComfyUI to report
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _STATE["torchvision_lib"] = lib
        import torchvision  # noqa: F401


def _comfyui_root(comfyui_path) -> pathlib.Path:
    raw = comfyui_path or os.environ.get("COMFYUI_PATH")
    if not raw:
        raise WorkflowError("ComfyUI not found: pass --comfyui PATH or set COMFYUI_PATH to a ComfyUI folder")
    root = pathlib.Path(raw).expanduser().resolve()
    if not (root / "comfy" / "model_patcher.py").is_file():
        raise WorkflowError(f"{root} is not a ComfyUI folder (no comfy/model_patcher.py)")
    return root


def _pack_loaded(nodes) -> bool:
    if not hasattr(nodes, "LOADED_MODULE_DIRS"):  # the installable fork's alias: its node mapping says it
        return "AtomoLoadMotionModule" in nodes.NODE_CLASS_MAPPINGS
    return any(os.path.realpath(d) == str(REPO) for d in nodes.LOADED_MODULE_DIRS.values())


def _has_gpu() -> bool:
    import torch

    xpu = getattr(torch, "xpu", None)
    return torch.cuda.is_available() or (xpu is not None and xpu.is_available()) or torch.backends.mps.is_available()


def _booted_nodes():
    """ComfyUI's ``nodes`` when another caller in this process booted it (tests/comfy_host.py), else ``None``."""
    nodes = sys.modules.get("nodes")
    return nodes if hasattr(nodes, "LOADED_MODULE_DIRS") or hasattr(nodes, "activate") else None


def _boot_fork(cpu: bool | None):
    """hiddenswitch/pip-and-uv-installable-ComfyUI (installed in this Python; ``folder_paths``, ``execution`` and
    ``nodes`` live in ``comfy/cmd`` and ``comfy/nodes``, aliased to the old names once its nodes load): a base
    directory holding this pack in ``custom_nodes``, its default folders, its node import."""
    from comfy.cli_args import args

    args.cpu = bool(args.cpu or cpu or (cpu is None and not _has_gpu()))
    args.disable_api_nodes = True
    base = pathlib.Path(tempfile.mkdtemp(prefix="atomo_run_"))
    (base / "custom_nodes").mkdir()
    (base / "custom_nodes" / PACK_NAME).symlink_to(REPO, target_is_directory=True)
    args.base_directory = str(base)
    from comfy.cmd import folder_paths
    from comfy.execution_context import current_execution_context
    from comfy.nodes_context import get_nodes

    folder_paths.init_default_paths(current_execution_context().folder_names_and_paths, args)
    if "AtomoLoadMotionModule" not in get_nodes().NODE_CLASS_MAPPINGS:  # (a lazy proxy: this imports the nodes)
        raise WorkflowError(f"the installable ComfyUI could not load {REPO} as a custom node pack; see the log above")
    nodes = sys.modules["nodes"]
    nodes.activate()  # its NODE_CLASS_MAPPINGS with the custom nodes in it
    return nodes


def boot(comfyui_path=None, comfy_args=(), cpu: bool | None = None, custom_nodes: bool = False):
    """Import ComfyUI once per process with its built-in nodes and this pack; returns ComfyUI's ``nodes``."""
    if "nodes" in _STATE:
        return _STATE["nodes"]
    if _booted_nodes() is not None:
        nodes = _booted_nodes()  # booted by someone else in this process (e.g. tests/comfy_host.py)
    elif (_comfyui_root(comfyui_path) / "comfy" / "cmd" / "folder_paths.py").is_file():
        _import_torchvision()
        nodes = _boot_fork(cpu)
    else:
        root = _comfyui_root(comfyui_path)
        _import_torchvision()
        if str(root) not in sys.path:
            sys.path.insert(0, str(root))
        import utils.install_util  # noqa: F401  (ComfyUI's utils package, before nodes.py shadows it)
        from comfy.cli_args import args, parser

        parser.parse_args(list(comfy_args), namespace=args)
        args.cpu = bool(args.cpu or cpu or (cpu is None and not _has_gpu()))
        args.disable_api_nodes = True
        import comfy.model_management  # noqa: F401  (reads args at import)
        import folder_paths
        import utils.extra_config

        import nodes

        configs = [root / "extra_model_paths.yaml"] + [
            pathlib.Path(c) for g in args.extra_model_paths_config or [] for c in g
        ]
        for config in filter(pathlib.Path.is_file, configs):  # as ComfyUI's main.py loads them
            utils.extra_config.load_extra_path_config(str(config))
        for name in ("output", "input", "temp"):  # as ComfyUI's main.py applies them
            if getattr(args, f"{name}_directory", None):
                path = os.path.abspath(getattr(args, f"{name}_directory"))
                path = os.path.join(path, "temp") if name == "temp" else path
                os.makedirs(path, exist_ok=True)
                getattr(folder_paths, f"set_{name}_directory")(path)
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=custom_nodes, init_api_nodes=False))
    if not _pack_loaded(nodes):
        link = pathlib.Path(tempfile.mkdtemp(prefix="atomo_run_")) / PACK_NAME
        try:
            link.symlink_to(REPO, target_is_directory=True)
        except OSError:
            link = REPO
        if not asyncio.run(nodes.load_custom_node(str(link))):
            raise WorkflowError(f"ComfyUI could not load {REPO} as a custom node pack; see the log above")
    _STATE["nodes"] = nodes
    return nodes


def _progress_hook(value, total, preview_image=None, prompt_id=None, node_id=None):
    import comfy.model_management
    from comfy_execution.utils import get_executing_context

    comfy.model_management.throw_exception_if_processing_interrupted()  # this is where Cancel takes effect
    callback = _STATE.get("progress")
    if callback is not None:
        context = get_executing_context()
        callback(node_id or (context.node_id if context else None), value, total)
        comfy.model_management.throw_exception_if_processing_interrupted()


def interrupt() -> None:
    """Cancel the running workflow at its next progress step (what ComfyUI's Cancel button does)."""
    import nodes

    nodes.interrupt_processing(True)


def release() -> None:
    """Drop the kept executor (its cached node outputs) and unload models."""
    _STATE.pop("executor", None)
    if "comfy.model_management" in sys.modules:
        import ctypes
        import ctypes.util
        import gc

        sys.modules["comfy.model_management"].unload_all_models()
        gc.collect()
        if sys.platform.startswith("linux"):  # hand freed weights back to the OS (glibc keeps small blocks)
            ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def _server_message(event, data, sid=None):
    """The installable fork reports progress only as the server's "progress" message (upstream also calls the
    global progress hook, ``_progress_hook``, which serves it there)."""
    import comfy.utils

    if event == "progress" and isinstance(data, dict) and not hasattr(comfy.utils, "PROGRESS_BAR_HOOK"):
        callback = _STATE.get("progress")
        if callback is not None:
            callback(data.get("node"), data.get("value"), data.get("max"))


def _stub_server():
    """What PromptExecutor (and a few nodes, via PromptServer.instance) need of ComfyUI's server."""
    quiet = lambda *args, **kwargs: None  # noqa: E731
    return types.SimpleNamespace(
        client_id=None,
        last_node_id=None,
        last_prompt_id=None,
        sockets_metadata={},
        send_sync=_server_message,
        send_progress_text=quiet,
        queue_updated=quiet,
        receive_all_progress_notifications=True,  # the installable fork's progress reads it
    )


def run_workflow(
    prompt: dict, comfyui_path=None, overrides=None, models_dirs=(), output_node=None, progress=None
) -> dict:
    """Validate and execute an API-format ``prompt``; see the module docstring. ``progress(node_id, value, total)``
    is called on every progress step (call ``interrupt()`` from it, or another thread, to cancel)."""
    nodes = boot(comfyui_path)
    import comfy.utils
    import execution
    import folder_paths
    import torch

    for root in models_dirs:
        for kind in MODEL_FOLDERS:
            folder_paths.add_model_folder_path(kind, str(pathlib.Path(root).resolve() / kind))
    api.check_format(prompt)
    prompt = apply_overrides(prompt, overrides, folder_paths.get_input_directory())
    api.check_graph(prompt, nodes.NODE_CLASS_MAPPINGS)
    sources = api.image_sources(prompt, output_node)
    prompt_id = str(uuid.uuid4())
    ok, error, good, node_errors = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
    if not ok or node_errors:
        raise WorkflowError(api.validation_message(error, node_errors, prompt))
    targets = list(good) + [n for n in sources if n not in good]
    if "executor" not in _STATE:
        _STATE["executor"] = new_executor(execution)
    executor = _STATE["executor"]
    server_module = sys.modules.get("server")
    if server_module is not None and getattr(server_module.PromptServer, "instance", None) is None:
        server_module.PromptServer.instance = executor.server
    hooked = hasattr(comfy.utils, "PROGRESS_BAR_HOOK")  # the installable fork has none: see _server_message
    _STATE["progress"], previous_hook = progress, getattr(comfy.utils, "PROGRESS_BAR_HOOK", None)
    if hooked:
        comfy.utils.set_progress_bar_global_hook(_progress_hook)  # ProgressBar reads it when it is created
    try:
        asyncio.run(executor.execute_async(prompt, prompt_id, extra_data={}, execute_outputs=targets))
    except KeyboardInterrupt as stop:
        _STATE.pop("executor", None)
        raise WorkflowInterrupted("cancelled") from stop
    finally:
        _STATE["progress"] = None
        if hooked:
            comfy.utils.set_progress_bar_global_hook(previous_hook)
    messages = dict(executor.status_messages)
    if "execution_interrupted" in messages:
        info = messages["execution_interrupted"]
        raise WorkflowInterrupted(f"cancelled at node {info['node_id']} ({info['node_type']})")
    if not executor.success or "execution_error" in messages:
        info = messages.get("execution_error", {})
        raise WorkflowError(
            f"node {info.get('node_id')} ({info.get('node_type')}) failed: "
            f"{info.get('exception_type')}: {info.get('exception_message')}"
        )
    images = {}
    for node_id, (src, slot) in sources.items():
        cached = cached_outputs(executor, src)
        values = cached[slot] if cached is not None and slot < len(cached) else None
        if values and all(torch.is_tensor(v) and v.ndim == 4 and v.shape[-1] in (3, 4) for v in values):
            images[node_id] = torch.cat([v[..., :3].float().cpu() for v in values]).clone()
    if not images:
        raise WorkflowError("the workflow produced no IMAGE batch at an output node; name one with --output-node")
    status = {"success": True, "prompt_id": prompt_id, "messages": executor.status_messages}
    first = sorted(images, key=lambda k: (len(k), k))[0]
    outputs = executor.history_result.get("outputs", {})
    return {
        "frames": images[first],
        "files": saved_files(outputs, folder_paths.get_output_directory()),
        "images": images,
        "outputs": outputs,
        "status": status,
        "prompt": prompt,
    }


# ----------------------------------------------------------------------------------------------- writing
def new_executor(execution):
    """A ``PromptExecutor`` with the classic cache. Current ComfyUI (0.38) also needs ``cache_args`` (it reads its RAM
    headroom from them); 0.3.64 has no such parameter."""
    import inspect

    extra = {}
    if "cache_args" in inspect.signature(execution.PromptExecutor.__init__).parameters:
        extra["cache_args"] = {"lru": 0, "ram": 0.0, "ram_inactive": 0.0}
    return execution.PromptExecutor(_stub_server(), cache_type=execution.CacheType.CLASSIC, **extra)


def cached_outputs(executor, node_id: str):
    """A node's cached output values. Current ComfyUI's output cache is async (``get_local`` is its synchronous read)
    and holds ``CacheEntry(ui, outputs)``; 0.3.64's ``get`` returns the list of outputs itself."""
    cache = executor.caches.outputs
    entry = cache.get_local(node_id) if hasattr(cache, "get_local") else cache.get(node_id)
    return entry.outputs if hasattr(entry, "outputs") else entry


def saved_files(outputs: dict, output_dir: str) -> list[pathlib.Path]:
    """The files the output nodes wrote into ``output_dir``, from their UI results (``filename``, ``subfolder``,
    ``type: output``), in node order."""
    files = []
    for node_id in sorted(outputs, key=lambda k: (len(k), k)):
        for entries in outputs[node_id].values():
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict) and entry.get("type") == "output" and entry.get("filename"):
                    files.append(pathlib.Path(output_dir) / entry.get("subfolder", "") / entry["filename"])
    return files


def _uint8(frames):
    """``[F,H,W,C]`` floats in 0..1 (a tensor or an array) as a uint8 numpy array ``[F,H,W,3]``."""
    import numpy as np

    array = frames.detach().float().cpu().numpy() if hasattr(frames, "detach") else np.asarray(frames, np.float32)
    return (np.clip(array[..., :3], 0, 1) * 255).round().astype(np.uint8)


def write_video(frames, path, fps: float = 8) -> pathlib.Path:
    """``frames [F,H,W,3]`` in 0..1 as H.264 mp4 (yuv420p, cropped to even sizes) or animated webp/gif."""
    from fractions import Fraction

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = _uint8(frames)
    suffix = path.suffix.lower()
    if suffix == ".mp4":
        import av

        pixels = pixels[:, : pixels.shape[1] // 2 * 2, : pixels.shape[2] // 2 * 2]
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = pixels.shape[1:3]
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "17"}
            for array in pixels:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
            container.mux(stream.encode(None))
    elif suffix in (".webp", ".gif"):
        from PIL import Image

        images = [Image.fromarray(a) for a in pixels]
        extra = {"quality": 90} if suffix == ".webp" else {}
        images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0, **extra)
    else:
        raise WorkflowError(f"--out {path}: use .mp4, .webp or .gif")
    return path


def write_strip(frames, path) -> pathlib.Path:
    """The frames side by side in one PNG (width = F x W)."""
    import numpy as np
    from PIL import Image

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(list(_uint8(frames)), axis=1)).save(path)
    return path


# ----------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
        epilog="Other options go to ComfyUI's own parser (e.g. --fp16-unet, --lowvram).",
    )
    p.add_argument("workflow", help="API-format workflow JSON (Export (API) in ComfyUI)")
    p.add_argument("--comfyui", help="ComfyUI folder (default $COMFYUI_PATH)")
    p.add_argument("--image", help="input image for every LoadImage node")
    p.add_argument("--prompt", help="positive prompt text")
    p.add_argument("--negative", help="negative prompt text")
    p.add_argument("--seed", type=int, help="every seed / noise_seed input")
    p.add_argument("--frames", type=int, help="every frames / total_frames input and EmptyLatentImage batch_size")
    p.add_argument("--set", action="append", default=[], metavar="NODE_ID.INPUT=VALUE", help="any input (JSON value)")
    p.add_argument("--models-dir", action="append", default=[], help="extra models root (checkpoints/, vae/, ...)")
    p.add_argument("--output-node", help="node id whose IMAGE output (or IMAGE input) is the video")
    p.add_argument("--out", help="video file: .mp4 (H.264), .webp or .gif")
    p.add_argument("--fps", type=float, default=8, help="frames per second of --out (default 8)")
    p.add_argument("--strip", help="PNG with the frames side by side")
    p.add_argument("--cpu", action="store_true", default=None, help="run on the CPU (the default when no GPU is found)")
    p.add_argument("--custom-nodes", action="store_true", help="also load the other packs in ComfyUI's custom_nodes")
    p.add_argument("--verbose", action="store_true")
    return p


def main(argv=None) -> int:
    args, comfy_args = _parser().parse_known_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        prompt = json.loads(pathlib.Path(args.workflow).read_text())
    except OSError as error:
        print(f"error: cannot read workflow {args.workflow}: {error.strerror}", file=sys.stderr)
        return 2
    except json.JSONDecodeError as error:
        print(f"error: {args.workflow} is not JSON: {error}", file=sys.stderr)
        return 2
    overrides = dict(
        image=args.image, prompt=args.prompt, negative=args.negative, seed=args.seed, frames=args.frames, set=args.set
    )

    def on_sigint(signum, frame):
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once
        print("\ncancelling at the next step (Ctrl-C again to abort)", file=sys.stderr)
        interrupt()

    def show(node_id, value, total):
        cls = prompt.get(str(node_id), {}).get("class_type", "")
        end = "\n" if value >= total else ""
        print(f"\r  node {node_id} {cls}: {value}/{total}", end=end, file=sys.stderr, flush=True)

    try:
        boot(args.comfyui, comfy_args, cpu=args.cpu, custom_nodes=args.custom_nodes)
        signal.signal(signal.SIGINT, on_sigint)
        result = run_workflow(prompt, args.comfyui, overrides, args.models_dir, args.output_node, progress=show)
    except WorkflowInterrupted as error:
        print(f"cancelled: {error}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return 130
    except WorkflowError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    frames = result["frames"]
    print(f"{frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]}")
    try:
        if args.out:
            print(f"wrote {write_video(frames, args.out, args.fps)}")
        if args.strip:
            print(f"wrote {write_strip(frames, args.strip)}")
    except (WorkflowError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
