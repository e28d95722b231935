"""Trainer checkpoints: a plain dict of state_dicts, written atomically, found again after any kill.

A checkpoint is ``directory/step_{step:08d}.pt``: one ``torch.save`` of ``{"format", "version", "step", **state}``
where ``state`` holds the caller's state_dicts (trainable weights, optimiser, LR scheduler, data sampler, RNG
states from ``capture_rng``/``gather_rng``, the config dict, extras). It loads with ``weights_only=True``: only
tensors, numbers, strings, lists and dicts, no pickled classes.

Writing: ``step_XXXXXXXX.pt.tmp`` is written, flushed and fsynced, renamed over the final name (``os.replace`` is
atomic) and the directory fsynced, so a kill at any moment leaves either the old set of files or the old set plus
the new one, never a half-written final name. A stale ``.tmp`` from a killed save is removed by the next save and
never read. Then all but the newest ``keep`` checkpoints are deleted (never the one just written).

Reading: ``latest_checkpoint`` takes the highest step whose file passes ``verify_checkpoint``: the zip container's
CRC-32 of every record (``torch.save`` writes them; ``torch.load`` does not check them), the format record, and the
stored step equal to the one in the name. A truncated or damaged newest file is skipped with a warning.

Ranks: ``save_checkpoint`` writes on rank 0 only (``rank=None`` reads it from torch.distributed or ``$RANK``) and
performs no collective, so it is safe to call from every rank or from rank 0 alone. ``gather_rng`` is the one
collective here: every rank calls it, and the list it returns (one RNG state per rank) goes into the checkpoint.
"""

from __future__ import annotations

import logging
import os
import random
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..errors import AtomoError

log = logging.getLogger(__name__)

FORMAT = "atomovideo-trainer-checkpoint"
VERSION = 1
RESERVED = ("format", "version", "step")
_NAME = re.compile(r"^step_(\d+)\.pt$")
_TMP = re.compile(r"^step_(\d+)\.pt\.tmp$")

Generator = torch.Generator | np.random.Generator


class CheckpointError(AtomoError):
    """A file is not a trainer checkpoint, or is damaged."""


# ----------------------------------------------------------------------------------------------------------- RNG


def _encode(value: Any) -> Any:
    """NumPy arrays inside a bit generator's state -> ``{"ndarray": uint8 tensor, "dtype", "shape"}``."""
    if isinstance(value, np.ndarray):
        raw = torch.from_numpy(np.ascontiguousarray(value).view(np.uint8).reshape(-1).copy())
        return {"ndarray": raw, "dtype": value.dtype.str, "shape": list(value.shape)}
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"ndarray", "dtype", "shape"}:
        return value["ndarray"].numpy().view(np.dtype(value["dtype"])).reshape(value["shape"]).copy()
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    return value


def capture_rng(generators: Mapping[str, Generator] | None = None) -> dict:
    """This process's RNG states: Python ``random``, NumPy's global state, torch CPU, torch CUDA (every device,
    only when CUDA is available) and the named ``generators`` (``torch.Generator`` or ``np.random.Generator``).
    Tensors, numbers, lists and str-keyed dicts only, so ``torch.load(weights_only=True)`` reads it back."""
    version, words, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": {"version": version, "state": torch.tensor(words, dtype=torch.int64), "gauss_next": gauss},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "generators": {},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    for name, gen in (generators or {}).items():
        if isinstance(gen, torch.Generator):
            state["generators"][name] = {"kind": "torch", "state": gen.get_state()}
        else:
            state["generators"][name] = {"kind": "numpy", "state": _encode(gen.bit_generator.state)}
    return state


