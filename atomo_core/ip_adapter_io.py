"""Reading IP-Adapter files: the nested ``.bin`` and flat ``.safetensors`` layouts, as one flat dict.

``.bin`` files hold ``{"image_proj": {...}, "ip_adapter": {...}}`` (``torch.save`` of two state dicts);
``.safetensors`` files the same tensors under flat ``image_proj.<k>``/``ip_adapter.<k>`` keys. Both become
``{"image_proj.<k>": tensor, "ip_adapter.<k>": tensor}``, the form AtomoVideo files use too. Pickles are
opened with ``torch.load(weights_only=True)`` only; every failure is an ``IPAdapterFormatError`` naming the
file and what to do. (``checkpoint_io.read_weights`` cannot be used: it refuses the nested ``.bin`` layout.)
"""

from __future__ import annotations

import os

import torch

from .checkpoint_io import read_raw
from .errors import AtomoError

IMAGE_PROJ, IP_LAYERS = "image_proj.", "ip_adapter."
VIT_H = "CLIP-ViT-H-14-laion2B-s32B-b79K"
USE_INSTEAD = (
    "Use an SD-1.5 IP-Adapter: ip-adapter_sd15, ip-adapter_sd15_light, ip-adapter-plus_sd15, "
    f"ip-adapter-plus-face_sd15 or ip-adapter-full-face_sd15 (.safetensors or .bin) with the {VIT_H} "
    "CLIP vision model."
)


class IPAdapterFormatError(AtomoError):
    """A file is not an SD-1.5 IP-Adapter we can use."""


def read_ip_adapter(state_dict: dict, name: str = "the IP-Adapter file") -> dict[str, torch.Tensor]:
    """Normalise an IP-Adapter state dict to flat ``image_proj.<k>`` / ``ip_adapter.<k>`` keys.

    Accepts the nested ``.bin`` layout ``{"image_proj": {...}, "ip_adapter": {...}}``, the flat
    ``.safetensors`` layout, the ``adapter_modules``/``image_proj_model`` names of training checkpoints, and
    a ``state_dict`` wrapper. Other entries (non-tensors, an AtomoVideo file's temporal layers) are dropped.
    Raises ``IPAdapterFormatError`` saying what the file seems to be when no IP-Adapter weights are found.
    """
    if isinstance(state_dict, dict) and isinstance(state_dict.get("state_dict"), dict):
        state_dict = state_dict["state_dict"]
    if not isinstance(state_dict, dict):
        raise IPAdapterFormatError(
            f"'{name}' holds a {type(state_dict).__name__}, not a dictionary of weights. {USE_INSTEAD}"
        )
    prefixes = {
        "image_proj": IMAGE_PROJ,
        "image_proj_model": IMAGE_PROJ,
        "ip_adapter": IP_LAYERS,
        "adapter_modules": IP_LAYERS,
    }
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if not isinstance(key, str):
            continue
        if isinstance(value, dict) and key in prefixes:  # nested .bin layout
            out.update({prefixes[key] + str(k): v for k, v in value.items() if isinstance(v, torch.Tensor)})
        elif isinstance(value, torch.Tensor) and "." in key and key.split(".", 1)[0] in prefixes:
            head, rest = key.split(".", 1)
            out[prefixes[head] + rest] = value
    if not out:
        raise IPAdapterFormatError(
            f"'{name}' {_what_it_is(state_dict)}, not an IP-Adapter (no image_proj / ip_adapter weights). {USE_INSTEAD}"
        )
    return out


def _what_it_is(state_dict: dict) -> str:
    keys = [k for k in state_dict if isinstance(k, str)]
    if not keys:
        return "holds no named weights"
    if any(k.startswith(("model.diffusion_model.", "first_stage_model.")) for k in keys):
        return "is a Stable Diffusion checkpoint (load it with Load Checkpoint)"
    if any(k.startswith(("vision_model.", "visual.")) for k in keys):
        return "is a CLIP vision model (it belongs in models/clip_vision and goes into the CLIP vision input)"
    if any("motion_modules." in k for k in keys):
        return "is a motion module (load it with Load Motion Module)"
    if any("lora" in k.lower() for k in keys):
        return "is a LoRA (load it with a LoRA loader)"
    return f"holds {len(keys)} tensors such as '{keys[0]}'"


def read_ip_adapter_file(path: str) -> dict[str, torch.Tensor]:
    """Read an IP-Adapter ``.safetensors``/``.bin`` (``.pt``/``.pth``/``.ckpt``) file into ``read_ip_adapter``'s flat dict.

    Pickles are opened with ``torch.load(weights_only=True)`` only. Every failure is an ``IPAdapterFormatError``.
    """
    obj, _ = read_raw(path, IPAdapterFormatError, "ComfyUI/models/ipadapter/")
    return read_ip_adapter(obj, os.path.basename(path))
