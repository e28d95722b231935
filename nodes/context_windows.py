"""Context Windows (video frames) (``AtomoContextWindows``): core's context windows, made to serve SD-1.5 video.

ComfyUI's ``ContextWindowsManual`` holds the machinery (``comfy.context_windows.IndexListContextHandler``: the
schedules, the fuse methods, ``calc_cond_batch`` per window, the memory estimate of one window), and this node uses
it. Two things stop core's node from serving a video whose frames are the batch (dimension 0), as AnimateDiff's are:

- the step lookup compares the schedule's sigmas with the whole per-frame timestep vector
  (``torch.isclose(sample_sigmas, timestep)``), which fails with a shape error for any batch of more than one
  latent (64 frames: ``[steps + 1]`` against ``[64]``). Every frame has the same sigma; we look up the first.
- a ControlNet's hint images are not windowed: each window's ControlNet call gets the first ``context_length``
  hints (``broadcast_image_to`` cuts the batch), so frames 48-63 would follow the poses of frames 0-15. Here each
  window's ControlNets see that window's hints, and the hints are restored after the step.

What already sees the window, checked in ``tests/host/test_context_windows.py``: the UNet call (16 frames per
cond/uncond chunk, so the motion module's frame limit and its frame count per video are the window's), the
image channels of our conditioning (``noise_concat``, batch-sliced by core), v1/PIA's cross-frame GroupNorm
statistics (computed over the call's frames), and IP-Adapter tokens (one image for every frame).
"""

from __future__ import annotations

import comfy.context_windows as cw
import torch
from comfy_api.latest import io

from ..atomo_core.errors import AtomoError
from .host_adapter import get_attachment

SCHEDULES = [cw.ContextSchedules.STATIC_STANDARD, cw.ContextSchedules.UNIFORM_STANDARD,
             cw.ContextSchedules.UNIFORM_LOOPED, cw.ContextSchedules.BATCHED]


class VideoWindow(cw.IndexListContextWindow):
    """A window of frames (dimension 0), indexed with a tuple: core indexes with a list holding the index list,
    which torch deprecates (it would become one tensor index of shape ``[1, length]``)."""

    def get_tensor(self, full: torch.Tensor, device=None, dim=None) -> torch.Tensor:
        if full.shape[0] == 1:  # one entry for every frame (the prompt, a single image)
            return full
        return full[self.index_list].to(device)

    def add_window(self, full: torch.Tensor, to_add: torch.Tensor, dim=None) -> torch.Tensor:
        full[self.index_list] += to_add
        return full


class VideoContextHandler(cw.IndexListContextHandler):
    """``IndexListContextHandler`` on the batch dimension, with the two fixes above (and tuple indexing)."""

    def __init__(self, **kwargs):
        super().__init__(dim=0, **kwargs)
        self._full_hints: dict[int, tuple] = {}  # id(control) -> (control, its full hint batch)

    def set_step(self, timestep: torch.Tensor, model_options: dict):
        sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        if sigmas is None:  # a sampler outside CFGGuider.sample: only the uniform schedules' offsets use the step
            self._step = 0
            return
        sigma = timestep.flatten()[0].to(sigmas)
        self._step = int(torch.argmin((sigmas - sigma).abs()).item())

    def get_context_windows(self, model, x_in, model_options):
        return [VideoWindow(window.index_list) for window in super().get_context_windows(model, x_in, model_options)]

    def get_resized_cond(self, cond_in, x_in, window, device=None):
        resized = super().get_resized_cond(cond_in, x_in, window, device)
        for cond in resized or []:
            control = cond.get("control")
            while control is not None:
                self._window_hint(control, window, x_in.shape[0])
                control = control.previous_controlnet
        return resized

    def _window_hint(self, control, window, frames: int):
        control_id = id(control)
        if control_id not in self._full_hints:
            self._full_hints[control_id] = (control, control.cond_hint_original)
        full = self._full_hints[control_id][1]
        if isinstance(full, torch.Tensor) and full.shape[0] == frames:
            hint = full[window.index_list]
            if control.cond_hint_original is not hint:
                control.cond_hint_original = hint
                control.cond_hint = None  # core rebuilds it (resize, VAE) from cond_hint_original

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        try:
            return super().execute(calc_cond_batch, model, conds, x_in, timestep, model_options)
        finally:
            for control, full in self._full_hints.values():
                control.cond_hint_original = full
                control.cond_hint = None
            self._full_hints.clear()


