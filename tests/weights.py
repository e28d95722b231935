"""Random weights in the exact key layouts and shapes of the released files (test-only).

The layouts are written out here from the reference implementations' state dicts, independently of
``atomo_core``, so the loader is tested against the files' layout rather than against itself.

``sensitive=True`` makes bugs visible: non-zero output projections, query/key weights of order 2/sqrt(C)
(softmax far from uniform), LayerNorm/GroupNorm affine terms away from (1, 0).
"""

from __future__ import annotations

import math

import torch

SD15_DOWN = (320, 640, 1280, 1280)
SD15_UP = (1280, 1280, 640, 320)
SDXL_DOWN = (320, 640, 1280)


def position_encoding(length: int, dim: int) -> torch.Tensor:
    """AnimateDiff's ``PositionalEncoding.pe`` buffer, ``[1, length, dim]``."""
    position = torch.arange(length).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    pe = torch.zeros(1, length, dim)
    pe[0, :, 0::2] = torch.sin(position * div_term)
    pe[0, :, 1::2] = torch.cos(position * div_term)
    return pe


def motion_module_prefixes(mid_block: bool, down=SD15_DOWN, up=SD15_UP) -> list[tuple[str, int]]:
    out = []
    for i, c in enumerate(down):
        out += [(f"down_blocks.{i}.motion_modules.{j}.", c) for j in range(2)]
    if mid_block:
        out.append(("mid_block.motion_modules.0.", down[-1]))
    for i, c in enumerate(up):
        out += [(f"up_blocks.{i}.motion_modules.{j}.", c) for j in range(3)]
    return out


def _module_shapes(c: int, pe_length: int | None) -> dict[str, tuple]:
    t = "temporal_transformer."
    shapes = {
        t + "norm.weight": (c,), t + "norm.bias": (c,),
        t + "proj_in.weight": (c, c), t + "proj_in.bias": (c,),
        t + "proj_out.weight": (c, c), t + "proj_out.bias": (c,),
    }
    b = t + "transformer_blocks.0."
    for a in (0, 1):
        ab = f"{b}attention_blocks.{a}."
        for p in ("to_q", "to_k", "to_v"):
            shapes[ab + p + ".weight"] = (c, c)
        shapes[ab + "to_out.0.weight"] = (c, c)
        shapes[ab + "to_out.0.bias"] = (c,)
        if pe_length is not None:
            shapes[ab + "pos_encoder.pe"] = (1, pe_length, c)
        shapes[f"{b}norms.{a}.weight"] = (c,)
        shapes[f"{b}norms.{a}.bias"] = (c,)
    shapes[b + "ff.net.0.proj.weight"] = (8 * c, c)
    shapes[b + "ff.net.0.proj.bias"] = (8 * c,)
    shapes[b + "ff.net.2.weight"] = (c, 4 * c)
    shapes[b + "ff.net.2.bias"] = (c,)
    shapes[b + "ff_norm.weight"] = (c,)
    shapes[b + "ff_norm.bias"] = (c,)
    return shapes


def _fill(key: str, shape: tuple, c: int, gen: torch.Generator, sensitive: bool) -> torch.Tensor:
    if key.endswith("pos_encoder.pe"):
        return position_encoding(shape[1], shape[2])
    if key.endswith(".bias"):
        return torch.randn(shape, generator=gen) * 0.05
    is_norm = any(s in key for s in ("norm.weight", "norms.", "ff_norm.weight"))
    if is_norm:
        return 1.0 + torch.randn(shape, generator=gen) * (0.2 if sensitive else 0.0)
    fan_in = shape[1]
    scale = 1.0 / math.sqrt(fan_in)
    if sensitive and (".to_q." in key or ".to_k." in key):
        scale *= 2.0
    if "proj_out" in key and not sensitive:
        scale = 0.0
    return torch.randn(shape, generator=gen) * scale


def animatediff_state_dict(
    family: str = "v2", seed: int = 0, device: str = "cpu", sensitive: bool = True, dtype=torch.float32
) -> dict[str, torch.Tensor]:
    """A random state dict in the released layout of ``family``.

    Families: ``v1`` (pe 24, no mid), ``v2`` (pe 32, mid), ``v3`` (pe 32, no mid), ``animatelcm`` (mid, no
    pe keys), ``pia`` (v3 layout + ``conv_in``), ``sdxl`` (3 down levels, pe 32).
    """
    mid = family in ("v2", "animatelcm")
    pe_length = {"v1": 24, "v2": 32, "v3": 32, "animatelcm": None, "pia": 32, "sdxl": 32}[family]
    down, up = (SDXL_DOWN, tuple(reversed(SDXL_DOWN))) if family == "sdxl" else (SD15_DOWN, SD15_UP)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for prefix, c in motion_module_prefixes(mid, down, up):
        for key, shape in _module_shapes(c, pe_length).items():
            full = prefix + key
            if device == "meta":
                out[full] = torch.empty(shape, device="meta", dtype=dtype)
            else:
                out[full] = _fill(full, shape, c, gen, sensitive).to(dtype)
    if family == "pia":
        if device == "meta":
            out["conv_in.weight"] = torch.empty(320, 9, 3, 3, device="meta", dtype=dtype)
            out["conv_in.bias"] = torch.empty(320, device="meta", dtype=dtype)
        else:
            out["conv_in.weight"] = (torch.randn(320, 9, 3, 3, generator=gen) / math.sqrt(81)).to(dtype)
            out["conv_in.bias"] = (torch.randn(320, generator=gen) * 0.05).to(dtype)
    return out


