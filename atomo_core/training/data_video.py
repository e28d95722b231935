"""Training clips: which frames of a video make a clip, decoding them with PyAV, and the clip dataset.

A clip is ``frames`` frames ``start, start + stride, ..., start + (frames - 1) * stride`` of one video, resized so
its short side is ``resolution`` (swscale's area filter: antialiased when shrinking) and centre-cropped to
``resolution x resolution`` (or ``(height, width)``), as ``pixels [F, 3, H, W]`` float32 in -1..1, what a VAE
encoder takes.

Determinism: the clip of entry ``i`` in epoch ``e`` is a pure function of ``(seed, e, i)`` and the entry's frame count
(a hash, no global random state): the stride uniform in ``lo..hi`` (capped at what the video holds), the start
uniform over the positions where the clip fits. So workers, ranks and a resumed run all cut the same clip. With
``fixed_clips`` the epoch is left out (one clip per video, what latent caching needs).

Decoding: from the start of the file when the clip starts early, else a seek to the keyframe before ``start``
and a forward decode, frame numbers counted from the first decoded frame's timestamp (exact for constant frame
rate; if the seek lands after ``start`` or runs out of frames, the file is decoded again from the beginning).

Read failures: a video that fails now (corrupt in the middle, shorter than its container said, deleted) does not
stop training. ``__getitem__(i)`` then takes the next entries in index order, ``i + 1, i + 2, ...``, each with its own
deterministic clip, up to ``max_fallbacks`` tries, and raises ``DatasetError`` only if all fail. Every failure is
counted in ``read_failures`` (this process) and listed in the sample's ``"failed"`` (so failures inside DataLoader
workers reach the train loop through the batch), and logged once per file and process.
"""

from __future__ import annotations

import hashlib
import logging

import numpy as np
import torch
from einops import rearrange

from .data_index import DatasetError, VideoIndex, as_stride, clip_span

logger = logging.getLogger(__name__)

SEEK_MIN_START = 32  # clips starting earlier are decoded from the beginning of the file


class ReadFailure(Exception):
    """A clip could not be read from a video that passed the index."""


