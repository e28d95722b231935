"""Reading weight files: containers, dtypes, wrappers, and refusing broken or malicious files."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import re
import tarfile
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from atomo_core.checkpoint_io import _excerpt, read_raw, read_weights
from atomo_core.errors import AtomoError, MotionModuleFormatError

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


# ------------------------------------------------------------- what failed downloads leave, named for what it is

FOLDER = "ComfyUI/models/motion_modules/"
TORCH_WORDS = ("weights_only", "PytorchStreamReader", "WeightsUnpickler", "add_safe_globals", "miniz", "operand")
HF_BLOB_PAGE = (
    b'\xef\xbb\xbf \n<!DOCTYPE html>\n<html class="">\n<head><meta charset="utf-8">'
    b"<title>mm_sd_v15_v2.ckpt &middot; guoyww/animatediff at main</title></head><body>" + b"<div>x</div>" * 400
)
LOGIN_PAGE = b"<html lang='en'><head><title>Sign in</title></head><body><form>password</form></body></html>"
LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:69ed0f5fef82b110aca51bcab73b21104242bc65d6ab4b8b2a2a94d31cad1bf0\nsize 1817888431\n"
)
RESTRICTED = (
    b"Access to model guoyww/animatediff-motion-adapter is restricted. You must have access to it and be "
    b"authenticated to access it. Please log in."
)


def _zip(*names: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        for n in names:
            archive.writestr(n, b"payload")
    return buf.getvalue()


def _tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as archive:
        info = tarfile.TarInfo("mm_sd_v15_v2.ckpt")
        info.size = 7
        archive.addfile(info, io.BytesIO(b"payload"))
    return buf.getvalue()


def _refusal(path, error=MotionModuleFormatError, folder=FOLDER, read=read_weights) -> str:
    """Read ``path``, expect ``error``, and check the message is ours, whole and names the file."""
    with pytest.raises(error) as info:
        read(str(path))
    msg = str(info.value)
    assert f"'{path.name}'" in msg
    assert not any(word.lower() in msg.lower() for word in TORCH_WORDS), msg
    assert msg.endswith((f"{folder}.", "original publisher.", "model file itself.")), msg  # the last sentence is whole
    return msg


@pytest.mark.parametrize(
    "filename, content, says",
    [
        (
            "mm_sd_v15_v2.ckpt",
            HF_BLOB_PAGE,
            ["web page (HTML", 'titled "mm_sd_v15_v2.ckpt · guoyww/animatediff at main"'],
        ),
        ("mm_sd_v15_v2.safetensors", LOGIN_PAGE, ["web page (HTML", 'titled "Sign in"', "login page"]),
        (
            "mm_sd_v15_v2.ckpt",
            LFS_POINTER,
            ["Git LFS pointer (", "the real file is 1,817,888,431 bytes", "git lfs pull"],
        ),
        ("mm.safetensors", b'{"error":"Entry not found"}', ["a JSON text file (27 bytes)", "begins \"{'error':'Entry"]),
        ("mm.bin", b"Entry not found", ['a text file (15 bytes) that begins "Entry not found"']),
        ("mm.ckpt", _zip("readme.txt", "mm/mm_sd_v15_v2.ckpt"), ["zip archive (", "Extract it first", "mm_sd_v15_v2"]),
        ("mm.pt", _zip("readme.txt"), ["zip archive (", "1 file and no weight file", "Extract it first"]),
        ("mm.ckpt", b"7z\xbc\xaf\x27\x1c\x00\x04" + bytes(range(1, 100)), ["a 7-Zip archive (107 bytes)", "unpack it"]),
        ("mm.safetensors", b"Rar!\x1a\x07\x01\x00" + bytes(range(1, 100)), ["a RAR archive (", "unpack it"]),
        ("mm.ckpt", gzip.compress(b"weights" * 100), ["a gzip-compressed file (", "unpack it"]),
        ("mm.pth", _tar(), ["a tar archive (", "unpack it"]),
        ("mm.ckpt", b"", ["is empty (0 bytes)"]),
        ("mm.safetensors", b"\x00" * 10_000, ["(10,000 bytes) holds only zero bytes", "interrupted download"]),
        ("mm.ckpt", bytes(range(200, 256)) * 4, ["neither a safetensors file nor a PyTorch checkpoint", "c8 c9 ca"]),
    ],
)
def test_what_a_failed_download_leaves_is_named(tmp_path, filename, content, says):
    path = tmp_path / filename
    path.write_bytes(content)
    msg = _refusal(path)
    for phrase in says:
        assert phrase in msg, (phrase, msg)
    if "HTML" in msg or "text file" in msg or msg.startswith(f"'{filename}' is empty"):
        assert "/resolve/" in msg and "not the page at /blob/" in msg


def test_a_long_text_is_quoted_in_whole_words(tmp_path):
    path = tmp_path / "mm.ckpt"
    path.write_bytes(RESTRICTED)
    msg = _refusal(path)
    (quote,) = re.findall(r'begins "(.*?)"', msg)
    assert quote.endswith(" ...") and len(quote) < len(RESTRICTED)
    words = quote.removesuffix(" ...").split()
    assert words == RESTRICTED.decode().split()[: len(words)]  # every quoted word is whole, the cut is between words
    assert _excerpt('{"error":"' + "Repository_not_found_" * 10 + '"}') == "{'error':' ..."
    assert _excerpt("x" * 200) == "" and _excerpt("please pass weights_only=False to torch.load") == ""


def test_a_truncated_checkpoint_says_so_in_a_whole_sentence(tmp_path):
    good = tmp_path / "good.ckpt"
    torch.save({"w": torch.randn(4000)}, str(good))
    legacy = tmp_path / "legacy.ckpt"
    torch.save({"w": torch.randn(4000)}, str(legacy), _use_new_zipfile_serialization=False)
    for whole in (good, legacy):
        cut = whole.with_name("cut_" + whole.name)
        cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
        msg = _refusal(cut)
        assert f"({cut.stat().st_size:,} bytes" in msg or f"its {cut.stat().st_size:,} bytes" in msg
        assert "PyTorch checkpoint" in msg and "truncated or corrupt" in msg and "Download it again" in msg


class _NotATensor:
    def __init__(self):
        self.steps = 3


def test_a_pickle_asking_for_a_global_names_it_and_gives_no_unsafe_advice(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"w": torch.zeros(1), "extra": _NotATensor()}, str(path))
    msg = _refusal(path)
    assert re.search(r"it asks for [\w.]*_NotATensor\)", msg) and "Get the .safetensors version" in msg
    np = pytest.importorskip("numpy")
    path = tmp_path / "numpy.ckpt"
    torch.save({"w": np.zeros(3)}, str(path))
    assert re.search(r"it asks for numpy[\w.]*\._reconstruct\)", _refusal(path))


def test_the_content_chooses_the_reader_not_the_extension(tmp_path):
    st_as_ckpt = tmp_path / "mm_sd_v15_v2.ckpt"
    save_file(dict(SMALL), str(st_as_ckpt), metadata={"format": "x"})
    sd, meta = read_weights(str(st_as_ckpt))
    assert list(sd) == list(SMALL) and meta == {"format": "x"}
    cut = tmp_path / "cut.bin"
    cut.write_bytes(st_as_ckpt.read_bytes()[:-4])
    assert "is a safetensors file that is truncated or corrupt" in _refusal(cut)
    ckpt_as_st = tmp_path / "mm_sd_v15_v2.safetensors"
    torch.save({"state_dict": dict(SMALL)}, str(ckpt_as_st))
    sd, meta = read_weights(str(ckpt_as_st))
    assert list(sd) == list(SMALL) and meta == {}


class _IPError(AtomoError):
    pass


def test_the_callers_error_class_and_folder_are_used(tmp_path):
    path = tmp_path / "ip-adapter_sd15.bin"
    path.write_bytes(LOGIN_PAGE)
    folder = "ComfyUI/models/ipadapter/"
    msg = _refusal(path, _IPError, folder, read=lambda p: read_raw(p, _IPError, folder))
    assert "web page" in msg
