"""IP-Adapter image projections: CLIP-vision features -> image tokens ``[B, N, 768]`` for SD-1.5.

Three projection models exist among the SD-1.5 IP-Adapters. Their parameter names reproduce the keys under
``image_proj.*`` in the released files, so each loads with a strict ``load_state_dict``:

- ``ImageProjModel`` (ip-adapter_sd15, ..._light): one Linear from the pooled CLIP ``image_embeds [B, E]``
  to ``tokens * 768``, split into ``tokens`` (4) vectors, then a LayerNorm.
  Keys ``proj.weight [tokens*768, E]``, ``proj.bias``, ``norm.weight [768]``, ``norm.bias``.
- ``Resampler`` (ip-adapter-plus_sd15, -plus-face): a Perceiver. 16 learned ``latents`` attend (4 layers,
  12 heads of 64) over the CLIP penultimate hidden states ``[B, 257, 1280]`` projected to 768 *and over
  themselves*, each attention and feed-forward with a residual; then ``proj_out`` and ``norm_out``.
- ``MLPProjModel`` (ip-adapter-full-face_sd15): Linear(E, E) -> GELU -> Linear(E, 768) -> LayerNorm applied
  to every one of the 257 hidden-state tokens, giving 257 image tokens.

``E`` is the width of the CLIP-vision output the adapter was trained on (1024 for ViT-H ``image_embeds``,
1280 for ViT-H hidden states); it is read from the weights, never assumed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import nn

RESAMPLER_DIM_HEAD = 64


class ImageProjModel(nn.Module):
    """Pooled CLIP embedding ``[B, E]`` -> ``[B, tokens, dim]`` (Linear, split into tokens, LayerNorm)."""

    def __init__(self, clip_width: int = 1024, dim: int = 768, tokens: int = 4):
        super().__init__()
        self.tokens = tokens
        self.proj = nn.Linear(clip_width, tokens * dim)
        self.norm = nn.LayerNorm(dim)

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        """``image_embeds: [B, E] -> [B, tokens, dim]``."""
        tokens = rearrange(self.proj(image_embeds), "b (n c) -> b n c", n=self.tokens)
        return self.norm(tokens)


class PerceiverAttention(nn.Module):
    """Latents ``[B, Q, D]`` attend over ``concat(image features, latents)``; returns ``[B, Q, D]``.

    Both inputs are LayerNormed (``norm1`` features, ``norm2`` latents); ``to_kv`` makes keys and values in
    one matmul (first half keys, second half values). No biases on the projections.
    """

    def __init__(self, dim: int = 768, heads: int = 12, dim_head: int = RESAMPLER_DIM_HEAD):
        super().__init__()
        self.heads = heads
        inner = heads * dim_head
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, features: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """``features: [B, T, D]``, ``latents: [B, Q, D] -> [B, Q, D]``."""
        features, latents = self.norm1(features), self.norm2(latents)
        context = torch.cat([features, latents], dim=1)  # [B, T+Q, D]
        k, v = self.to_kv(context).chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=self.heads) for t in (self.to_q(latents), k, v))
        # The original scales q and k by d^-1/4 each and takes the softmax in float32: the same 1/sqrt(d).
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


def resampler_feed_forward(dim: int, mult: int = 4) -> nn.Sequential:
    """``[LayerNorm, Linear(dim, mult*dim), GELU, Linear(mult*dim, dim)]``, linears without bias (keys 0, 1, 3)."""
    return nn.Sequential(
        nn.LayerNorm(dim),
        nn.Linear(dim, dim * mult, bias=False),
        nn.GELU(),
        nn.Linear(dim * mult, dim, bias=False),
    )


class Resampler(nn.Module):
    """IP-Adapter Plus projection: CLIP hidden states ``[B, T, E]`` -> ``[B, Q, out_dim]``.

    ``layers.i`` is ``[PerceiverAttention, feed-forward]`` (keys ``layers.i.0.*``, ``layers.i.1.*``); the
    SD-1.5 files have ``depth=4``, ``heads=12``, ``Q=16`` latents of width 768 and ``E=1280``.
    """

    def __init__(
        self,
        dim: int = 768,
        depth: int = 4,
        heads: int = 12,
        num_queries: int = 16,
        clip_width: int = 1280,
        out_dim: int = 768,
        ff_mult: int = 4,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(1, num_queries, dim) / dim**0.5)
        self.proj_in = nn.Linear(clip_width, dim)
        self.proj_out = nn.Linear(dim, out_dim)
        self.norm_out = nn.LayerNorm(out_dim)
        self.layers = nn.ModuleList(
            [
                nn.ModuleList([PerceiverAttention(dim, heads), resampler_feed_forward(dim, ff_mult)])
                for _ in range(depth)
            ]
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states: [B, T, E] -> [B, Q, out_dim]``."""
        features = self.proj_in(hidden_states)
        latents = repeat(self.latents, "1 q d -> b q d", b=hidden_states.shape[0])
        for attention, feed_forward in self.layers:
            latents = attention(features, latents) + latents
            latents = feed_forward(latents) + latents
        return self.norm_out(self.proj_out(latents))


class MLPProjModel(nn.Module):
    """IP-Adapter Full Face projection, per token: ``[B, T, E] -> [B, T, dim]``.

    ``proj = [Linear(E, E), GELU, Linear(E, dim), LayerNorm(dim)]`` (keys ``proj.0``, ``proj.2``, ``proj.3``).
    """

    def __init__(self, clip_width: int = 1280, dim: int = 768):
        super().__init__()
        self.proj = nn.Sequential(
            nn.Linear(clip_width, clip_width),
            nn.GELU(),
            nn.Linear(clip_width, dim),
            nn.LayerNorm(dim),
        )

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """``hidden_states: [B, T, E] -> [B, T, dim]``."""
        return self.proj(hidden_states)
