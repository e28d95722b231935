"""Context Windows (video frames) (``AtomoContextWindows``): core's context windows, made to serve SD-1.5 video.

ComfyUI's ``ContextWindowsManual`` holds the machinery (``comfy.context_windows.IndexListContextHandler``: the
schedules, the fuse methods, ``calc_cond_batch`` per window, the memory estimate of one window), and this node uses
it, on ComfyUI 0.3.64 and on the current ComfyUI (0.38) alike. What is ours, and why (each adaptation chooses by
feature, not by version, next to the code it adapts):

- **the step lookup** (0.3.64): core compares the schedule's sigmas with the whole per-frame timestep vector, a shape
  error for any video whose frames are the batch; we look up the first frame's sigma (current core does the same).
- **conditioning per window** (0.3.64): core slices a cond only when its ``ndim`` is below the window dimension,
  never true at dimension 0, so every window got frames 0..15 of per-frame conditioning (prompt travel, our image
  channels); we slice every per-frame cond to the window's frames (current core does).
- **ControlNet hints per window** (both): core windows no hint; each window's ControlNets get that window's hints,
  restored after the step (current core also caches prepared hints per size, ``cond_hints``: cleared with them).
- **no causal anchor frame** (current core): its ``causal_window_fix`` (on by default) runs each window with one
  extra leading frame; AnimateDiff modules were trained on 16-frame clips, so ours asks for windows as trained.
- **FreeNoise**: current core's own (``freenoise=True`` and its sampler wrapper) where the handler offers it, else ours
  (``atomo_core.noise_init.freenoise``, the same rule), through the same ``SAMPLER_SAMPLE`` wrapper slot.
- **windows**: core's window objects, re-typed to ``VideoWindow`` (tuple indexing; ``dim``, the anchor and
  ``retain_index_list`` honoured), so whatever core's constructor records (``total_frames``, ``context_overlap``)
  is kept.
- **the image in every window** (both): PIA and AtomoVideo windows each hold the given frames first (AtomoVideo:
  their clean latent and mask 1; PIA: the condition frame, the strengths of a clip of the window's length), so
  every window is a clip as the module was trained on, not a slice of the clip far from the image. Current core's
  ``cond_retain_index_list`` / ``latent_retain_index_list`` overwrite a window's own first frames with the clip's
  first frames instead: the window then runs one frame fewer of its own and adds the output at the retained
  positions to the wrong frames; ours schedules the windows over the other frames, ``len(given)`` shorter, and
  puts the given frames in front.

What already saw the window, checked in ``tests/host/test_context_windows.py``: the UNet call (16 frames per
cond/uncond chunk, so the motion module's frame limit and its frame count per video are the window's), v1/PIA's
cross-frame GroupNorm statistics (computed over the call's frames), and IP-Adapter tokens (one image for every
frame).
"""

from __future__ import annotations

import inspect
import logging

import comfy.context_windows as cw
import comfy.patcher_extension
import torch
from comfy_api.latest import io

from ..atomo_core.conditioning import window_anchor_frames, window_concat
from ..atomo_core.errors import AtomoError
from ..atomo_core.noise_init import freenoise
from .conditioning import CONCAT_KEY, FAMILY_KEY
from .host_adapter import get_attachment

log = logging.getLogger("AtomoVideo")

SCHEDULES = [cw.ContextSchedules.STATIC_STANDARD, cw.ContextSchedules.UNIFORM_STANDARD,
             cw.ContextSchedules.UNIFORM_LOOPED, cw.ContextSchedules.BATCHED]
HANDLER_OPTIONS = set(inspect.signature(cw.IndexListContextHandler.__init__).parameters)
CORE_FREENOISE = "freenoise" in HANDLER_OPTIONS and hasattr(cw, "create_sampler_sample_wrapper")  # ComfyUI > 0.3.64


