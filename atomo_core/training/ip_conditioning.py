"""IP-Adapter semantics during training: a frozen IP-Adapter (and CLIP vision) turns each clip's first frame into
image tokens, and the 16 cross-attention sites of the diffusers UNet attend to them beside the text, exactly the
decoupled attention ``atomo_core.ip_adapter`` computes for the nodes (``out = attn(q, k_text, v_text) + scale *
attn(q, k_ip, v_ip)`` before ``to_out``).

Which examples carry the image tokens follows the rule the nodes sample with (``nodes/ip_adapter_patch.py``): the
image prompt goes with the positive, so an example keeps its image tokens only when it keeps both its caption and its
image; every dropout case (text, image or both dropped) gets the IP-Adapter's unconditional tokens, which is what
the negative branches see at inference.

``ip_adapter.file`` is an SD-1.5 IP-Adapter file and ``ip_adapter.clip_vision`` the ViT-H/14 image encoder it reads
(the ``CLIP-ViT-H-14-laion2B-s32B-b79K.safetensors`` ComfyUI loads, transformers' key layout); with the tiny base,
``ip_adapter.file: tiny`` builds a tiny random pair of the same kinds for tests. ``train.image_proj`` makes the
adapter's image projection trainable (the attention weights ``to_k_ip``/``to_v_ip`` stay frozen).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint_io import read_weights
from ..ip_adapter import (
    CLIP_MEAN,
    IP_SITES,
    IPAdapter,
    IPAdapterSpec,
    decoupled_attention,
    image_tokens,
    ip_key_value,
    load_ip_adapter,
    uncond_image_tokens,
)
from ..ip_adapter_proj import ImageProjModel

CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIT_H = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_attention_heads=16, image_size=224,
             patch_size=14, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5)
TINY_CLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                 patch_size=8, projection_dim=16, hidden_act="gelu", layer_norm_eps=1e-5)


def _clip_vision(config: dict, path: str | None = None) -> nn.Module:
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    model = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    if path:
        state, _ = read_weights(path)
        missing, _ = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing:
            raise ValueError(f"'{path}' is not the ViT-H/14 CLIP vision model an SD-1.5 IP-Adapter reads "
                             f"({len(missing)} weights missing, e.g. {missing[0]}).")
    return model.requires_grad_(False).eval()


def tiny_ip_adapter(widths: tuple[int, ...], context_dim: int, seed: int = 0) -> tuple[IPAdapter, nn.Module]:
    """A tiny random ``base``-kind IP-Adapter for a tiny base of SD-1.5's layout, and a tiny CLIP vision model."""
    torch.manual_seed(seed)
    clip = _clip_vision(TINY_CLIP)
    spec = IPAdapterSpec("base", "image_embeds", TINY_CLIP["projection_dim"], 4, "zero_embeds")
    proj = ImageProjModel(spec.clip_width, context_dim, spec.num_tokens).requires_grad_(False).eval()
    level_of = {"down_blocks": lambda i: i, "up_blocks": lambda i: 3 - i}
    weights = {}
    for site in IP_SITES:
        parts = site.diffusers_name.split(".")
        level = 3 if parts[0] == "mid_block" else level_of[parts[0]](int(parts[1]))
        width = widths[level]
        for kind in ("to_k_ip", "to_v_ip"):
            weights[f"ip_adapter.{site.key}.{kind}.weight"] = torch.randn(width, context_dim) / context_dim**0.5
    return IPAdapter("tiny IP-Adapter", spec, proj, weights), clip


class IPAttentionProcessor:
    """A diffusers attention processor for one cross-attention site: text attention plus the image tokens'."""

    def __init__(self, owner: IPConditioner, to_k_ip: torch.Tensor, to_v_ip: torch.Tensor):
        self.owner, self.to_k_ip, self.to_v_ip = owner, to_k_ip, to_v_ip

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        tokens = self.owner.current
        if tokens is None:
            raise RuntimeError("IP-Adapter attention ran without image tokens (IPConditioner.set_tokens first)")
        k_ip, v_ip = ip_key_value(tokens.to(q), self.to_k_ip.to(q.device), self.to_v_ip.to(q.device))
        out = decoupled_attention(q, k, v, k_ip, v_ip, attn.heads, self.owner.scale)
        return attn.to_out[1](attn.to_out[0](out))


