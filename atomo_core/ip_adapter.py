"""IP-Adapter for SD-1.5: recognising the variant, loading it, and making image tokens.

An IP-Adapter turns a CLIP-vision encoding of the input image into a few *image tokens* ``[B, N, 768]``
(``ip_adapter_proj``) and adds a second, "decoupled" attention over them at each of the UNet's 16
cross-attention sites (``ip_adapter_attention``). Files are read by ``ip_adapter_io`` into one flat dict of
``image_proj.<k>``/``ip_adapter.<k>`` tensors. This module re-exports the public names of all three, so
``from atomo_core.ip_adapter import ...`` is the one import a node needs.

Variants (``detect_ip_adapter``), recognised from the ``image_proj`` keys and shapes:

- ``base``: ip-adapter_sd15, ip-adapter_sd15_light. ``ImageProjModel``; CLIP ``image_embeds [B, 1024]``;
  4 tokens.
- ``plus``: ip-adapter-plus_sd15, ip-adapter-plus-face_sd15 (same weights layout). ``Resampler``; CLIP
  ``penultimate_hidden_states [B, 257, 1280]``; 16 tokens.
- ``full-face``: ip-adapter-full-face_sd15. ``MLPProjModel``; ``penultimate_hidden_states``; 257 tokens.

All need OpenCLIP ViT-H/14 (``CLIP-ViT-H-14-laion2B-s32B-b79K``), except ip-adapter_sd15_vit-G, a ``base``
whose ``image_embeds`` are 1280 wide (ViT-bigG). ``IPAdapterSpec.clip_output`` names the attribute of
ComfyUI's CLIP-vision ``Output`` to feed and ``clip_width`` its last dimension. SDXL adapters, FaceID
adapters (they need InsightFace) and files that are no IP-Adapter at all are refused with a message saying
what the file is and what to use instead.

Unconditional image tokens (for the negative/uncond chunk), as the original code and its training did;
``IPAdapterSpec.uncond`` names the rule and ``uncond_image_tokens`` computes them:

- ``base`` (``"zero_embeds"``): the projection of an all-zero ``image_embeds``. These are not zero tokens:
  the projection's bias and LayerNorm make them non-zero.
- ``plus``/``full-face`` (``"zero_pixels"``): the projection of the CLIP hidden states of an all-zero
  *normalised* pixel tensor (``pixel_values = 0``: an image of the CLIP mean colour, not a black image).
  In ComfyUI: ``clip_vision.model(pixel_values=torch.zeros(1, 3, 224, 224), intermediate_output=-2)[1]``,
  or ``encode_image`` of an IMAGE filled with ``CLIP_MEAN`` (the same up to 8-bit rounding).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .errors import ConditioningError
from .ip_adapter_attention import (
    IP_SITES,
    IPSite,
    decoupled_attention,
    ip_key_value,
    ip_site,
    repeat_per_chunk,
    site_weights,
)
from .ip_adapter_io import (
    IMAGE_PROJ,
    IP_LAYERS,
    USE_INSTEAD,
    VIT_H,
    IPAdapterFormatError,
    read_ip_adapter,
    read_ip_adapter_file,
)
from .ip_adapter_proj import RESAMPLER_DIM_HEAD, ImageProjModel, MLPProjModel, Resampler

__all__ = [
    "IP_SITES",
    "IPAdapter",
    "IPAdapterFormatError",
    "IPAdapterSpec",
    "IPSite",
    "build_image_proj",
    "build_ip_adapter",
    "check_clip_output",
    "decoupled_attention",
    "detect_ip_adapter",
    "image_tokens",
    "ip_key_value",
    "ip_site",
    "load_ip_adapter",
    "read_ip_adapter",
    "read_ip_adapter_file",
    "repeat_per_chunk",
    "site_weights",
    "uncond_image_tokens",
]

CROSS_ATTENTION_DIM = 768  # SD-1.5 text-encoder width: the input width of every to_k_ip / to_v_ip
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
IMAGE_EMBEDS, HIDDEN_STATES = "image_embeds", "penultimate_hidden_states"
VARIANT_LABELS = {
    "base": "IP-Adapter (ip-adapter_sd15 / _light)",
    "plus": "IP-Adapter Plus (ip-adapter-plus_sd15 / -plus-face_sd15)",
    "full-face": "IP-Adapter Full Face (ip-adapter-full-face_sd15)",
}


# ------------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class IPAdapterSpec:
    """What an IP-Adapter file is and what it needs.

    ``variant``: ``"base"``, ``"plus"`` or ``"full-face"``; ``clip_output``: the CLIP-vision output it takes
    (``"image_embeds"`` ``[B, clip_width]`` or ``"penultimate_hidden_states"`` ``[B, 257, clip_width]``);
    ``num_tokens``: image tokens per image (4, 16, 257); ``uncond``: ``"zero_embeds"`` or ``"zero_pixels"``
    (module docstring); ``depth``/``heads``: the Resampler's layers and heads (0 for the others).
    """

    variant: str
    clip_output: str
    clip_width: int
    num_tokens: int
    uncond: str
    depth: int = 0
    heads: int = 0

    @property
    def label(self) -> str:
        return VARIANT_LABELS[self.variant]

    @property
    def clip_model(self) -> str:
        """The CLIP vision model to load for this adapter (by its usual file name)."""
        if self.clip_width == (1024 if self.clip_output == IMAGE_EMBEDS else 1280):
            return VIT_H
        if self.clip_output == IMAGE_EMBEDS and self.clip_width == 1280:
            return "CLIP-ViT-bigG-14-laion2B-39B-b160k"
        return f"a CLIP vision model whose {self.clip_output} are {self.clip_width} wide"


def _get(proj: dict, key: str, name: str) -> torch.Tensor:
    if key not in proj:
        raise IPAdapterFormatError(f"'{name}' lacks 'image_proj.{key}'. The file is incomplete; download it again.")
    return proj[key]


def _refuse_other_families(proj: dict, layers: dict, name: str) -> None:
    numbers = {int(k.split(".")[0]) for k in layers if k.split(".")[0].isdigit()}
    width = layers["1.to_k_ip.weight"].shape[-1] if "1.to_k_ip.weight" in layers else None
    out_width = next(
        (proj[k].shape[-1] for k in ("norm.weight", "norm_out.weight", "proj.3.weight") if k in proj), None
    )
    if width == 2048 or out_width == 2048 or max(numbers, default=0) > 31:
        raise IPAdapterFormatError(
            f"'{name}' is an SDXL IP-Adapter (image tokens {width or out_width} wide, {len(numbers)} attention sites); "
            f"this pack runs SD-1.5 (768 wide, 16 sites). {USE_INSTEAD}"
        )
    face_id_plus = "perceiver_resampler.proj_in.weight" in proj
    face_id = "proj.0.weight" in proj and "norm.weight" in proj  # id-embedding MLP (512 wide) + LayerNorm
    if face_id_plus or face_id or any("lora" in k for k in layers):
        raise IPAdapterFormatError(
            f"'{name}' is an IP-Adapter FaceID model: it needs InsightFace face embeddings (and its LoRA), which "
            "this pack does not compute. For faces use ip-adapter-plus-face_sd15 or ip-adapter-full-face_sd15."
        )
    if width not in (None, CROSS_ATTENTION_DIM) or out_width not in (None, CROSS_ATTENTION_DIM):
        raise IPAdapterFormatError(
            f"'{name}' is an IP-Adapter for another base model (cross-attention width {width or out_width}; "
            f"SD-1.5 has {CROSS_ATTENTION_DIM}). {USE_INSTEAD}"
        )


def _projection_spec(proj: dict, name: str) -> IPAdapterSpec:
    if "proj.3.weight" in proj:
        width = _get(proj, "proj.0.weight", name).shape[1]
        return IPAdapterSpec("full-face", HIDDEN_STATES, width, 257, "zero_pixels")
    if "latents" in proj:
        depth = sum(f"layers.{i}.0.to_q.weight" in proj for i in range(len(proj)))
        heads = _get(proj, "layers.0.0.to_q.weight", name).shape[0] // RESAMPLER_DIM_HEAD
        width = _get(proj, "proj_in.weight", name).shape[1]
        return IPAdapterSpec("plus", HIDDEN_STATES, width, proj["latents"].shape[1], "zero_pixels", depth, heads)
    if "proj.weight" in proj:
        tokens, width = _get(proj, "proj.weight", name).shape
        return IPAdapterSpec("base", IMAGE_EMBEDS, width, tokens // CROSS_ATTENTION_DIM, "zero_embeds")
    keys = sorted(proj)[:3] or ["(none)"]
    raise IPAdapterFormatError(
        f"'{name}' has an image projection this pack does not know (image_proj keys such as {keys}). {USE_INSTEAD}"
    )


def build_image_proj(spec: IPAdapterSpec, device: torch.device | str | None = None) -> nn.Module:
    """An (uninitialised-weight) projection model for ``spec`` whose ``state_dict`` keys are the file's."""
    with torch.device(device or "cpu"):
        if spec.variant == "base":
            return ImageProjModel(spec.clip_width, CROSS_ATTENTION_DIM, spec.num_tokens)
        if spec.variant == "plus":
            return Resampler(CROSS_ATTENTION_DIM, spec.depth, spec.heads, spec.num_tokens, spec.clip_width)
        return MLPProjModel(spec.clip_width, CROSS_ATTENTION_DIM)


