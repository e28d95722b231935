"""Random real-size models for the benchmarks, and a FLOP count of one UNet call on fake tensors.

Everything here runs inside a benchmark worker after ``_host.boot`` (it imports ComfyUI and our pack as
ComfyUI loaded it).
"""

from __future__ import annotations

import math
import sys

# The SD-1.5 UNet as ComfyUI's model detection describes it (comfy/model_detection.py, ``SD15``).
SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}


def _randomize_(module, seed: int) -> None:
    """Random weights of sensible scale in place: fan-in-scaled matrices/kernels, norms near 1, small biases.

    ComfyUI's layers are created uninitialised; AtomoVideo's fresh layers are zero residuals (an identity),
    which would let the benchmark time layers that change nothing, so every tensor gets a value here.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.ndim >= 2:
                value = torch.randn(p.shape, generator=gen) / math.sqrt(p[0].numel())
            elif name.endswith("bias"):
                value = torch.randn(p.shape, generator=gen) * 0.05
            else:  # the 1-D weights of GroupNorm/LayerNorm
                value = 1.0 + torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(value)


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def build_sd15(dtype, seed: int):
    """A random real-size SD-1.5 UNet made by ComfyUI's own classes, as a ModelPatcher (on the offload device)."""
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher

    unet_config = comfy.model_detection.convert_config(dict(SD15_UNET, dtype=dtype))
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    assert type(model_config).__name__ == "SD15", type(model_config).__name__
    load_device, offload_device = mm.get_torch_device(), mm.unet_offload_device()
    manual_cast = mm.unet_manual_cast(dtype, load_device, model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, manual_cast)
    model = model_config.get_model({}, "")
    _randomize_(model.diffusion_model, seed)
    model = model.to(offload_device)
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device, offload_device=offload_device)


def build_motion_module(config: str, dtype, frames: int, seed: int):
    """The random motion module of ``config`` (an ``atomo_core`` MotionModule as ComfyUI loaded our pack)."""
    import torch
    from _host import REPO, ours

    if config == "animatediff_v2":
        if str(REPO / "tests") not in sys.path:
            sys.path.insert(0, str(REPO / "tests"))
        import weights

        formats = ours("atomo_core.formats")
        state_dict = weights.animatediff_state_dict("v2", seed=seed, sensitive=True, dtype=dtype)
        family = formats.detect_config(state_dict, None, "random AnimateDiff v2")
        assert family.family == "animatediff_v2", family
        return formats.build_motion_module(state_dict, family, "random AnimateDiff v2", dtype=dtype)
    atomovideo_format = ours("atomo_core.atomovideo_format")
    with torch.device("meta"):  # skip the default initialisation: every weight is overwritten below
        module = atomovideo_format.new_atomovideo_module(
            max_frames=max(24, frames), temporal_attention=True, temporal_conv=True, conv_in=True,
            name="random AtomoVideo",
        )
    module = module.to_empty(device="cpu")
    assert not list(module.buffers()), "MotionModule gained buffers: initialise them here too"
    _randomize_(module, seed)
    gen = torch.Generator().manual_seed(seed + 1)
    module.conv_in_weight = torch.randn(320, 9, 3, 3, generator=gen) / math.sqrt(81)
    module.requires_grad_(False).eval()
    return module.to(dtype)


def _cpu_sdpa_flops(query, key, value, *args, out_shape=None, **kwargs):
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query, key, value)


def count_unet_flops(executor, x, latent_hw: tuple[int, int], args: tuple, kwargs: dict) -> int:
    """FLOPs of one UNet call like this one (same batch, conditioning and patches) on a latent of ``latent_hw``.

    Runs on fake tensors: shapes propagate through every layer, nothing is computed or allocated. Counts
    convolutions, matrix products and attention (torch's counter misses the CPU's fused attention kernel,
    which is added here).

    ComfyUI's sub-quadratic attention (its CPU default) splits keys into chunks when it judges free memory
    short, a path that iterates over a tensor and cannot run on fake tensors; chunking does not change the
    count, so the count is made as if memory were plentiful (``get_free_memory`` reports 1 TiB meanwhile).
    """
    from unittest import mock

    import comfy.model_management
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode

    def plenty(dev=None, torch_free_too=False):
        return (2**40, 2**40) if torch_free_too else 2**40

    custom = {}
    if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
        custom[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops
    with mock.patch.object(comfy.model_management, "get_free_memory", plenty), FakeTensorMode(allow_non_fake_inputs=True):
        fake = torch.empty((x.shape[0], x.shape[1], *latent_hw), dtype=x.dtype, device=x.device)
        counter = FlopCounterMode(display=False, custom_mapping=custom)
        with counter:
            executor(fake, *args, **kwargs)
    return counter.get_total_flops()


# The SD-1.5 VAE (AutoencoderKL) as ComfyUI builds it for an SD-1.x checkpoint (comfy/sd.py, ``VAE``).
SD15_VAE = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
            "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def build_vae(seed: int):
    """A random SD-1.5 VAE as ComfyUI's ``comfy.sd.VAE`` (83.7 M parameters, fp32 weights as ComfyUI loads them).

    Made from ComfyUI's own ``AutoencoderKL`` (no diffusers needed): a state dict of random tensors in its key
    layout, loaded the way a checkpoint's VAE is, so ComfyUI detects an SD-1.x VAE.
    """
    import comfy.ldm.models.autoencoder
    import comfy.sd
    import torch

    with torch.device("meta"):
        shapes = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=SD15_VAE, embed_dim=4)
    model = shapes.to_empty(device="cpu")
    _randomize_(model, seed)
    state_dict = model.state_dict()
    del model, shapes
    vae = comfy.sd.VAE(sd=state_dict)
    assert vae.latent_channels == 4 and vae.downscale_ratio == 8, "ComfyUI did not take it for an SD-1.x VAE"
    return vae


def random_ip_adapter(seed: int, dtype=None):
    """``(ip_weights, tokens [1, 4, 768], uncond_tokens [1, 4, 768])`` of a random IP-Adapter in the standard
    ``base`` layout (ip-adapter_sd15: ``ImageProjModel``, 4 image tokens, 16 ``to_k_ip``/``to_v_ip`` pairs).

    Built by our core from a flat state dict as a file would give it; the image tokens are its projection of a
    random CLIP ``image_embeds [1, 1024]`` (what the node gets from ViT-H) and the uncond tokens its projection
    of zero embeds, as ``nodes/injection.clip_tokens`` makes them.
    """
    import torch
    from _host import REPO, ours

    if str(REPO / "tests") not in sys.path:
        sys.path.insert(0, str(REPO / "tests"))
    from ipadapter_weights import flat, image_proj_shapes, ip_layer_shapes, nested, random_weights

    ip_adapter = ours("atomo_core.ip_adapter")
    state = flat(nested(image_proj_shapes("base"), ip_layer_shapes(), random_weights(seed)))
    adapter = ip_adapter.build_ip_adapter(state, "random ip-adapter_sd15", dtype=dtype or torch.float32)
    assert adapter.spec.variant == "base", adapter.spec
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        tokens = ip_adapter.image_tokens(adapter, torch.randn(1, adapter.spec.clip_width, generator=gen))
        uncond = ip_adapter.uncond_image_tokens(adapter)
    return adapter.ip_weights, tokens.float(), uncond.float()
