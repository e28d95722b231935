"""Host side of multi-granularity image injection: VAE latents into the 9-channel input, CLIP semantics
through IP-Adapter attention. The maths (layouts, projections, attention) lives in ``atomo_core``."""

from __future__ import annotations

import logging

import torch
from einops import rearrange

from ..atomo_core.conditioning import atomovideo_concat, pia_concat
from ..atomo_core.errors import ConditioningError
from ..atomo_core.formats import FAMILY_LABELS
from ..atomo_core.ip_adapter import CLIP_MEAN, IPAdapter, build_ip_adapter, image_tokens, uncond_image_tokens
from .conv_in import check_plain_input
from .host_adapter import get_attachment
from .ip_adapter_patch import apply_ip_adapter, remove_ip_adapter

log = logging.getLogger("AtomoVideo")


def image_attachment(model):
    """The attached motion module, refusing models that cannot take an image."""
    attachment = get_attachment(model)
    if attachment is None:
        raise ConditioningError(
            "This MODEL has no motion module. Put Load Motion Module (AtomoLoadMotionModule) with a PIA or "
            "AtomoVideo file between the checkpoint and this node."
        )
    module = attachment.module
    if not module.accepts_images:
        raise ConditioningError(
            f"'{module.name}' ({FAMILY_LABELS[module.config.family]}) generates from text only and cannot take an "
            "image. Image-to-video needs a module with a 9-channel input: PIA (pia.ckpt) or an AtomoVideo module "
            "with conv_in. Use KSampler with this module for text-to-video instead."
        )
    check_plain_input(model, module)
    return attachment


def check_vae(vae) -> None:
    channels = getattr(vae, "latent_channels", None)
    ratio = getattr(vae, "downscale_ratio", None)
    if channels != 4 or ratio != 8 or getattr(vae, "latent_dim", 2) != 2:
        raise ConditioningError(
            f"This VAE makes {channels}-channel latents at 1/{ratio} scale; SD-1.5 needs its own 4-channel, 1/8 "
            "image VAE. Connect the VAE of your SD-1.5 checkpoint (or vae-ft-mse-840000)."
        )


def encode(vae, model, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``pixels [L, H, W, 3]`` -> ``(raw latents, scaled latents)``, each ``[L, 4, H/8, W/8]``."""
    if not torch.isfinite(pixels).all():
        raise ConditioningError("The input image contains NaN or infinite values; check the node that made it.")
    raw = vae.encode(pixels[..., :3])
    if not torch.isfinite(raw).all():
        raise ConditioningError(
            "The VAE produced NaN latents (an fp16 VAE overflowing?). Run ComfyUI with --fp32-vae or --bf16-vae."
        )
    return raw, model.model.latent_format.process_in(raw)


def image_concat(module, latents: torch.Tensor, frames: int, first_frame: int, pia_preset: str) -> torch.Tensor:
    """``c_concat [frames, 5, h, w]`` in the module's layout."""
    if module.config.image_conditioning == "pia":
        if latents.shape[0] != 1:
            raise ConditioningError(
                f"PIA conditions on one image, but {latents.shape[0]} were given. Pass one image (or use an AtomoVideo "
                "module, which takes several given frames)."
            )
        return pia_concat(latents, frames, pia_preset, first_frame)
    given = list(range(first_frame, first_frame + latents.shape[0]))
    if given[-1] >= frames:
        raise ConditioningError(
            f"{latents.shape[0]} given image(s) starting at frame {first_frame} do not fit in {frames} frames. Use "
            f"more frames, fewer images, or an earlier first frame (at most {frames - latents.shape[0]})."
        )
    return atomovideo_concat(latents, frames, given, module.config.image_layout)


def clip_tokens(adapter: IPAdapter, clip_vision, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image tokens of every given image, side by side ``[1, L*T, 768]``, and matching uncond tokens."""
    spec = adapter.spec
    output = clip_vision.encode_image(pixels[..., :3])
    features = getattr(output, spec.clip_output, None) if not isinstance(output, dict) else output.get(spec.clip_output)
    if features is None:
        raise ConditioningError(f"The CLIP vision model gives no {spec.clip_output}; load {spec.clip_model}.")
    tokens = rearrange(image_tokens(adapter, features), "l t d -> 1 (l t) d")
    if spec.uncond == "zero_embeds":
        uncond = uncond_image_tokens(adapter)
    else:
        mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(1, 1, 1, 3).expand(1, 224, 224, 3)
        uncond_features = getattr(clip_vision.encode_image(mean), spec.clip_output)
        uncond = uncond_image_tokens(adapter, uncond_features)
    uncond = uncond.repeat(1, pixels.shape[0], 1)
    return tokens.detach().float().cpu(), uncond.detach().float().cpu()


def apply_image_prompt(model, adapter: IPAdapter, clip_vision, pixels: torch.Tensor, weight: float) -> None:
    """Add IP-Adapter attention for ``pixels`` to ``model`` (a clone), replacing an earlier one of ours."""
    remove_ip_adapter(model)  # a second injection (e.g. a refine pass) replaces ours
    with torch.inference_mode(False), torch.no_grad():
        tokens, uncond = clip_tokens(adapter, clip_vision, pixels)
    apply_ip_adapter(model, adapter.ip_weights, tokens, uncond, weight)
    log.info("AtomoVideo: IP-Adapter %s (%s), %d image token(s), weight %.2f", adapter.name, adapter.spec.label,
             tokens.shape[1], weight)


def adapter_from_module(module) -> IPAdapter:
    if not module.ip_adapter_weights:
        raise ConditioningError(
            f"'{module.name}' carries no IP-Adapter weights; pick an IP-Adapter file instead of 'from motion module'."
        )
    return build_ip_adapter(module.ip_adapter_weights, module.name)

