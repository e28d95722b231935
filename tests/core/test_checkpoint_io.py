"""Reading weight files: containers, dtypes, wrappers, and refusing broken or malicious files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from atomo_core.checkpoint_io import read_weights
from atomo_core.errors import MotionModuleFormatError

SMALL = {"down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight": torch.arange(6.0).reshape(2, 3)}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_safetensors_keeps_dtype_and_metadata(tmp_path, dtype):
    path = tmp_path / "m.safetensors"
    save_file({k: v.to(dtype) for k, v in SMALL.items()}, str(path), metadata={"format": "x"})
    sd, meta = read_weights(str(path))
    (value,) = sd.values()
    assert value.dtype == dtype and value.tolist() == SMALL[next(iter(SMALL))].tolist()
    assert meta == {"format": "x"}


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "state_dict+step", "module"])
@pytest.mark.parametrize("ext", [".ckpt", ".pt", ".pth"])
def test_pickle_containers_and_wrappers(tmp_path, wrap, ext):
    obj = {
        "plain": dict(SMALL),
        "state_dict": {"state_dict": dict(SMALL)},
        "state_dict+step": {"state_dict": dict(SMALL), "global_step": 5000},
        "module": {"module": dict(SMALL)},
    }[wrap]
    path = tmp_path / f"m{ext}"
    torch.save(obj, str(path))
    sd, meta = read_weights(str(path))
    assert list(sd) == list(SMALL) and meta == {}


def test_non_tensor_entries_are_dropped(tmp_path):
    path = tmp_path / "m.ckpt"
    torch.save({**SMALL, "global_step": 10, "animatediff_config": "x"}, str(path))
    sd, _ = read_weights(str(path))
    assert list(sd) == list(SMALL)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": _Exploit(marker)}}, f)
    torch.save({"x": _Exploit(marker)}, str(tmp_path / "evil2.pt"))
    for p in (path, tmp_path / "evil2.pt"):
        with pytest.raises(MotionModuleFormatError, match="Refused to load '.*evil.*': it is a pickle"):
            read_weights(str(p))
    assert not marker.exists()


def test_truncated_files_are_reported_as_corrupt(tmp_path):
    good_st = tmp_path / "good.safetensors"
    save_file({"w": torch.zeros(1000)}, str(good_st))
    good_ckpt = tmp_path / "good.ckpt"
    torch.save({"w": torch.zeros(1000)}, str(good_ckpt))
    for good in (good_st, good_ckpt):
        data = good.read_bytes()
        cut = good.with_name("cut" + good.suffix)
        cut.write_bytes(data[: len(data) // 2])
        with pytest.raises(MotionModuleFormatError, match="truncated or corrupt.*Download it again") as info:
            read_weights(str(cut))
        assert cut.name in str(info.value)


def test_garbage_and_missing_and_wrong_extension(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(MotionModuleFormatError, match="junk.safetensors"):
        read_weights(str(junk))
    with pytest.raises(MotionModuleFormatError, match="does not exist"):
        read_weights(str(tmp_path / "nope.ckpt"))
    txt = tmp_path / "notes.txt"
    txt.write_text("hi")
    with pytest.raises(MotionModuleFormatError, match="extension '.txt'"):
        read_weights(str(txt))


def test_a_file_without_tensors_is_refused(tmp_path):
    path = tmp_path / "empty.pt"
    torch.save({"a": 1, "b": "x"}, str(path))
    with pytest.raises(MotionModuleFormatError, match="no weight tensors"):
        read_weights(str(path))
