"""Random IP-Adapter (SD-1.5) weights in the released files' layouts (test-only).

The key/shape tables are written out from the released files' layouts (research notes, section A.2),
independently of ``atomo_core``.
"""

from __future__ import annotations

import math

import torch

# ip_adapter.N -> attention width, and ComfyUI's attn2 block id for it (notes A.2, 16-row table).
SITES = {
    1: (320, ("input", 1)), 3: (320, ("input", 2)), 5: (640, ("input", 4)), 7: (640, ("input", 5)),
    9: (1280, ("input", 7)), 11: (1280, ("input", 8)),
    13: (1280, ("output", 3)), 15: (1280, ("output", 4)), 17: (1280, ("output", 5)),
    19: (640, ("output", 6)), 21: (640, ("output", 7)), 23: (640, ("output", 8)),
    25: (320, ("output", 9)), 27: (320, ("output", 10)), 29: (320, ("output", 11)),
    31: (1280, ("middle", 0)),
}  # fmt: skip
EXECUTION_ORDER = [("input", i) for i in (1, 2, 4, 5, 7, 8)] + [("middle", 0)] + [("output", i) for i in range(3, 12)]


def ip_layer_shapes(context: int = 768, sites: dict | None = None) -> dict[str, tuple]:
    sites = sites or {n: w for n, (w, _) in SITES.items()}
    return {f"{n}.{kind}.weight": (w, context) for n, w in sites.items() for kind in ("to_k_ip", "to_v_ip")}


def image_proj_shapes(variant: str) -> dict[str, tuple]:
    if variant == "base":  # ImageProjModel(768, 1024, 4)
        return {"proj.weight": (3072, 1024), "proj.bias": (3072,), "norm.weight": (768,), "norm.bias": (768,)}
    if variant == "vit-G":  # ip-adapter_sd15_vit-G: same model, bigG image_embeds
        return {"proj.weight": (3072, 1280), "proj.bias": (3072,), "norm.weight": (768,), "norm.bias": (768,)}
    if variant == "plus":  # Resampler(dim 768, depth 4, dim_head 64, heads 12, 16 queries, embedding 1280)
        shapes = {
            "latents": (1, 16, 768),
            "proj_in.weight": (768, 1280), "proj_in.bias": (768,),
            "proj_out.weight": (768, 768), "proj_out.bias": (768,),
            "norm_out.weight": (768,), "norm_out.bias": (768,),
        }  # fmt: skip
        for i in range(4):
            for norm in ("norm1", "norm2"):
                shapes[f"layers.{i}.0.{norm}.weight"] = (768,)
                shapes[f"layers.{i}.0.{norm}.bias"] = (768,)
            shapes[f"layers.{i}.0.to_q.weight"] = (768, 768)
            shapes[f"layers.{i}.0.to_kv.weight"] = (1536, 768)
            shapes[f"layers.{i}.0.to_out.weight"] = (768, 768)
            shapes[f"layers.{i}.1.0.weight"] = (768,)
            shapes[f"layers.{i}.1.0.bias"] = (768,)
            shapes[f"layers.{i}.1.1.weight"] = (3072, 768)
            shapes[f"layers.{i}.1.3.weight"] = (768, 3072)
        return shapes
    if variant == "full-face":  # MLPProjModel(768, 1280)
        return {
            "proj.0.weight": (1280, 1280), "proj.0.bias": (1280,),
            "proj.2.weight": (768, 1280), "proj.2.bias": (768,),
            "proj.3.weight": (768,), "proj.3.bias": (768,),
        }  # fmt: skip
    if variant == "faceid":  # FaceID MLPProjModel(768, id_embeddings 512, 4 tokens)
        return {
            "proj.0.weight": (1024, 512), "proj.0.bias": (1024,),
            "proj.2.weight": (3072, 1024), "proj.2.bias": (3072,),
            "norm.weight": (768,), "norm.bias": (768,),
        }  # fmt: skip
    if variant == "sdxl":  # ip-adapter_sdxl: ImageProjModel(2048, 1280, 4)
        return {"proj.weight": (8192, 1280), "proj.bias": (8192,), "norm.weight": (2048,), "norm.bias": (2048,)}
    raise KeyError(variant)


def sdxl_ip_layer_shapes() -> dict[str, tuple]:
    widths = [640] * 4 + [1280] * 20 + [1280] * 30 + [640] * 6 + [1280] * 10  # 70 cross-attention sites
    return ip_layer_shapes(2048, {2 * i + 1: w for i, w in enumerate(widths)})


def nested(proj_shapes: dict, layer_shapes: dict, make) -> dict:
    """The ``.bin`` layout: ``{"image_proj": {...}, "ip_adapter": {...}}``."""
    return {
        "image_proj": {k: make(k, s) for k, s in proj_shapes.items()},
        "ip_adapter": {k: make(k, s) for k, s in layer_shapes.items()},
    }


def flat(tree: dict) -> dict:
    """The ``.safetensors`` layout: ``image_proj.<k>`` / ``ip_adapter.<k>``."""
    return {f"{part}.{k}": v for part, sd in tree.items() for k, v in sd.items()}


def meta(_key, shape):
    return torch.empty(shape, device="meta")


def zeros16(_key, shape):
    return torch.zeros(shape, dtype=torch.float16)


def random_weights(seed: int):
    """Weights that make bugs visible: LayerNorm gains ~1 with non-zero biases, matrices ~1/sqrt(fan_in)."""
    gen = torch.Generator().manual_seed(seed)

    def make(key, shape):
        if len(shape) == 1:
            base = 1.0 if key.endswith("weight") else 0.0
            return base + 0.2 * torch.randn(shape, generator=gen)
        fan_in = shape[-1]
        return torch.randn(shape, generator=gen) * (1.5 / math.sqrt(fan_in))

    return make
