"""Everything a training run is made of, built from its config: the frozen base, the trainable motion module in the
temporal UNet (optionally under DDP), the optimiser and learning-rate schedule, the data, and the objective.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass

import torch

from ..atomovideo_format import new_atomovideo_module
from ..errors import AtomoError
from ..formats import load_motion_module
from .base import BaseModel, load_base
from .config import TrainConfig
from .data import LatentCache, ResumableSampler, VideoClipDataset, build_index, make_loader
from .distributed import World
from .objective import Objective
from .unet import TemporalUNet

log = logging.getLogger("atomovideo.train")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Run:
    config: TrainConfig
    world: World
    base: BaseModel
    model: TemporalUNet
    wrapped: torch.nn.Module  # the model under DDP, or the model itself
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: ResumableSampler
    loader: torch.utils.data.DataLoader
    objective: Objective
    generator: torch.Generator  # noise, timesteps, given frames and dropout: saved and restored with the run
    dataset: VideoClipDataset
    videos: int  # usable training videos
    skipped: list
    latent_cache: LatentCache | None = None
    autocast_device: str | None = None  # None: CUDA autocast on a GPU in low precision (``estimate`` sets "cpu")

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.config.precision]


def lr_lambda(config: TrainConfig):
    """Warm-up from 0 over ``warmup_steps``, then constant, cosine or linear decay to 0 at ``steps``."""

    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.lr_schedule == "constant":
            return 1.0
        span = max(1, config.steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return 0.5 * (1 + math.cos(math.pi * progress)) if config.lr_schedule == "cosine" else 1.0 - progress

    return factor


def motion_module_for(config: TrainConfig, widths: tuple[int, ...], text_dim: int = 768):
    """A fresh AtomoVideo module, started from ``init.motion_module`` or ``init.pia`` when given. ``text_dim``: the
    base's cross-attention width (the caption features ``temporal_text: film`` reads; SD-1.5's 768)."""
    source = config.init.motion_module or config.init.pia
    init_from = load_motion_module(source) if source else None
    module = new_atomovideo_module(
        temporal_text_dim=text_dim if config.temporal_text == "film" else None,
        max_frames=config.module_frames(), prediction_type=config.prediction_type, beta_schedule=config.beta_schedule,
        zero_terminal_snr=config.zero_terminal_snr, init_from=init_from, widths=widths,
        name=os.path.basename(config.output_dir.rstrip("/")) or "atomovideo",
        image_layout=config.conditioning.image_layout,
    )
    if config.init.temporal_out == "small" and not init_from:
        _small_outputs(module)
    if config.init.pia:
        if init_from.conv_in_weight is None or init_from.config.family != "pia":
            raise AtomoError(f"init.pia '{config.init.pia}' is not a PIA file (no 9-channel conv_in).")
        module.conv_in_weight[:, 4:] = init_from.conv_in_weight[:, 4:].float()
    module.float().train()
    return module


SMALL_OUTPUT_SCALE = 1e-2


def _small_outputs(module) -> None:
    """Give every temporal layer's zero-initialised output (attention ``proj_out``, convolution ``conv``) PyTorch's
    default initialisation times ``SMALL_OUTPUT_SCALE``: nearly the identity, but every weight has a gradient from
    the first step (behind a zero output only the output itself learns at first)."""
    for _site, layer in module.placements():
        out = getattr(getattr(layer, "temporal_transformer", None), "proj_out", None) or getattr(layer, "conv", None)
        if out is None:
            continue
        fresh = type(out)(*_shape_args(out))
        with torch.no_grad():
            out.weight.copy_(fresh.weight * SMALL_OUTPUT_SCALE)
            out.bias.copy_(fresh.bias * SMALL_OUTPUT_SCALE)


def _shape_args(layer) -> tuple:
    if isinstance(layer, torch.nn.Linear):
        return layer.in_features, layer.out_features
    return layer.in_channels, layer.out_channels, layer.kernel_size


@dataclass
class Trainable:
    """The trainable side of a run, on a given frozen base: the temporal UNet, optimiser, schedule, objective."""

    model: TemporalUNet
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    objective: Objective
    generator: torch.Generator


def build_trainable(config: TrainConfig, world: World, base: BaseModel) -> Trainable:
    """The motion module in the temporal UNet over ``base`` (frozen, on ``world.device``), AdamW, the learning-rate
    schedule, the objective and its generator: everything ``train_step`` needs besides the data."""
    module = motion_module_for(config, base.widths, base.unet.config.cross_attention_dim)
    ip = None
    if config.ip_adapter.file:
        from .ip_conditioning import build_ip_conditioner

        ip = build_ip_conditioner(config.ip_adapter.file, config.ip_adapter.clip_vision, base.unet, base.widths,
                                  config.ip_adapter.scale, config.train.image_proj, config.seed)
    model = TemporalUNet(base.unet, module, ip).to(world.device)  # trainable weights are fp32 from here on
    if config.init.image_channels == "copy" and not config.init.pia and model.image_conditioning:
        with torch.no_grad():  # the image latent enters conv_in as the noisy latent does; the mask starts at zero
            conv_in = model.unet.conv_in
            conv_in.image_weight[:, 1:].copy_(conv_in.base.weight.float())
    if config.gradient_checkpointing:
        model.enable_checkpointing()
    base.unet.train()  # diffusers only checkpoints in training mode; the base has no dropout to switch on
    wrapped = model
    if world.distributed:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[world.local_rank] if world.device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=config.learning_rate,
                                  betas=tuple(config.adam_betas), eps=config.adam_epsilon,
                                  weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
    objective = Objective(config.objective_config(), image_channels=model.image_conditioning)
    generator = torch.Generator().manual_seed(config.seed * 1_000_003 + world.rank)
    return Trainable(model, wrapped, optimizer, scheduler, objective, generator)


def build_run(config: TrainConfig, world: World) -> Run:
    torch.manual_seed(config.seed)
    base = load_base(config.base_model, seed=config.seed)
    low_precision = world.device.type == "cuda" and config.precision != "fp32"
    base.freeze(DTYPES[config.precision] if low_precision else None)  # a CPU run keeps the base in fp32
    base.unet.to(world.device)
    base.vae.to(world.device)
    base.text_encoder.to(world.device)
    parts = build_trainable(config, world, base)
    index = build_index(config.data.videos, config.data.captions or None, config.frames, config.data.stride)
    if not index.entries:
        raise AtomoError(f"No usable training video in '{config.data.videos}': {index.summary()}")
    dataset = VideoClipDataset(index, config.frames, config.resolution, config.data.stride, config.seed,
                               fixed_clips=config.data.cache_latents)
    sampler = ResumableSampler(len(index.entries), config.seed, world.rank, world.world_size,
                               drop_last=len(index.entries) >= world.world_size)
    loader = make_loader(dataset, sampler, config.batch_size, config.data.workers, config.seed,
                         timeout=config.data.worker_timeout)
    cache = None
    if config.data.cache_latents:  # one fixed clip per video, its latents encoded once (per base and size)
        cache = LatentCache(os.path.join(config.output_dir, "latent_cache"),
                            namespace=f"{base.name}|{config.resolution}|{config.precision}|{world.device.type}")
    return Run(config, world, base, parts.model, parts.wrapped, parts.optimizer, parts.scheduler, sampler, loader,
               parts.objective, parts.generator, dataset, len(index.entries), list(index.skipped), cache)