class VideoWindow(cw.IndexListContextWindow):
    """A window of frames, indexed with a tuple (core's 0.3.64 indexes with a list holding the index list, which torch
    deprecates). Honours current core's extras: the causal anchor frame and ``retain_index_list``."""

    def _indices(self) -> list[int]:
        anchor = getattr(self, "causal_anchor_index", None)  # current core's causal_window_fix (we turn it off)
        return ([anchor] if anchor is not None and anchor >= 0 else []) + list(self.index_list)

    def get_tensor(self, full: torch.Tensor, device=None, dim=None, retain_index_list=()) -> torch.Tensor:
        dim = getattr(self, "dim", 0) if dim is None else dim
        if dim == 0 and full.shape[0] == 1:  # one entry for every frame (the prompt, a single image)
            return full
        window = full[(slice(None),) * dim + (self._indices(),)]
        if retain_index_list:
            keep = (slice(None),) * dim + (list(retain_index_list),)
            window[keep] = full[keep]
        return window if device is None else window.to(device)

    def add_window(self, full: torch.Tensor, to_add: torch.Tensor, dim=None) -> torch.Tensor:
        dim = getattr(self, "dim", 0) if dim is None else dim
        full[(slice(None),) * dim + (list(self.index_list),)] += to_add
        return full


