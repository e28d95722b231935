"""Reading and writing weight files safely.

``.safetensors`` is read with ``safetensors``; ``.ckpt``/``.pt``/``.pth``/``.bin`` with
``torch.load(weights_only=True)``, which refuses any pickle that would construct objects or call
functions. Every failure becomes a ``MotionModuleFormatError`` naming the file and what to do.
"""

from __future__ import annotations

import os
import pickle

import torch

from .errors import MotionModuleFormatError

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
SUPPORTED_EXTENSIONS = SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS


def _unwrap(obj, name: str) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside ``{"state_dict": ...}``-style wrappers; drop non-tensor entries."""
    for _ in range(3):
        if not isinstance(obj, dict) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        wrapped = [obj[k] for k in ("state_dict", "module", "model") if isinstance(obj.get(k), dict)]
        dicts = [v for v in obj.values() if isinstance(v, dict)]
        if wrapped:
            obj = wrapped[0]
        elif len(dicts) == 1:
            obj = dicts[0]
        else:
            break
    if not isinstance(obj, dict):
        raise MotionModuleFormatError(
            f"'{name}' holds a {type(obj).__name__}, not a dictionary of weights. "
            "Pick a motion-module weight file (.safetensors or .ckpt)."
        )
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise MotionModuleFormatError(
            f"'{name}' contains no weight tensors. The file is empty or not a model; download it again."
        )
    return tensors


def read_raw(
    path: str, error: type[Exception] = MotionModuleFormatError, folder: str = "ComfyUI/models/motion_modules/"
) -> tuple[object, dict[str, str]]:
    """Return ``(loaded object, metadata)`` from a weight file without unwrapping it.

    ``.safetensors``: a flat tensor dict and its header; pickles: whatever ``torch.load(weights_only=True)``
    builds (nested dicts of tensors and plain values only). Failures raise ``error`` naming the file and the fix;
    ``folder`` is where the user should put such files.
    """
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise error(f"'{path}' does not exist. Put the file in {folder}.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise error(f"'{name}' has the extension '{ext}'; supported are {', '.join(SUPPORTED_EXTENSIONS)}.")
    size = os.path.getsize(path)
    if ext in SAFETENSORS_EXTENSIONS:
        return _read_safetensors(path, name, size, error)
    return _read_pickle(path, name, size, error), {}


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(state_dict, metadata)`` from a weight file; metadata is empty for pickle files.

    Raises ``MotionModuleFormatError`` for a missing, truncated, corrupt or code-carrying file.
    """
    obj, metadata = read_raw(path)
    return _unwrap(obj, os.path.basename(path)), metadata


def _read_safetensors(path: str, name: str, size: int, error):
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers and short files
        raise error(
            f"Could not read '{name}' ({size:,} bytes) as safetensors: {exc}. The file is truncated or corrupt "
            "(an interrupted download?) or is not really a .safetensors file. Download it again."
        ) from exc
    return state_dict, metadata


def _read_pickle(path: str, name: str, size: int, error):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise error(
            f"Refused to load '{name}': it is a pickle that asks to build objects or run code when opened "
            f"({str(exc).splitlines()[0][:200]}). Weight files only need tensors, so this one is unsafe or not a "
            "model. Get the .safetensors version of the file, or re-download it from its original publisher."
        ) from exc
    except Exception as exc:  # zip errors, EOF, bad magic number
        raise error(
            f"Could not read '{name}' ({size:,} bytes): {str(exc).splitlines()[0][:200]}. The file is truncated "
            "or corrupt (an interrupted download?). Download it again."
        ) from exc


def write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write contiguous CPU copies of ``tensors`` with a string-to-string ``metadata`` header."""
    from safetensors.torch import save_file

    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(payload, path, metadata={k: str(v) for k, v in metadata.items()})
