"""Motion Strength (``AtomoMotionStrength``): how much the motion module changes each frame (see
``atomo_core.motion_strength``). The strength rides in ``transformer_options`` of a clone, read by the temporal
layers' handler at every call (``host_adapter.temporal_layer_handler``), so context windows and Predict Next Frames
give each call its own frames' values."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..atomo_core.errors import AtomoError
from ..atomo_core.motion_strength import MotionStrength, parse_strength_list
from .host_adapter import STRENGTH_KEY, get_attachment

log = logging.getLogger("AtomoVideo")


def with_motion_strength(model, scale: float = 1.0, per_frame: str = "", mask: torch.Tensor | None = None):
    """A clone of ``model`` (a motion module attached) whose temporal layers run at this strength."""
    if get_attachment(model) is None:
        raise AtomoError("Motion Strength needs a MODEL with a motion module: connect it after Load Motion Module.")
    values = parse_strength_list(per_frame or "")
    if mask is not None:
        mask = mask.detach().float().cpu()
        if mask.ndim == 2:
            mask = mask[None]
    strength = MotionStrength(float(scale), values, mask)
    clone = model.clone()
    clone.model_options.setdefault("transformer_options", {})[STRENGTH_KEY] = strength
    log.info("AtomoVideo motion strength %.2f%s", scale, f" x {len(values)} per-frame values" if values else
             (f" x a mask of {mask.shape[0]} frame(s)" if mask is not None else ""))
    return clone


class AtomoMotionStrength(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoMotionStrength",
            display_name="Motion Strength",
            category="AtomoVideo",
            description="Calms, boosts or fades the motion module's effect, for the whole clip, frame by frame or "
                        "pixel by pixel: 0 is the image model alone (no motion), 1 the module as trained, above 1 "
                        "amplified.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from Load Motion Module (or after a motion LoRA)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=3.0, step=0.05,
                               tooltip="The strength of every frame; multiplies per_frame or mask when given."),
                io.String.Input("per_frame", multiline=True, default="", optional=True,
                                tooltip="Optional: one strength per frame, e.g. '0, 0.25, 0.5, 0.75, 1' (a shorter "
                                        "list is stretched over the video, so '0, 1' fades the motion in)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional: a MASK batch, one per frame (a shorter batch repeats its last), "
                                      "the strength of every pixel: move only where the mask is white."),
            ],
            outputs=[io.Model.Output(tooltip="The MODEL with this motion strength, for the sampler or Context "
                                             "Windows.")],
        )

    @classmethod
    def execute(cls, model, strength, per_frame="", mask=None) -> io.NodeOutput:
        return io.NodeOutput(with_motion_strength(model, strength, per_frame, mask))
