"""Trainer checkpoints: exact resume (weights, optimiser, scheduler, every RNG), pruning, kills during a save."""

from __future__ import annotations

import logging
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from atomo_core.training.checkpoint import (
    CheckpointError,
    capture_rng,
    gather_rng,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    restore_rng,
    save_checkpoint,
    verify_checkpoint,
)

REPO = pathlib.Path(__file__).resolve().parents[2]


class Sampler:
    """A stand-in for the data sampler: an epoch-seeded permutation and a position in it."""

    def __init__(self, size: int = 10):
        self.size, self.epoch, self.position = size, 0, 0

    def next(self) -> int:
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.epoch))
        index = int(order[self.position])
        self.position += 1
        if self.position == self.size:
            self.epoch, self.position = self.epoch + 1, 0
        return index

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = state["epoch"], state["position"]


def _setup(seed: int):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-2, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 4) * 0.9**s)
    return model, optimizer, scheduler, Sampler()


def _step(model, optimizer, scheduler, sampler, generators) -> float:
    """One step whose data and noise come from every RNG a trainer uses."""
    index = sampler.next()
    x = torch.randn(4, 6) + torch.randn(4, 6, generator=generators["noise"]) + index
    x = x * random.gauss(1.0, 0.5) + torch.from_numpy(np.random.standard_normal((4, 6)).astype(np.float32))
    x = x + torch.from_numpy(generators["data"].standard_normal((4, 6)).astype(np.float32))
    loss = nn.functional.dropout(model(x), 0.3).pow(2).mean()  # dropout: the global torch RNG
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def _draws(generators) -> list:
    return [random.random(), float(np.random.rand()), torch.rand(3).tolist(),
            torch.rand(2, generator=generators["noise"]).tolist(), generators["data"].random(2).tolist()]


def _seed_everything(offset: int):
    random.seed(1 + offset)
    np.random.seed(2 + offset)
    torch.manual_seed(3 + offset)
    return {"noise": torch.Generator().manual_seed(4 + offset), "data": np.random.default_rng(5 + offset)}


def _continue(parts, generators, steps: int = 4):
    losses = [_step(*parts, generators) for _ in range(steps)]
    return losses, [p.detach().clone() for p in parts[0].parameters()], _draws(generators)


def test_resume_continues_bit_identically(tmp_path):
    generators = _seed_everything(0)
    parts = _setup(0)
    for _ in range(3):
        _step(*parts, generators)
    model, optimizer, scheduler, sampler = parts
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "sampler": sampler.state_dict(), "rng": gather_rng(generators), "config": {"steps": 7, "lr": 3e-2}}
    path = save_checkpoint(tmp_path, 3, state, keep=2)
    assert pathlib.Path(path).name == "step_00000003.pt" and not list(tmp_path.glob("*.tmp"))
    uninterrupted = _continue(parts, generators)

    def resumed(restore: bool):
        fresh_generators = _seed_everything(100)  # a new process: other seeds, other weights
        fresh = _setup(100)
        assert not torch.equal(next(fresh[0].parameters()), next(parts[0].parameters()))
        ckpt = load_checkpoint(latest_checkpoint(tmp_path))
        assert ckpt["step"] == 3 and ckpt["config"] == {"steps": 7, "lr": 3e-2}
        fresh[0].load_state_dict(ckpt["model"])
        fresh[1].load_state_dict(ckpt["optimizer"])
        fresh[2].load_state_dict(ckpt["scheduler"])
        fresh[3].load_state_dict(ckpt["sampler"])
        if restore:
            restore_rng(ckpt["rng"][0], fresh_generators)
        return _continue(fresh, fresh_generators)

    losses, params, draws = resumed(restore=True)
    assert losses == uninterrupted[0]
    assert all(torch.equal(a, b) for a, b in zip(params, uninterrupted[1], strict=True))
    assert draws == uninterrupted[2]
    # the test can tell: without the RNG states the continuation differs
    losses, params, draws = resumed(restore=False)
    assert losses != uninterrupted[0] and not torch.equal(params[0], uninterrupted[1][0])


