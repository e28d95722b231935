"""The index of training videos: which files in a folder are usable, their captions, frame counts and sizes.

``build_index(videos_dir, captions, frames, stride)`` scans the folder (sorted by relative path, so the index, and
with it the data order, is the same on every machine), reads the captions and probes every video with PyAV:

- captions: ``captions`` may be a ``.csv`` with a header ``file,caption``, a ``.jsonl`` with one
  ``{"file": ..., "caption": ...}`` per line (``file`` relative to ``videos_dir``), or a folder holding
  ``<relative name>.txt`` per video; empty: the sidecar ``name.txt`` beside ``name.mp4``. An index entry wins over a
  sidecar. A video without any caption is kept with the empty prompt (counted in the log);
- probing: the container's frame count (mp4, mov) or, where the container does not store it (webm, mkv), the count
  of the stream's packets (demuxed, not decoded), and the size of the first decoded frame;
- skipped, never fatal: ``unreadable: ...`` (FFmpeg cannot open or decode it), ``not a video: ...`` (a text file,
  no video stream), ``too short: 9 frames, a clip needs 61 (16 frames at stride 4)`` (``(frames - 1) * max_stride +
  1`` frames are needed) and ``missing: ...`` (listed in the captions index, absent from the folder). One log line
  counts them per reason.

``VideoIndex.save``/``VideoIndex.load`` keep an index as JSON: a run that reloads its saved index keeps the same
list of videos even if the folder changed, which exact resume needs.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import pathlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from ..errors import AtomoError

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mov", ".mkv", ".gif")


class DatasetError(AtomoError):
    """The training data cannot be used as configured (bad captions file, nothing usable, unreadable run)."""


class VideoSkipped(Exception):
    """A video that cannot be used; ``str(error)`` is the reason shown in the log."""


@dataclass(frozen=True)
class VideoEntry:
    """One usable video: ``path`` as found under the folder, its caption, frame count and frame size in pixels."""

    path: str
    caption: str
    num_frames: int
    width: int
    height: int


@dataclass
class VideoIndex:
    """The usable videos of a folder (``entries``, in index order) and the skipped files with their reasons."""

    root: str
    entries: list[VideoEntry] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    frames: int = 16
    stride: tuple[int, int] = (4, 4)

    def __len__(self) -> int:
        return len(self.entries)

    def skip_counts(self) -> dict[str, int]:
        """``{"unreadable": 1, "too short": 2, ...}``: skipped files per reason (the text before the first colon)."""
        return dict(Counter(reason.split(":", 1)[0] for _, reason in self.skipped))

    def summary(self) -> str:
        """One line: how many videos were found, kept and skipped (per reason), and how many have no caption."""
        found = len(self.entries) + sum(1 for _, reason in self.skipped if not reason.startswith("missing"))
        counts = ", ".join(f"{name} {count}" for name, count in sorted(self.skip_counts().items()))
        line = f"{found} videos in {self.root}: {len(self.entries)} usable, {len(self.skipped)} skipped"
        line += f" ({counts})" if counts else ""
        uncaptioned = sum(1 for entry in self.entries if not entry.caption)
        return line + (f"; {uncaptioned} without a caption (trained with the empty prompt)" if uncaptioned else "")

    def save(self, path: str | os.PathLike) -> None:
        """Write the index as JSON (atomically: a temporary file renamed over ``path``)."""
        data = {"root": self.root, "frames": self.frames, "stride": list(self.stride),
                "entries": [asdict(entry) for entry in self.entries], "skipped": [list(s) for s in self.skipped]}
        tmp = pathlib.Path(f"{path}.tmp")
        tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> VideoIndex:
        data = json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
        return cls(root=data["root"], entries=[VideoEntry(**entry) for entry in data["entries"]],
                   skipped=[tuple(s) for s in data["skipped"]], frames=data["frames"], stride=tuple(data["stride"]))


def as_stride(stride: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    """``4 -> (4, 4)``; ``[2, 6] -> (2, 6)``, checked ``1 <= lo <= hi``."""
    lo, hi = (stride, stride) if isinstance(stride, int) else tuple(stride)
    if not 1 <= lo <= hi:
        raise DatasetError(f"stride must be an int >= 1 or (lo, hi) with 1 <= lo <= hi, got {stride!r}")
    return int(lo), int(hi)


def clip_span(frames: int, stride: int) -> int:
    """Frames of the source video a clip of ``frames`` frames at ``stride`` covers: ``(frames - 1) * stride + 1``."""
    return (frames - 1) * stride + 1


def _relative_key(name: str) -> str:
    """A captions-index file name as a key: POSIX separators, no leading ``./``."""
    return pathlib.PurePosixPath(name.replace("\\", "/")).as_posix().removeprefix("./")


def read_captions(captions: str | os.PathLike) -> dict[str, str]:
    """``{relative file: caption}`` from a ``.csv`` (header ``file,caption``) or a ``.jsonl`` captions index."""
    path = pathlib.Path(captions)
    if not path.is_file():
        raise DatasetError(f"The captions file {path} does not exist.")
    out: dict[str, str] = {}
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or not {"file", "caption"} <= set(reader.fieldnames):
                raise DatasetError(f"{path} needs a header row with the columns file,caption; found "
                                   f"{','.join(reader.fieldnames or [])!r}.")
            for row in reader:
                out[_relative_key(row["file"])] = (row["caption"] or "").strip()
        return out
    if path.suffix.lower() == ".jsonl":
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                out[_relative_key(row["file"])] = str(row["caption"]).strip()
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path} line {number} is not a JSON object with file and caption: "
                                   f"{exc.__class__.__name__}: {exc}") from None
        return out
    raise DatasetError(f"Captions must be a .csv (file,caption), a .jsonl or a folder of .txt files; got {path}.")


def _read_text(path: pathlib.Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace").strip() if path.is_file() else ""


def _looks_like_text(path: pathlib.Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(4096)
    if not head or b"\0" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def probe_video(path: str | os.PathLike) -> tuple[int, int, int]:
    """``(num_frames, width, height)`` of a video; raises ``VideoSkipped`` with the reason when it is unusable."""
    import av

    path = pathlib.Path(path)
    try:  # any failure of FFmpeg on a user's file is a reason to skip it, whatever its exception class
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise VideoSkipped("not a video: it has no video stream")
            stream = container.streams.video[0]
            num_frames = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        with av.open(str(path)) as container:
            first = next(container.decode(video=0), None)
    except VideoSkipped:
        raise
    except Exception as exc:
        if _looks_like_text(path):
            raise VideoSkipped("not a video: it is a text file") from None
        raise VideoSkipped(f"unreadable: {exc.__class__.__name__}: {exc}") from None
    if first is None:
        raise VideoSkipped("unreadable: no frame could be decoded")
    return int(num_frames), int(first.width), int(first.height)


def _check(path: pathlib.Path, frames: int, max_stride: int) -> tuple[int, int, int] | str:
    """The probe's result, or the reason to skip the video."""
    try:
        num_frames, width, height = probe_video(path)
    except VideoSkipped as skip:
        return str(skip)
    need = clip_span(frames, max_stride)
    if num_frames < need:
        return f"too short: {num_frames} frames, a clip needs {need} ({frames} frames at stride {max_stride})"
    return num_frames, width, height


