"""Boot ComfyUI as a library for a benchmark and load this repository as its custom node pack.

Like ``tests/comfy_host.py`` (the same loader path: ComfyUI's own ``load_custom_node`` on a symlink named
``ComfyUI-AtomoVideo``), but it chooses the device instead of forcing the CPU and does not need pytest.
"""

from __future__ import annotations

import asyncio
import importlib
import pathlib
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-AtomoVideo"
_STATE: dict = {}


def comfyui_root(raw: str | None) -> pathlib.Path:
    if not raw:
        raise SystemExit("Set --comfyui or COMFYUI_PATH to a ComfyUI source tree (0.3.64 or newer).")
    path = pathlib.Path(raw).expanduser().resolve()
    if not (path / "comfy" / "model_patcher.py").is_file():
        raise SystemExit(f"{path} is not a ComfyUI source tree (no comfy/model_patcher.py).")
    return path


def _torchvision_shim() -> None:
    """A CPU build of torch beside PyPI's CUDA torchvision needs the test shim to import (see tests/)."""
    import torch

    if torch.version.cuda is not None or torch.version.hip is not None:
        return
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import _torchvision_shim

    _torchvision_shim.install()


def boot(comfyui: str | None, cpu: bool):
    """Import ComfyUI once (on the CPU when ``cpu``) and load the pack; return the pack's package module."""
    if "pack" in _STATE:
        return _STATE["pack"]
    root = comfyui_root(comfyui)
    _torchvision_shim()
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import utils.install_util  # noqa: F401  (as main.py does: ComfyUI's utils package before nodes.py shadows it)
    from comfy.cli_args import args

    args.cpu = cpu
    args.disable_api_nodes = True
    import comfy.model_management  # noqa: F401  (reads args at import)
    import folder_paths

    import nodes

    scratch = pathlib.Path(tempfile.mkdtemp(prefix="atomo_bench_"))
    for sub in ("output", "temp", "input", "models"):
        (scratch / sub).mkdir()
    folder_paths.set_output_directory(str(scratch / "output"))
    folder_paths.set_temp_directory(str(scratch / "temp"))
    folder_paths.set_input_directory(str(scratch / "input"))
    custom = scratch / "custom_nodes"
    custom.mkdir()
    link = custom / PACK_NAME
    link.symlink_to(REPO, target_is_directory=True)
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    if not asyncio.run(nodes.load_custom_node(str(link))):
        raise RuntimeError("ComfyUI failed to load the pack; see the log above")
    pack = sys.modules[str(link).replace(".", "_x_")]
    _STATE.update(pack=pack, scratch=scratch)
    return pack


def ours(name: str):
    """One of our modules as ComfyUI loaded it, e.g. ``ours("nodes.host_adapter")``."""
    return importlib.import_module(f"{_STATE['pack'].__name__}.{name}")
