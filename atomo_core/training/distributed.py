"""torch.distributed for the trainer: one process per GPU under torchrun (or one process alone), NCCL on GPUs and
gloo on CPUs, a long timeout for slow first batches and saves, and a check that every rank holds the same weights.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import AtomoError


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def setup(backend: str = "auto", timeout_minutes: float = 60.0) -> World:
    """The process's place in the run, from torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        chosen = ("nccl" if cuda else "gloo") if backend == "auto" else backend
        if chosen == "nccl" and not cuda:
            raise AtomoError("distributed.backend nccl needs GPUs; on CPUs use gloo (or auto).")
        dist.init_process_group(chosen, timeout=datetime.timedelta(minutes=timeout_minutes))
    return World(rank, world_size, local_rank, device)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(world: World) -> None:
    if world.distributed:
        dist.barrier()


def weights_checksum(params) -> torch.Tensor:
    """``[2]`` float64: the sum and the index-weighted sum of every trainable value (order- and value-sensitive)."""
    total = torch.zeros(2, dtype=torch.float64)
    offset = 0
    for p in params:
        flat = p.detach().double().flatten().cpu()
        weights = torch.arange(offset, offset + flat.numel(), dtype=torch.float64) % 9973 + 1
        total += torch.stack([flat.sum(), (flat * weights).sum()])
        offset += flat.numel()
    return total


def check_identical(world: World, params) -> list[list[float]]:
    """Every rank's checksum; raises (on every rank) if the ranks' trainable weights differ."""
    mine = weights_checksum(params)
    if not world.distributed:
        return [mine.tolist()]
    gathered = [torch.zeros_like(mine) for _ in range(world.world_size)]
    dist.all_gather(gathered, mine.to(world.device) if dist.get_backend() == "nccl" else mine)
    gathered = [g.cpu() for g in gathered]
    if any(not torch.equal(g, gathered[0]) for g in gathered):
        raise AtomoError(
            "The ranks' trainable weights differ (checksums " + ", ".join(f"{g.tolist()}" for g in gathered) + "): "
            "the processes are not training the same model. Stopping instead of saving a broken module."
        )
    return [g.tolist() for g in gathered]