class VideoContextHandler(cw.IndexListContextHandler):
    """``IndexListContextHandler`` on the batch dimension, with the adaptations above."""

    def __init__(self, freenoise: bool = False, given_in_every_window: bool = True, **kwargs):
        extra = {"causal_window_fix": False} if "causal_window_fix" in HANDLER_OPTIONS else {}
        if CORE_FREENOISE:
            extra["freenoise"] = freenoise
        super().__init__(dim=0, **kwargs, **extra)
        self.freenoise = freenoise
        self.given_in_every_window = given_in_every_window
        self._full_hints: dict[int, tuple] = {}  # id(control) -> (control, its full hint batch)
        self._image: tuple[str, torch.Tensor, list[int]] | None = None  # this step's (family, image channels, anchors)

    def set_step(self, timestep: torch.Tensor, model_options: dict):
        sigmas = model_options.get("transformer_options", {}).get("sample_sigmas")
        if sigmas is None:  # a sampler outside CFGGuider.sample: only the uniform schedules' offsets use the step
            self._step = 0
            return
        sigma = timestep.flatten()[0].to(sigmas)
        self._step = int(torch.argmin((sigmas - sigma).abs()).item())

    def _find_image(self, conds, frames: int):
        """``(family, image channels [F, 5, h, w], anchor frames)`` of the first condition carrying an image."""
        for cond_list in conds:
            for cond in cond_list or []:
                family, concat = cond.get(FAMILY_KEY), cond.get(CONCAT_KEY)
                if family and isinstance(concat, torch.Tensor) and concat.shape[0] == frames:
                    anchors = window_anchor_frames(concat, family)
                    if anchors:
                        return family, concat, anchors
        return None

    def get_context_windows(self, model, x_in, model_options):
        frames = x_in.shape[0]
        anchors = self._image[2] if self._image is not None and self.given_in_every_window else []
        if not anchors or frames <= self.context_length:
            windows = super().get_context_windows(model, x_in, model_options)
        else:
            windows = self._anchored_windows(model, x_in, model_options, anchors)
        for window in windows:
            window.__class__ = VideoWindow  # keep what core's constructor recorded (total_frames, overlap, ...)
            window.total_frames = frames
        return windows

    def _anchored_windows(self, model, x_in, model_options, anchors: list[int]):
        """Image modules: core's windows over the frames that are not given, ``len(anchors)`` shorter, each with
        the given frames (PIA: the condition frame) put first, so every window is a clip as the module was trained
        on; the outputs at the given frames are fused like any frame's."""
        frames, length = x_in.shape[0], self.context_length - len(anchors)
        if length <= self.context_overlap:
            raise AtomoError(
                f"context_length {self.context_length} leaves {length} new frame(s) per window beside the "
                f"{len(anchors)} given frame(s) every window holds, not more than context_overlap "
                f"({self.context_overlap}): the windows would not advance. Use a longer context_length or a "
                "smaller context_overlap.")
        rest = [i for i in range(frames) if i not in set(anchors)]
        saved = self.context_length
        self.context_length = length
        try:
            windows = super().get_context_windows(model, x_in[: len(rest)], model_options)
        finally:
            self.context_length = saved
        for window in windows:
            window.own = (list(window.index_list), len(rest))  # the window's own frames in the schedule's terms
            generated = [rest[i] for i in window.index_list]
            window.index_list = list(anchors) + generated
            window.context_length = len(window.index_list)
            if hasattr(window, "center_ratio"):  # current core: where the window's own frames lie in the clip
                window.center_ratio = (min(generated) + max(generated)) / (2 * frames)
        return windows

    def get_resized_cond(self, cond_in, x_in, window, device=None):
        resized = super().get_resized_cond(cond_in, x_in, window, device)
        frames = x_in.shape[0]
        # (core also slices the conditioning's own top-level tensors, our full image channels among them: read
        # those from the condition as it came in; split_conds_to_windows is off, so the lists pair up)
        for original, cond in zip(cond_in or [], resized or [], strict=True):
            for key, value in list(cond.get("model_conds", {}).items()):
                # ComfyUI 0.3.64 leaves per-frame conds whole at dimension 0 (current core slices them itself)
                tensor = getattr(value, "cond", None)
                if isinstance(tensor, torch.Tensor) and tensor.ndim > 0 and tensor.shape[0] == frames and \
                        len(window.index_list) != frames:
                    cond["model_conds"][key] = value._copy_with(window.get_tensor(tensor, device))
            full = original.get(CONCAT_KEY)
            if self._image is not None and self._image[0] == "pia" and "c_concat" in cond.get("model_conds", {}) \
                    and original.get(FAMILY_KEY) == "pia" and isinstance(full, torch.Tensor) \
                    and full.shape[0] == frames:
                # PIA: the window is a clip of its own length, condition frame first (strengths by window position)
                value = cond["model_conds"]["c_concat"]
                anchors = self._image[2] if self.given_in_every_window else []
                concat = window_concat(full, "pia", window.index_list, anchors)
                cond["model_conds"]["c_concat"] = value._copy_with(concat.to(device or concat.device))
            control = cond.get("control")
            while control is not None:
                self._window_hint(control, window, frames)
                control = control.previous_controlnet
        return resized

    def combine_context_window_results(self, x_in, sub_conds_out, sub_conds, window, window_idx, total_windows,
                                       timestep, conds_final, counts_final, biases_final):
        """A window holding the given frames first: its own frames are weighted as core weights the window the
        schedule made (so ``overlap-linear`` still ramps between neighbours), the given frames with 1."""
        own = getattr(window, "own", None)
        if own is None or self.fuse_method.name == cw.ContextFuseMethods.RELATIVE:
            return super().combine_context_window_results(x_in, sub_conds_out, sub_conds, window, window_idx,
                                                          total_windows, timestep, conds_final, counts_final,
                                                          biases_final)
        index, frames = own
        given = len(window.index_list) - len(index)
        weights = [1.0] * given + [float(w) for w in cw.get_context_weights(len(index), frames, index, self,
                                                                            sigma=timestep)]
        weights = cw.match_weights_to_dim(weights, x_in, self.dim, device=x_in.device)
        for i in range(len(sub_conds_out)):
            window.add_window(conds_final[i], sub_conds_out[i] * weights)
            window.add_window(counts_final[i], weights)
        for callback in comfy.patcher_extension.get_all_callbacks(
                cw.IndexListCallbacks.COMBINE_CONTEXT_WINDOW_RESULTS, self.callbacks):
            callback(self, x_in, sub_conds_out, sub_conds, window, window_idx, total_windows, timestep, conds_final,
                     counts_final, biases_final)

    @staticmethod
    def _forget_prepared_hints(control) -> None:
        control.cond_hint = None  # ComfyUI 0.3.64 rebuilds it (resize, VAE) from cond_hint_original
        for cache in ("cond_hints", "control_inputs"):  # current ComfyUI caches prepared hints per size
            if isinstance(getattr(control, cache, None), dict):
                getattr(control, cache).clear()

    def _window_hint(self, control, window, frames: int):
        control_id = id(control)
        if control_id not in self._full_hints:
            self._full_hints[control_id] = (control, control.cond_hint_original)
        full = self._full_hints[control_id][1]
        if isinstance(full, torch.Tensor) and full.shape[0] == frames:
            hint = full[window.index_list]
            if control.cond_hint_original is not hint:
                control.cond_hint_original = hint
                self._forget_prepared_hints(control)

    def execute(self, calc_cond_batch, model, conds, x_in, timestep, model_options):
        self._image = self._find_image(conds, x_in.shape[0])
        try:
            return super().execute(calc_cond_batch, model, conds, x_in, timestep, model_options)
        finally:
            for control, full in self._full_hints.values():
                control.cond_hint_original = full
                self._forget_prepared_hints(control)
            self._full_hints.clear()


