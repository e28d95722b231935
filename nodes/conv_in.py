"""The 9-channel input convolution of image-conditioned modules (PIA, AtomoVideo) as a ComfyUI weight patch.

Channels 0..3 of ``conv_in`` stay the checkpoint's; channels 4..8 (frame mask and image latent) come from the
module. A padded ``diff`` weight patch does it: ComfyUI zero-pads the checkpoint's ``[320, 4, 3, 3]`` weight to the
patch's ``[320, 9, 3, 3]`` and adds it, so LoRAs, unloading and low-VRAM weight streaming keep working. The patch
entry is remembered as a MODEL attachment so that attaching another module can take exactly it out again.
"""

from __future__ import annotations

import uuid

import torch

from ..atomo_core.errors import ConditioningError
from ..atomo_core.formats import FAMILY_LABELS

CONV_IN_KEY = "diffusion_model.input_blocks.0.0.weight"
CONV_IN_ATTACHMENT = "atomo_video_conv_in"


def unet_input_channels(model) -> int:
    """Input channels of the MODEL's checkpoint (4 for SD-1.5, 9 for an SD-1.5 inpainting checkpoint), from its
    UNet config: the live weight may be our own 9-channel patch while a patched clone is loaded."""
    config = getattr(getattr(model.model, "model_config", None), "unet_config", None) or {}
    if "in_channels" in config:
        return int(config["in_channels"])
    return int(model.get_model_object("diffusion_model").input_blocks[0][0].weight.shape[1])


def check_plain_input(model, module) -> None:
    """Refuse a UNet whose input is not the plain 4-channel latent (an inpainting checkpoint: 9 channels)."""
    channels = unet_input_channels(model)
    if channels != 4:
        label = FAMILY_LABELS[module.config.family]
        raise ConditioningError(
            f"This MODEL's UNet takes {channels} input channels: it is an SD-1.5 inpainting checkpoint (latent, mask "
            f"and masked image). '{module.name}' ({label}) adds its own image channels to a plain 4-channel SD-1.5 "
            "UNet, so the two cannot be combined. Load the regular SD-1.5 checkpoint (or a finetune of it) for image "
            "to video; an inpainting checkpoint works with text-to-video modules (AnimateDiff) in KSampler."
        )


def patch_conv_in(model, module) -> None:
    """Widen ``conv_in`` to 9 channels on ``model`` (a clone), once per MODEL."""
    if model.get_attachment(CONV_IN_ATTACHMENT) is not None:
        return
    check_plain_input(model, module)
    diff = torch.zeros_like(module.conv_in_weight, dtype=torch.float32)
    diff[:, 4:] = module.conv_in_weight[:, 4:].float()
    value = ("diff", (diff, {"pad_weight": True}))
    model.add_patches({CONV_IN_KEY: value}, 1.0, 1.0)
    model.set_attachments(CONV_IN_ATTACHMENT, value)


def remove_conv_in(model) -> bool:
    """Take our ``conv_in`` patch off ``model`` (a clone), leaving any other patch on that weight (a LoRA's)."""
    value = model.get_attachment(CONV_IN_ATTACHMENT)
    if value is None:
        return False
    kept = [entry for entry in model.patches.get(CONV_IN_KEY, []) if entry[1] is not value]
    if kept:
        model.patches[CONV_IN_KEY] = kept
    else:
        model.patches.pop(CONV_IN_KEY, None)
    model.patches_uuid = uuid.uuid4()  # the weights must be patched anew
    model.remove_attachments(CONV_IN_ATTACHMENT)
    return True
