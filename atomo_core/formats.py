"""Motion-module file formats: recognise a file from its keys and shapes, and build a ``MotionModule``.

Recognised SD-1.5 families (see ``MotionModuleConfig`` for what each implies):

==================  ==========================================================================
AnimateDiff v1      no mid-block module, ``pos_encoder.pe [1, 24, C]``; ResNet norms across frames
AnimateDiff v2      ``mid_block.motion_modules.0``, ``pe [1, 32, C]``
AnimateDiff v3      no mid-block module, ``pe [1, 32, C]``
AnimateLCM          mid-block module and no ``pe`` keys at all
PIA                 ``conv_in.weight [320, 9, 3, 3]`` besides v3-like modules; ResNet norms across frames
AtomoVideo          safetensors header ``format = atomovideo.motion_module`` (``atomovideo_format``)
==================  ==========================================================================

Files that are something else get a ``MotionModuleFormatError`` that says what they are and where they
belong: motion LoRAs, the v3 domain adapter, SDXL and HotshotXL modules, SparseCtrl, whole checkpoints,
diffusers-layout adapters, and layouts we do not know.
"""

from __future__ import annotations

import logging
import os

import torch

from . import atomovideo_format
from .checkpoint_io import read_weights
from .errors import MotionModuleFormatError
from .layout import SD15_WIDTHS
from .motion_module import MotionModule, MotionModuleConfig

log = logging.getLogger(__name__)

FAMILY_LABELS = {
    "animatediff_v1": "AnimateDiff v1",
    "animatediff_v2": "AnimateDiff v2",
    "animatediff_v3": "AnimateDiff v3",
    "animatelcm": "AnimateLCM",
    "pia": "PIA",
    "atomovideo": "AtomoVideo",
}
_EXPECTED = (
    "expected SD-1.5 motion-module keys such as "
    "'down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight' (AnimateDiff v1/v2/v3, AnimateLCM, PIA) "
    "or an AtomoVideo .safetensors file"
)


