"""Stage 1: the toy's frozen "SD-1.5", a tiny image model of SD-1.5's layout trained on single frames.

What is real and what is toy:

- The UNet is diffusers' ``UNet2DConditionModel`` with SD-1.5's block types and layout (four levels, two ResNets
  and attentions per level, cross-attention to the text), at widths ``TOY_WIDTHS`` with two heads of 16 channels
  (SD-1.5 has eight of 40 to 160; eight of 4 would only slow attention down): the class, sites and code paths
  the trainer uses on a real checkpoint. It is trained here as SD-1.5 was: epsilon prediction on the
  ``scaled_linear`` schedule, 10 % empty captions (so classifier-free guidance works).
- The text encoder is a frozen, randomly initialised 2-layer CLIP text model with the trainer's word-hash tokenizer
  (``base.tiny_base``'s): like CLIP it is causal and never trained, so the UNet must learn to read its features.
- The "VAE" is ``LinearCodec``: latents are the pixels themselves (no spatial factor), four channels made from RGB
  by a fixed orthogonal map. Working in latents directly keeps the truth exact: no VAE reconstruction error sits
  between the world's known positions and what the model makes, and none of the CPU budget goes into training an
  autoencoder. Decoding is the exact inverse on the codec's range (the least-squares inverse off it).
"""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import torch
from torch import nn

from atomo_core.schedules import (
    alphas_cumprod,
    eps_from_v,
    make_betas,
    rescale_zero_terminal_snr,
    trailing_timesteps,
    x0_from_eps,
    x0_from_v,
)
from atomo_core.training.base import TINY_TEXT, TINY_UNET, BaseModel, _hash_tokenizer

from . import world

TOY_WIDTHS = (32, 32, 32, 32)
# two spatial heads of 16 channels (diffusers' ``attention_head_dim`` is SD-1.5's head count): SD-1.5's 8 heads at
# these widths would be heads of 4 channels, which make CPU attention ~5x slower (measured) for no realism
# captions are at most 9 words: 16 tokens hold them with CLIP's framing. With SD-1.5's 77 the caption's few tokens are
# ~1/10 of what cross-attention sees at first and the tiny model took >1500 steps to read colour words at all
# (measured: captions changed its predictions by 0.2 % of their error); see the report's base section
TEXT_TOKENS = 16
TOY_UNET = dict(TINY_UNET, sample_size=world.SIZE, block_out_channels=TOY_WIDTHS, attention_head_dim=2)


class LinearCodec(nn.Module):
    """Pixels ``[N, 3, H, W]`` in -1..1 <-> latents ``[N, 4, H, W]``: ``z = M x`` with ``M`` (4 x 3) of orthonormal
    columns (R, G, B and their mean spread over four channels), ``x = M^T z``. The diffusers VAE interface the
    trainer calls: ``encode(x).latent_dist.mean``, ``decode(z).sample``, ``config.scaling_factor``."""

    def __init__(self):
        super().__init__()
        basis = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
        q, _ = torch.linalg.qr(basis)  # 4 x 3, orthonormal columns
        self.register_buffer("matrix", q * math.sqrt(4 / 3))  # latents of about unit variance per channel
        self.config = SimpleNamespace(scaling_factor=1.0)
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)  # gives ``next(parameters())`` a dtype

    def encode(self, pixels: torch.Tensor):
        z = torch.einsum("kc,nchw->nkhw", self.matrix.to(pixels), pixels)
        return SimpleNamespace(latent_dist=SimpleNamespace(mean=z))

    def decode(self, latents: torch.Tensor):
        m = self.matrix.to(latents)
        x = torch.einsum("kc,nkhw->nchw", m, latents) / (m**2).sum(0).view(1, 3, 1, 1)
        return SimpleNamespace(sample=x)


def make_base(seed: int = 0, norm_groups: int = 32) -> BaseModel:
    """The untrained toy base (stage 1 trains its UNet). ``norm_groups``: GroupNorm's groups; SD-1.5's 32 (10-40
    channels each at its widths) are one channel each at the toy's width 32, a per-channel instance norm; 8 (four
    channels each) was measured against it (``--norm-groups 8``, the report's base section)."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**dict(TOY_UNET, norm_num_groups=norm_groups))
    text = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    tokenize = _hash_tokenizer(TINY_TEXT["vocab_size"], TINY_TEXT["bos_token_id"], TINY_TEXT["eos_token_id"],
                               TEXT_TOKENS)
    return BaseModel(unet, LinearCodec(), text, tokenize, TOY_WIDTHS, "toy")


def image_alphas_cumprod(zero_terminal_snr: bool = False) -> torch.Tensor:
    """SD-1.5's schedule: ``scaled_linear``, 1000 steps (rescaled to zero terminal SNR when asked)."""
    ab = alphas_cumprod(make_betas("scaled_linear", 1000))
    return (rescale_zero_terminal_snr(ab) if zero_terminal_snr else ab).float()


