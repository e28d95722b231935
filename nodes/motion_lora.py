"""Load Motion LoRA (``AtomoLoadMotionLoRA``): MODEL with a motion module + motion LoRA file -> MODEL.

The LoRA is a weight patch on the motion module's own ModelPatcher (a clone of it), made by ComfyUI's LoRA loader
(``comfy.lora.load_lora``) and applied by ComfyUI's weight patching: merged when the module is loaded, undone when
it is unloaded (the base weights come back bit for bit), computed per call by the cast layers when ComfyUI loads
the module partially (low VRAM), and stackable (each node adds its patch to what the MODEL already carries).
"""

from __future__ import annotations

import logging

import comfy.lora
from comfy_api.latest import io

from ..atomo_core.checkpoint_io import read_weights
from ..atomo_core.errors import AtomoError
from ..atomo_core.motion_lora import MotionLoRAError, motion_lora_targets
from . import folders
from .host_adapter import get_attachment, with_module_patcher

log = logging.getLogger("AtomoVideo")


def apply_motion_lora(model, lora_state_dict: dict, strength: float, name: str):
    """A clone of ``model`` whose attached module carries the LoRA ``lora_state_dict`` at ``strength``."""
    attachment = get_attachment(model)
    if attachment is None:
        raise AtomoError(
            f"'{name}' is a motion LoRA, but the MODEL connected has no motion module. Connect the MODEL output of "
            "Load Motion Module (an AnimateDiff v2 module for the released camera LoRAs) to this node."
        )
    targets = motion_lora_targets(lora_state_dict, name)
    weights = attachment.patcher.model.state_dict()
    absent = {p: k for p, k in targets.items() if k not in weights}
    mid_only = absent and all(k.startswith("mid_block.") for k in absent.values()) and not attachment.config.mid_block
    if absent and not mid_only:
        example = next(iter(absent.values()))
        raise MotionLoRAError(
            f"'{name}' patches layers that '{attachment.module.name}' does not have ({len(absent)} of "
            f"{len(targets)}, e.g. '{example}'): it was made for another kind of motion module. The released camera "
            "LoRAs are for AnimateDiff v2 (mm_sd_v15_v2.ckpt)."
        )
    if mid_only:  # a v2 LoRA on a module without the mid-block layer (v3, PIA): the rest applies, as in Evolved
        log.info("AtomoVideo: '%s' has %d mid-block pairs that '%s' has no layer for; they are skipped",
                 name, len(absent), attachment.module.name)
    kept = {p: k for p, k in targets.items() if p not in absent}
    for prefix, key in kept.items():
        up, down = lora_state_dict[f"{prefix}_lora.up.weight"], lora_state_dict[f"{prefix}_lora.down.weight"]
        wanted = tuple(weights[key].shape)
        if (up.shape[0], down.shape[1]) != wanted:
            raise MotionLoRAError(
                f"'{name}': the pair for '{key}' makes a {up.shape[0]}x{down.shape[1]} update, but that weight of "
                f"'{attachment.module.name}' is {wanted[0]}x{wanted[1]}: the LoRA was made for another model size.")
    patches = comfy.lora.load_lora({k: v for k, v in lora_state_dict.items() if not k.startswith(tuple(absent))},
                                   kept, log_missing=False)
    patcher = attachment.patcher.clone()
    applied = patcher.add_patches(patches, strength)
    if len(applied) != len(kept):
        raise MotionLoRAError(f"'{name}': ComfyUI applied {len(applied)} of {len(kept)} LoRA pairs.")
    return with_module_patcher(model, patcher)


class AtomoLoadMotionLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        names = folders.motion_lora_names() or [folders.NO_MOTION_LORAS]
        return io.Schema(
            node_id="AtomoLoadMotionLoRA",
            display_name="Load Motion LoRA",
            category="AtomoVideo",
            description=(
                "Applies an AnimateDiff motion LoRA (the v2 camera moves: pan, zoom, tilt, roll) to the motion "
                "module attached to the MODEL. Chain several to combine them; the MODEL without this node is "
                "unchanged."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL output of Load Motion Module (or of another Load Motion "
                                                "LoRA). The released LoRAs are for AnimateDiff v2."),
                io.Combo.Input("lora_name", options=names, default=names[0],
                               tooltip="A motion LoRA in ComfyUI/models/motion_lora (or AnimateDiff-Evolved's "
                                       "models/animatediff_motion_lora), e.g. v2_lora_ZoomIn.ckpt. Press R after "
                                       "adding files."),
                io.Float.Input("strength", default=1.0, min=-10.0, max=10.0, step=0.01,
                               tooltip="How much of the LoRA to add: the weights become W + strength x (up @ down), "
                                       "AnimateDiff's own rule (its alpha). 1.0 as released; 0 changes nothing."),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The MODEL whose motion module carries the LoRA.")],
        )

    @classmethod
    def execute(cls, model, lora_name, strength=1.0) -> io.NodeOutput:
        path = folders.motion_lora_path(lora_name)
        state_dict, _ = read_weights(path)
        patched = apply_motion_lora(model, state_dict, strength, lora_name)
        log.info("AtomoVideo: motion LoRA '%s' at strength %g", lora_name, strength)
        return io.NodeOutput(patched)
