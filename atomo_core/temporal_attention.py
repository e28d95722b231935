"""Temporal attention: AnimateDiff's motion-module block, written for a batch of frames.

One ``TemporalAttentionLayer`` sits after a spatial attention (or ResBlock) of the SD-1.5 UNet. It sees
activations ``x`` of shape ``[(b f), c, h, w]`` (frames are the batch, as everywhere in ComfyUI) and
lets every pixel attend across the ``f`` frames of its own video:

    x  ->  GroupNorm (per frame)  ->  proj_in  ->  [temporal self-attention x2, feed-forward]  ->  proj_out  -> + x

Layers are built from an ``operations`` namespace (``torch.nn`` by default, ComfyUI's cast operations from the
host) and the attention runs through the ``attention`` function handed to ``forward`` (SDPA by default, the
host's backend inside ComfyUI): see ``attention.py``.

The parameter names reproduce AnimateDiff's state-dict keys (``temporal_transformer.norm``,
``transformer_blocks.0.attention_blocks.0.to_q`` ...), so released motion modules load with a plain
``load_state_dict``. The sinusoidal position encoding is regenerated here rather than read from the
file: it is a deterministic function of (position, channel), and some files (AnimateLCM) omit it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import AttentionFunction, resolve_operations, sdpa_attention
from .errors import FrameLimitError


class TemporalLayer(nn.Module):
    """A layer that mixes information across the frames of a batch.

    ``forward(x, num_frames, attention=None)`` takes ``x: [(b f), c, h, w]`` and returns the same shape. The
    host calls every ``TemporalLayer`` with the frame count it derives from the batch on that very call, and
    with its attention function (``None``: SDPA); layers without attention ignore it.
    """

    def forward(
        self, x: torch.Tensor, num_frames: int, attention: AttentionFunction | None = None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def sinusoidal_position_encoding(
    length: int, dim: int, device=None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Transformer position encoding ``[length, dim]``: even channels sin, odd channels cos.

    ``pe[p, 2i] = sin(p / 10000^(2i/dim))``, ``pe[p, 2i+1] = cos(p / 10000^(2i/dim))``, computed in
    float32 and cast, exactly as AnimateDiff's ``PositionalEncoding`` buffer was made.
    """
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    inv_freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, dtype=torch.float32, device=device)
    pe[:, 0::2] = torch.sin(position * inv_freq)
    pe[:, 1::2] = torch.cos(position * inv_freq)
    return pe.to(dtype)


