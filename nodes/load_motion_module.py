"""Load Motion Module (``AtomoLoadMotionModule``): MODEL + motion-module file -> MODEL that animates a batch."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..atomo_core.formats import FAMILY_LABELS, load_motion_module
from . import folders
from .host_adapter import attach_motion_module

log = logging.getLogger("AtomoVideo")
SAMPLING_CHOICES = ["from module", "keep model's"]


class AtomoLoadMotionModule(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        names = folders.motion_module_names() or [folders.NO_MOTION_MODULES]
        return io.Schema(
            node_id="AtomoLoadMotionModule",
            display_name="Load Motion Module",
            category="AtomoVideo",
            description=(
                "Adds the temporal layers of a motion module to an SD-1.5 MODEL: the frames of the latent batch "
                "then come out as one coherent clip. Supports AnimateDiff v1/v2/v3, AnimateLCM, PIA and AtomoVideo files."
            ),
            inputs=[
                io.Model.Input("model", tooltip="An SD-1.5 MODEL (any SD-1.5 checkpoint, finetune or merge; LoRAs before or after are fine)."),
                io.Combo.Input(
                    "motion_module_name",
                    options=names,
                    default=names[0],
                    tooltip="A file in ComfyUI/models/motion_modules (or models/animatediff_models): AnimateDiff "
                            "v1/v2/v3, AnimateLCM, PIA or AtomoVideo. Press R after adding files.",
                ),
                io.Combo.Input(
                    "sampling",
                    options=SAMPLING_CHOICES,
                    default=SAMPLING_CHOICES[0],
                    optional=True,
                    tooltip=(
                        "'from module': use the noise schedule and prediction type the module was trained with "
                        "(AnimateDiff/PIA: sqrt_linear + eps; AtomoVideo: from its file). 'keep model's': leave the "
                        "MODEL's sampling as it is (e.g. after your own ModelSamplingDiscrete node)."
                    ),
                ),
            ],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The MODEL with the temporal layers: the frames "
                                                                   "of a latent batch come out as one clip.")],
        )

    @classmethod
    def execute(cls, model, motion_module_name, sampling=SAMPLING_CHOICES[0]) -> io.NodeOutput:
        module = load_motion_module(folders.motion_module_path(motion_module_name), dtype=None)
        patched = attach_motion_module(model, module, apply_sampling=sampling == SAMPLING_CHOICES[0])
        log.info(
            "AtomoVideo: loaded '%s' as %s (up to %s frames per clip)",
            motion_module_name, FAMILY_LABELS[module.config.family], module.max_frames or "any",
        )
        return io.NodeOutput(patched)