def test_rng_state_loads_weights_only_for_every_bit_generator(tmp_path):
    random.gauss(0, 1)  # a cached gauss_next
    np.random.standard_normal()  # NumPy's cached gaussian (odd count)
    generators = {"pcg": np.random.default_rng(7), "mt": np.random.Generator(np.random.MT19937(8)),
                  "philox": np.random.Generator(np.random.Philox(9)), "sfc": np.random.Generator(np.random.SFC64(1)),
                  "torch": torch.Generator().manual_seed(11)}
    for g in generators.values():
        g.random(3) if isinstance(g, np.random.Generator) else torch.rand(3, generator=g)
    torch.save(capture_rng(generators), tmp_path / "rng.pt")
    expected = [random.random(), random.gauss(0, 1), np.random.standard_normal(), torch.rand(1).item()]
    expected += [g.random() if isinstance(g, np.random.Generator) else torch.rand(1, generator=g).item()
                 for g in generators.values()]
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), generators)
    again = [random.random(), random.gauss(0, 1), np.random.standard_normal(), torch.rand(1).item()]
    again += [g.random() if isinstance(g, np.random.Generator) else torch.rand(1, generator=g).item()
              for g in generators.values()]
    assert again == expected
    with pytest.raises(CheckpointError, match="no RNG state for the generator 'other'"):
        restore_rng(capture_rng(), {"other": torch.Generator()})


def _save(directory, step, keep=3, size=8):
    return save_checkpoint(directory, step, {"model": {"w": torch.full((size,), float(step))}}, keep=keep)


def _steps(directory):
    return [s for s, _ in list_checkpoints(directory)]


def test_keep_prunes_older_and_abandoned_checkpoints(tmp_path):
    for step in range(1, 6):
        _save(tmp_path, step, keep=2)
    assert _steps(tmp_path) == [4, 5]
    _save(tmp_path, 6, keep=1)
    assert _steps(tmp_path) == [6]
    # a run that fell back to step 20 (its step 30 was damaged) and saves step 25: step 30 belongs to the abandoned
    # timeline and goes (else a later resume would jump to it), the newest older ones stay
    other = tmp_path / "other"
    for step in (10, 20, 30):
        _save(other, step)
    _save(other, 25, keep=2)
    assert _steps(other) == [20, 25]


