"""The door between ``atomo_core`` and ComfyUI: a ``MotionModule`` becomes ModelPatcher patches.

Everything goes through ComfyUI's public ModelPatcher hooks, on a clone:

- the motion module is its own ``ModelPatcher`` attached with ``set_additional_models``, so ComfyUI loads,
  offloads and frees it with the UNet; its layers are rebuilt from ComfyUI's cast operations (``comfy.ops``),
  so ComfyUI's partial (low-VRAM) loading streams them and casts their weights per call like its own;
- a ``PatcherInjection`` inserts each temporal layer into its UNet block when the UNet is patched and removes
  it when the UNet is unpatched (weights are loaded and LoRA-patched while ejected, so the UNet's own keys
  never move); for AnimateDiff v1 and PIA it also wraps the ResBlock/output GroupNorms so they take
  statistics over all frames of a video, as those modules were trained;
- a ``forward_timestep_embed`` patch calls the inserted layers with the frame count, derived on every call
  from the batch and ``transformer_options["cond_or_uncond"]``, and with ComfyUI's attention function (the
  backend the user chose, and its batch split), looked up on every call;
- a diffusion-model wrapper checks the frame count against the module's limit before any layer runs;
- ``model_sampling`` is object-patched to the schedule the module was trained with.
"""

from __future__ import annotations

import logging

import comfy.model_patcher
import comfy.ops
import comfy.patcher_extension
import torch
from einops import rearrange

from ..atomo_core.errors import AtomoError, FrameLimitError, frame_limit_advice
from ..atomo_core.formats import FAMILY_LABELS
from ..atomo_core.layout import SD15_WIDTHS
from ..atomo_core.motion_module import MotionModule
from ..atomo_core.motion_strength import MotionStrength, apply_strength
from ..atomo_core.temporal_attention import TemporalLayer
from .attention import comfy_attention
from .conv_in import remove_conv_in
from .ip_adapter_patch import remove_ip_adapter
from .model_sampling import patch_model_sampling

log = logging.getLogger("AtomoVideo")

KEY = "atomo_video"
STRENGTH_KEY = "atomo_motion_strength"  # transformer_options: a MotionStrength (Motion Strength node)
VIDEO_FRAMES_KEY = "atomo_video_frames"  # transformer_options: (first frame, frames in all) of this sampling run
# within the whole video, when a run makes only part of it (Predict Next Frames' segments)
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
STORAGE_CHOICES = ("smaller", "compute", "file")  # how the module's weights are kept: see storage_dtype
DEFAULT_STORAGE = "smaller"


class MotionAttachment:
    """What a MODEL carries once a motion module is attached (``model.get_attachment(KEY)``)."""

    def __init__(self, module: MotionModule, patcher, model_sampling=None):
        self.module = module
        self.patcher = patcher
        self.model_sampling = model_sampling  # the object patch Load Motion Module set (None: "keep model's")
        self.frames: int | None = None  # frames per video of the UNet call in progress

    @property
    def config(self):
        return self.module.config

    def __deepcopy__(self, memo):
        return self


def get_attachment(model) -> MotionAttachment | None:
    return model.get_attachment(KEY) if hasattr(model, "get_attachment") else None


def frames_per_video(batch: int, transformer_options: dict) -> int:
    """``f = batch // chunks``, chunks being the cond/uncond groups batched into this UNet call."""
    chunks = len(transformer_options.get("cond_or_uncond") or [0])
    if batch % chunks:
        raise AtomoError(f"A batch of {batch} latents cannot be split into {chunks} equal cond/uncond chunks.")
    return batch // chunks


def check_sd15(model, module_name: str) -> None:
    """Refuse any MODEL that is not an SD-1.5-architecture UNet, naming what it is instead."""
    base = getattr(model, "model", None)
    config = getattr(base, "model_config", None)
    unet_config = getattr(config, "unet_config", {}) or {}
    unet = getattr(base, "diffusion_model", None)
    ok = (
        unet_config.get("context_dim") == 768
        and unet_config.get("model_channels") == 320
        and list(unet_config.get("channel_mult", [])) == [1, 2, 4, 4]
        and unet is not None
        and len(getattr(unet, "input_blocks", [])) == 12
        and len(getattr(unet, "output_blocks", [])) == 12
    )
    if not ok:
        kind = type(config).__name__ if config is not None else type(base).__name__
        raise AtomoError(
            f"'{module_name}' is an SD-1.5 motion module, but the MODEL connected is {kind}. Connect the MODEL "
            "of an SD-1.5 checkpoint (or an SD-1.5 finetune/merge)."
        )