def scan_videos(videos_dir: pathlib.Path, extensions=VIDEO_EXTENSIONS, recursive: bool = True) -> list[pathlib.Path]:
    """Video files under ``videos_dir`` sorted by relative POSIX path (hidden files and folders left out)."""
    pattern = videos_dir.rglob("*") if recursive else videos_dir.glob("*")
    suffixes = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in extensions}
    found = [p for p in pattern if p.is_file() and p.suffix.lower() in suffixes
             and not any(part.startswith(".") for part in p.relative_to(videos_dir).parts)]
    return sorted(found, key=lambda p: p.relative_to(videos_dir).as_posix())


def build_index(videos_dir: str | os.PathLike, captions: str | os.PathLike | None = None, frames: int = 16,
                stride: int | tuple[int, int] = (4, 4), extensions=VIDEO_EXTENSIONS, recursive: bool = True,
                workers: int = 8) -> VideoIndex:
    """Scan ``videos_dir`` and keep the videos long enough for ``frames`` frames at the largest ``stride``.

    ``workers`` threads probe files in parallel (FFmpeg releases the GIL); the result does not depend on it.
    """
    root = pathlib.Path(videos_dir)
    if not root.is_dir():
        raise DatasetError(f"The videos folder {root} does not exist.")
    if frames < 1:
        raise DatasetError(f"frames must be at least 1, got {frames}")
    stride = as_stride(stride)
    caption_dir = pathlib.Path(captions) if captions and pathlib.Path(captions).is_dir() else None
    listed = read_captions(captions) if captions and caption_dir is None else {}
    paths = scan_videos(root, extensions, recursive)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda p: _check(p, frames, stride[1]), paths))
    index = VideoIndex(root=str(root), frames=frames, stride=stride)
    for path, result in zip(paths, results, strict=True):
        if isinstance(result, str):
            index.skipped.append((str(path), result))
            continue
        key = path.relative_to(root).as_posix()
        if key in listed:
            caption = listed[key]
        elif caption_dir is not None:
            caption = _read_text(caption_dir / pathlib.PurePosixPath(key).with_suffix(".txt"))
        else:
            caption = _read_text(path.with_suffix(".txt"))
        index.entries.append(VideoEntry(str(path), caption, *result))
    present = {p.relative_to(root).as_posix() for p in paths}
    source = pathlib.Path(captions).name if listed else ""
    index.skipped += [(str(root / key), f"missing: listed in {source} but not in the folder")
                      for key in sorted(listed) if key not in present]
    logger.info("Training data: %s", index.summary())
    return index