def _expected_shapes(spec: IPAdapterSpec) -> dict[str, tuple[int, ...]]:
    shapes = {IMAGE_PROJ + k: tuple(v.shape) for k, v in build_image_proj(spec, "meta").state_dict().items()}
    for site in IP_SITES:
        for kind in ("to_k_ip", "to_v_ip"):
            shapes[f"{IP_LAYERS}{site.key}.{kind}.weight"] = (site.channels, CROSS_ATTENTION_DIM)
    return shapes


def detect_ip_adapter(state: dict[str, torch.Tensor], name: str = "the IP-Adapter file") -> IPAdapterSpec:
    """Recognise an SD-1.5 IP-Adapter from ``read_ip_adapter``'s flat dict (shapes only: meta tensors work).

    Checks every key and shape of the variant's layout; raises ``IPAdapterFormatError`` for SDXL, FaceID and
    unknown adapters, incomplete files and wrong shapes.
    """
    proj = {k[len(IMAGE_PROJ) :]: v for k, v in state.items() if k.startswith(IMAGE_PROJ)}
    layers = {k[len(IP_LAYERS) :]: v for k, v in state.items() if k.startswith(IP_LAYERS)}
    _refuse_other_families(proj, layers, name)
    spec = _projection_spec(proj, name)
    expected = _expected_shapes(spec)
    missing = [k for k in expected if k not in state]
    if missing:
        raise IPAdapterFormatError(
            f"'{name}' looks like {spec.label} but lacks {len(missing)} of its {len(expected)} weights (e.g. "
            f"'{missing[0]}'). The file is incomplete; download it again."
        )
    for key, shape in expected.items():
        if tuple(state[key].shape) != shape:
            raise IPAdapterFormatError(
                f"'{name}': '{key}' has shape {list(state[key].shape)}, expected {list(shape)} for {spec.label} "
                f"on SD-1.5. The file is for another model. {USE_INSTEAD}"
            )
    unknown = [k for k in state if k.startswith((IMAGE_PROJ, IP_LAYERS)) and k not in expected]
    if unknown:
        raise IPAdapterFormatError(
            f"'{name}' looks like {spec.label} but has {len(unknown)} weights that layout does not have (e.g. "
            f"'{unknown[0]}'): a variant this pack does not support. {USE_INSTEAD}"
        )
    return spec


