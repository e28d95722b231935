"""Stage 2: the trainer trains the temporal layers and the image channels of ``conv_in`` on the frozen toy base.

The trainer's own pieces do the work: ``setup.build_trainable`` (the AtomoVideo module at the base's sites,
``TemporalUNet``, AdamW, the warm-up/cosine schedule, the ``Objective`` with random given frames and condition
dropout) and ``trainer.train_step`` (micro-step, loss, clipping, optimiser). Only the data differ from a real run:
clips are rendered by the toy world in memory instead of decoded from video files.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from atomo_core.temporal_conv import TemporalConvLayer
from atomo_core.training.base import BaseModel
from atomo_core.training.config import ConditioningConfig, DataConfig, InitConfig, TrainConfig
from atomo_core.training.distributed import World
from atomo_core.training.objective import training_alphas_cumprod
from atomo_core.training.setup import Run, build_trainable, motion_module_for
from atomo_core.training.trainer import micro_step, train_step
from atomo_core.training.unet import TemporalUNet

from . import world

CPU = World(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


@dataclass(frozen=True)
class Recipe:
    """The stage-2 choices the study compares (the trainer's config keys of the same names)."""

    prediction_type: str = "v_prediction"  # v on zero-terminal-SNR scaled_linear | epsilon on plain scaled_linear
    image_layout: str = "given_only"
    image_channels: str = "zero"
    temporal_out: str = "zero"
    timestep_sampling: str = "uniform"
    learning_rate: float = 1e-3
    lr_schedule: str = "cosine"
    loss_on_given: bool = False
    temporal_text: str = "none"  # the paper's layers; "film": the temporal convolutions also read the caption

    def key(self) -> dict:
        """What the stage caches are named by: the fields, less ``temporal_text`` when it is the paper's ``none`` (runs
        cached before the field existed were all ``none``)."""
        return {k: v for k, v in asdict(self).items() if not (k == "temporal_text" and v == "none")}

    def label(self, reference: Recipe | None = None) -> str:
        """``"image_layout=every_frame, learning_rate=0.003"``: what differs from ``reference`` (all if None)."""
        fields = {k: v for k, v in asdict(self).items() if reference is None or getattr(reference, k) != v}
        return ", ".join(f"{k}={v}" for k, v in fields.items()) or "reference"


def stage2_config(recipe: Recipe, steps: int, frames: int, batch: int, seed: int, output_dir: str) -> TrainConfig:
    """The trainer's config for a toy stage-2 run of ``recipe``: v-prediction on zero-terminal-SNR ``scaled_linear``
    (AtomoVideo's) or epsilon on plain ``scaled_linear`` (the base's own, AnimateDiff's way)."""
    v = recipe.prediction_type == "v_prediction"
    return TrainConfig(
        base_model="toy", output_dir=output_dir, steps=steps, batch_size=batch, frames=frames, max_frames=32,
        resolution=world.SIZE, learning_rate=recipe.learning_rate, warmup_steps=max(1, steps // 20),
        lr_schedule=recipe.lr_schedule, max_grad_norm=1.0, seed=seed, precision="fp32", gradient_checkpointing=False,
        prediction_type=recipe.prediction_type, beta_schedule="scaled_linear", zero_terminal_snr=v,
        timestep_sampling=recipe.timestep_sampling, temporal_text=recipe.temporal_text,
        data=DataConfig(videos="(the toy world, rendered in memory)", workers=0),
        init=InitConfig(image_channels=recipe.image_channels, temporal_out=recipe.temporal_out),
        conditioning=ConditioningConfig(max_given=min(3, frames - 1), drop_text=0.1, drop_image=0.1, drop_both=0.05,
                                        loss_on_given=recipe.loss_on_given, image_layout=recipe.image_layout),
    ).validate()


class _WorldSampler:
    """What ``train_step`` asks of the data sampler (its resumable state): the toy world has none to keep."""

    def state_after(self, _batch) -> dict:
        return {}


def _batches(config: TrainConfig):
    gen = torch.Generator().manual_seed(config.seed + 7919)
    while True:
        batch = world.training_batch(gen, config.batch_size, config.frames)
        batch.pop("cases")
        yield batch


HELD_OUT_CLIPS = 8


def held_out_batch(config: TrainConfig) -> dict:
    """A fixed batch of held-out clips (shapes and backgrounds never trained on) for the held-out loss."""
    gen = torch.Generator().manual_seed(config.seed + 104729)
    cases = [world.random_case(gen, config.frames, held_out=True) for _ in range(HELD_OUT_CLIPS)]
    pixels = torch.stack([world.render(c, config.frames) for c in cases]) * 2 - 1
    return {"pixels": pixels, "caption": [c.video_caption() for c in cases]}


@torch.no_grad()
def held_out_loss(run: Run, batch: dict) -> float:
    """The trainer's loss (``micro_step``) on ``batch`` with the same timesteps, noise, given frames and dropout
    every time (a fixed generator), so that values at different steps compare."""
    fixed = replace(run, generator=torch.Generator().manual_seed(run.config.seed + 15485863))
    return float(micro_step(fixed, batch))


def fixed_batches(config: TrainConfig, clips: int):
    """The same ``clips`` training clips at every step (the ladder's first rung: can it memorise one batch?)."""
    gen = torch.Generator().manual_seed(config.seed + 7919)
    batch = world.training_batch(gen, clips, config.frames)
    cases = batch.pop("cases")

    def forever():
        while True:
            yield dict(batch)

    return forever(), cases


def train_temporal(base: BaseModel, config: TrainConfig, log=None, batches=None, probe=None,
                   probes: int = 20) -> tuple[dict, dict]:
    """Train; returns the trained weights (``TemporalUNet.trainable_state_dict``) and the losses: ``train`` per step
    and ``held_out`` as ``[step, loss]`` pairs (at the start and ``probes`` times over the run, every 10 steps in a
    short one). ``batches``: an iterator of trainer batches (default: fresh clips of the training world);
    ``probe(model, step) -> dict``: called at the same steps, its figures kept as ``losses["probe"]``. The base is
    left as it was (the temporal layers are taken off again)."""
    torch.manual_seed(config.seed)
    parts = build_trainable(config, CPU, base)
    run = Run(config, CPU, base, parts.model, parts.wrapped, parts.optimizer, parts.scheduler, _WorldSampler(),
              None, parts.objective, parts.generator, None, 0, [])
    held_out = held_out_batch(config)
    every = config.steps // max(1, min(probes, config.steps // 10))  # 20 probes (3 in a 30-step run)
    losses = {"train": [], "held_out": [[0, held_out_loss(run, held_out)]], "probe": []}

    def probed(step: int) -> None:
        if probe is not None:
            parts.model.eval()
            losses["probe"].append([step, probe(parts.model, step)])
            parts.model.train()
            base.unet.train()

    probed(0)
    start = time.perf_counter()
    batches = batches or _batches(config)
    try:
        for step in range(1, config.steps + 1):
            losses["train"].append(train_step(run, batches)["loss"])
            if step % every == 0 or step == config.steps:
                losses["held_out"].append([step, held_out_loss(run, held_out)])
                probed(step)
            if log is not None and step % max(1, config.steps // 10) == 0:
                recent = losses["train"][-20:]
                log(f"stage 2 ({config.prediction_type}) step {step}/{config.steps}: loss "
                    f"{sum(recent) / len(recent):.4f}, held-out {losses['held_out'][-1][1]:.4f} "
                    f"({time.perf_counter() - start:.0f} s)")
        state = {k: v.detach().clone() for k, v in parts.model.trainable_state_dict().items()}
    finally:
        parts.model.remove()
        base.unet.eval()
    return state, losses


@contextlib.contextmanager
def attached(base: BaseModel, config: TrainConfig, state: dict | None):
    """The temporal UNet over ``base`` with ``state`` loaded (``None``: freshly initialised, the identity), in eval
    mode; taken off the base again on exit. Yields ``(model, alphas_cumprod, prediction_type)``."""
    torch.manual_seed(config.seed)
    model = TemporalUNet(base.unet, motion_module_for(config, base.widths, base.unet.config.cross_attention_dim))
    if state is not None:
        model.load_trainable_state_dict(state)
    model.eval()
    try:
        yield model, training_alphas_cumprod(config.beta_schedule, config.zero_terminal_snr).float(), \
            config.prediction_type
    finally:
        model.remove()


class SpatioTemporalConvLayer(TemporalConvLayer):
    """A diagnostic, not AtomoVideo's layer: the temporal convolution with a 3x3 spatial reach besides its 3 frames
    (``Conv3d``, zero-initialised, so a fresh layer is the identity as AtomoVideo's is). AtomoVideo's temporal layers
    act on each pixel alone, so moving a shape is left to the frozen image layers between them; with this reach
    a layer can shift features by a pixel per frame itself."""

    def __init__(self, channels: int, kernel_size: int = 3, norm_groups: int = 32, operations=None,
                 text_dim: int | None = None):
        super().__init__(channels, kernel_size, norm_groups, operations, text_dim)
        self.conv = nn.Conv3d(channels, channels, (kernel_size, 3, 3), padding=(kernel_size // 2, 1, 1))
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor, num_frames: int, attention=None) -> torch.Tensor:
        h = rearrange(F.silu(self.norm(x)), "(b f) c h w -> b c f h w", f=num_frames)
        return rearrange(self.conv(h), "b c f h w -> (b f) c h w") + x


@contextlib.contextmanager
def spatial_reach(on: bool = True):
    """While open, new AtomoVideo modules get ``SpatioTemporalConvLayer`` for their temporal convolutions (train and
    evaluate a run inside it)."""
    import atomo_core.motion_module as motion_module

    saved = motion_module.TemporalConvLayer
    if on:
        motion_module.TemporalConvLayer = SpatioTemporalConvLayer
    try:
        yield
    finally:
        motion_module.TemporalConvLayer = saved