def restore_rng(state: dict, generators: Mapping[str, Generator] | None = None) -> None:
    """Put back what ``capture_rng`` recorded (into the same named ``generators``, which must be in ``state``)."""
    py = state["python"]
    random.setstate((int(py["version"]), tuple(int(w) for w in py["state"].tolist()), py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"], npy["has_gauss"],
                         npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None:
        if not torch.cuda.is_available():
            log.warning("the checkpoint holds CUDA RNG states but CUDA is not available: they are not restored")
        else:
            count = min(len(cuda), torch.cuda.device_count())
            if count < len(cuda) or count < torch.cuda.device_count():
                log.warning("the checkpoint holds %d CUDA RNG states for %d visible devices: restoring %d",
                            len(cuda), torch.cuda.device_count(), count)
            for device in range(count):
                torch.cuda.set_rng_state(cuda[device], device)
    for name, gen in (generators or {}).items():
        saved = state.get("generators", {}).get(name)
        if saved is None:
            raise CheckpointError(f"the checkpoint has no RNG state for the generator '{name}' (it has: "
                                  f"{', '.join(state.get('generators', {})) or 'none'})")
        if isinstance(gen, torch.Generator):
            gen.set_state(saved["state"])
        else:
            gen.bit_generator.state = _decode(saved["state"])


def gather_rng(generators: Mapping[str, Generator] | None = None) -> list[dict]:
    """``capture_rng`` of every rank, indexed by rank (a collective: every rank calls it; under NCCL after
    ``torch.cuda.set_device``). Without torch.distributed, ``[capture_rng(generators)]``. Restore a rank with
    ``restore_rng(saved[rank])``."""
    own = capture_rng(generators)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return [own]
    out: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(out, own)
    return out


# ------------------------------------------------------------------------------------------------------ files


def checkpoint_path(directory: str | os.PathLike, step: int) -> str:
    """``directory/step_{step:08d}.pt``."""
    return os.path.join(os.fspath(directory), f"step_{step:08d}.pt")


def list_checkpoints(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """``[(step, path)]`` of the complete-named files (not ``.tmp``), ascending; ``[]`` for a missing folder."""
    directory = os.fspath(directory)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    found = [(int(m.group(1)), os.path.join(directory, n)) for n in names if (m := _NAME.match(n))]
    return sorted(found)


def _resolve_rank(rank: int | None) -> int:
    if rank is not None:
        return rank
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return int(os.environ.get("RANK", "0"))


def _fsync_directory(directory: str) -> None:
    """Make a rename in ``directory`` durable (not possible on Windows, where a rename is already journaled)."""
    if os.name == "nt":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(directory: str | os.PathLike, step: int, state: dict, keep: int, rank: int | None = None) -> str:
    """Write ``state`` as the checkpoint of ``step`` (rank 0 only; see the module docstring) and keep the newest
    ``keep``. Returns the checkpoint's path on every rank. Checkpoints of a higher step than ``step`` belong to a
    timeline this run abandoned (it resumed from an earlier one) and are deleted too."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, got {keep}")
    clash = [k for k in RESERVED if k in state]
    if clash:
        raise ValueError(f"state keys {clash} are reserved for the checkpoint's own records")
    directory = os.fspath(directory)
    final = checkpoint_path(directory, step)
    if _resolve_rank(rank) != 0:
        return final
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if _TMP.match(name):  # left by a save that was killed
            os.remove(os.path.join(directory, name))
    tmp = final + ".tmp"
    with open(tmp, "wb") as handle:
        torch.save({"format": FORMAT, "version": VERSION, "step": int(step), **state}, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, final)
    _fsync_directory(directory)
    _prune(directory, step, keep)
    return final


def _prune(directory: str, step: int, keep: int) -> None:
    others = [(s, p) for s, p in list_checkpoints(directory) if s != step]
    for s, path in others:
        if s > step:
            log.warning("deleting %s: a later step than the checkpoint just written (an abandoned run)", path)
    older = [p for s, p in others if s < step]
    doomed = [p for s, p in others if s > step] + older[: max(0, len(older) - (keep - 1))]
    for path in doomed:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


def verify_checkpoint(path: str | os.PathLike) -> int:
    """The step of a complete, undamaged checkpoint, or ``CheckpointError`` saying what is wrong with it."""
    path = os.fspath(path)
    name = os.path.basename(path)
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint '{path}' does not exist") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"'{path}' is incomplete or not a torch file ({error})") from None
    if bad is not None:
        raise CheckpointError(f"'{path}' is damaged: record '{bad}' fails its CRC-32 check")
    record = _load(path, mmap=True)
    match = _NAME.match(name)
    if match and int(match.group(1)) != record["step"]:
        raise CheckpointError(f"'{path}' holds step {record['step']}, not the step {int(match.group(1))} its name says")
    return record["step"]


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The path of the highest-step checkpoint that passes ``verify_checkpoint``, or ``None`` (read-only)."""
    for step, path in reversed(list_checkpoints(directory)):
        try:
            verify_checkpoint(path)
        except CheckpointError as error:
            log.warning("skipping checkpoint of step %d: %s; falling back to the previous one", step, error)
            continue
        return path
    return None


def _load(path: str, mmap: bool = False, map_location: Any = "cpu") -> dict:
    try:
        record = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint '{path}' does not exist") from None
    except Exception as error:  # zip, pickle and weights-only refusals all mean "not ours"
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"'{path}' is not a trainer checkpoint that loads with weights_only=True ({first}). "
                              "Give a step_XXXXXXXX.pt file from a run's checkpoints folder.") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"'{path}' is a torch file but not an AtomoVideo trainer checkpoint (no '{FORMAT}' "
                              "record). To start from a motion module, set init.motion_module instead.")
    if record.get("version") != VERSION or not isinstance(record.get("step"), int):
        raise CheckpointError(f"'{path}' is a trainer checkpoint of version {record.get('version')!r}; this trainer "
                              f"reads version {VERSION}")
    return record


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", verify: bool = True) -> dict:
    """The dict ``save_checkpoint`` wrote: ``{"format", "version", "step", **state}``, tensors on ``map_location``.
    ``verify`` first checks the CRC of every record (a damaged file is an error, not silently wrong weights)."""
    path = os.fspath(path)
    if verify:
        verify_checkpoint(path)
    return _load(path, map_location=map_location)