class GEGLU(nn.Module):
    """``proj`` to twice the width, then ``value * gelu(gate)``."""

    def __init__(self, dim: int, inner_dim: int, operations=None):
        super().__init__()
        self.proj = resolve_operations(operations).Linear(dim, inner_dim * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    """``net = [GEGLU, dropout slot, Linear]`` (keys ``net.0.proj``, ``net.2``), 4x inner width."""

    def __init__(self, dim: int, mult: int = 4, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        inner = dim * mult
        self.net = nn.ModuleList([GEGLU(dim, inner, ops), nn.Identity(), ops.Linear(inner, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class TemporalSelfAttention(nn.Module):
    """Multi-head self-attention along the frame axis of ``[n, f, c]`` token sequences.

    ``n`` is every (video, pixel) pair, ``f`` the frames. The position encoding is added to the
    (already normalised) input of the attention, not to the residual stream, as in AnimateDiff.
    """

    def __init__(self, dim: int, heads: int = 8, position_encoding: bool = True, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        self.heads = heads
        self.position_encoding = position_encoding
        self.to_q = ops.Linear(dim, dim, bias=False)
        self.to_k = ops.Linear(dim, dim, bias=False)
        self.to_v = ops.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([ops.Linear(dim, dim), nn.Identity()])

    def forward(self, x: torch.Tensor, attention: AttentionFunction | None = None) -> torch.Tensor:
        """``x: [n, f, c] -> [n, f, c]``; ``attention`` sees ``q, k, v [n, f, c]`` (n sequences of f frames)."""
        if self.position_encoding:
            x = x + sinusoidal_position_encoding(x.shape[1], x.shape[2], device=x.device, dtype=x.dtype)
        out = (attention or sdpa_attention)(self.to_q(x), self.to_k(x), self.to_v(x), self.heads)
        return self.to_out[0](out)


class TemporalTransformerBlock(nn.Module):
    """Pre-LayerNorm residual stack: ``attention_blocks`` (with ``norms``) then ``ff`` (with ``ff_norm``)."""

    def __init__(
        self, dim: int, heads: int = 8, num_attention_blocks: int = 2, position_encoding: bool = True, operations=None
    ):
        super().__init__()
        ops = resolve_operations(operations)
        self.attention_blocks = nn.ModuleList(
            [TemporalSelfAttention(dim, heads, position_encoding, ops) for _ in range(num_attention_blocks)]
        )
        self.norms = nn.ModuleList([ops.LayerNorm(dim) for _ in range(num_attention_blocks)])
        self.ff = FeedForward(dim, operations=ops)
        self.ff_norm = ops.LayerNorm(dim)

    def forward(self, x: torch.Tensor, attention: AttentionFunction | None = None) -> torch.Tensor:
        """``x: [n, f, c] -> [n, f, c]``."""
        for block, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = block(norm(x), attention) + x
        return self.ff(self.ff_norm(x)) + x


class TemporalTransformer(nn.Module):
    """GroupNorm (per frame) -> proj_in -> transformer blocks over frames -> proj_out, plus the residual."""

    def __init__(
        self,
        channels: int,
        heads: int = 8,
        num_blocks: int = 1,
        num_attention_blocks: int = 2,
        position_encoding: bool = True,
        norm_groups: int = 32,
        operations=None,
    ):
        super().__init__()
        ops = resolve_operations(operations)
        self.norm = ops.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.proj_in = ops.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            [
                TemporalTransformerBlock(channels, heads, num_attention_blocks, position_encoding, ops)
                for _ in range(num_blocks)
            ]
        )
        self.proj_out = ops.Linear(channels, channels)

    def forward(self, x: torch.Tensor, num_frames: int, attention: AttentionFunction | None = None) -> torch.Tensor:
        """``x: [(b f), c, h, w] -> [(b f), c, h, w]``."""
        height, width = x.shape[-2:]
        tokens = rearrange(self.norm(x), "(b f) c h w -> (b h w) f c", f=num_frames)
        tokens = self.proj_in(tokens)
        for block in self.transformer_blocks:
            tokens = block(tokens, attention)
        tokens = self.proj_out(tokens)
        return rearrange(tokens, "(b h w) f c -> (b f) c h w", h=height, w=width) + x


class TemporalAttentionLayer(TemporalLayer):
    """One motion-module insertion point (AnimateDiff's ``VanillaTemporalModule``).

    ``max_frames`` is the number of positions the module was trained with (24 for AnimateDiff v1, 32 for
    v2/v3); asking for more raises ``FrameLimitError`` instead of silently extrapolating.
    """

    def __init__(
        self,
        channels: int,
        heads: int = 8,
        num_blocks: int = 1,
        num_attention_blocks: int = 2,
        position_encoding: bool = True,
        max_frames: int | None = 32,
        operations=None,
    ):
        super().__init__()
        self.max_frames = max_frames
        self.temporal_transformer = TemporalTransformer(
            channels, heads, num_blocks, num_attention_blocks, position_encoding, operations=operations
        )
        nn.init.zeros_(self.temporal_transformer.proj_out.weight)
        nn.init.zeros_(self.temporal_transformer.proj_out.bias)

    def forward(self, x: torch.Tensor, num_frames: int, attention: AttentionFunction | None = None) -> torch.Tensor:
        if self.max_frames is not None and num_frames > self.max_frames:
            raise FrameLimitError(
                f"The temporal attention was trained on at most {self.max_frames} frames but got "
                f"{num_frames}. Use {self.max_frames} frames or fewer per clip, or make longer videos with "
                "Context Windows (video frames) before the sampler, or Predict Next Frames."
            )
        return self.temporal_transformer(x, num_frames, attention)