def temporal_layer_handler(layer, x, emb, context, transformer_options, *args, **kwargs):
    """``forward_timestep_embed_patch`` handler: run an inserted temporal layer on this call's frames.

    The layer's cast operations move and cast its weights to ``x``'s device and dtype when ComfyUI loaded it
    partially or stores it in another dtype; ``x`` itself is never moved.
    """
    frames = frames_per_video(x.shape[0], transformer_options)
    strength = transformer_options.get(STRENGTH_KEY)
    # a temporal convolution that reads the caption (temporal_text film) gets this call's cross-attention context:
    # one row per frame, cond and uncond alike, so prompt travel and per-window conds reach it frame by frame
    extra = {"context": context} if getattr(layer, "reads_text", False) else {}
    if not isinstance(strength, MotionStrength):
        return layer(x, frames, attention=comfy_attention(transformer_options), **extra)
    indices, total = video_frames(frames, transformer_options)
    if strength.all_zero(indices, total):
        return x
    y = layer(x, frames, attention=comfy_attention(transformer_options), **extra)
    factor = strength.factor(indices, total, x.shape[0] // frames, tuple(x.shape[-2:]), x)
    return apply_strength(x, y, factor)


def video_frames(frames: int, transformer_options: dict) -> tuple[list[int], int]:
    """Which frames of the whole video this call's ``frames`` frames per video are, and the video's length: a
    context window's frames (``transformer_options["context_window"]``, set by core's context windows), offset by
    the run's place in a longer video (Predict Next Frames)."""
    first, total = transformer_options.get(VIDEO_FRAMES_KEY, (0, None))
    window = transformer_options.get("context_window")
    index = list(getattr(window, "index_list", None) or [])
    if len(index) == frames:
        run = getattr(window, "total_frames", None) or max(index) + 1
    else:
        index, run = list(range(frames)), frames
    return [first + i for i in index], max(total or 0, first + run)


class FrameGroupNorm(torch.nn.Module):
    """Wraps a UNet GroupNorm so statistics span all frames of each video (AnimateDiff v1, PIA).

    The wrapped norm keeps its own weights and casting; only the tensor it sees is ``[b, c, f, h, w]``.
    """

    def __init__(self, norm: torch.nn.Module, attachment: MotionAttachment):
        super().__init__()
        self.norm = norm
        self.attachment = attachment

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = self.attachment.frames
        if not frames or x.shape[0] % frames:
            return self.norm(x)
        y = self.norm(rearrange(x, "(b f) c h w -> b c f h w", f=frames))
        return rearrange(y, "b c f h w -> (b f) c h w")


def _norm_sites(unet):
    """``(parent, attribute)`` of every ResBlock GroupNorm and of the output norm."""
    for block in list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks):
        for layer in block:
            if hasattr(layer, "in_layers") and hasattr(layer, "out_layers"):
                yield layer.in_layers, "0"
                yield layer.out_layers, "0"
    yield unet.out, "0"


def _block(unet, block: tuple[str, int]):
    kind, index = block
    if kind == "input":
        return unet.input_blocks[index]
    if kind == "middle":
        return unet.middle_block
    return unet.output_blocks[index]