def motion_lora_state_dict(rank: int = 4, device: str = "meta") -> dict[str, torch.Tensor]:
    """A MotionLoRA (``v2_lora_ZoomIn.ckpt`` layout)."""
    out = {}
    for prefix, c in motion_module_prefixes(True):
        for a in (0, 1):
            base = f"{prefix}temporal_transformer.transformer_blocks.0.attention_blocks.{a}.processor."
            for p in ("to_q", "to_k", "to_v", "to_out"):
                out[f"{base}{p}_lora.down.weight"] = torch.empty(rank, c, device=device)
                out[f"{base}{p}_lora.up.weight"] = torch.empty(c, rank, device=device)
    return out


def domain_adapter_state_dict(rank: int = 4, device: str = "meta") -> dict[str, torch.Tensor]:
    """The v3 domain adapter (``v3_sd15_adapter.ckpt``): a LoRA on the spatial attentions."""
    out = {}
    sites = [(f"down_blocks.{i}.attentions.{j}.", c) for i, c in enumerate(SD15_DOWN[:3]) for j in range(2)]
    sites += [("mid_block.attentions.0.", 1280)]
    sites += [(f"up_blocks.{i}.attentions.{j}.", c) for i, c in zip((1, 2, 3), (1280, 640, 320), strict=True) for j in range(3)]
    for prefix, c in sites:
        for attn in ("attn1", "attn2"):
            base = f"{prefix}transformer_blocks.0.{attn}.processor."
            for p in ("to_q", "to_k", "to_v", "to_out"):
                fan_in = 768 if attn == "attn2" and p in ("to_k", "to_v") else c
                out[f"{base}{p}_lora.down.weight"] = torch.empty(rank, fan_in, device=device)
                out[f"{base}{p}_lora.up.weight"] = torch.empty(c, rank, device=device)
    return out


def hotshotxl_state_dict(device: str = "meta") -> dict[str, torch.Tensor]:
    out = {}
    for i, c in enumerate(SDXL_DOWN):
        for j in range(2):
            p = f"down_blocks.{i}.temporal_attentions.{j}."
            out[p + "proj_in.weight"] = torch.empty(c, c, device=device)
            out[p + "transformer_blocks.0.attention_blocks.0.pos_encoder.positional_encoding"] = torch.empty(
                1, 24, c, device=device
            )
    return out


def to_diffusers_motion_adapter(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename AnimateDiff keys to diffusers ``MotionAdapter`` keys (for the diffusers oracle)."""
    out = {}
    for key, value in state_dict.items():
        if ".motion_modules." not in key:
            continue
        k = key.replace(".temporal_transformer.", ".")
        k = k.replace("attention_blocks.0.pos_encoder.pe", "pos_embed.pe")
        if "attention_blocks.1.pos_encoder.pe" in k:
            continue
        k = k.replace("attention_blocks.0.", "attn1.").replace("attention_blocks.1.", "attn2.")
        k = k.replace("norms.0.", "norm1.").replace("norms.1.", "norm2.").replace("ff_norm.", "norm3.")
        out[k] = value
    return out


def sparsectrl_rgb_state_dict(seed: int = 0, dtype=torch.float16) -> dict[str, torch.Tensor]:
    """A random SparseCtrl RGB model (AnimateDiff v3, ``v3_sd15_sparsectrl_rgb``) in its released layout: an SD-1.5
    ControlNet in diffusers' key names whose hint is the VAE latent plus a keyframe mask (``controlnet_cond_embedding``
    one conv, 5 input channels), with AnimateDiff v3 motion modules (original ``temporal_transformer`` names, pe
    length 32) after every ResNet of its four down levels and none in its middle. The ControlNet's key names and shapes
    are read from diffusers' ``SparseControlNetModel`` built on ``meta`` (its own motion keys, in diffusers' names,
    are replaced by the original's). The zero convolutions are random, not zero, so the control visibly acts."""
    from diffusers import SparseControlNetModel

    with torch.device("meta"):
        layout = SparseControlNetModel(conditioning_channels=4, use_simplified_condition_embedding=True,
                                       concat_conditioning_mask=True, motion_max_seq_length=32).state_dict()
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, value in layout.items():
        if ".motion_modules." in key:
            continue
        shape = tuple(value.shape)
        if key.endswith(".bias"):
            tensor = torch.randn(shape, generator=gen) * 0.05
        elif len(shape) == 1:  # norm scales
            tensor = 1.0 + torch.randn(shape, generator=gen) * 0.1
        else:
            tensor = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
        out[key] = tensor.to(dtype)
    motion = animatediff_state_dict("v3", seed=seed + 1, dtype=dtype)
    out.update({k: v for k, v in motion.items() if k.startswith("down_blocks.")})
    return out
