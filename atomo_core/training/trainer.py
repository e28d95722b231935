"""The training loop: steps, gradient accumulation, saving, exporting, validating and resuming.

``train(config)`` runs (or resumes) a run in ``config.output_dir``:

- ``checkpoints/step_XXXXXXXX.pt``: the full state every ``save_every`` steps (trainable weights, optimiser,
  LR scheduler, step, data position, every rank's RNGs), written atomically; the newest complete one is where a
  restarted run continues, exactly as if it had not stopped;
- ``motion_module_stepXXXXXXXX.safetensors`` at each save and ``motion_module.safetensors`` (the latest): AtomoVideo
  files for Load Motion Module, with the training config and step in their header;
- ``log.jsonl``: one record per logged step (step, loss, learning rate, gradient norm, seconds per step) and one per
  validation; ``validation/``: the validation clips.

On CPUs the frozen base stays in fp32 whatever ``precision`` says (autocast is a GPU feature here).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time

import torch

from ..atomovideo_format import save_atomovideo
from .checkpoint import gather_rng, latest_checkpoint, load_checkpoint, restore_rng, save_checkpoint
from .config import TrainConfig, config_hash, diff_configs
from .distributed import World, barrier, check_identical, setup, teardown
from .setup import Run, build_run

log = logging.getLogger("atomovideo.train")


def _autocast(run: Run):
    if run.autocast_device is not None:  # the memory estimate: the GPU's autocast, emulated on fake CPU tensors
        return torch.autocast(run.autocast_device, dtype=run.dtype)
    on_gpu = run.world.device.type == "cuda" and run.config.precision != "fp32"
    return torch.autocast("cuda", dtype=run.dtype, enabled=on_gpu)


def micro_step(run: Run, batch: dict) -> torch.Tensor:
    """Loss of one micro-batch ``{"pixels" [B, F, 3, H, W], "caption"}`` (not yet backpropagated)."""
    pixels = batch["pixels"]
    b, f = pixels.shape[:2]
    latents = encode_clips(run, batch)
    example = run.objective.make_batch(latents.cpu(), run.generator)
    captions = [c if keep else "" for c, keep in zip(batch["caption"], example.text_keep, strict=True)]
    context = run.base.encode_text(captions).repeat_interleave(f, dim=0)
    with _autocast(run):
        dtype = next(run.base.unet.parameters()).dtype  # the frozen UNet's storage dtype
        extra = {}
        if run.model.ip is not None:  # image tokens only where caption and image are both kept (the nodes' rule)
            extra = {"first_frames": pixels[:, 0].to(run.world.device),
                     "with_image": torch.tensor([t and i for t, i in zip(example.text_keep, example.image_keep,
                                                                          strict=True)])}
        prediction = run.wrapped(example.model_input.to(run.world.device, dtype),
                                 example.timesteps.to(run.world.device), context.to(dtype), f, **extra)
    return run.objective.loss(prediction, example)


def encode_clips(run: Run, batch: dict) -> torch.Tensor:
    """``[B, F, 4, h, w]`` scaled latents of the batch's clips, from the latent cache where it has them."""
    pixels = batch["pixels"]
    if run.latent_cache is None:
        latents = run.base.encode_video(pixels.flatten(0, 1).to(run.world.device)).float()
        return latents.reshape(*pixels.shape[:2], *latents.shape[1:])
    out = []
    for i in range(pixels.shape[0]):
        key = run.latent_cache.key(batch["path"][i], int(batch["start"][i]), int(batch["stride"][i]),
                                   pixels.shape[1], tuple(pixels.shape[-2:]))
        latents = run.latent_cache.load(key)
        if latents is None:
            latents = run.base.encode_video(pixels[i].to(run.world.device)).float().cpu()
            run.latent_cache.save(key, latents)
        out.append(latents.to(run.world.device).float())
    return torch.stack(out)


def next_batch(batches, timeout: float):
    """``next(batches)``, with DataLoader's bare timeout error (``data.worker_timeout``) turned into one that says
    what happened and what to do."""
    try:
        return next(batches)
    except RuntimeError as err:
        if "DataLoader timed out" not in str(err):
            raise
        raise RuntimeError(
            f"No training batch arrived from the data-loader workers in {timeout:g} s (data.worker_timeout): a worker "
            "is stuck or far too slow (a video the decoder hangs on, a slow or unmounted network drive, a machine out "
            "of memory). The run stopped instead of waiting; every checkpoint it saved is kept and the same command "
            "resumes from the newest (or starts over if none was saved yet). If batches are just slow, raise "
            "data.worker_timeout (0 waits forever). To find a file that hangs, run with data.workers=0 (loading in the "
            "training process, where no timeout applies) and interrupt it: the traceback shows the read.") from err