class IPConditioner(nn.Module):
    """The IP-Adapter part of a training run (see the module docstring)."""

    def __init__(self, adapter: IPAdapter, clip_vision: nn.Module, unet: nn.Module, scale: float = 1.0,
                 train_projection: bool = False):
        super().__init__()
        self.adapter, self.clip_vision, self.scale = adapter, clip_vision, float(scale)
        self.image_proj = adapter.image_proj
        self.image_proj.requires_grad_(train_projection)
        self.image_proj.train(train_projection)
        self.train_projection = train_projection
        self.current: torch.Tensor | None = None
        self._uncond: torch.Tensor | None = None
        for site in IP_SITES:
            attention = unet.get_submodule(f"{site.diffusers_name}.transformer_blocks.0.attn2")
            k = adapter.ip_weights[f"ip_adapter.{site.key}.to_k_ip.weight"]
            v = adapter.ip_weights[f"ip_adapter.{site.key}.to_v_ip.weight"]
            attention.set_processor(IPAttentionProcessor(self, k, v))

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        """CLIP vision features of ``pixels [B, 3, H, W]`` in 0..1, preprocessed as ComfyUI's ``clip_preprocess``
        (short side to the model's size, bicubic antialiased, centre crop, 8-bit levels, CLIP's mean and std)."""
        size = self.clip_vision.config.image_size
        scale = size / min(pixels.shape[-2:])
        resized = F.interpolate(pixels, size=(max(size, round(pixels.shape[-2] * scale)),
                                              max(size, round(pixels.shape[-1] * scale))),
                                mode="bicubic", antialias=True, align_corners=False)
        top, left = (resized.shape[-2] - size) // 2, (resized.shape[-1] - size) // 2
        crop = resized[..., top : top + size, left : left + size]
        crop = (crop.clamp(0, 1) * 255).round() / 255  # 8-bit, as ComfyUI's CLIP vision preprocessing
        mean = torch.tensor(CLIP_MEAN, device=crop.device).view(1, 3, 1, 1)
        std = torch.tensor(CLIP_STD, device=crop.device).view(1, 3, 1, 1)
        param = next(self.clip_vision.parameters())
        out = self.clip_vision(pixel_values=((crop - mean) / std).to(param), output_hidden_states=True)
        return out.image_embeds if self.adapter.spec.clip_output == "image_embeds" else out.hidden_states[-2]

    def _uncond_features(self, device) -> torch.Tensor | None:
        """The CLIP features of a mean-colour image (``plus``/``full-face`` uncond tokens): computed once, the encoder
        is frozen; ``None`` for adapters whose uncond tokens come from zero embeds."""
        if self.adapter.spec.uncond == "zero_embeds":
            return None
        if self._uncond is None:
            size = self.clip_vision.config.image_size
            mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1).expand(1, 3, size, size)
            self._uncond = self._features(mean).float()
        return self._uncond.to(device)

    def set_tokens(self, first_frames: torch.Tensor, with_image: torch.Tensor, frames: int) -> None:
        """Image tokens per frame row ``[B F, T, C]``: the first frame's where ``with_image``, else unconditional.

        ``first_frames [B, 3, H, W]`` in -1..1; ``with_image [B]`` bool."""
        with torch.no_grad():
            features = self._features(((first_frames + 1) / 2).clamp(0, 1)).float()
            uncond_features = self._uncond_features(first_frames.device)
        with torch.set_grad_enabled(self.train_projection):
            tokens = image_tokens(self.adapter, features.to(next(self.image_proj.parameters())))
            uncond = uncond_image_tokens(self.adapter, uncond_features).expand_as(tokens)
            mask = with_image.to(tokens.device).view(-1, 1, 1)
            chosen = torch.where(mask, tokens, uncond)
        self.current = chosen.repeat_interleave(frames, dim=0)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.image_proj.parameters()) if self.train_projection else []


def build_ip_conditioner(file: str, clip_vision: str, unet: nn.Module, widths: tuple[int, ...], scale: float,
                         train_projection: bool, seed: int = 0) -> IPConditioner:
    if file == "tiny":
        adapter, clip = tiny_ip_adapter(widths, unet.config.cross_attention_dim, seed)
    else:
        adapter = load_ip_adapter(file)
        clip = _clip_vision(VIT_H, clip_vision)
        if adapter.spec.clip_width != (VIT_H["projection_dim"] if adapter.spec.clip_output == "image_embeds"
                                       else VIT_H["hidden_size"]):
            raise ValueError(f"'{file}' ({adapter.spec.label}) does not read ViT-H/14 features; the trainer supports "
                             "the SD-1.5 IP-Adapters made for ViT-H.")
    return IPConditioner(adapter, clip, unet, scale, train_projection)