def with_context_windows(model, context_length: int, context_overlap: int, context_schedule: str,
                         context_stride: int = 1, closed_loop: bool = False, fuse_method: str = "pyramid"):
    """A clone of ``model`` that samples more frames than ``context_length`` window by window."""
    if context_overlap >= context_length:
        raise AtomoError(f"context_overlap ({context_overlap}) must be smaller than context_length "
                         f"({context_length}): the windows would not advance. Use an overlap of about a quarter "
                         "of the length (4 for 16).")
    attachment = get_attachment(model)
    limit = attachment.module.max_frames if attachment is not None else None
    if limit is not None and context_length > limit:
        raise AtomoError(
            f"context_length {context_length} is longer than '{attachment.module.name}' can take (at most "
            f"{limit} frames). Set context_length to {min(16, limit)} (what AnimateDiff modules were trained on).")
    model = model.clone()
    model.model_options["context_handler"] = VideoContextHandler(
        context_schedule=cw.get_matching_context_schedule(context_schedule),
        fuse_method=cw.get_matching_fuse_method(fuse_method),
        context_length=context_length, context_overlap=context_overlap, context_stride=context_stride,
        closed_loop=closed_loop)
    cw.create_prepare_sampling_wrapper(model)  # core's: estimate memory for one window, not the whole clip
    return model


class AtomoContextWindows(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoContextWindows",
            display_name="Context Windows (video frames)",
            category="AtomoVideo/sampling",
            description="Sample videos longer than the motion module's window: the frames are denoised in "
                        "overlapping windows and fused each step (ComfyUI's context windows, made to work on "
                        "the frame batch of SD-1.5 video, ControlNet hints included).",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL with a motion module (Load Motion Module), before the "
                                                "sampler."),
                io.Int.Input("context_length", default=16, min=2, max=128,
                             tooltip="Frames per window: 16 for AnimateDiff modules (what they were trained on)."),
                io.Int.Input("context_overlap", default=4, min=0, max=127,
                             tooltip="Frames shared by neighbouring windows; more is smoother and slower."),
                io.Combo.Input("context_schedule", options=SCHEDULES, default=cw.ContextSchedules.UNIFORM_STANDARD,
                               tooltip="standard_uniform: windows shift every step (fewer seams); standard_static: "
                                       "the same windows every step; looped_uniform: wraps around for loops; "
                                       "batched: no overlap."),
                io.Int.Input("context_stride", default=1, min=1, max=8,
                             tooltip="Uniform schedules only: also windows of every 2nd, 4th... frame, for "
                                     "coherence over the whole clip."),
                io.Boolean.Input("closed_loop", default=False, tooltip="looped_uniform only: make a seamless loop."),
                io.Combo.Input("fuse_method", options=cw.ContextFuseMethods.LIST_STATIC,
                               default=cw.ContextFuseMethods.PYRAMID,
                               tooltip="How overlapping windows are mixed: pyramid weights a window's middle "
                                       "frames most."),
            ],
            outputs=[io.Model.Output(tooltip="For KSampler, SamplerCustom(Advanced) or the Zero-SNR V Sampler.")],
        )

    @classmethod
    def execute(cls, model, context_length, context_overlap, context_schedule, context_stride, closed_loop,
                fuse_method) -> io.NodeOutput:
        return io.NodeOutput(with_context_windows(model, context_length, context_overlap, context_schedule,
                                                  context_stride, closed_loop, fuse_method))