def draw(*keys) -> int:
    """A 64-bit integer that depends only on ``keys`` (BLAKE2b of their text): stable across runs and versions."""
    text = "|".join(str(k) for k in keys).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def choose_clip(seed: int, epoch: int, index: int, num_frames: int, frames: int,
                stride: tuple[int, int]) -> tuple[int, int] | None:
    """``(start, stride)`` of entry ``index``'s clip in ``epoch``; ``None`` when no stride in range fits the video."""
    lo, hi = stride
    if frames > 1:
        hi = min(hi, (num_frames - 1) // (frames - 1))
    if hi < lo or num_frames < 1:
        return None
    step = lo + draw(seed, "stride", epoch, index) % (hi - lo + 1)
    start = draw(seed, "start", epoch, index) % (num_frames - clip_span(frames, step) + 1)
    return start, step


def as_size(resolution: int | tuple[int, int]) -> tuple[int, int]:
    """``512 -> (512, 512)``; ``(h, w)`` as is."""
    height, width = (resolution, resolution) if isinstance(resolution, int) else tuple(resolution)
    if height < 1 or width < 1:
        raise DatasetError(f"resolution must be positive, got {resolution!r}")
    return int(height), int(width)


def fit_frame(frame, height: int, width: int) -> np.ndarray:
    """An ``av.VideoFrame`` -> ``[height, width, 3]`` uint8 RGB: short side scaled to cover, centre crop."""
    scale = max(width / frame.width, height / frame.height)
    new_w, new_h = max(width, round(frame.width * scale)), max(height, round(frame.height * scale))
    rgb = frame.reformat(width=new_w, height=new_h, format="rgb24", interpolation="AREA").to_ndarray()
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return rgb[top : top + height, left : left + width]


def _decode(container, wanted: list[int], height: int, width: int, seek: bool) -> list[np.ndarray] | None:
    """Frames ``wanted`` (sorted frame numbers) fitted to the size; ``None`` when the seek cannot be trusted."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    number = -1
    if seek:
        rate, base, origin = stream.average_rate, stream.time_base, stream.start_time or 0
        if not rate or not base:
            return None
        container.seek(origin + int(wanted[0] / rate / base), stream=stream, backward=True, any_frame=False)
    out, last, todo = [], wanted[-1], set(wanted)
    for frame in container.decode(stream):
        if number < 0 and seek:
            if frame.pts is None:
                return None
            number = round((frame.pts - origin) * base * rate)
            if number > wanted[0]:
                return None
        else:
            number += 1
        if number in todo:
            out.append(fit_frame(frame, height, width))
        if number >= last:
            break
    return out if len(out) == len(wanted) else None


def read_clip(path: str, start: int, stride: int, frames: int, size: tuple[int, int]) -> np.ndarray:
    """``[frames, H, W, 3]`` uint8: frames ``start + k * stride`` of the video at ``path``; raises ``ReadFailure``."""
    import av

    wanted = [start + k * stride for k in range(frames)]
    tries = (True, False) if start >= SEEK_MIN_START else (False,)
    try:  # any exception of FFmpeg on a user's file is a read failure, whatever its class
        for seek in tries:
            with av.open(path) as container:
                out = _decode(container, wanted, *size, seek=seek)
            if out is not None:
                return np.stack(out)
    except Exception as exc:
        raise ReadFailure(f"{exc.__class__.__name__}: {exc}") from None
    raise ReadFailure(f"fewer frames than the clip needs (frame {wanted[-1]} of a clip from {start} at stride "
                      f"{stride})")


def to_pixels(clip: np.ndarray) -> torch.Tensor:
    """``[F, H, W, 3]`` uint8 -> ``[F, 3, H, W]`` float32 in -1..1."""
    return rearrange(torch.from_numpy(clip).float() / 127.5 - 1.0, "f h w c -> f c h w").contiguous()


class VideoClipDataset(torch.utils.data.Dataset):
    """Map-style dataset of clips from a ``VideoIndex`` (see the module docstring).

    ``dataset[i]`` uses the epoch of ``set_epoch``; ``dataset[(i, epoch, position)]`` (a ``SampleKey`` from
    ``ResumableSampler.infinite()``) uses the key's epoch, so clips stay right inside persistent DataLoader workers,
    whose copies of the dataset never see ``set_epoch``. A sample is a dict: ``pixels [F, 3, H, W]`` float32 in
    -1..1, ``caption``, ``path``, ``start``, ``stride``, ``index`` (the entry read), ``epoch``, ``position`` (-1 for
    a plain index) and ``failed`` (``"path: reason"`` of entries that failed before this one).
    """

    def __init__(self, index: VideoIndex, frames: int = 16, resolution: int | tuple[int, int] = 512,
                 stride: int | tuple[int, int] = (4, 4), seed: int = 0, fixed_clips: bool = False,
                 max_fallbacks: int = 16):
        if not len(index):
            raise DatasetError(f"No usable videos: {index.summary()}")
        if frames < 1:
            raise DatasetError(f"frames must be at least 1, got {frames}")
        self.entries = list(index.entries)
        self.frames, self.size, self.stride = frames, as_size(resolution), as_stride(stride)
        self.seed, self.fixed_clips, self.max_fallbacks = seed, fixed_clips, max(1, max_fallbacks)
        self.epoch = 0
        self.read_failures = 0
        self.failures: list[tuple[str, str]] = []
        self._logged: set[str] = set()

    def __len__(self) -> int:
        return len(self.entries)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def clip(self, index: int, epoch: int | None = None) -> tuple[int, int] | None:
        """``(start, stride)`` of entry ``index`` in ``epoch`` (default: the current one), without decoding."""
        epoch = 0 if self.fixed_clips else (self.epoch if epoch is None else epoch)
        return choose_clip(self.seed, epoch, index, self.entries[index].num_frames, self.frames, self.stride)

    def _fail(self, path: str, reason: str, failed: list[str]) -> None:
        self.read_failures += 1
        self.failures.append((path, reason))
        failed.append(f"{path}: {reason}")
        if path not in self._logged:
            self._logged.add(path)
            logger.warning("Cannot read a clip of %s (%s); using the next video instead", path, reason)

    def __getitem__(self, key) -> dict:
        index, epoch, position = (key, self.epoch, -1) if isinstance(key, int | np.integer) else tuple(key)
        failed: list[str] = []
        for k in range(min(self.max_fallbacks, len(self))):
            j = (int(index) + k) % len(self)
            entry, clip = self.entries[j], self.clip(j, epoch)
            if clip is None:
                self._fail(entry.path, f"too short: {entry.num_frames} frames for {self.frames} frames at stride "
                                       f"{self.stride[0]} or more", failed)
                continue
            try:
                pixels = to_pixels(read_clip(entry.path, *clip, self.frames, self.size))
            except ReadFailure as exc:
                self._fail(entry.path, str(exc), failed)
                continue
            return {"pixels": pixels, "caption": entry.caption, "path": entry.path, "start": clip[0],
                    "stride": clip[1], "index": j, "epoch": int(epoch), "position": int(position), "failed": failed}
        raise DatasetError(f"{len(failed)} videos in a row could not be read, from entry {index}: "
                           + "; ".join(failed[:3]))
