"""ComfyUI's attention backend as the core's attention function (see ``atomo_core/attention.py``)."""

from __future__ import annotations

import comfy.ldm.modules.attention


def comfy_attention(transformer_options: dict):
    """``attention(q, k, v, heads)`` running ComfyUI's ``optimized_attention`` for this call.

    Looked up at every call, so the backend is the one ComfyUI runs now (``--use-split-cross-attention``,
    xformers, sage, flash, SDPA with its ``SDP_BATCH_LIMIT`` batch split, sub-quadratic on a CPU), and
    ``transformer_options`` reaches it, so a per-model attention override applies to our layers too.
    """

    def attention(q, k, v, heads):
        return comfy.ldm.modules.attention.optimized_attention(q, k, v, heads, transformer_options=transformer_options)

    return attention