# -------------------------------------------------------------------------------------------- loading


@dataclass
class IPAdapter:
    """A loaded IP-Adapter: ``spec``, the projection model ``image_proj`` (eval, no grad) and ``ip_weights``,
    the 32 ``ip_adapter.N.to_k_ip/to_v_ip.weight`` tensors (see ``site_weights``). ``name`` is for messages."""

    name: str
    spec: IPAdapterSpec
    image_proj: nn.Module
    ip_weights: dict[str, torch.Tensor]


def build_ip_adapter(
    state: dict[str, torch.Tensor], name: str = "the IP-Adapter file", dtype: torch.dtype = torch.float32
) -> IPAdapter:
    """Recognise and build an IP-Adapter from ``read_ip_adapter``'s flat dict; weights cast to ``dtype``."""
    spec = detect_ip_adapter(state, name)
    image_proj = build_image_proj(spec, "meta")
    proj_state = {k[len(IMAGE_PROJ) :]: v.to(dtype) for k, v in state.items() if k.startswith(IMAGE_PROJ)}
    image_proj.load_state_dict(proj_state, strict=True, assign=True)
    image_proj.requires_grad_(False).eval()
    ip_weights = {k: v.to(dtype) for k, v in state.items() if k.startswith(IP_LAYERS)}
    return IPAdapter(name, spec, image_proj, ip_weights)


