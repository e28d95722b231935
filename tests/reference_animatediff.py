"""A small independent reference of the ORIGINAL AnimateDiff motion module (test-only).

Written from the original code's structure (guoyww/AnimateDiff ``motion_module.py`` with diffusers 0.11.1's
``CrossAttention``): 5-D video tensors ``[b, c, f, h, w]``, a per-frame GroupNorm, the stored ``pe`` buffer
added to the LayerNormed input, explicit head splitting and ``baddbmm`` attention with ``dim_head**-0.5``.
It reads weights straight from an AnimateDiff-layout state dict, so it shares no code with ``atomo_core``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _linear(x, sd, key, bias=True):
    return F.linear(x, sd[key + ".weight"], sd.get(key + ".bias") if bias else None)


def _attention(x, sd, key, heads, pe):
    """``x: [(b d), f, c]`` -> same; VersatileAttention in 'Temporal' mode."""
    if pe is not None:
        x = x + pe[:, : x.shape[1]]
    q = _linear(x, sd, key + ".to_q", bias=False)
    k = _linear(x, sd, key + ".to_k", bias=False)
    v = _linear(x, sd, key + ".to_v", bias=False)
    n, f, c = q.shape
    dh = c // heads

    def split(t):
        return t.reshape(n, f, heads, dh).permute(0, 2, 1, 3).reshape(n * heads, f, dh)

    q, k, v = split(q), split(k), split(v)
    scores = torch.baddbmm(
        torch.empty(n * heads, f, f, dtype=q.dtype), q, k.transpose(-1, -2), beta=0, alpha=dh**-0.5
    )
    out = torch.bmm(scores.softmax(dim=-1), v)
    out = out.reshape(n, heads, f, dh).permute(0, 2, 1, 3).reshape(n, f, c)
    return _linear(out, sd, key + ".to_out.0")


def motion_module_forward(video: torch.Tensor, sd: dict, prefix: str, heads: int = 8, pe_shift: int = 0):
    """One ``VanillaTemporalModule``: ``video [b, c, f, h, w]`` -> same shape.

    ``pe_shift`` offsets the position encoding (a deliberate bug, for sensitivity checks).
    """
    t = prefix + "temporal_transformer"
    b, c, f, h, w = video.shape
    x = video.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)
    residual = x
    x = F.group_norm(x, 32, sd[t + ".norm.weight"], sd[t + ".norm.bias"], eps=1e-6)
    x = x.permute(0, 2, 3, 1).reshape(b * f, h * w, c)
    x = _linear(x, sd, t + ".proj_in")
    blk = t + ".transformer_blocks.0"
    for a in (0, 1):
        normed = F.layer_norm(x, (c,), sd[f"{blk}.norms.{a}.weight"], sd[f"{blk}.norms.{a}.bias"])
        seq = normed.reshape(b, f, h * w, c).permute(0, 2, 1, 3).reshape(b * h * w, f, c)
        pe_key = f"{blk}.attention_blocks.{a}.pos_encoder.pe"
        pe = sd[pe_key][:, pe_shift:] if pe_key in sd else _pe(f + pe_shift, c)[:, pe_shift:]
        out = _attention(seq, sd, f"{blk}.attention_blocks.{a}", heads, pe)
        out = out.reshape(b, h * w, f, c).permute(0, 2, 1, 3).reshape(b * f, h * w, c)
        x = out + x
    normed = F.layer_norm(x, (c,), sd[f"{blk}.ff_norm.weight"], sd[f"{blk}.ff_norm.bias"])
    hidden, gate = _linear(normed, sd, f"{blk}.ff.net.0.proj").chunk(2, dim=-1)
    x = _linear(hidden * F.gelu(gate), sd, f"{blk}.ff.net.2") + x
    x = _linear(x, sd, t + ".proj_out")
    x = x.reshape(b * f, h, w, c).permute(0, 3, 1, 2)
    out = x + residual
    return out.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


def _pe(length, dim):
    from weights import position_encoding

    return position_encoding(length, dim)