def train_image_model(base: BaseModel, steps: int, batch: int = 32, lr: float = 1e-3, seed: int = 1,
                      prediction_type: str = "epsilon", ema: float = 0.0, min_snr: float = 0.0,
                      figure_weight: float = 0.0, log=None, on_step=None) -> list[float]:
    """Train ``base.unet`` on single frames (10 % empty captions); returns the losses. ``epsilon``: as SD-1.5 was
    trained (epsilon on ``scaled_linear``); ``v_prediction``: v on the same schedule rescaled to zero terminal SNR.
    ``ema``: keep an exponential moving average of the weights with this decay and leave it in the UNet at the end
    (0: none); ``min_snr``: Min-SNR-gamma loss weighting (Hang et al. 2023) with this gamma (0: none).
    ``figure_weight``: the squared error of a pixel the shape or its trail covers counts ``1 + figure_weight`` times a
    background pixel's (each image's weights normalised to mean 1; 0: none). The pixels a caption's shape and motion
    words decide are about a tenth of a frame, and the difference between two shapes a few pixels of it: unweighted,
    reading those words lowers the loss by a percent or so and the base draws a round blob whatever they say (the
    report's base section). The losses returned are unweighted, comparable across settings.
    ``on_step(step, ema_state)``: called after every step (for intermediate checks)."""
    unet = base.unet
    unet.requires_grad_(True).train()
    base.text_encoder.requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-2)
    warmup = max(1, steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * (0.5 * (1 + math.cos(math.pi * min(1.0, s / steps)))))
    v = prediction_type == "v_prediction"
    ab = image_alphas_cumprod(zero_terminal_snr=v)
    snr = ab / (1 - ab).clamp_min(1e-12)
    if min_snr > 0:  # Min-SNR-gamma: min(SNR, gamma) / SNR for epsilon, / (SNR + 1) for v
        weights = snr.clamp(max=min_snr) / (snr + 1 if v else snr.clamp_min(1e-12))
    else:
        weights = torch.ones_like(ab)
    averaged = {k: p.detach().clone() for k, p in unet.named_parameters()} if ema > 0 else None
    gen = torch.Generator().manual_seed(seed)
    losses, start = [], time.perf_counter()
    for step in range(steps):
        pixels, captions, *cover = world.image_batch(gen, batch, figures=figure_weight > 0)  # cover: [[B, H, W]]
        captions = [c if float(torch.rand(1, generator=gen)) >= 0.1 else "" for c in captions]
        x0 = base.encode_video(pixels)
        t = torch.randint(0, len(ab), (batch,), generator=gen)
        eps = torch.randn(x0.shape, generator=gen)
        a = ab[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        target = a.sqrt() * eps - (1 - a).sqrt() * x0 if v else eps
        pred = unet(x_t, t, encoder_hidden_states=base.encode_text(captions)).sample
        per_image = (pred - target).pow(2).flatten(1).mean(1)
        if figure_weight > 0:
            loss = (figure_weighted((pred - target).pow(2).mean(1), cover[0], figure_weight) * weights[t]).mean()
        else:
            loss = (per_image * weights[t]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if averaged is not None:
            with torch.no_grad():
                for k, p in unet.named_parameters():
                    averaged[k].lerp_(p.detach(), 1 - ema)
        if on_step is not None:
            on_step(step + 1, averaged)
        losses.append(float(per_image.mean().detach()))
        if log is not None and (step + 1) % max(1, steps // 10) == 0:
            log(f"stage 1 step {step + 1}/{steps}: loss {sum(losses[-20:]) / len(losses[-20:]):.4f} "
                f"({time.perf_counter() - start:.0f} s)")
    if averaged is not None:
        with torch.no_grad():
            for k, p in unet.named_parameters():
                p.copy_(averaged[k])
    unet.requires_grad_(False).eval()
    return losses


def figure_weighted(error: torch.Tensor, cover: torch.Tensor, figure_weight: float) -> torch.Tensor:
    """Per-image mean of ``error`` ``[B, H, W]`` with each pixel weighted ``1 + figure_weight * cover`` (``cover``
    ``[B, H, W]``: the figure's coverage, 0..1), the weights normalised to mean 1 in each image: ``[B]``."""
    w = 1 + figure_weight * cover
    return (error * (w / w.mean(dim=(1, 2), keepdim=True))).flatten(1).mean(1)


@torch.no_grad()
def sample_images(base: BaseModel, captions: list[str], steps: int = 20, cfg: float = 3.0, seed: int = 0,
                  prediction_type: str = "epsilon") -> torch.Tensor:
    """Text-to-image with the image model alone (DDIM, trailing steps of its schedule): ``[N, 3, H, W]`` 0..1."""
    v = prediction_type == "v_prediction"
    ab = image_alphas_cumprod(zero_terminal_snr=v)
    gen = torch.Generator().manual_seed(seed)
    n = len(captions)
    x = torch.randn(n, 4, world.SIZE, world.SIZE, generator=gen)
    context = torch.cat([base.encode_text(captions), base.encode_text([""] * n)])
    schedule = trailing_timesteps(steps, len(ab)).tolist()
    for i, t in enumerate(schedule):
        out = base.unet(torch.cat([x, x]), torch.full((2 * n,), int(t)), encoder_hidden_states=context).sample
        out = out[n:] + cfg * (out[:n] - out[n:])
        a = ab[int(t)]
        x0, eps = (x0_from_v(x, out, a), eps_from_v(x, out, a)) if v else (x0_from_eps(x, out, a), out)
        a_prev = ab[int(schedule[i + 1])] if i + 1 < len(schedule) else torch.tensor(1.0)
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return ((base.decode(x) + 1) / 2).clamp(0, 1)


@torch.no_grad()
def one_step_images(base: BaseModel, images: torch.Tensor, captions: list[str], t: int, seed: int = 0,
                    prediction_type: str = "epsilon") -> torch.Tensor:
    """The image model's one-step clean prediction ``[N, 3, H, W]`` (0..1) from ``images`` (0..1) noised to step
    ``t`` (no guidance): what the denoiser makes of a picture it can see, apart from any sampler."""
    v = prediction_type == "v_prediction"
    a = image_alphas_cumprod(zero_terminal_snr=v)[t]
    x0 = base.encode_video(images * 2 - 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    out = base.unet(x_t, torch.full((len(images),), t), encoder_hidden_states=base.encode_text(captions)).sample
    pred = x0_from_v(x_t, out, a) if v else x0_from_eps(x_t, out, a)
    return ((base.decode(pred) + 1) / 2).clamp(0, 1)

