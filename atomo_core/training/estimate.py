"""How much GPU memory and arithmetic one training step of a config needs, known before any data or weights load.

``estimate(config)`` builds the run's real model (the base's UNet, VAE and text encoder of the config's family, the
AtomoVideo module in the temporal UNet, AdamW, the objective) with no weights (``meta``, then fake tensors), and runs
the trainer's own ``optimizer_step`` on a fake batch of the config's frames, resolution and batch size, under PyTorch's
``FakeTensorMode``: every operation computes shapes and dtypes only. Two dispatch modes watch it:

- ``StorageTracker`` counts the bytes of every tensor storage that is alive at each moment (weights, gradients,
  optimiser state, activations, temporaries, the VAE encode of the clip), rounded as the CUDA caching allocator
  rounds (512 bytes), and keeps the peak and what made it up;
- ``torch.utils.flop_counter.FlopCounterMode`` counts the floating-point operations of the step's convolutions,
  matrix products and attention, forward and backward.

On a GPU the trainer keeps the frozen base in the compute precision and autocasts; the estimate does the same with
the CPU's autocast (the same op families: convolutions, matrix products and attention in bf16/fp16, norms in fp32) and
the CPU's memory-efficient attention kernel, which saves what CUDA's flash attention saves (output and log-sum-exp).
What it cannot see: the CUDA context (about 0.5 GB), cuDNN/cuBLAS workspaces and the allocator's fragmentation, hence
``CARD_HEADROOM`` in the fit advice. The README's table and ``tests/training/test_estimate.py`` compare it with
measured peaks.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from .config import TrainConfig

CUDA_BLOCK = 512  # the CUDA caching allocator's smallest block: every allocation is rounded up to it
CARD_HEADROOM = 1.1  # x the estimate, plus the CUDA context, is what a card must hold (fragmentation, workspaces)
CUDA_CONTEXT_GB = 0.5
CARDS_GB = (8, 12, 16, 24, 40, 48, 80)


class StorageTracker(TorchDispatchMode):
    """Live bytes of tensor storages, and their peak, over the operations run inside it.

    Storages that exist before (the weights) are registered with ``track``; every storage an operation returns is
    added when first seen and removed when Python frees it (a weak reference's callback). ``snapshot()`` at the
    peak holds the storages alive then, to attribute them afterwards."""

    def __init__(self, block: int = 1):
        super().__init__()
        self.block = block
        self.live: dict[int, int] = {}  # id(storage) -> bytes
        self._refs: dict[int, weakref.ref] = {}
        self.current = 0
        self.peak = 0
        self.at_peak: set[int] = set()
        self.params: list[torch.Tensor] = []  # whose gradients to measure at the peak (``grads_at_peak``)
        self.grads_at_peak = 0

    def _size(self, storage) -> int:
        return math.ceil(storage.nbytes() / self.block) * self.block if self.block > 1 else storage.nbytes()

    def track(self, tensor: torch.Tensor) -> None:
        if not isinstance(tensor, torch.Tensor) or tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self.live:
            return
        size = self._size(storage)
        self.live[key] = size
        self.current += size

        def freed(_ref, key=key):
            self.current -= self.live.pop(key, 0)
            self._refs.pop(key, None)

        self._refs[key] = weakref.ref(storage, freed)
        if self.current > self.peak:
            self.peak = self.current
            self.at_peak = set(self.live)
            self.grads_at_peak = sum(self.live.get(id(p.grad.untyped_storage()), 0) for p in self.params
                                     if p.grad is not None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for value in tree_flatten(out)[0]:
            self.track(value)
        return out

    def bytes_of(self, tensors, at_peak: bool = False) -> int:
        """Bytes of the distinct storages of ``tensors`` (alive at the peak only, with ``at_peak``)."""
        seen, total = set(), 0
        for t in tensors:
            if not isinstance(t, torch.Tensor):
                continue
            key = id(t.untyped_storage())
            if key in seen or key not in self.live or (at_peak and key not in self.at_peak):
                continue
            seen.add(key)
            total += self.live[key]
        return total


@dataclass
class Estimate:
    peak_bytes: int
    frozen_weights_bytes: int
    trainable_weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int  # everything else alive at the peak: saved activations, temporaries, the VAE encode
    flops: int  # one training step, forward and backward
    trainable_params: int
    frozen_params: int
    config: dict

    @property
    def peak_gb(self) -> float:
        return self.peak_bytes / 1e9

    def smallest_card_gb(self) -> int | None:
        """The smallest common card (``CARDS_GB``) that holds ``peak x CARD_HEADROOM + CUDA_CONTEXT_GB``."""
        need = self.peak_gb * CARD_HEADROOM + CUDA_CONTEXT_GB
        return next((c for c in CARDS_GB if need <= c), None)

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["peak_gb"] = self.peak_gb
        out["smallest_card_gb"] = self.smallest_card_gb()
        return out


def _architecture(spec: str):
    """Configs ``(unet, vae, text, widths, tokenizer)`` of the base family ``spec`` names (no weights are read: a
    checkpoint file or folder is SD-1.5, the only layout the trainer accepts; ``tiny`` its test base)."""
    from . import base

    if spec == "tiny":
        tokenize = base._hash_tokenizer(base.TINY_TEXT["vocab_size"], base.TINY_TEXT["bos_token_id"],
                                        base.TINY_TEXT["eos_token_id"])
        return base.TINY_UNET, base.TINY_VAE, base.TINY_TEXT, base.TINY_WIDTHS, tokenize
    return base.SD15_UNET, base.SD15_VAE, base.SD15_TEXT, base.SD15_WIDTHS, base._clip_tokenizer(base.TOKENIZER_DIR)


def estimate(config: TrainConfig, device: str = "cuda") -> Estimate:
    """Peak memory and FLOPs of one ``train_step`` of ``config`` (one process) on ``device`` (``cuda``: the base in
    the config's precision, autocast, CUDA's allocation rounding; ``cpu``: what the trainer does on a CPU, fp32)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import CLIPTextConfig, CLIPTextModel

    from . import trainer
    from .base import BaseModel
    from .distributed import World
    from .objective import Objective
    from .setup import DTYPES, Run, lr_lambda, motion_module_for
    from .unet import TemporalUNet

    unet_config, vae_config, text_config, widths, tokenize = _architecture(config.base_model)
    low = device == "cuda" and config.precision != "fp32"
    dtype = DTYPES[config.precision] if low else torch.float32
    with torch.device("meta"):
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**vae_config)
        text = CLIPTextModel(CLIPTextConfig(**text_config))
        base = BaseModel(unet, vae, text, tokenize, widths, config.base_model).freeze(dtype)
        model = TemporalUNet(unet, motion_module_for(_without_init_files(config), widths,
                                                     unet_config.get("cross_attention_dim", 768)))
    tracker = StorageTracker(CUDA_BLOCK if device == "cuda" else 1)
    with FakeTensorMode(allow_non_fake_inputs=True):
        for part in (model, vae, text):
            part.to_empty(device="cpu")
        if config.gradient_checkpointing:
            model.enable_checkpointing()
        unet.train()
        params = model.trainable_parameters()
        optimizer = torch.optim.AdamW(params, lr=config.learning_rate, betas=tuple(config.adam_betas),
                                      eps=config.adam_epsilon, weight_decay=config.weight_decay, foreach=True)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(config))
        objective = Objective(config.objective_config(), image_channels=model.image_conditioning)
        objective.draw = _WorstCase(objective).draw  # the draws need real numbers; their tensors are the same
        world = World(0, 1, 0, torch.device("cpu"))
        run = Run(config, world, base, model, model, optimizer, scheduler, _NoSampler(), None, objective,
                  torch.Generator().manual_seed(0), None, 0, [], autocast_device="cpu" if low else None)
        weights = [*model.parameters(), *model.buffers(), *vae.parameters(), *vae.buffers(), *text.parameters(),
                   *text.buffers()]
        for t in weights:
            tracker.track(t)
        tracker.params = params
        size = config.resolution
        batches = iter([{"pixels": torch.empty(config.batch_size, config.frames, 3, size, size),
                         "caption": ["a caption of a training clip"] * config.batch_size}]
                       * config.grad_accumulation * 3)
        with tracker:
            trainer.optimizer_step(run, batches)  # the first step creates the optimiser state ...
            trainer.optimizer_step(run, batches)  # ... which every later step holds throughout: its peak is the peak
        trainable = {id(p) for p in params}
        trainable_bytes = tracker.bytes_of(params)
        frozen_bytes = tracker.bytes_of([t for t in weights if id(t) not in trainable])
        states = [v for s in optimizer.state.values() for v in s.values()]
        optimizer_bytes = tracker.bytes_of(states, at_peak=True)
        grads = tracker.grads_at_peak
        flop_counter = FlopCounterMode(display=False)  # a third step of its own: its hooks keep tensors alive
        with flop_counter:
            trainer.optimizer_step(run, batches)
    activations = tracker.peak - trainable_bytes - frozen_bytes - grads - optimizer_bytes
    return Estimate(
        peak_bytes=tracker.peak, frozen_weights_bytes=frozen_bytes, trainable_weights_bytes=trainable_bytes,
        gradients_bytes=grads, optimizer_bytes=optimizer_bytes, activations_bytes=activations,
        flops=int(flop_counter.get_total_flops()), trainable_params=sum(p.numel() for p in params),
        frozen_params=sum(p.numel() for p in [*unet.parameters(), *vae.parameters(), *text.parameters()]
                          if not p.requires_grad),
        config={"base_model": config.base_model or "SD-1.5", "frames": config.frames, "resolution": config.resolution,
                "batch_size": config.batch_size, "precision": config.precision if low else "fp32",
                "gradient_checkpointing": config.gradient_checkpointing, "device": device},
    )