class _Injector:
    """Inserts the temporal layers into the UNet's block lists and takes them out again."""

    def __init__(self, attachment: MotionAttachment):
        self.attachment = attachment
        self.inserted: list[tuple[torch.nn.Module, str]] = []
        self.wrapped: list[tuple[torch.nn.Module, str, torch.nn.Module]] = []

    def inject(self, patcher) -> None:
        if self.inserted or self.wrapped:
            return
        unet = patcher.model.diffusion_model
        by_block: dict[tuple[str, int], list] = {}
        for i, (site, layer) in enumerate(self.attachment.module.placements()):
            by_block.setdefault(site.block, []).append((site.after, f"atomo_{site.kind}_{i}", layer))
        for block_id, additions in by_block.items():
            seq = _block(unet, block_id)
            items = list(seq._modules.items())
            seq._modules.clear()
            for position, (key, module) in enumerate(items):
                seq._modules[key] = module
                for after, name, layer in additions:
                    if after == position:
                        seq._modules[name] = layer
                        self.inserted.append((seq, name))
        if self.attachment.config.resnet_norm_across_frames:
            for parent, attr in _norm_sites(unet):
                original = parent._modules[attr]
                parent._modules[attr] = FrameGroupNorm(original, self.attachment)
                self.wrapped.append((parent, attr, original))

    def eject(self, patcher) -> None:
        for seq, name in reversed(self.inserted):
            seq._modules.pop(name, None)
        for parent, attr, original in reversed(self.wrapped):
            parent._modules[attr] = original
        self.inserted.clear()
        self.wrapped.clear()


def _diffusion_model_wrapper(attachment: MotionAttachment):
    def wrapper(executor, x, *args, **kwargs):
        transformer_options = args[4] if len(args) > 4 else kwargs.get("transformer_options", {})
        frames = frames_per_video(x.shape[0], transformer_options)
        limit = attachment.module.max_frames
        if limit is not None and frames > limit:
            raise FrameLimitError(
                f"'{attachment.module.name}' ({FAMILY_LABELS[attachment.config.family]}) was trained on at most "
                f"{limit} frames, but this batch has {frames} frames per video. "
                + frame_limit_advice(limit, attachment.config.image_conditioning is not None)
            )
        strength = transformer_options.get(STRENGTH_KEY)
        # strength 0 on every frame: the image model alone, frame by frame (v1/PIA norms too)
        still = isinstance(strength, MotionStrength) and strength.all_zero(*video_frames(frames, transformer_options))
        attachment.frames = None if still else frames
        try:
            return executor(_pad_missing_image_channels(executor, x), *args, **kwargs)
        finally:
            attachment.frames = None

    return wrapper


def _pad_missing_image_channels(executor, x: torch.Tensor) -> torch.Tensor:
    """A condition that carries no image channels (one made by another node, e.g. PerpNeg's empty prompt) reaches
    a 9-channel UNet with the 4 latent channels only: give it mask 0 and latent 0, the "no image" condition."""
    unet = getattr(executor, "class_obj", None)
    blocks = getattr(unet, "input_blocks", None)
    wanted = _input_channels(blocks[0][0]) if blocks is not None else x.shape[1]
    if x.shape[1] == 4 and wanted > 4:
        return torch.cat([x, x.new_zeros(x.shape[0], wanted - 4, *x.shape[2:])], dim=1)
    return x


def _input_channels(conv) -> int:
    """Input channels ``conv`` computes with: its weight's, or those of a padded weight patch that ComfyUI's
    low-VRAM loading applies per call (``weight_function``) instead of to the stored weight."""
    channels = conv.weight.shape[1]
    for function in getattr(conv, "weight_function", None) or []:
        for entry in getattr(function, "patches", {}).get(getattr(function, "key", None), []):
            value = entry[1]
            if isinstance(value, tuple) and len(value) == 2 and value[0] == "diff":
                channels = max(channels, value[1][0].shape[1])
    return channels


def _has_handler(model) -> bool:
    patches = model.model_options["transformer_options"].get("patches", {})
    return any(cls is TemporalLayer for cls, _ in patches.get("forward_timestep_embed_patch", []))


def compute_dtype(model) -> torch.dtype:
    """The dtype the UNet computes in (its manual-cast dtype for fp8 or cast weights), fp16 if exotic."""
    dtype = model.model.manual_cast_dtype or model.model.get_dtype()
    return dtype if dtype in FLOAT_DTYPES else torch.float16


