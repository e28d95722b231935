"""Boot ComfyUI as a library on this machine and load our pack through ComfyUI's own custom-node loader.

``COMFYUI_PATH`` points at a ComfyUI source tree. Tests that need it call ``require_comfyui()`` (a skip with a
clear reason when no tree is found) and ``boot()``, which returns our package module as ComfyUI loaded it.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-AtomoVideo"
# other packs some host tests run beside ours, each named by an environment variable holding its folder
OTHER_PACKS = ("IPADAPTER_PLUS_PATH", "ANIMATEDIFF_EVOLVED_PATH", "ADVANCED_CONTROLNET_PATH")
_STATE: dict = {}


def comfyui_path() -> pathlib.Path | None:
    raw = os.environ.get("COMFYUI_PATH")
    if not raw:
        return None
    path = pathlib.Path(raw).expanduser().resolve()
    return path if (path / "comfy" / "model_patcher.py").is_file() else None


def is_installable_fork(root: pathlib.Path) -> bool:
    """``hiddenswitch/pip-and-uv-installable-ComfyUI`` (an installed package that merges upstream): its
    ``folder_paths``, ``execution`` and ``nodes`` live under ``comfy/cmd`` and ``comfy/nodes`` (see README)."""
    return (root / "comfy" / "cmd" / "folder_paths.py").is_file()


def require_comfyui() -> pathlib.Path:
    path = comfyui_path()
    if path is None:
        pytest.skip(
            "host test: set COMFYUI_PATH to a ComfyUI source tree (>= 0.3.64) to run it; "
            f"COMFYUI_PATH={os.environ.get('COMFYUI_PATH')!r} has no comfy/model_patcher.py"
        )
    return path


def boot():
    """Import ComfyUI (CPU) once and load this repository as the custom node pack ``ComfyUI-AtomoVideo``."""
    if "pack" in _STATE:
        return _STATE["pack"]
    root = require_comfyui()
    import _torchvision_shim

    _torchvision_shim.install()
    if is_installable_fork(root):
        return _boot_fork(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    import utils.install_util  # noqa: F401  (as main.py does: ComfyUI's utils package before nodes.py shadows it)
    from comfy.cli_args import args

    args.cpu = True
    args.disable_api_nodes = True
    import comfy.model_management  # noqa: F401  (reads args at import)
    import folder_paths

    import nodes

    scratch, link = _scratch_with_pack()
    folder_paths.set_output_directory(str(scratch / "output"))
    folder_paths.set_temp_directory(str(scratch / "temp"))
    folder_paths.set_input_directory(str(scratch / "input"))
    asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    ok = asyncio.run(nodes.load_custom_node(str(link)))
    assert ok, "ComfyUI failed to load the pack; see the log above"
    pack = sys.modules[str(link).replace(".", "_x_")]
    _STATE.update(pack=pack, scratch=scratch)
    return pack


def load_other_pack(variable: str, node: str) -> None:
    """Load the pack whose folder the environment variable ``variable`` names (one of ``OTHER_PACKS``) beside ours,
    through ComfyUI's own loader, and check that it registered ``node``; skip when the variable is unset. The fork
    loaded it at boot (from the base directory); vanilla ComfyUI loads it now."""
    import nodes

    if variable not in OTHER_PACKS:
        raise ValueError(f"{variable} is not one of {OTHER_PACKS}")
    path = os.environ.get(variable)
    if not path or not pathlib.Path(path).is_dir():
        pytest.skip(f"set {variable} to the pack's folder to run this composition test")
    if node not in nodes.NODE_CLASS_MAPPINGS and not _STATE.get("fork"):
        asyncio.run(nodes.load_custom_node(str(pathlib.Path(path).resolve())))
    assert node in nodes.NODE_CLASS_MAPPINGS, f"{path} did not register {node}; see the log above"


def comfyui_version() -> str:
    """The running ComfyUI's version (vanilla: ``comfyui_version.py``; the fork: its package metadata)."""
    try:
        import comfyui_version as module

        return module.__version__
    except ImportError:
        from importlib.metadata import version

        return version("comfyui")


def scratch_dir() -> pathlib.Path:
    boot()
    return _STATE["scratch"]


def _scratch_with_pack() -> tuple[pathlib.Path, pathlib.Path]:
    scratch = pathlib.Path(tempfile.mkdtemp(prefix="atomo_host_"))
    for sub in ("output", "temp", "input", "models", "custom_nodes"):
        (scratch / sub).mkdir()
    link = scratch / "custom_nodes" / PACK_NAME
    link.symlink_to(REPO, target_is_directory=True)
    return scratch, link


def _boot_fork(root: pathlib.Path):
    """The installable fork (run with the Python it is installed in): a base directory holding the pack in
    ``custom_nodes``, its default folders, its node import (built-in nodes, then custom nodes the vanilla way),
    and its ``nodes`` alias switched to the mapping with custom nodes in it."""
    from comfy.cli_args import args

    args.cpu = True
    args.disable_api_nodes = True
    scratch, link = _scratch_with_pack()
    for variable in OTHER_PACKS:  # the fork imports custom nodes once, from the base directory: link them there now
        other = os.environ.get(variable)
        if other and pathlib.Path(other).is_dir():
            (scratch / "custom_nodes" / pathlib.Path(other).resolve().name).symlink_to(pathlib.Path(other).resolve())
    args.base_directory = str(scratch)
    from comfy.cmd import folder_paths
    from comfy.execution_context import current_execution_context

    folder_paths.init_default_paths(current_execution_context().folder_names_and_paths, args)
    from comfy.nodes_context import get_nodes

    exported = get_nodes()
    assert "AtomoLoadMotionModule" in exported.NODE_CLASS_MAPPINGS, "the fork did not load the pack; see the log"
    sys.modules["nodes"].activate()  # the vanilla alias: NODE_CLASS_MAPPINGS with the custom nodes
    pack = sys.modules[PACK_NAME]
    _STATE.update(pack=pack, scratch=scratch, fork=True)
    return pack