def load_ip_adapter(path: str, dtype: torch.dtype = torch.float32) -> IPAdapter:
    """Read, recognise and build an IP-Adapter file; every failure is an ``IPAdapterFormatError``."""
    return build_ip_adapter(read_ip_adapter_file(path), os.path.basename(path), dtype)


# ------------------------------------------------------------------------------------------ image tokens


def check_clip_output(spec: IPAdapterSpec, clip_output: torch.Tensor, name: str = "the IP-Adapter") -> None:
    """Raise ``ConditioningError`` unless ``clip_output`` is the CLIP-vision output ``spec`` needs.

    ``image_embeds`` must be ``[B, clip_width]``; hidden states ``[B, T, clip_width]``.
    """
    want_ndim = 2 if spec.clip_output == IMAGE_EMBEDS else 3
    want = "[B, {}]" if want_ndim == 2 else "[B, tokens, {}]"
    if clip_output.ndim != want_ndim or clip_output.shape[-1] != spec.clip_width:
        raise ConditioningError(
            f"{spec.label} '{name}' needs the CLIP vision {spec.clip_output} {want.format(spec.clip_width)} of "
            f"{spec.clip_model}, but got a tensor of shape {list(clip_output.shape)}. Load {spec.clip_model} "
            "in the CLIP vision loader."
        )


def image_tokens(adapter: IPAdapter, clip_output: torch.Tensor) -> torch.Tensor:
    """Image tokens ``[B, num_tokens, 768]`` from the CLIP-vision output named by ``adapter.spec.clip_output``."""
    check_clip_output(adapter.spec, clip_output, adapter.name)
    param = next(adapter.image_proj.parameters())
    return adapter.image_proj(clip_output.to(param))


def uncond_image_tokens(adapter: IPAdapter, zero_pixel_hidden_states: torch.Tensor | None = None) -> torch.Tensor:
    """The unconditional image tokens ``[1, num_tokens, 768]``, as the original IP-Adapter makes them.

    ``base``: the projection of zero ``image_embeds``. ``plus``/``full-face``: the projection of
    ``zero_pixel_hidden_states``, the CLIP penultimate hidden states of ``pixel_values = 0`` (required).
    """
    spec = adapter.spec
    if spec.uncond == "zero_embeds":
        param = next(adapter.image_proj.parameters())
        return adapter.image_proj(torch.zeros(1, spec.clip_width, device=param.device, dtype=param.dtype))
    if zero_pixel_hidden_states is None:
        raise ConditioningError(
            f"{spec.label} '{adapter.name}' needs the CLIP hidden states of a zero (mean-colour) image for its "
            "unconditional tokens."
        )
    return image_tokens(adapter, zero_pixel_hidden_states)
