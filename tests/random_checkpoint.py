"""Random real-size SD-1.5 files on disk, in the layouts ComfyUI's loaders read (test-only).

``sd15_checkpoint()`` writes a full single-file SD-1.5 checkpoint (UNet + VAE + CLIP-L text encoder) in the
original ldm key layout (``model.diffusion_model.*``, ``first_stage_model.*``,
``cond_stage_model.transformer.text_model.*``), fp16 ``.safetensors`` (2.1 GB), loadable by
**CheckpointLoaderSimple**. ``clip_vision_h()`` writes a CLIP-vision ViT-H/14 image encoder (``vision_model.*``,
``visual_projection.weight``, 1.3 GB) that **CLIPVisionLoader** accepts (the IP-Adapter SD-1.5 encoder).

Names and shapes come from ComfyUI's own model classes built on the ``meta`` device (they use the ldm and
transformers names, so no key conversion is needed). Each tensor is then drawn from one seeded generator and
streamed to the file, so memory stays at one tensor: linear and convolution weights ``N(0, 1/fan_in)``
(activations of order 1 all the way through), biases ``N(0, 0.02)``, norm scales ``N(1, 0.1)`` and shifts
``N(0, 0.1)``, embeddings ``N(0, 0.5)``. No zeros, no NaNs; the random VAE decodes to mid-range pixels.

Files are cached by content under ``$ATOMO_TEST_CACHE`` (default ``<tmp>/atomo_test_weights``): the name holds
a hash of this file's source, the seed and the torch version, so every test and process reuses one file and a
change to the recipe makes a new one (older ones of the same kind and seed are deleted). Writes are atomic.
ComfyUI must already be imported and configured (``comfy_host.boot()`` or ``tools/run_workflow.boot()``).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import struct
import sys
import tempfile

import torch

SD15_UNET = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
    channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], transformer_depth_middle=1,
    transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], context_dim=768, num_heads=8,
    use_spatial_transformer=True, use_linear_in_transformer=False, legacy=False, adm_in_channels=None,
    use_checkpoint=False, use_temporal_attention=False, use_temporal_resblock=False,
)  # fmt: skip
SD15_VAE = dict(
    double_z=True, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128, ch_mult=[1, 2, 4, 4],
    num_res_blocks=2, attn_resolutions=[], dropout=0.0,
)  # fmt: skip
SD15_TEXT = dict(
    num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
    hidden_act="quick_gelu", max_position_embeddings=77, eos_token_id=49407, vocab_size=49408,
)  # fmt: skip
VIT_H = dict(
    hidden_size=1280, image_size=224, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
    patch_size=14, num_channels=3, projection_dim=1024, hidden_act="gelu", layer_norm_eps=1e-5,
    model_type="clip_vision_model",
)  # fmt: skip


def cache_dir() -> pathlib.Path:
    default = pathlib.Path(tempfile.gettempdir()) / "atomo_test_weights"
    path = pathlib.Path(os.environ.get("ATOMO_TEST_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _require_comfy() -> None:
    if "comfy.model_management" not in sys.modules:
        raise RuntimeError("random_checkpoint needs ComfyUI booted first (comfy_host.boot() or run_workflow.boot())")


def sd15_modules() -> dict[str, torch.nn.Module]:
    """``{key prefix: module}``: the SD-1.5 parts as ComfyUI builds them, on the meta device."""
    _require_comfy()
    import comfy.clip_model
    import comfy.ops
    from comfy.ldm.models.autoencoder import AutoencoderKL
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    ops = comfy.ops.disable_weight_init
    with torch.device("meta"):
        return {
            "model.diffusion_model.": UNetModel(**SD15_UNET, dtype=torch.float16, operations=ops),
            "first_stage_model.": AutoencoderKL(ddconfig=dict(SD15_VAE), embed_dim=4),
            "cond_stage_model.transformer.": comfy.clip_model.CLIPTextModel(SD15_TEXT, torch.float16, None, ops),
        }


def clip_vision_h_modules() -> dict[str, torch.nn.Module]:
    _require_comfy()
    import comfy.clip_model
    import comfy.ops

    with torch.device("meta"):
        ops = comfy.ops.disable_weight_init
        return {"": comfy.clip_model.CLIPVisionModelProjection(VIT_H, torch.float16, None, ops)}


def tensor_specs(modules: dict[str, torch.nn.Module], skip=()) -> list[tuple[str, torch.nn.Module, str, tuple]]:
    """``(key, owning module, parameter name, shape)`` for every parameter and buffer, in a fixed order."""
    specs = []
    for prefix, module in modules.items():
        for mname, sub in module.named_modules():
            for pname, p in [*sub.named_parameters(recurse=False), *sub.named_buffers(recurse=False)]:
                key = prefix + (f"{mname}.{pname}" if mname else pname)
                if not any(s in key for s in skip):
                    specs.append((key, sub, pname, tuple(p.shape)))
    return specs


def draw(module: torch.nn.Module, name: str, shape: tuple, gen: torch.Generator) -> torch.Tensor:
    """One fp16 tensor with the scale its role needs (see the module docstring)."""
    noise = torch.randn(shape, generator=gen)
    if isinstance(module, torch.nn.GroupNorm | torch.nn.LayerNorm):
        noise = 1.0 + 0.1 * noise if name == "weight" else 0.1 * noise
    elif isinstance(module, torch.nn.Embedding) or (len(shape) == 1 and name != "bias"):
        noise = 0.5 * noise  # token / position embeddings, the class embedding
    elif name == "bias":
        noise = 0.02 * noise
    else:
        noise = noise / math.sqrt(math.prod(shape[1:]))
    return noise.to(torch.float16)


def random_state_dict(modules: dict[str, torch.nn.Module], seed: int = 0, skip=()) -> dict[str, torch.Tensor]:
    """The same values as the files, in memory (for small modules)."""
    gen = torch.Generator().manual_seed(seed)
    return {key: draw(sub, name, shape, gen) for key, sub, name, shape in tensor_specs(modules, skip)}


def write_random_safetensors(path, specs, seed: int, metadata: dict[str, str]) -> None:
    """Stream ``specs`` as fp16 safetensors: the header first, then each tensor as it is drawn."""
    header, offset = {}, 0
    for key, _, _, shape in specs:
        size = 2 * math.prod(shape)
        header[key] = {"dtype": "F16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    gen = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for _, sub, name, shape in specs:
            f.write(draw(sub, name, shape, gen).contiguous().view(torch.uint8).numpy().tobytes())


def _cached(kind: str, seed: int, specs) -> pathlib.Path:
    source = pathlib.Path(__file__).read_bytes() + f"|{kind}|{seed}|{torch.__version__}".encode()
    path = cache_dir() / f"{kind}_random_seed{seed}_{hashlib.sha256(source).hexdigest()[:12]}.safetensors"
    if path.is_file():
        return path
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    write_random_safetensors(tmp, specs(), seed, {"format": "pt", "note": f"random {kind} test weights"})
    os.replace(tmp, path)
    for stale in path.parent.glob(f"{kind}_random_seed{seed}_*.safetensors"):
        if stale != path:
            stale.unlink(missing_ok=True)
    return path


def sd15_checkpoint(seed: int = 0) -> pathlib.Path:
    """Path of a cached random SD-1.5 checkpoint (2.1 GB, written in about 20 s). Like a real SD-1.5 file it
    has no ``text_projection`` (CLIP-L's pooled projection, unused by SD-1.5)."""
    return _cached("sd15", seed, lambda: tensor_specs(sd15_modules(), skip=("text_projection",)))


def clip_vision_h(seed: int = 0) -> pathlib.Path:
    """Path of a cached random CLIP-vision ViT-H/14 (1.3 GB)."""
    return _cached("clip_vision_h", seed, lambda: tensor_specs(clip_vision_h_modules()))


def link_into(models_dir: os.PathLike, folder: str, source: os.PathLike, name: str | None = None) -> pathlib.Path:
    """Symlink ``source`` as ``models_dir/folder/name`` (ComfyUI's model-folder layout); returns the link."""
    target = pathlib.Path(models_dir) / folder / (name or pathlib.Path(source).name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() and target.resolve() != pathlib.Path(source).resolve():
        target.unlink()
    if not target.exists():
        target.symlink_to(pathlib.Path(source).resolve())
    return target
