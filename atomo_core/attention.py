"""The attention function and the layer operations that every core layer takes from its caller.

Attention. Core layers never call a kernel directly: they call an ``AttentionFunction``

    attention(q, k, v, heads) -> out,   q [B, Nq, C], k, v [B, Nk, C], out [B, Nq, C]  (C = heads * d)

softmax attention with scale ``1/sqrt(d)`` per head, the calling convention of ComfyUI's
``optimized_attention``. The core's default is ``sdpa_attention`` (torch's ``scaled_dot_product_attention``);
the host hands in ComfyUI's backend (the one the user chose: SDPA with ComfyUI's batch split, xformers, sage,
flash, split or sub-quadratic attention), so the temporal layers and the IP-Adapter attention run on it too.

Operations. Layers are built from an operations namespace with ``Linear``, ``Conv1d``, ``GroupNorm`` and
``LayerNorm`` (the way ComfyUI's own models take ``operations=``): ``torch.nn`` by default (host-free,
initialised, trainable), ComfyUI's cast operations from the host (``comfy.ops``), whose layers ComfyUI can
stream, cast per call and move between devices under low-VRAM loading.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

AttentionFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]

TORCH_OPERATIONS = SimpleNamespace(Linear=nn.Linear, Conv1d=nn.Conv1d, GroupNorm=nn.GroupNorm, LayerNorm=nn.LayerNorm)
OPERATION_NAMES = ("Linear", "Conv1d", "GroupNorm", "LayerNorm")


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head softmax attention, scale ``1/sqrt(C/heads)``: ``q [B, Nq, C]``, ``k, v [B, Nk, C] -> [B, Nq, C]``."""
    q, k, v = (rearrange(t, "b n (h d) -> b h n d", h=heads) for t in (q, k, v))
    return rearrange(F.scaled_dot_product_attention(q, k, v), "b h n d -> b n (h d)")


def resolve_operations(operations=None):
    """``operations`` or ``torch.nn``'s layers; refuses a namespace that lacks one of ``OPERATION_NAMES``."""
    if operations is None:
        return TORCH_OPERATIONS
    missing = [name for name in OPERATION_NAMES if not hasattr(operations, name)]
    if missing:
        raise TypeError(f"operations {operations!r} lacks {', '.join(missing)}; it needs {', '.join(OPERATION_NAMES)}")
    return operations
