"""AtomoVideo's 1-D temporal convolution, placed after every ResBlock of the SD-1.5 UNet.

    x -> GroupNorm -> SiLU -> Conv1d over frames (kernel 3, zero padding) -> + x

The convolution is zero-initialised, so a fresh layer is exactly the identity and a freshly initialised
AtomoVideo module leaves the image model's output untouched until training moves it.
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

    def __init__(self, channels: int, kernel_size: int = 3, norm_groups: int = 32, operations=None):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"temporal_conv kernel_size must be odd to keep the frame count, got {kernel_size}")
        ops = resolve_operations(operations)
        self.norm = ops.GroupNorm(norm_groups, channels, eps=1e-6, affine=True)
        self.conv = ops.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, num_frames: int, attention: AttentionFunction | None = None) -> torch.Tensor:
        """``x: [(b f), c, h, w] -> [(b f), c, h, w]`` (``attention`` is unused: there is none here)."""
        height, width = x.shape[-2:]
        h = F.silu(self.norm(x))
        h = rearrange(h, "(b f) c h w -> (b h w) c f", f=num_frames)
        h = self.conv(h)
        return rearrange(h, "(b h w) c f -> (b f) c h w", h=height, w=width) + x