def optimizer_step(run: Run, batches):
    """One optimiser step over ``grad_accumulation`` micro-batches: ``(losses, grad_norm, last_batch, failed,
    samples)`` with the per-micro-batch losses and the norm still tensors (``train_step`` reads them; the memory
    estimate cannot), and the dataset indices of every clip the step used."""
    accumulation = run.config.grad_accumulation
    losses, failed, samples = [], [], []
    for i in range(accumulation):
        batch = next_batch(batches, run.config.data.worker_timeout)
        inner = i < accumulation - 1 and run.world.distributed  # DDP syncs gradients on the last micro-batch only
        with run.wrapped.no_sync() if inner else contextlib.nullcontext():
            loss = micro_step(run, batch) / accumulation
            loss.backward()
        losses.append(loss.detach())
        failed += batch.get("failed", [])
        samples += [int(i) for i in batch.get("index", [])]
    max_norm = run.config.max_grad_norm if run.config.max_grad_norm > 0 else float("inf")  # inf: measure only
    norm = torch.nn.utils.clip_grad_norm_(run.model.trainable_parameters(), max_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    return losses, norm, batch, failed, samples


def train_step(run: Run, batches) -> dict:
    """One optimiser step over ``grad_accumulation`` micro-batches; returns its figures."""
    losses, norm, batch, failed, samples = optimizer_step(run, batches)
    total = 0.0
    for loss in losses:
        total += float(loss)
    return {"loss": total, "grad_norm": float(norm), "lr": run.scheduler.get_last_lr()[0],
            "data": run.sampler.state_after(batch), "failed": failed, "samples": samples}


def _state(run: Run, step: int, data_state: dict) -> dict:
    return {
        "model": {k: v.detach().cpu() for k, v in run.model.trainable_state_dict().items()},
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "data": data_state,
        "rng": gather_rng({"objective": run.generator}),
        "config": run.config.to_dict(),
        "config_hash": config_hash(run.config),
        "world_size": run.world.world_size,
        "step_saved": step,
    }


def save(run: Run, step: int, data_state: dict) -> dict:
    """Check the ranks agree, write the checkpoint and export the module (rank 0); every rank calls it."""
    checksums = check_identical(run.world, run.model.trainable_parameters())
    state = _state(run, step, data_state)
    out = run.config.output_dir
    if run.world.main:
        save_checkpoint(os.path.join(out, "checkpoints"), step, state, run.config.keep_checkpoints, rank=0)
        export(run, step)
    barrier(run.world)
    return {"ranks": run.world.world_size, "ranks_identical": True, "checksum": checksums[0]}


def export(run: Run, step: int) -> str:
    module = run.model.export_module()
    metadata = {"training_step": str(step), "training_config": json.dumps(run.config.to_dict(), sort_keys=True),
                "base_model": run.base.name}
    path = os.path.join(run.config.output_dir, f"motion_module_step{step:08d}.safetensors")
    for target in (path, os.path.join(run.config.output_dir, "motion_module.safetensors")):
        tmp = target + ".tmp"
        save_atomovideo(module, tmp, extra_metadata=metadata)
        os.replace(tmp, target)
    return path


def resume(run: Run) -> tuple[int, dict | None]:
    """Load the newest complete checkpoint if there is one; returns the step to continue from (0: a new run) and,
    when the number of processes changed, what changed (for the log).

    The weights, optimiser and learning-rate schedule continue exactly on any number of processes. The data continue
    from the same global position of the same order (``ResumableSampler``). Each rank's random generator is restored
    as saved when the world is the same (bit-for-bit the uninterrupted run); on another world there is no saved
    generator for some ranks, so every rank's is re-derived from the seed, the step and its new rank."""
    path = latest_checkpoint(os.path.join(run.config.output_dir, "checkpoints"))
    if path is None:
        return 0, None
    state = load_checkpoint(path)
    if state["config_hash"] != config_hash(run.config):
        log.warning("resuming '%s' with a changed config: %s", path, "; ".join(diff_configs(state["config"],
                                                                                             run.config)))
    if state["config"].get("seed") != run.config.seed:
        raise RuntimeError(f"'{path}' was saved by a run with seed {state['config'].get('seed')}; this config has "
                           f"seed {run.config.seed}. The data order and noise cannot continue under another seed: "
                           "resume with the run's seed, or start a new run in another output_dir.")
    step = int(state["step"])
    run.model.load_trainable_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.sampler.load_state_dict(state["data"])
    saved_world = int(state["world_size"])
    changed = None
    if saved_world == run.world.world_size:
        restore_rng(state["rng"][run.world.rank], {"objective": run.generator})
    else:
        run.generator.manual_seed(rederived_seed(run.config.seed, step, run.world.rank))
        torch.manual_seed(rederived_seed(run.config.seed, step, run.world.rank) + 1)
        changed = {"saved_world_size": saved_world, "world_size": run.world.world_size,
                   "global_position": state["data"].get("global_position"), "epoch": state["data"]["epoch"],
                   "rng": "re-derived from (seed, step, rank)"}
        log.warning("resuming '%s' (step %d) saved on %d processes on %d: weights, optimiser and schedule exactly; "
                    "the data continue at sample %s of epoch %s of the same order; each rank's randomness is "
                    "re-derived from the seed, the step and its rank", path, step, saved_world,
                    run.world.world_size, changed["global_position"], changed["epoch"])
    log.info("resumed from %s (step %d)", path, step)
    return step, changed


def rederived_seed(seed: int, step: int, rank: int) -> int:
    """A rank's generator seed after a resume on another number of processes (a stable function of the three)."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729 + 1) % 2**63


def _log(run: Run, record: dict) -> None:
    if run.world.main:
        with open(os.path.join(run.config.output_dir, "log.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")


def train(config: TrainConfig, world: World | None = None, stop_after: int | None = None) -> dict:
    """Run or resume ``config``'s run to ``config.steps`` (or stop after ``stop_after`` more steps, for tests)."""
    own_world = world is None
    world = world or setup(config.distributed.backend, config.distributed.timeout_minutes)
    try:
        os.makedirs(config.output_dir, exist_ok=True)
        run = build_run(config, world)
        step, changed = resume(run)
        if world.main:
            _log(run, {"event": "start", "step": step, "world_size": world.world_size,
                       "videos": run.videos, "skipped": [[str(p), r] for p, r in run.skipped],
                       **({"resized": changed} if changed else {})})
        probe = None
        if config.validate_every and world.main:
            from .probe import summary_line
            from .validation import probe_batch, run_probe

            probe = probe_batch(run)
            if probe is not None and step == 0:  # where the probe starts, to compare every validation with
                figures = run_probe(run, probe)
                _log(run, {"event": "probe", "step": 0, "probe": figures})
                log.info("learning probe before training: %s", summary_line(figures))
        batches = iter(run.loader)
        progress = _progress(world, step, config.steps)
        last = {"step": step}
        end = config.steps if stop_after is None else min(config.steps, step + stop_after)
        while step < end:
            start = time.perf_counter()
            figures = train_step(run, batches)
            step += 1
            seconds = time.perf_counter() - start
            progress.update(1)
            progress.set_postfix(loss=f"{figures['loss']:.4f}")
            last = {"step": step, "loss": figures["loss"], "lr": figures["lr"], "grad_norm": figures["grad_norm"],
                    "sec_per_step": seconds, "epoch": figures["data"]["epoch"],
                    "global_position": figures["data"]["global_position"], "samples": figures["samples"]}
            if figures["failed"]:
                last["read_failures"] = figures["failed"]
            if step % config.log_every == 0 or step == end or figures["failed"]:
                _log(run, last)
            if step % config.save_every == 0 or step == config.steps:
                last["save"] = save(run, step, figures["data"])
                _log(run, {"event": "save", "step": step, **last["save"]})
            if config.validate_every and (step % config.validate_every == 0 or step == config.steps):
                from .validation import validate

                if world.main:
                    record = validate(run, step, probe)
                    _log(run, {"event": "validation", "step": step, **record})
                    if record.get("probe"):
                        from .probe import summary_line

                        log.info("learning probe at step %d: %s", step, summary_line(record["probe"]))
                barrier(world)
        progress.close()
        return last
    finally:
        if own_world:
            teardown()


def _progress(world: World, step: int, total: int):
    from tqdm import tqdm

    return tqdm(total=total, initial=step, disable=not world.main, unit="step", desc="training", dynamic_ncols=True)
