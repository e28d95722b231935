"""Reading and writing weight files safely.

``.safetensors`` is read with ``safetensors``; ``.ckpt``/``.pt``/``.pth``/``.bin`` with
``torch.load(weights_only=True)``, which refuses any pickle that would construct objects or call
functions. Before either reader sees a file, its first bytes are examined, so that what a failed download
leaves behind (a web page, a Git LFS pointer, a server's error text, an archive, an empty or zero-filled file)
is named for what it is; the reader is chosen by content (a safetensors file saved as ``.ckpt`` still loads).
Every failure becomes a ``MotionModuleFormatError`` (or the ``error`` class passed in) naming the file and what
to do, in our own complete sentences: torch's messages are never passed on, since they advise turning safe
loading off.
"""

from __future__ import annotations

import html
import json
import os
import pickle
import re
import zipfile

import torch

from .errors import MotionModuleFormatError

SAFETENSORS_EXTENSIONS = (".safetensors", ".sft")
PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin")
SUPPORTED_EXTENSIONS = SAFETENSORS_EXTENSIONS + PICKLE_EXTENSIONS

HEAD_BYTES = 4096  # how much of a file is examined before choosing a reader
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit on the JSON header
GET_THE_FILE = (
    "Download the file itself from the model's page (on Hugging Face, the download button or a link with "
    "/resolve/ in it, not the page at /blob/) and put it in {folder}."
)
ARCHIVES = (  # (magic bytes at offset 0, what the file is); zip and tar are recognised separately
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"Rar!\x1a\x07", "a RAR archive"),
    (b"\x1f\x8b\x08", "a gzip-compressed file"),
    (b"\xfd7zXZ\x00", "an xz-compressed file"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file"),
)
TORCH_ZIP_ENTRY = re.compile(r"^[^/]+/(data\.pkl|\.format_version|\.storage_alignment|byteorder|version|data/\d+)$")
REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+)|but got <class '([\w.]+)'>")