def storage_dtype(module: MotionModule, compute: torch.dtype, storage: str = DEFAULT_STORAGE) -> torch.dtype:
    """The dtype the module's weights are kept in.

    ``"compute"`` converts them once to the UNet's compute dtype; ``"file"`` keeps the file's dtype and lets the
    cast operations cast per call (as ComfyUI does for its own weights); ``"smaller"`` (the default) keeps the
    file's dtype where it is narrower than the compute dtype (an fp16 file on an fp32 UNet: half the memory, an
    exact up-cast per call) and converts otherwise (an fp32 file on an fp16 UNet: half the memory, no per-call
    cast). Measured on a CPU (benchmarks/README.md): an fp16 v2 module kept in fp16 on an fp32 UNet saves 864 MiB
    of 1729 at +2 % step time."""
    if storage not in STORAGE_CHOICES:
        raise ValueError(f"storage must be one of {STORAGE_CHOICES}, got {storage!r}")
    found = next((p.dtype for p in module.parameters() if p.is_floating_point()), compute)
    found = found if found in FLOAT_DTYPES else compute
    if storage == "compute" or (storage == "smaller" and found.itemsize >= compute.itemsize):
        return compute
    return found


def host_module(module: MotionModule, compute: torch.dtype, storage: str = DEFAULT_STORAGE) -> MotionModule:
    """``module`` rebuilt from ComfyUI's operations (sharing its tensors where the dtype is kept): plain layers
    when the weights are kept in the compute dtype, per-call casting layers otherwise."""
    dtype = storage_dtype(module, compute, storage)
    operations = comfy.ops.disable_weight_init if dtype == compute else comfy.ops.manual_cast
    return module.with_operations(operations, dtype=dtype)


def _detach_previous(clone) -> None:
    """Take the previous module's patches off a clone: layers, wrapper, conv_in and IP-Adapter attention."""
    log.info("AtomoVideo: replacing the motion module already attached to this MODEL")
    clone.remove_injections(KEY)
    clone.remove_additional_models(KEY)
    clone.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
    clone.remove_attachments(KEY)
    remove_conv_in(clone)
    remove_ip_adapter(clone)


def attach_motion_module(model, module: MotionModule, apply_sampling: bool = True, storage: str = DEFAULT_STORAGE):
    """Return a clone of ``model`` (a ComfyUI ModelPatcher) that runs ``module``'s temporal layers.

    A module already attached to ``model`` is replaced, with the 9-channel input and IP-Adapter attention it
    brought. ``apply_sampling`` object-patches ``model_sampling`` to the schedule and prediction type the module
    was trained with. ``storage`` says which dtype the weights are kept in (``storage_dtype``). ``module`` itself
    is not changed: the clone runs a copy built from ComfyUI's operations that shares its tensors.
    """
    check_sd15(model, module.name)
    if tuple(module.config.widths) != SD15_WIDTHS:
        raise AtomoError(
            f"'{module.name}' was trained on a small test model of SD-1.5's layout (widths {module.config.widths}), "
            "not on SD-1.5; it cannot run on an SD-1.5 MODEL. Train on an SD-1.5 checkpoint (base_model)."
        )
    clone = model.clone()
    if get_attachment(clone) is not None:
        _detach_previous(clone)
    module = host_module(module, compute_dtype(model), storage)
    patcher = comfy.model_patcher.ModelPatcher(module, load_device=model.load_device, offload_device=model.offload_device)
    attachment = MotionAttachment(module, patcher)
    _wire(clone, attachment)
    if not _has_handler(clone):
        clone.set_model_forward_timestep_embed_patch((TemporalLayer, temporal_layer_handler))
    if apply_sampling:
        attachment.model_sampling = patch_model_sampling(clone, module.config)
    return clone


def _wire(clone, attachment: MotionAttachment) -> None:
    """Attach ``attachment``'s patcher to ``clone`` and the injection and frame-count wrapper that serve it."""
    injector = _Injector(attachment)
    clone.set_additional_models(KEY, [attachment.patcher])
    clone.set_injections(KEY, [comfy.patcher_extension.PatcherInjection(injector.inject, injector.eject)])
    clone.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, _diffusion_model_wrapper(attachment))
    clone.set_attachments(KEY, attachment)


def with_module_patcher(model, patcher):
    """A clone of ``model`` (a module attached) whose module runs through ``patcher``, a clone of the module's
    ModelPatcher carrying weight patches (motion LoRAs); ``model`` itself keeps its own patcher."""
    attachment = get_attachment(model)
    clone = model.clone()
    _wire(clone, MotionAttachment(attachment.module, patcher, attachment.model_sampling))
    return clone
