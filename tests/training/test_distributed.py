"""The rank check: two gloo processes with the same weights agree; one changed value makes both stop loudly."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from atomo_core.errors import AtomoError
from atomo_core.training.distributed import World, check_identical, weights_checksum


def _worker(rank: int, init_file: str, perturb: bool, results) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        torch.manual_seed(0)
        params = [torch.randn(50, 7), torch.randn(3)]
        if perturb and rank == 1:
            params[0][13, 2] += 1e-6
        world = World(rank, 2, rank, torch.device("cpu"))
        try:
            check_identical(world, params)
            results[rank] = "identical"
        except AtomoError as exc:
            results[rank] = str(exc)
    finally:
        dist.destroy_process_group()


def _run(tmp_path, perturb: bool) -> dict:
    manager = mp.Manager()
    results = manager.dict()
    init = tmp_path / f"init_{perturb}"
    mp.spawn(_worker, args=(str(init), perturb, results), nprocs=2, join=True)
    return dict(results)


def test_ranks_with_the_same_weights_pass_and_one_changed_value_stops_both(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    assert _run(tmp_path, False) == {0: "identical", 1: "identical"}
    failed = _run(tmp_path, True)
    assert all("trainable weights differ" in message for message in failed.values()) and len(failed) == 2


def test_the_checksum_sees_a_value_and_a_swap():
    a = [torch.arange(6.0), torch.ones(2)]
    assert torch.equal(weights_checksum(a), weights_checksum([t.clone() for t in a]))
    assert not torch.equal(weights_checksum(a), weights_checksum([a[0].flip(0), a[1]]))  # order matters
    assert not torch.equal(weights_checksum(a), weights_checksum([a[0] + 1e-3, a[1]]))