def _sample(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(f"'{k}'" for k in keys[:n]) + (f" (and {len(keys) - n} more)" if len(keys) > n else "")


def reject_foreign(state_dict: dict[str, torch.Tensor], name: str) -> None:
    """Raise a helpful error if the file is a known kind of file that is not an SD-1.5 motion module."""
    keys = list(state_dict)
    lora = [k for k in keys if "_lora." in k or "lora_down" in k or "lora_up" in k or ".lora." in k]
    if lora:
        if any(".motion_modules." in k for k in lora):
            raise MotionModuleFormatError(
                f"'{name}' is a motion LoRA (camera-motion LoRA for AnimateDiff v2), not a motion module. "
                "Pick the motion module itself here (e.g. mm_sd_v15_v2.ckpt), then apply the LoRA with the Load "
                "Motion LoRA node on this node's MODEL (the file goes in models/motion_lora)."
            )
        raise MotionModuleFormatError(
            f"'{name}' is a LoRA for the image layers (the AnimateDiff v3 domain adapter, v3_sd15_adapter.ckpt, "
            "has this layout), not a motion module. Load it with ComfyUI's LoraLoaderModelOnly on your checkpoint, "
            "and pick v3_sd15_mm.ckpt here."
        )
    if any("temporal_attentions." in k or k.endswith("positional_encoding") for k in keys):
        raise MotionModuleFormatError(
            f"'{name}' is a HotshotXL temporal-layer file for SDXL. This pack runs SD-1.5 motion modules; "
            "use an SD-1.5 module (AnimateDiff v2/v3, PIA, AnimateLCM) with an SD-1.5 checkpoint."
        )
    if any(k.startswith("controlnet") or "controlnet_cond_embedding" in k for k in keys):
        raise MotionModuleFormatError(
            f"'{name}' is a SparseCtrl ControlNet, not a motion module. Pick a motion module here."
        )
    if any(k.startswith(("model.diffusion_model.", "input_blocks.", "first_stage_model.", "cond_stage_model."))
           for k in keys):
        raise MotionModuleFormatError(
            f"'{name}' is an image-model checkpoint (UNet weights), not a motion module. Load it with "
            "Load Checkpoint and connect its MODEL to this node; pick a motion module file here."
        )
    if any(k.startswith("img_encoder.") for k in keys):
        raise MotionModuleFormatError(
            f"'{name}' is AnimateLCM-I2V, whose image encoder this pack does not run. Use AnimateLCM-T2V, PIA or "
            "an AtomoVideo module."
        )
    motion = [k for k in keys if ".motion_modules." in k]
    if motion and not any(".temporal_transformer." in k for k in motion):
        if any(".attn1." in k or ".pos_embed." in k for k in motion):
            raise MotionModuleFormatError(
                f"'{name}' is a diffusers MotionAdapter (diffusion_pytorch_model.safetensors). Use the original "
                "AnimateDiff file of the same module (mm_sd_v15_v2.ckpt, v3_sd15_mm.ckpt, ...)."
            )
        raise MotionModuleFormatError(f"'{name}' has an unknown motion-module layout: {_EXPECTED}; found {_sample(motion)}.")
    if not motion and not any(".temporal_convs." in k for k in keys):
        raise MotionModuleFormatError(f"'{name}' is not a motion module we know: {_EXPECTED}; found {_sample(keys)}.")


def _check_sd15(state_dict: dict[str, torch.Tensor], name: str) -> None:
    levels = {int(k.split(".")[1]) for k in state_dict if k.startswith("down_blocks.") and k.split(".")[1].isdigit()}
    if levels and max(levels) < 3:
        raise MotionModuleFormatError(
            f"'{name}' is an SDXL motion module (AnimateDiff-SDXL: 3 down blocks, SD-1.5 has 4). This pack runs "
            "SD-1.5 motion modules; use an SD-1.5 module with an SD-1.5 checkpoint."
        )
    for level, width in enumerate(SD15_WIDTHS):
        key = f"down_blocks.{level}.motion_modules.0.temporal_transformer.proj_in.weight"
        if key in state_dict and tuple(state_dict[key].shape) != (width, width):
            raise MotionModuleFormatError(
                f"'{name}': {key} has shape {list(state_dict[key].shape)} but SD-1.5 needs [{width}, {width}]. "
                "This module is for another model family; use an SD-1.5 motion module."
            )
    single = [k for k in state_dict if ".attention_blocks.0." in k]
    if single and not any(".attention_blocks.1." in k for k in state_dict):
        raise MotionModuleFormatError(
            f"'{name}' has one temporal attention per block (a SparseCtrl-style module); AnimateDiff motion modules "
            "have two. Pick a motion module here."
        )


def _pe_length(state_dict: dict[str, torch.Tensor], name: str) -> int | None:
    lengths = {int(v.shape[1]) for k, v in state_dict.items() if k.endswith("pos_encoder.pe") and v.ndim == 3}
    if len(lengths) > 1:
        raise MotionModuleFormatError(
            f"'{name}' mixes position encodings of lengths {sorted(lengths)}; the file is inconsistent."
        )
    return lengths.pop() if lengths else None


def detect_config(
    state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None, name: str = "motion module"
) -> MotionModuleConfig:
    """Recognise the family of a motion-module state dict and return its ``MotionModuleConfig``."""
    metadata = metadata or {}
    if atomovideo_format.is_atomovideo(metadata):
        if atomovideo_format.widths_of(metadata, name) == SD15_WIDTHS:
            _check_sd15(state_dict, name)
        return atomovideo_format.config_from_metadata(metadata, state_dict, name)
    reject_foreign(state_dict, name)
    _check_sd15(state_dict, name)
    if not any(".motion_modules." in k for k in state_dict):
        raise MotionModuleFormatError(
            f"'{name}' has temporal convolutions but no AtomoVideo metadata header; it was not written by the "
            "AtomoVideo trainer. Export it again with the trainer."
        )
    has_mid = any(k.startswith("mid_block.motion_modules.") for k in state_dict)
    pe_length = _pe_length(state_dict, name)
    conv_in = state_dict.get("conv_in.weight")
    if conv_in is not None:
        if tuple(conv_in.shape) != (320, 9, 3, 3):
            raise MotionModuleFormatError(
                f"'{name}' has conv_in.weight of shape {list(conv_in.shape)}; PIA's is [320, 9, 3, 3]. The file "
                "is not an SD-1.5 PIA module."
            )
        return MotionModuleConfig(
            family="pia", mid_block=has_mid, max_frames=pe_length or 32, resnet_norm_across_frames=True,
            image_conditioning="pia",
        )
    if has_mid and pe_length is None:
        return MotionModuleConfig(family="animatelcm", mid_block=True, max_frames=64)
    if has_mid:
        return MotionModuleConfig(family="animatediff_v2", mid_block=True, max_frames=pe_length)
    if pe_length == 24:
        return MotionModuleConfig(family="animatediff_v1", mid_block=False, max_frames=24, resnet_norm_across_frames=True)
    if pe_length is None:
        log.warning("'%s' stores no position encoding; treating it as AnimateDiff v3 (32 frames).", name)
    return MotionModuleConfig(family="animatediff_v3", mid_block=False, max_frames=pe_length or 32)


def build_motion_module(
    state_dict: dict[str, torch.Tensor],
    config: MotionModuleConfig,
    name: str = "motion module",
    dtype: torch.dtype | None = torch.float32,
) -> MotionModule:
    """Build the module on the meta device and assign the file's tensors (no second copy in memory)."""
    with torch.device("meta"):
        module = MotionModule(config, name)
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict]
    if missing:
        raise MotionModuleFormatError(
            f"'{name}' looks like {FAMILY_LABELS[config.family]} but lacks {len(missing)} of the "
            f"{len(expected)} weights that layout needs (e.g. {_sample(missing, 2)}). The file is incomplete; "
            "download it again."
        )
    for key, tensor in expected.items():
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise MotionModuleFormatError(
                f"'{name}': '{key}' has shape {list(state_dict[key].shape)}, expected {list(tensor.shape)} for "
                f"{FAMILY_LABELS[config.family]} on SD-1.5. The module is for another model family."
            )

    def cast(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype) if dtype is not None and t.is_floating_point() else t

    module.load_state_dict({k: cast(state_dict[k]) for k in expected}, strict=True, assign=True)
    module.requires_grad_(False)
    module.eval()
    if "conv_in.weight" in state_dict:
        module.conv_in_weight = cast(state_dict["conv_in.weight"])
    module.ip_adapter_weights = {
        k: cast(v) for k, v in state_dict.items() if k.startswith(("image_proj.", "ip_adapter."))
    }
    known = set(expected) | set(module.extra_tensors())
    ignored = [k for k in state_dict if k not in known and not k.endswith("pos_encoder.pe") and k != "conv_in.bias"]
    if ignored:
        log.info("'%s': ignored %d tensors that are not temporal layers (e.g. %s)", name, len(ignored), ignored[0])
    return module


def load_motion_module(path: str, dtype: torch.dtype | None = torch.float32) -> MotionModule:
    """Read, recognise and build a motion module from a file; every failure is a ``MotionModuleFormatError``."""
    name = os.path.basename(path)
    state_dict, metadata = read_weights(path)
    config = detect_config(state_dict, metadata, name)
    return build_motion_module(state_dict, config, name, dtype)
