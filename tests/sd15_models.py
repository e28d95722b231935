"""Random real-size SD-1.5 models for host tests: a diffusers UNet (the oracle's base) and the same weights
loaded into ComfyUI, plus random LoRA and ControlNet weights in their common layouts (test-only)."""

from __future__ import annotations

import math

import torch

SD15_UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
)


def diffusers_sd15_unet(seed: int = 0):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET_CONFIG)
    with torch.no_grad():  # give every norm a non-trivial affine transform
        for module in unet.modules():
            if isinstance(module, torch.nn.GroupNorm | torch.nn.LayerNorm) and module.weight is not None:
                module.weight.normal_(1.0, 0.1)
                module.bias.normal_(0.0, 0.1)
    return unet.eval().requires_grad_(False)


def comfy_model_from_diffusers(unet, dtype=None, share=True):
    """The same weights as a ComfyUI MODEL. With ``share`` (fp32 only) the diffusers UNet's parameters are
    rebound to ComfyUI's tensors afterwards, so the pair costs the memory of one UNet (ComfyUI never writes
    weights in place: patches replace the parameter and restore the original)."""
    import comfy.sd
    import comfy.utils

    options = {"dtype": dtype} if dtype is not None else {}
    model = comfy.sd.load_diffusion_model_state_dict(unet.state_dict(), model_options=options)
    assert model is not None and type(model.model.model_config).__name__ == "SD15"
    if share and dtype in (None, torch.float32):
        comfy_sd = model.model.diffusion_model.state_dict()
        mapping = comfy.utils.unet_to_diffusers(model.model.model_config.unet_config)
        params = dict(unet.named_parameters())
        shared = 0
        for diffusers_key, ldm_key in mapping.items():
            target = params.get(diffusers_key)
            source = comfy_sd.get(ldm_key)
            if target is not None and source is not None and target.shape == source.shape:
                target.data = source
                shared += 1
        assert shared == len(params), f"shared {shared} of {len(params)} parameters"
    return model


def kohya_lora(seed: int = 0, rank: int = 8, scale: float = 1.0) -> dict[str, torch.Tensor]:
    """A random LoRA on every attention projection of the SD-1.5 UNet, in kohya's key layout."""
    gen = torch.Generator().manual_seed(seed)
    sites = [(f"down_blocks_{i}_attentions_{j}", c) for i, c in enumerate((320, 640, 1280)) for j in range(2)]
    sites += [("mid_block_attentions_0", 1280)]
    sites += [(f"up_blocks_{i}_attentions_{j}", c) for i, c in zip((1, 2, 3), (1280, 640, 320), strict=True) for j in range(3)]
    out = {}
    for prefix, c in sites:
        for attn in ("attn1", "attn2"):
            for proj in ("to_q", "to_k", "to_v", "to_out_0"):
                fan_in = 768 if attn == "attn2" and proj in ("to_k", "to_v") else c
                key = f"lora_unet_{prefix}_transformer_blocks_0_{attn}_{proj}"
                out[key + ".lora_down.weight"] = torch.randn(rank, fan_in, generator=gen) / math.sqrt(fan_in)
                out[key + ".lora_up.weight"] = torch.randn(c, rank, generator=gen) * scale / math.sqrt(rank)
                out[key + ".alpha"] = torch.tensor(float(rank))
    return out


def random_controlnet(unet, seed: int = 0):
    """A ControlNet with the SD-1.5 layout (diffusers' from_unet), its zero convolutions made non-zero."""
    import comfy.controlnet
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    cn = ControlNetModel.from_unet(unet)
    with torch.no_grad():
        for name, p in cn.named_parameters():
            if "controlnet_down_blocks" in name or "controlnet_mid_block" in name:
                p.normal_(0.0, 0.05)
    sd = cn.state_dict()
    del cn
    return comfy.controlnet.load_controlnet_state_dict(sd)


def random_vae(seed: int = 0):
    """ComfyUI's VAE with random SD-1.5 AutoencoderKL weights (diffusers layout, converted by ComfyUI)."""
    import comfy.sd
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(128, 256, 512, 512),
    )
    return comfy.sd.VAE(sd=vae.state_dict())
