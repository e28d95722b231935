"""The trainer's data pipeline: video index, clip dataset, resumable sharded sampler, DataLoader, latent cache.

The train loop::

    index = build_index(cfg.data.videos, cfg.data.captions or None, frames, stride)
    dataset = VideoClipDataset(index, frames, resolution, stride, seed)
    sampler = ResumableSampler(len(dataset), seed, rank, world_size)
    sampler.load_state_dict(checkpoint["data"])          # on resume
    for batch in make_loader(dataset, sampler, batch_size, workers, seed):   # endless: epochs roll over
        ...                                                # batch["pixels"] [B, F, 3, H, W], batch["caption"]
        data_state = sampler.state_after(batch)            # what a checkpoint saved now must hold

The order is a pure function of ``(seed, epoch, rank, world_size)`` and the clips of ``(seed, epoch, index)``, so a
run resumed from ``state_after(batch)`` sees exactly the batches an uninterrupted run would have seen. Do not save
``sampler.state_dict()`` while a DataLoader is iterating it: the loader draws indices ahead of the batches it has
delivered (prefetch), ``state_after`` counts only what the loop received.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pathlib
import random
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
import torch

from .data_index import VIDEO_EXTENSIONS, DatasetError, VideoEntry, VideoIndex, build_index, probe_video
from .data_video import VideoClipDataset, choose_clip, draw, read_clip

__all__ = ["VIDEO_EXTENSIONS", "DatasetError", "LatentCache", "ResumableSampler", "SampleKey", "VideoClipDataset",
           "VideoEntry", "VideoIndex", "build_index", "choose_clip", "collate_clips", "make_loader", "probe_video",
           "read_clip"]

logger = logging.getLogger(__name__)

_GOLDEN, _M1, _M2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


class SampleKey(NamedTuple):
    """What ``ResumableSampler.infinite()`` yields: the dataset index and where it sits in the data order."""

    index: int
    epoch: int
    position: int


def permutation(length: int, seed: int, epoch: int) -> np.ndarray:
    """A permutation of ``0..length-1`` that depends only on ``(seed, epoch)``: indices sorted by SplitMix64 keys."""
    counter = np.arange(1, length + 1, dtype=np.uint64) * _GOLDEN + np.uint64(draw(seed, "order", epoch))
    z = (counter ^ (counter >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return np.argsort(z ^ (z >> np.uint64(31)), kind="stable")


class ResumableSampler:
    """A DistributedSampler that can stop anywhere and continue exactly, on the same or another number of processes.

    Each epoch has one global order (the seeded permutation of ``0..length-1``, or ``0..length-1`` without
    ``shuffle``), consumed in steps of ``world_size`` samples: rank ``r`` takes every ``world_size``-th index from
    ``r`` (cut to a multiple of ``world_size`` with ``drop_last``, else padded with the order's own first indices).
    ``position`` counts the samples of the current epoch this rank has yielded, and the epoch advances by itself.

    The saved state also holds the **global position** (samples of the epoch consumed by all ranks together). A run
    resumed on another number of processes continues that epoch from the global position, the remaining order dealt
    out round-robin to the new ranks (no sample of the epoch repeated or skipped, except ``drop_last``'s remainder at
    its end); later epochs are whole again.
    """

    def __init__(self, length: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 drop_last: bool = True):
        if not 0 <= rank < world_size:
            raise DatasetError(f"rank must be in 0..world_size-1, got rank {rank} of {world_size}")
        if length < (world_size if drop_last else 1):
            raise DatasetError(f"{length} videos cannot be shared by {world_size} processes (drop_last needs at "
                               f"least one per process)")
        self.length, self.seed, self.rank, self.world_size = length, seed, rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.epoch = self.position = 0
        self.offset_epoch, self.offset = -1, 0  # the epoch a resize resumed in, and its global position there
        self._shard: tuple[int, list[int]] | None = None

    def _start(self, epoch: int) -> int:
        return self.offset if epoch == self.offset_epoch else 0

    def samples_in(self, epoch: int) -> int:
        """This rank's share of ``epoch`` (all of it, or what remains after a resized resume)."""
        remaining = self.length - self._start(epoch)
        return remaining // self.world_size if self.drop_last else math.ceil(remaining / self.world_size)

    @property
    def num_samples(self) -> int:
        return self.samples_in(self.epoch)

    def __len__(self) -> int:
        return self.num_samples

    def shard(self, epoch: int) -> list[int]:
        """This rank's indices for ``epoch``, in order."""
        if self._shard is None or self._shard[0] != epoch:
            order = permutation(self.length, self.seed, epoch) if self.shuffle else np.arange(self.length)
            order = order[self._start(epoch):]
            total = self.samples_in(epoch) * self.world_size
            order = np.resize(order, total)  # cuts, or repeats the order from its start to pad
            self._shard = (epoch, order[self.rank : total : self.world_size].tolist())
        return self._shard[1]

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning."""
        self.epoch, self.position = int(epoch), 0

    def _state(self, epoch: int, position: int) -> dict:
        return {"epoch": epoch, "position": position, "seed": self.seed, "length": self.length,
                "world_size": self.world_size, "global_position": self._start(epoch) + position * self.world_size}

    def state_dict(self) -> dict:
        """``{"epoch", "position", "global_position"}`` of the next sample (plus what must match on resume)."""
        return self._state(*self._normal(self.epoch, self.position))

    def load_state_dict(self, state: dict, strict: bool = True) -> None:
        """Continue from ``state``. Another seed or dataset size cannot continue (with ``strict``, refused); another
        world size continues the epoch from its global position (``resized`` says so)."""
        if strict:
            for name, what in (("seed", "seed"), ("length", "number of usable videos")):
                if name in state and state[name] != getattr(self, name):
                    raise DatasetError(
                        f"The data state was saved with {what} {state[name]} but this run has {getattr(self, name)}: "
                        f"the data order cannot continue. Resume with the run's own {what} (its config and data "
                        "folder), or start a new run in another output_dir.")
        saved_world = int(state.get("world_size", self.world_size))
        epoch = int(state["epoch"])
        self._shard = None
        if saved_world != self.world_size:
            position = int(state.get("global_position", int(state["position"]) * saved_world))
            if not 0 <= position <= self.length:
                raise DatasetError(f"Data position {position} is outside an epoch of {self.length} videos")
            self.offset_epoch, self.offset = epoch, position
            self.epoch, self.position = self._normal(epoch, 0)
            return
        if not 0 <= state["position"] <= self.samples_in(epoch):
            raise DatasetError(f"Data position {state['position']} is outside an epoch of {self.samples_in(epoch)}")
        if "global_position" in state and state["global_position"] != int(state["position"]) * self.world_size:
            self.offset_epoch, self.offset = epoch, int(state["global_position"]) - int(state["position"]) * \
                self.world_size  # the epoch began after an earlier resize
        self.epoch, self.position = self._normal(epoch, int(state["position"]))

    @property
    def resized(self) -> bool:
        return self.offset_epoch >= 0

    def state_after(self, consumed) -> dict:
        """The state to save once the sample ``consumed`` (a ``SampleKey`` or the last of a batch) was used."""
        if isinstance(consumed, dict):
            epoch, position = int(consumed["epoch"][-1]), int(consumed["position"][-1])
        else:
            epoch, position = int(consumed.epoch), int(consumed.position)
        return self._state(*self._normal(epoch, position + 1))

    def _normal(self, epoch: int, position: int) -> tuple[int, int]:
        return (epoch + 1, 0) if position >= self.samples_in(epoch) else (epoch, position)

    def infinite(self) -> Iterator[SampleKey]:
        """``SampleKey``s from the current state on, forever; the state advances with every key yielded."""
        while True:
            self.epoch, self.position = self._normal(self.epoch, self.position)
            epoch, position = self.epoch, self.position
            self.position += 1
            yield SampleKey(self.shard(epoch)[position], epoch, position)

    def __iter__(self) -> Iterator[int]:
        """The rest of the current epoch's shard as plain indices (then the state points at the next epoch)."""
        self.epoch, self.position = self._normal(self.epoch, self.position)
        epoch = self.epoch
        shard = self.shard(epoch)
        while self.epoch == epoch and self.position < self.samples_in(epoch):
            self.position += 1
            yield shard[self.position - 1]


class _Endless:
    """An iterable over ``sampler.infinite()`` started when the DataLoader starts iterating (so after a resume)."""

    def __init__(self, sampler: ResumableSampler):
        self.sampler = sampler

    def __iter__(self) -> Iterator[SampleKey]:
        return self.sampler.infinite()


def collate_clips(samples: list[dict]) -> dict:
    """Samples -> ``pixels [B, F, 3, H, W]``, lists of ``caption``/``path``, int64 ``[B]`` tensors of ``start``,
    ``stride``, ``index``, ``epoch``, ``position``, and ``failed`` (every read failure behind this batch)."""
    batch = {"pixels": torch.stack([s["pixels"] for s in samples]),
             "caption": [s["caption"] for s in samples], "path": [s["path"] for s in samples],
             "failed": [f for s in samples for f in s["failed"]]}
    for name in ("start", "stride", "index", "epoch", "position"):
        batch[name] = torch.tensor([s[name] for s in samples], dtype=torch.int64)
    return batch


def _seed_worker(worker_id: int) -> None:
    """Seed ``random`` and numpy in a worker from its torch seed (itself from the loader's seeded generator)."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


WORKER_START = "forkserver"  # how DataLoader workers start; see make_loader


def make_loader(dataset: VideoClipDataset, sampler, batch_size: int, workers: int = 0, seed: int = 0,
                pin_memory: bool = False, prefetch_factor: int = 2,
                multiprocessing_context=WORKER_START, timeout: float = 0) -> torch.utils.data.DataLoader:
    """A DataLoader of ``collate_clips`` batches; a ``ResumableSampler`` is iterated endlessly (epochs roll over).

    The batches do not depend on ``workers``: clips are chosen by hash and DataLoader keeps the sampler's order.
    Workers are forked from a fresh single-threaded server process (``"forkserver"``), not from the training
    process: a fork of the trainer copies every lock another of its threads holds at that instant (FFmpeg's,
    OpenMP's, a logger's), and a worker that needs one waits forever (a fork-started worker hung the test suite in
    CI once). Not ``"spawn"``: a spawned worker ends with a full interpreter shutdown, in which a library's C++
    thread aborts it now and then ("terminate called without an active exception": 2 of 16 workers in a loop here;
    forkserver's workers leave with ``os._exit``: 0 of 16). The server starts once per run (a few seconds).
    ``timeout`` (seconds, 0: none) makes a worker that delivers nothing for that long an error, not a silent wait.
    """
    keys = _Endless(sampler) if isinstance(sampler, ResumableSampler) else sampler
    extra = {"prefetch_factor": prefetch_factor, "persistent_workers": True,
             "multiprocessing_context": multiprocessing_context, "timeout": timeout} if workers > 0 else {}
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, sampler=keys, num_workers=workers,
                                       collate_fn=collate_clips, pin_memory=pin_memory, worker_init_fn=_seed_worker,
                                       generator=torch.Generator().manual_seed(seed), **extra)


class LatentCache:
    """VAE latents of clips on disk, one safetensors file per ``(path, start, stride, frames, size)`` clip.

    ``namespace`` names what produced the latents (e.g. the VAE file and dtype): another namespace never reads these.
    Use it with ``VideoClipDataset(fixed_clips=True)`` so every epoch asks for the same clip of a video. A file that
    cannot be read counts as missing (and is written again).
    """

    def __init__(self, directory: str | os.PathLike, namespace: str = ""):
        self.directory, self.namespace = pathlib.Path(directory), namespace

    def key(self, path: str, start: int, stride: int, frames: int, size: tuple[int, int]) -> str:
        text = f"{self.namespace}|{pathlib.Path(path).as_posix()}|{start}|{stride}|{frames}|{size[0]}x{size[1]}"
        return hashlib.sha256(text.encode()).hexdigest()

    def _file(self, key: str) -> pathlib.Path:
        return self.directory / key[:2] / f"{key}.safetensors"

    def load(self, key: str) -> torch.Tensor | None:
        """``latents [F, 4, h, w]`` stored under ``key``, or ``None``."""
        from safetensors.torch import load_file

        file = self._file(key)
        if not file.is_file():
            return None
        try:
            return load_file(str(file))["latents"]
        except Exception as exc:  # a truncated or foreign file: treat as missing
            logger.warning("Ignoring the unreadable latent cache file %s (%s)", file, exc)
            return None

    def save(self, key: str, latents: torch.Tensor) -> None:
        """Store ``latents`` (written to a temporary file, then renamed: never a half-written entry)."""
        from safetensors.torch import save_file

        file = self._file(key)
        file.parent.mkdir(parents=True, exist_ok=True)
        tmp = file.with_name(f"{file.name}.{os.getpid()}.tmp")
        save_file({"latents": latents.detach().cpu().contiguous()}, str(tmp), metadata={"namespace": self.namespace})
        os.replace(tmp, file)