def test_kill_during_save_and_damaged_files_fall_back(tmp_path, caplog):
    first, second = _save(tmp_path, 1), _save(tmp_path, 2)
    # a kill while writing step 3: a truncated .tmp, ignored
    data = pathlib.Path(second).read_bytes()
    (tmp_path / "step_00000003.pt.tmp").write_bytes(data[: len(data) // 2])
    assert latest_checkpoint(tmp_path) == second
    # the newest final-named file truncated (a disk that lied about fsync, a bad copy): fall back to step 1
    pathlib.Path(second).write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING):
        assert latest_checkpoint(tmp_path) == first
    assert "skipping checkpoint of step 2" in caplog.text and "step_00000002.pt" in caplog.text
    with pytest.raises(CheckpointError, match="step_00000002.pt' is incomplete"):
        load_checkpoint(second)
    # a flipped byte inside the tensor data (torch.load itself would not notice): caught by the CRC records
    damaged = bytearray(pathlib.Path(first).read_bytes())
    offset = damaged.find(np.full(8, 1.0, np.float32).tobytes())
    assert offset > 0
    damaged[offset + 5] ^= 0x40
    pathlib.Path(second).write_bytes(damaged)
    assert torch.load(second, weights_only=True)["step"] == 1  # loads, silently wrong
    with pytest.raises(CheckpointError, match="fails its CRC-32 check"):
        verify_checkpoint(second)
    assert latest_checkpoint(tmp_path) == first
    # a file renamed to another step is not trusted
    shutil.copy(first, tmp_path / "step_00000009.pt")
    assert latest_checkpoint(tmp_path) == first
    # the next save clears the stale .tmp; an empty or missing folder has no checkpoint
    _save(tmp_path, 3)
    assert not list(tmp_path.glob("*.tmp")) and latest_checkpoint(tmp_path) == str(tmp_path / "step_00000003.pt")
    assert latest_checkpoint(tmp_path / "none") is None


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    cases = {"noise.pt": lambda p: p.write_bytes(os.urandom(1000)),
             "plain.pt": lambda p: torch.save({"w": torch.ones(2)}, p),
             "module.pt": lambda p: torch.save(nn.Linear(2, 2), p),
             "weights.safetensors": lambda p: save_file({"w": torch.ones(2)}, str(p))}
    for name, write in cases.items():
        write(tmp_path / name)
        for verify in (True, False):
            with pytest.raises(CheckpointError) as info:
                load_checkpoint(tmp_path / name, verify=verify)
            assert name in str(info.value)
    with pytest.raises(CheckpointError, match="plain.pt' is a torch file but not an AtomoVideo trainer checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="module.pt' is not a trainer checkpoint that loads with weights_only"):
        load_checkpoint(tmp_path / "module.pt", verify=False)
    with pytest.raises(CheckpointError, match="missing.pt' does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(tmp_path, 1, {"step": 1}, keep=1)


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "r1", 5, {"model": {}}, keep=1, rank=1)
    assert path.endswith("step_00000005.pt") and not (tmp_path / "r1").exists()
    monkeypatch.setenv("RANK", "3")  # torchrun's variable, before torch.distributed is initialised
    save_checkpoint(tmp_path / "r3", 5, {"model": {}}, keep=1)
    assert not (tmp_path / "r3").exists()
    monkeypatch.setenv("RANK", "0")
    assert load_checkpoint(save_checkpoint(tmp_path / "r0", 5, {"model": {}}, keep=1))["step"] == 5


# One process imports torch once and forks a writer per round (a fresh interpreter per round would spend most of the
# test importing torch). The writer saves 200 MB checkpoints back to back until the test SIGKILLs it.
FORK_SERVER = r"""
import os, sys, torch
from atomo_core.training.checkpoint import save_checkpoint
for line in sys.stdin:  # one line per round: the first step to write
    step = int(line)
    pid = os.fork()
    if pid == 0:
        big = torch.empty(50_000_000)
        print("ready", os.getpid(), flush=True)
        while True:
            big.fill_(float(step))
            save_checkpoint(sys.argv[1], step, {"model": {"w": big}}, keep=1)
            step += 1
    os.waitpid(pid, 0)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL (POSIX)")
def test_sigkill_at_random_moments_of_a_large_save_keeps_a_loadable_checkpoint(tmp_path):
    directory = tmp_path / "ckpt"
    _save(directory, 1, size=1000)
    chance = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    server = subprocess.Popen([sys.executable, "-c", FORK_SERVER, str(directory)], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    killed_mid_write, rounds = 0, 5
    try:
        for _ in range(rounds):
            start = verify_checkpoint(latest_checkpoint(directory)) + 1
            server.stdin.write(f"{start}\n")
            server.stdin.flush()
            word, pid = server.stdout.readline().split()
            assert word == "ready"
            time.sleep(chance.uniform(0.05, 1.2))
            killed_mid_write += bool(list(directory.glob("*.tmp")))
            os.kill(int(pid), signal.SIGKILL)
            _wait_gone(int(pid))
            latest = latest_checkpoint(directory)
            step = verify_checkpoint(latest)
            assert step >= start - 1
            w = torch.load(latest, weights_only=True, mmap=True)["model"]["w"]
            assert w[0].item() == w[-1].item() == float(step) and w.numel() in (1000, 50_000_000)
            assert len(list_checkpoints(directory)) <= 2 and len(list(directory.glob("*.tmp"))) <= 1
        assert killed_mid_write >= 1, "no kill landed inside a write: the test did not test anything"
    finally:
        server.stdin.close()
        server.wait(timeout=30)
        shutil.rmtree(directory, ignore_errors=True)


def _wait_gone(pid: int, timeout: float = 30.0) -> None:
    """Until the fork server has reaped the killed writer (so no write of it can still land)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)
    raise AssertionError(f"writer {pid} still exists {timeout} s after SIGKILL")