FREENOISE_KEY = "AtomoVideo_FreeNoise"


def _freenoise_wrapper(executor, guider, sigmas, extra_args, callback, noise, *args, **kwargs):
    """``SAMPLER_SAMPLE`` wrapper (ComfyUI 0.3.64, which has no FreeNoise of its own): the initial noise rescheduled."""
    handler = guider.model_options.get("context_handler")
    if isinstance(handler, VideoContextHandler) and handler.freenoise and noise.shape[0] > handler.context_length:
        noise = freenoise(noise, handler.context_length, handler.context_overlap, extra_args.get("seed") or 0)
    return executor(guider, sigmas, extra_args, callback, noise, *args, **kwargs)


def with_context_windows(model, context_length: int, context_overlap: int, context_schedule: str,
                         context_stride: int = 1, closed_loop: bool = False, fuse_method: str = "pyramid",
                         use_freenoise: bool = False, given_in_every_window: bool = True):
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
        closed_loop=closed_loop, freenoise=use_freenoise, given_in_every_window=given_in_every_window)
    cw.create_prepare_sampling_wrapper(model)  # core's: estimate memory for one window, not the whole clip
    if use_freenoise:
        if CORE_FREENOISE:
            cw.create_sampler_sample_wrapper(model)  # current ComfyUI's own FreeNoise
        else:
            model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.SAMPLER_SAMPLE, FREENOISE_KEY,
                                       _freenoise_wrapper)
    log.info("AtomoVideo context windows: %d frames overlapping by %d, %s%s", context_length, context_overlap,
             context_schedule, f", FreeNoise ({'ComfyUI' if CORE_FREENOISE else 'AtomoVideo'})" if use_freenoise
             else "")
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
                io.Boolean.Input("freenoise", default=False, optional=True,
                                 tooltip="FreeNoise: later windows start from shuffled copies of the first window's "
                                         "noise, so a long video keeps one look (seeded: a run repeats exactly)."),
                io.Boolean.Input("image_in_every_window", default=True, optional=True,
                                 tooltip="PIA and AtomoVideo: every window holds the given frame(s) first, as a clip "
                                         "the module was trained on, so the whole video stays on the image. Off: "
                                         "only the windows that contain them see them."),
            ],
            outputs=[io.Model.Output(tooltip="For KSampler, SamplerCustom(Advanced) or the Zero-SNR V Sampler.")],
        )

    @classmethod
    def execute(cls, model, context_length, context_overlap, context_schedule, context_stride, closed_loop,
                fuse_method, freenoise=False, image_in_every_window=True) -> io.NodeOutput:
        return io.NodeOutput(with_context_windows(model, context_length, context_overlap, context_schedule,
                                                  context_stride, closed_loop, fuse_method, freenoise,
                                                  image_in_every_window))
