"""IP-Adapter's 16 SD-1.5 cross-attention sites and its decoupled attention.

At every cross-attention (``attn2``) of the UNet, IP-Adapter adds a second attention of the same queries
over the image tokens, with the site's own ``to_k_ip``/``to_v_ip`` projections, before ``to_out``:

    out = attn(q, k_text, v_text) + scale * attn(q, k_ip, v_ip)

Sites (``IP_SITES``). The file numbers them ``1, 3, ..., 31`` (``ip_adapter.N.to_k_ip.weight``) in
diffusers' attention-processor order: the 6 down-block attentions, the 9 up-block attentions, then the
middle block (the even numbers were the parameter-free self-attention processors). ComfyUI addresses
them by block id, ``("input", 1|2|4|5|7|8)``, ``("output", 3..11)`` and ``("middle", 0)``, and runs them
in the order input, middle, output (its ``transformer_index``). Index by block id, never by position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import repeat

from .attention import AttentionFunction, sdpa_attention
from .errors import ConditioningError

IP_LAYERS = "ip_adapter."


@dataclass(frozen=True)
class IPSite:
    """One cross-attention site.

    ``key`` is N in ``ip_adapter.N.to_k_ip.weight``; ``block`` ComfyUI's attn2 patch key; ``channels`` the
    attention width (``to_k_ip.weight`` is ``[channels, 768]``); ``transformer_index`` ComfyUI's
    execution-order counter at that site.
    """

    key: int
    diffusers_name: str
    block: tuple[str, int]
    channels: int
    transformer_index: int


# In the file's order: down blocks, up blocks, then the middle block.
IP_SITES: tuple[IPSite, ...] = (
    IPSite(1, "down_blocks.0.attentions.0", ("input", 1), 320, 0),
    IPSite(3, "down_blocks.0.attentions.1", ("input", 2), 320, 1),
    IPSite(5, "down_blocks.1.attentions.0", ("input", 4), 640, 2),
    IPSite(7, "down_blocks.1.attentions.1", ("input", 5), 640, 3),
    IPSite(9, "down_blocks.2.attentions.0", ("input", 7), 1280, 4),
    IPSite(11, "down_blocks.2.attentions.1", ("input", 8), 1280, 5),
    IPSite(13, "up_blocks.1.attentions.0", ("output", 3), 1280, 7),
    IPSite(15, "up_blocks.1.attentions.1", ("output", 4), 1280, 8),
    IPSite(17, "up_blocks.1.attentions.2", ("output", 5), 1280, 9),
    IPSite(19, "up_blocks.2.attentions.0", ("output", 6), 640, 10),
    IPSite(21, "up_blocks.2.attentions.1", ("output", 7), 640, 11),
    IPSite(23, "up_blocks.2.attentions.2", ("output", 8), 640, 12),
    IPSite(25, "up_blocks.3.attentions.0", ("output", 9), 320, 13),
    IPSite(27, "up_blocks.3.attentions.1", ("output", 10), 320, 14),
    IPSite(29, "up_blocks.3.attentions.2", ("output", 11), 320, 15),
    IPSite(31, "mid_block.attentions.0", ("middle", 0), 1280, 6),
)


def ip_site(block_id: tuple) -> IPSite:
    """The site at a ComfyUI block id ``(kind, number)``; a third element (the block index) must be 0."""
    block = (str(block_id[0]), int(block_id[1]))
    if len(block_id) > 2 and int(block_id[2]) != 0:
        raise KeyError(f"SD-1.5 has one transformer per block; got block index {block_id[2]} in {block_id}")
    for site in IP_SITES:
        if site.block == block:
            return site
    hint = " (ComfyUI calls the middle block ('middle', 0))" if block[0] == "middle" else ""
    raise KeyError(f"{block} is not an SD-1.5 cross-attention block{hint}; known: {[s.block for s in IP_SITES]}")


def site_weights(ip_state: dict[str, torch.Tensor], block_id: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """``(to_k_ip.weight, to_v_ip.weight)``, each ``[channels, 768]``, of the site at a ComfyUI block id.

    ``ip_state`` is ``read_ip_adapter``'s flat dict (``ip_adapter.N.*`` keys) or the bare ``ip_adapter`` part.
    """
    n = ip_site(block_id).key
    prefix = IP_LAYERS if f"{IP_LAYERS}{n}.to_k_ip.weight" in ip_state else ""
    return ip_state[f"{prefix}{n}.to_k_ip.weight"], ip_state[f"{prefix}{n}.to_v_ip.weight"]


def ip_key_value(
    image_tokens: torch.Tensor, to_k_ip_weight: torch.Tensor, to_v_ip_weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``image_tokens [B, N, 768]`` -> ``(k_ip, v_ip)``, each ``[B, N, C]`` (bias-free, weights ``[C, 768]``).

    The weights are cast to the tokens' device and dtype.
    """
    k_ip = F.linear(image_tokens, to_k_ip_weight.to(image_tokens))
    v_ip = F.linear(image_tokens, to_v_ip_weight.to(image_tokens))
    return k_ip, v_ip


multihead_attention = sdpa_attention  # the core's default attention function (``attention.py``)


def repeat_per_chunk(x: torch.Tensor, batch: int) -> torch.Tensor:
    """``[c, N, C] -> [(c f), N, C]`` with ``f = batch / c``: one entry per chunk, repeated over its frames.

    ComfyUI stacks the cond/uncond chunks of ``f`` frames each along the batch, chunk after chunk.
    ``x`` with ``batch`` rows is returned as is.
    """
    if x.shape[0] == batch:
        return x
    if batch % x.shape[0]:
        raise ConditioningError(
            f"Image-prompt tokens for {x.shape[0]} chunks cannot be spread over a batch of {batch} frames."
        )
    return repeat(x, "c n d -> (c f) n d", f=batch // x.shape[0])


def decoupled_attention(
    q: torch.Tensor,
    k_text: torch.Tensor,
    v_text: torch.Tensor,
    k_ip: torch.Tensor,
    v_ip: torch.Tensor,
    heads: int,
    scale: float | torch.Tensor = 1.0,
    attention: AttentionFunction | None = None,
) -> torch.Tensor:
    """IP-Adapter's attention at one site, before the site's ``to_out``.

    ``q [B, Nq, C]`` and ``k_text, v_text [B, Nt, C]`` are already projected by the site's ``to_q/to_k/to_v``
    (what a ComfyUI attn2 replace patch receives); ``k_ip, v_ip [B or c, Ni, C]`` come from ``ip_key_value``
    (with ``c`` rows, row i serves the i-th chunk of ``B/c`` frames: ``repeat_per_chunk``). ``scale`` is a
    number or a tensor broadcastable to ``[B, 1, 1]``. Both attentions run through ``attention`` (``None``: SDPA;
    the host passes ComfyUI's backend). Returns ``[B, Nq, C]``:

        softmax(q k_textᵀ/√d) v_text + scale · softmax(q k_ipᵀ/√d) v_ip,   d = C / heads
    """
    attention = attention or sdpa_attention
    k_ip, v_ip = (repeat_per_chunk(t.to(q), q.shape[0]) for t in (k_ip, v_ip))
    if isinstance(scale, torch.Tensor):
        scale = scale.to(q)
    return attention(q, k_text, v_text, heads) + scale * attention(q, k_ip, v_ip, heads)