def _unwrap(obj, name: str) -> dict[str, torch.Tensor]:
    """Find the tensor dict inside ``{"state_dict": ...}``-style wrappers; drop non-tensor entries."""
    for _ in range(3):
        if not isinstance(obj, dict) or any(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        wrapped = [obj[k] for k in ("state_dict", "module", "model") if isinstance(obj.get(k), dict)]
        dicts = [v for v in obj.values() if isinstance(v, dict)]
        if wrapped:
            obj = wrapped[0]
        elif len(dicts) == 1:
            obj = dicts[0]
        else:
            break
    if not isinstance(obj, dict):
        raise MotionModuleFormatError(
            f"'{name}' holds a {type(obj).__name__}, not a dictionary of weights. "
            "Pick a motion-module weight file (.safetensors or .ckpt)."
        )
    tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not tensors:
        raise MotionModuleFormatError(
            f"'{name}' contains no weight tensors. The file is empty or not a model; download it again."
        )
    return tensors


def read_raw(
    path: str, error: type[Exception] = MotionModuleFormatError, folder: str = "ComfyUI/models/motion_modules/"
) -> tuple[object, dict[str, str]]:
    """Return ``(loaded object, metadata)`` from a weight file without unwrapping it.

    ``.safetensors``: a flat tensor dict and its header; pickles: whatever ``torch.load(weights_only=True)``
    builds (nested dicts of tensors and plain values only). The reader follows the file's content, the
    extension only breaks ties. Failures raise ``error`` naming the file and the fix; ``folder`` is where the
    user should put such files.
    """
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise error(f"'{path}' does not exist. Put the file in {folder}.")
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise error(f"'{name}' has the extension '{ext}'; supported are {', '.join(SUPPORTED_EXTENSIONS)}.")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(HEAD_BYTES)
    kind = _sniff(path, head, size)
    problem = _not_a_model(kind, path, head, name, size, folder)
    if problem:
        raise error(problem)
    if kind == "safetensors" or (kind == "unknown" and ext in SAFETENSORS_EXTENSIONS):
        return _read_safetensors(path, name, size, error, folder)
    return _read_pickle(path, name, size, error, folder, known=kind != "unknown"), {}


def read_weights(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Return ``(state_dict, metadata)`` from a weight file; metadata is empty for pickle files.

    Raises ``MotionModuleFormatError`` for a missing, truncated, corrupt or code-carrying file.
    """
    obj, metadata = read_raw(path)
    return _unwrap(obj, os.path.basename(path)), metadata


# ------------------------------------------------------------------------------------ what is this file?


def _sniff(path: str, head: bytes, size: int) -> str:
    """Name the kind of file from its first bytes: a weight format, a download failure, an archive, text."""
    if size == 0:
        return "empty"
    if len(head) > 8 and head[8:9] == b"{" and 2 <= int.from_bytes(head[:8], "little") <= MAX_SAFETENSORS_HEADER:
        return "safetensors"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return _zip_kind(path, head)
    for magic, _ in ARCHIVES:
        if head.startswith(magic):
            return "archive"
    if re.match(rb"BZh[1-9]1AY&SY", head) or head[257:262] == b"ustar":
        return "archive"
    if head[:1] == b"\x80":  # the PROTO opcode every pickle since protocol 2 starts with
        return "pickle"
    if not head.strip(b"\x00"):
        return "zeros"
    text = _as_text(head)
    if text is None:
        return "unknown"
    start = text.lstrip().lower()
    if start.startswith("<") and ("<!doctype html" in start[:1024] or "<html" in start[:1024]):
        return "html"
    if start.startswith("version https://git-lfs.github.com/spec/"):
        return "git-lfs"
    return "text"


def _zip_kind(path: str, head: bytes) -> str:
    """``torch-zip`` (a torch.save archive), ``zip`` (any other), or ``torch-broken``/``zip-broken`` (no index)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except Exception:  # zipfile raises BadZipFile, OSError, EOFError or struct.error on a cut archive
        first = head[30 : 30 + int.from_bytes(head[26:28], "little")].decode("utf-8", "replace")
        return "torch-broken" if TORCH_ZIP_ENTRY.match(first) else "zip-broken"
    return "torch-zip" if any(n.endswith("/data.pkl") for n in names) else "zip"


def _as_text(head: bytes) -> str | None:
    """The sample as text when it is UTF-8 (ASCII included) without NUL and almost no control bytes, else ``None``."""
    if b"\x00" in head:
        return None
    data = head[3:] if head.startswith(b"\xef\xbb\xbf") else head
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # the sample may end inside a multi-byte character
        if exc.start < len(data) - 3:
            return None
        text = data[: exc.start].decode("utf-8")
    controls = sum(not (c.isprintable() or c in "\t\n\r\f\v") for c in text)
    return text if controls <= len(text) // 100 else None  # a few escape codes (a coloured log) are still text


def _excerpt(text: str, limit: int = 80) -> str:
    """The first non-blank line, made printable and shortened at a word boundary; '' if nothing safe to quote."""
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    line = " ".join("".join(c if c.isprintable() else " " for c in line).split()).replace('"', "'")
    if "weights_only" in line.lower():
        return ""
    if len(line) <= limit:
        return line
    cut = line.rfind(" ", 0, limit + 1)
    if cut <= 0:  # one long token (minified JSON): cut where a word ends, never inside one
        word = [c.isalnum() or c == "_" for c in line[: limit + 1]]
        cut = max((i for i in range(1, limit + 1) if not (word[i - 1] and word[i])), default=0)
    return line[:cut].rstrip() + " ..." if cut > 0 else ""


def _not_a_model(kind: str, path: str, head: bytes, name: str, size: int, folder: str) -> str | None:
    """The message for a file that is no weight file at all, or ``None`` when a reader should try it."""
    get_it = GET_THE_FILE.format(folder=folder)
    again = f"Download it again and put it in {folder}."
    if kind == "empty":
        return f"'{name}' is empty (0 bytes): the download saved nothing or did not finish. {get_it}"
    if kind == "zeros":
        return (
            f"'{name}' ({size:,} bytes) holds only zero bytes at its start, not a model: an interrupted download "
            f"(some download tools reserve the whole file first and fill it in as they go). {again}"
        )
    if kind in ("torch-broken", "zip-broken"):
        what = "a PyTorch checkpoint" if kind == "torch-broken" else "a zip archive"
        return (
            f"'{name}' is {what} that is truncated or corrupt: its {size:,} bytes end before the archive's index "
            f"(an interrupted download?). {again}"
        )
    if kind == "html":
        text = _as_text(head) or ""
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        titled = _excerpt(html.unescape(title.group(1))) if title else ""
        titled = f' titled "{titled}"' if titled else ""
        return (
            f"'{name}' is a web page (HTML, {size:,} bytes){titled}, not a model: the download saved a page (the "
            f"file's page, a login page or an error page) instead of the file. {get_it}"
        )
    if kind == "git-lfs":
        real = re.search(r"^size (\d+)", _as_text(head) or "", re.MULTILINE)
        real = f"the real file is {int(real.group(1)):,} bytes" if real else "the real file is elsewhere"
        return (
            f"'{name}' is a Git LFS pointer ({size:,} bytes), not the model: {real} and was not downloaded, because "
            f"the repository was cloned without Git LFS. Run 'git lfs install' and 'git lfs pull' in the cloned "
            f"repository, or download the file itself from the model's page (on Hugging Face, the download button "
            f"or a link with /resolve/ in it) and put it in {folder}."
        )
    if kind == "text":
        text = _as_text(head) or ""
        what = "a JSON text file" if text.lstrip()[:1] in ("{", "[") else "a text file"
        quote = _excerpt(text)
        quote = f' that begins "{quote}"' if quote else ""
        return (
            f"'{name}' is {what} ({size:,} bytes){quote}, not a model: a failed download often saves the server's "
            f"reply (an error message, a JSON answer) instead of the file. {get_it}"
        )
    if kind == "zip":
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
        weights = [n for n in names if n.lower().endswith(SUPPORTED_EXTENSIONS)]
        count = f"{len(names):,} file{'' if len(names) == 1 else 's'}"
        inside = f"it holds '{weights[0]}'" if weights else f"it holds {count} and no weight file"
        return (
            f"'{name}' is a zip archive ({size:,} bytes), not a model ({inside}). Extract it first and put the "
            f".safetensors or .ckpt file from it in {folder}, or download the model file itself."
        )
    if kind == "archive":
        what = next((w for magic, w in ARCHIVES if head.startswith(magic)), None)
        what = what or ("a bzip2-compressed file" if head.startswith(b"BZh") else "a tar archive")
        return (
            f"'{name}' is {what} ({size:,} bytes), not a model: unpack it first (7-Zip opens all of these) and "
            f"put the .safetensors or .ckpt file inside it in {folder}."
        )
    return None


# ------------------------------------------------------------------------------------------------ readers


def _quote(exc: Exception) -> str:
    """``exc``'s message when it is one short whole line that is safe to show, else ''."""
    text = str(exc).strip()
    if not text or "\n" in text or len(text) > 200 or "weights_only" in text.lower():
        return ""
    return text


def _safetensors_problem(path: str, size: int) -> str | None:
    """Why a safetensors file cannot be complete (a cut header or data), from its header alone; else ``None``."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        if n > MAX_SAFETENSORS_HEADER or 8 + n > size:
            return f"its header says it is at least {8 + n:,} bytes long, but it has {size:,}"
        try:
            header = json.loads(f.read(n))
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError):
            return "its header is not valid JSON"
    if 8 + n + end > size:
        return f"its header says it is {8 + n + end:,} bytes long, but it has {size:,}"
    return None


def _read_safetensors(path: str, name: str, size: int, error, folder: str):
    from safetensors import safe_open

    problem = _safetensors_problem(path, size)
    if problem:
        raise error(
            f"'{name}' is a safetensors file that is truncated or corrupt: {problem} (an interrupted download?). "
            f"Download it again and put it in {folder}."
        )
    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            state_dict = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises its own error types for bad headers and short files
        said = _quote(exc)
        said = f" (safetensors says: {said})" if said else ""
        raise error(
            f"Could not read '{name}' ({size:,} bytes) as safetensors{said}. The file is truncated or corrupt (an "
            f"interrupted download?) or is not really a .safetensors file. Download it again and put it in {folder}."
        ) from exc
    return state_dict, metadata


def _read_pickle(path: str, name: str, size: int, error, folder: str, known: bool = True):
    """``torch.load(weights_only=True)``; ``known`` says the content looked like a torch checkpoint or a pickle."""
    again = f"Download it again and put it in {folder}."
    try:
        if not path.endswith(".safetensors"):
            return torch.load(path, map_location="cpu", weights_only=True)
        with open(path, "rb") as f:  # torch.load hands a path ending in .safetensors to safetensors itself
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not known:
            raise error(_unknown(name, size, path, folder)) from None
        found = REFUSED_GLOBAL.search(str(exc))
        if found:
            asks = f"asks to build objects or run code when opened (it asks for {found.group(1) or found.group(2)})"
        else:  # e.g. a plain pickle.dump file: instructions torch.save never writes, which could do anything
            asks = "uses instructions that torch.save never writes, so it may build objects or run code when opened"
        raise error(
            f"Refused to load '{name}': it is a pickle that {asks}. Weight files need nothing of the kind, so this "
            "one is unsafe or not a model. Get the .safetensors version of the file, or re-download it from its "
            "original publisher."
        ) from None
    except Exception as exc:  # zip errors, EOF, bad magic number
        if not known:
            raise error(_unknown(name, size, path, folder)) from None
        if "magic number" in str(exc):
            raise error(
                f"'{name}' ({size:,} bytes) is a pickle, but not a PyTorch checkpoint written by torch.save, so it "
                f"holds no weights we can read. {GET_THE_FILE.format(folder=folder)}"
            ) from None
        raise error(
            f"Could not read '{name}' ({size:,} bytes) as a PyTorch checkpoint: the file is truncated or corrupt "
            f"(an interrupted download?) or is not a model. {again}"
        ) from None


def _unknown(name: str, size: int, path: str, folder: str) -> str:
    with open(path, "rb") as f:
        first = f.read(8).hex(" ")
    return (
        f"'{name}' ({size:,} bytes) is neither a safetensors file nor a PyTorch checkpoint, nor any archive or text "
        f"we know (it begins with the bytes {first}). The file is truncated or corrupt or is not a model. "
        f"Download it again and put it in {folder}."
    )


def write_safetensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write contiguous CPU copies of ``tensors`` with a string-to-string ``metadata`` header."""
    from safetensors.torch import save_file

    payload = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    save_file(payload, path, metadata={k: str(v) for k, v in metadata.items()})
