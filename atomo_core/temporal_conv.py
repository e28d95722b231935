"""AtomoVideo's 1-D temporal convolution, placed after every ResBlock of the SD-1.5 UNet.

    x -> GroupNorm -> SiLU -> Conv1d over frames (kernel 3, zero padding) -> + x

The convolution is zero-initialised, so a fresh layer is exactly the identity and a freshly initialised
AtomoVideo module leaves the image model's output untouched until training moves it.

With ``text_dim`` (our addition, not the paper's; ``MotionModuleConfig.temporal_text_dim``) the layer also reads the
caption: its normalised input is scaled and shifted per channel by a linear map of the caption's mean token feature
(FiLM), ``h = SiLU(GroupNorm(x)) * (1 + scale) + shift``, the map zero-initialised so a fresh layer is still the
identity. AtomoVideo's temporal layers see the caption only through the image layers' features; in the toy study
they did not learn to make the motion depend on it at 4x the study's budget, while with this path they did (see
``experiments/toy_atomovideo/results/report.md``, "Bug or budget").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import AttentionFunction, resolve_operations
from .temporal_attention import TemporalLayer


class TemporalConvLayer(TemporalLayer):
    """Residual 1-D convolution along the frame axis of ``[(b f), c, h, w]`` activations."""

    def __init__(self, channels: int, kernel_size: int = 3, norm_groups: int = 32, operations=None,
                 text_dim: int | None = None):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"temporal_conv kernel_size must be odd to keep the frame count, got {kernel_size}")
        ops = resolve_operations(operations)
        self.norm = ops.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.conv = ops.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.text_film = None
        if text_dim is not None:
            self.text_film = ops.Linear(text_dim, 2 * channels)
            nn.init.zeros_(self.text_film.weight)
            nn.init.zeros_(self.text_film.bias)

    @property
    def reads_text(self) -> bool:
        """Whether ``forward`` needs the caption features (``context``)."""
        return self.text_film is not None

    def forward(self, x: torch.Tensor, num_frames: int, attention: AttentionFunction | None = None,
                context: torch.Tensor | None = None) -> torch.Tensor:
        """``x: [(b f), c, h, w] -> [(b f), c, h, w]`` (``attention`` is unused: there is none here).

        ``context [(b f), tokens, text_dim]``: the caption features of each frame (the UNet's cross-attention
        context), needed when the layer ``reads_text`` and ignored otherwise."""
        height, width = x.shape[-2:]
        h = F.silu(self.norm(x))
        if self.text_film is not None:
            if context is None:
                raise ValueError("this temporal convolution reads the caption (temporal_text film): pass the UNet's "
                                 "cross-attention context")
            if context.shape[0] != x.shape[0]:
                raise ValueError(f"caption features for {context.shape[0]} frames, activations for {x.shape[0]}: the "
                                 "context must have one row per frame, as the UNet's cross-attention has")
            scale, shift = self.text_film(context.mean(dim=1).to(h.dtype)).chunk(2, dim=-1)
            h = h * (1 + scale[..., None, None]) + shift[..., None, None]
        h = rearrange(h, "(b f) c h w -> (b h w) c f", f=num_frames)
        h = self.conv(h)
        return rearrange(h, "(b h w) c f -> (b f) c h w", h=height, w=width) + x