class _WorstCase:
    """The objective's draws for the estimate: no dropout (every example keeps its image and caption) and one given
    frame (the most frames in the loss); the tensors are the real path's (``Objective.build``)."""

    def __init__(self, objective):
        self.objective = objective

    def draw(self, shape, videos, frames, generator):
        from .objective import Draws

        return Draws(torch.zeros(videos, dtype=torch.long), torch.empty(shape), [True] * videos, [True] * videos,
                     [1] * videos)


class _NoSampler:
    def state_after(self, _batch) -> dict:
        return {}


def _without_init_files(config: TrainConfig) -> TrainConfig:
    """The config with ``init`` files left out (the module's shape does not depend on them; nothing is read)."""
    from dataclasses import replace

    return replace(config, init=replace(config.init, motion_module="", pia=""))


def report(result: Estimate) -> str:
    """The estimate as the lines ``tools/train.py --estimate`` prints."""
    c = result.config
    gb = 1e9
    card = result.smallest_card_gb()
    lines = [
        f"one training step: {c['batch_size']} x {c['frames']} frames at {c['resolution']}x{c['resolution']}, "
        f"{c['precision']}, gradient checkpointing {'on' if c['gradient_checkpointing'] else 'off'}, "
        f"base '{c['base_model']}' ({c['device']})",
        f"  peak memory          {result.peak_bytes / gb:8.2f} GB",
        f"    frozen weights     {result.frozen_weights_bytes / gb:8.2f} GB ({result.frozen_params / 1e6:.0f} M "
        "parameters: UNet, VAE, text encoder)",
        f"    trainable weights  {result.trainable_weights_bytes / gb:8.2f} GB ({result.trainable_params / 1e6:.0f} M "
        "parameters, fp32)",
        f"    gradients          {result.gradients_bytes / gb:8.2f} GB",
        f"    optimiser state    {result.optimizer_bytes / gb:8.2f} GB (AdamW: 2 per trainable weight)",
        f"    activations etc.   {result.activations_bytes / gb:8.2f} GB (saved for backward, temporaries, VAE)",
        f"  compute              {result.flops / 1e12:8.1f} TFLOP per step (forward and backward)",
    ]
    if c["device"] == "cuda":
        lines.append(f"  fits a {card} GB card" if card else
                     f"  needs more than {CARDS_GB[-1]} GB: turn gradient_checkpointing on, or fewer frames or a "
                     "smaller resolution")
        lines.append(f"  (card = peak x {CARD_HEADROOM} + {CUDA_CONTEXT_GB} GB for the CUDA context and "
                     "fragmentation; measured peaks are in the README)")
    return "\n".join(lines)
