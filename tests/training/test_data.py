"""The trainer's data pipeline on real files: index and skips, captions, clips, crop, determinism, failures, sampler.

Videos are written with PyAV (lossless H.264 and VP9) and Pillow (GIF). Frame ``n`` of a test video is a flat grey
of level ``4 n``, so a clip's frames say which source frames they are: ``round(mean level / 4)``.
"""

from __future__ import annotations

import csv
import json
import pathlib
import time

import av
import numpy as np
import pytest
import torch
from PIL import Image

from atomo_core.training import data_video
from atomo_core.training.data import (
    DatasetError,
    LatentCache,
    ResumableSampler,
    SampleKey,
    VideoClipDataset,
    VideoEntry,
    VideoIndex,
    build_index,
    choose_clip,
    make_loader,
    permutation,
    read_clip,
)

FRAMES, STRIDE, SIZE = 8, (1, 3), 32  # a clip needs (8 - 1) * 3 + 1 = 22 frames


def grey(n: int, width: int = SIZE, height: int = SIZE) -> np.ndarray:
    return np.full((height, width, 3), 4 * n, np.uint8)


def write_video(path: pathlib.Path, frames: list[np.ndarray], codec: str = "libx264", pix_fmt: str = "yuv420p",
                options: dict | None = None) -> pathlib.Path:
    """Encode ``frames`` (``[H, W, 3]`` uint8) losslessly at 24 fps."""
    options = options or ({"lossless": "1"} if codec == "libvpx-vp9" else {"crf": "0", "g": "8"})
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=24)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt, stream.options = pix_fmt, options
        for image in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def write_gif(path: pathlib.Path, count: int) -> pathlib.Path:
    images = [Image.fromarray(grey(n)) for n in range(count)]
    images[0].save(path, save_all=True, append_images=images[1:], duration=40, loop=0)
    return path


def write_audio(path: pathlib.Path) -> pathlib.Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        for n in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts = 8000, 800 * n
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def frame_numbers(pixels: torch.Tensor) -> list[int]:
    """``[F, 3, H, W]`` in -1..1 -> the source frame number of each frame."""
    levels = ((pixels + 1) * 127.5).mean(dim=(1, 2, 3))
    assert ((pixels + 1) * 127.5 - levels[:, None, None, None]).abs().max() < 2.5  # flat frames
    return [round(level / 4) for level in levels.tolist()]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("videos")
    write_video(root / "a_long.mp4", [grey(n) for n in range(64)])
    (root / "a_long.txt").write_text("a sidecar caption\n", encoding="utf-8")
    write_video(root / "b_clip.webm", [grey(n) for n in range(30)], codec="libvpx-vp9")
    write_gif(root / "c_anim.gif", 25)
    (root / "sub").mkdir()
    write_video(root / "sub" / "d_deep.mkv", [grey(n) for n in range(40)])
    (root / "e_corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    (root / "f_notes.mov").write_text("this is not a video\n" * 20, encoding="utf-8")
    write_video(root / "g_short.mp4", [grey(n) for n in range(9)])
    write_audio(root / "h_sound.mkv")
    (root / "readme.md").write_text("not a video extension: never looked at", encoding="utf-8")
    with (root / "captions.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerows([["file", "caption"], ["b_clip.webm", "waves, from the csv"], ["sub/d_deep.mkv", "deep"],
                          ["gone.mp4", "listed but absent"]])
    rows = [{"file": "c_anim.gif", "caption": "a gif, from jsonl"}, {"file": "./sub/d_deep.mkv", "caption": "deep 2"}]
    (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def index(folder) -> VideoIndex:
    return build_index(folder, folder / "captions.csv", FRAMES, STRIDE)


def test_index_keeps_usable_videos_and_counts_skips(index, folder, caplog):
    names = [pathlib.Path(e.path).relative_to(folder).as_posix() for e in index.entries]
    assert names == ["a_long.mp4", "b_clip.webm", "c_anim.gif", "sub/d_deep.mkv"]
    assert [(e.num_frames, e.width, e.height) for e in index.entries] == [(64, 32, 32), (30, 32, 32), (25, 32, 32),
                                                                          (40, 32, 32)]
    reasons = {pathlib.Path(p).name: r for p, r in index.skipped}
    assert set(reasons) == {"e_corrupt.mp4", "f_notes.mov", "g_short.mp4", "h_sound.mkv", "gone.mp4"}
    assert reasons["e_corrupt.mp4"].startswith("unreadable: InvalidDataError")
    assert reasons["f_notes.mov"] == "not a video: it is a text file"
    assert reasons["h_sound.mkv"] == "not a video: it has no video stream"
    assert reasons["g_short.mp4"] == "too short: 9 frames, a clip needs 22 (8 frames at stride 3)"
    assert reasons["gone.mp4"] == "missing: listed in captions.csv but not in the folder"
    assert index.skip_counts() == {"unreadable": 1, "not a video": 2, "too short": 1, "missing": 1}
    with caplog.at_level("INFO", logger="atomo_core.training.data_index"):
        build_index(folder, frames=FRAMES, stride=STRIDE)
    assert ("8 videos in" in caplog.text and "4 usable, 4 skipped (not a video 2, too short 1, unreadable 1); "
            "3 without a caption" in caplog.text)


def test_captions_from_sidecar_csv_jsonl_and_folder(index, folder, tmp_path):
    assert [e.caption for e in index.entries] == ["a sidecar caption", "waves, from the csv", "", "deep"]
    jsonl = build_index(folder, folder / "captions.jsonl", FRAMES, STRIDE, recursive=True)
    assert [e.caption for e in jsonl.entries] == ["a sidecar caption", "", "a gif, from jsonl", "deep 2"]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d_deep.txt").write_text("from a captions folder", encoding="utf-8")
    flat = build_index(folder, tmp_path, FRAMES, STRIDE, recursive=False)
    assert [pathlib.Path(e.path).name for e in flat.entries] == ["a_long.mp4", "b_clip.webm", "c_anim.gif"]
    assert build_index(folder, tmp_path, FRAMES, STRIDE).entries[3].caption == "from a captions folder"
    bad = tmp_path / "bad.csv"
    bad.write_text("video,text\nx.mp4,y\n", encoding="utf-8")
    with pytest.raises(DatasetError, match="file,caption"):
        build_index(folder, bad, FRAMES, STRIDE)


def test_index_round_trips_through_json(index, tmp_path):
    index.save(tmp_path / "index.json")
    again = VideoIndex.load(tmp_path / "index.json")
    assert again.entries == index.entries and again.skipped == index.skipped and again.stride == index.stride


@pytest.mark.parametrize("entry", [0, 1, 2, 3])
def test_clip_has_the_chosen_frames_at_its_stride(index, entry):
    dataset = VideoClipDataset(index, FRAMES, SIZE, STRIDE, seed=7)
    for epoch in range(3):
        dataset.set_epoch(epoch)
        sample = dataset[entry]
        assert sample["pixels"].shape == (FRAMES, 3, SIZE, SIZE) and sample["pixels"].dtype == torch.float32
        assert sample["pixels"].min() >= -1 and sample["pixels"].max() <= 1
        start, stride = sample["start"], sample["stride"]
        assert (start, stride) == choose_clip(7, epoch, entry, index.entries[entry].num_frames, FRAMES, STRIDE)
        assert 1 <= stride <= 3 and start + 7 * stride < index.entries[entry].num_frames
        assert frame_numbers(sample["pixels"]) == [start + k * stride for k in range(FRAMES)]
        assert sample["failed"] == [] and sample["index"] == entry and sample["path"] == index.entries[entry].path


@pytest.mark.parametrize("entry", [0, 1, 2, 3])  # mp4 (64 frames, a keyframe every 8), webm, gif, mkv
def test_seek_reads_the_same_frames_as_decoding_from_the_start(index, monkeypatch, entry):
    path, count = index.entries[entry].path, index.entries[entry].num_frames
    for start in range(1, count - 7, 4):
        stride = 2 if start + 7 * 2 < count else 1
        monkeypatch.setattr(data_video, "SEEK_MIN_START", 0)
        seek = read_clip(path, start, stride, FRAMES, (SIZE, SIZE))
        monkeypatch.setattr(data_video, "SEEK_MIN_START", 10**9)
        plain = read_clip(path, start, stride, FRAMES, (SIZE, SIZE))
        assert np.array_equal(seek, plain)
        with av.open(path) as container:  # the seek itself was trusted, not undone by the fall-back
            wanted = [start + k * stride for k in range(FRAMES)]
            assert data_video._decode(container, wanted, SIZE, SIZE, seek=True) is not None
        assert frame_numbers(data_video.to_pixels(seek)) == [start + k * stride for k in range(FRAMES)]


def test_resize_short_side_then_centre_crop(tmp_path):
    thirds = np.zeros((48, 144, 3), np.uint8)
    thirds[:, :48], thirds[:, 48:96], thirds[:, 96:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    path = str(write_video(tmp_path / "wide.mp4", [thirds] * 3, pix_fmt="yuv444p"))
    square = read_clip(path, 0, 1, 3, (24, 24)).astype(float)  # 144x48 -> 72x24, columns 24..48 kept: the middle
    assert square.shape == (3, 24, 24, 3)
    assert np.abs(square[:, :, 1:-1] - (0, 255, 0)).max() < 3
    wide = read_clip(path, 0, 1, 1, (16, 32))[0].astype(float)  # 144x48 -> 48x16, columns 8..40: 8 / 16 / 8
    assert np.abs(wide[:, :7] - (255, 0, 0)).max() < 3
    assert np.abs(wide[:, 9:23] - (0, 255, 0)).max() < 3
    assert np.abs(wide[:, 25:] - (0, 0, 255)).max() < 3
    stripes = np.zeros((64, 64, 3), np.uint8)
    stripes[:, ::2] = 255
    path = str(write_video(tmp_path / "stripes.mp4", [stripes] * 2, pix_fmt="yuv444p"))
    small = read_clip(path, 0, 1, 2, (16, 16)).astype(float)  # antialiased: 1-pixel stripes average to grey
    assert np.abs(small - 127.5).max() < 12


def test_clips_are_a_function_of_seed_epoch_and_index(index):
    dataset = VideoClipDataset(index, FRAMES, SIZE, STRIDE, seed=3)
    first = dataset[(2, 5, 0)]
    again = VideoClipDataset(index, FRAMES, SIZE, STRIDE, seed=3)[(2, 5, 11)]
    assert (first["start"], first["stride"]) == (again["start"], again["stride"])
    assert torch.equal(first["pixels"], again["pixels"])
    by_epoch = {dataset.clip(i, epoch) for i in range(4) for epoch in range(6)}
    assert len(by_epoch) > 12  # other epochs, other clips
    assert [dataset.clip(i, 0) for i in range(4)] != [VideoClipDataset(index, FRAMES, SIZE, STRIDE, 4).clip(i, 0)
                                                     for i in range(4)]
    fixed = VideoClipDataset(index, FRAMES, SIZE, STRIDE, seed=3, fixed_clips=True)
    assert {fixed.clip(1, epoch) for epoch in range(5)} == {dataset.clip(1, 0)}
    clips = [choose_clip(0, 0, i, 30, FRAMES, STRIDE) for i in range(400)]
    assert {s for _, s in clips} == {1, 2, 3}
    assert min(a for a, _ in clips) == 0 and max(a + 7 * s for a, s in clips) == 29
    assert choose_clip(0, 0, 0, 30, FRAMES, (5, 6)) is None  # a 30-frame video holds no 8 frames at stride 5


def test_read_failure_falls_back_to_the_next_video_and_is_counted(index, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(pathlib.Path(index.entries[0].path).read_bytes()[:3000])  # its index is gone: unreadable
    entries = [VideoEntry(str(broken), "broken", 64, 32, 32),
               VideoEntry(index.entries[3].path, "claims 60 frames, has 40", 60, 32, 32),
               *index.entries[1:3]]
    dataset = VideoClipDataset(VideoIndex(str(tmp_path), entries), FRAMES, SIZE, STRIDE, seed=1)
    late = next(i for i in range(100) if dataset.clip(1, i)[0] + 7 * dataset.clip(1, i)[1] >= 40)
    sample = dataset[(0, late, 0)]
    assert sample["index"] == 2 and sample["caption"] == "waves, from the csv"
    assert frame_numbers(sample["pixels"]) == [sample["start"] + k * sample["stride"] for k in range(FRAMES)]
    assert [f.split(": ", 1)[0] for f in sample["failed"]] == [str(broken), index.entries[3].path]
    assert "fewer frames than the clip needs" in sample["failed"][1]
    assert dataset.read_failures == 2 and len(dataset.failures) == 2
    assert dataset[(0, late, 0)]["start"] == sample["start"] and dataset.read_failures == 4
    dead = VideoClipDataset(VideoIndex(str(tmp_path), entries[:1] * 3), FRAMES, SIZE, STRIDE)
    with pytest.raises(DatasetError, match="3 videos in a row could not be read"):
        dead[0]


def test_sampler_shards_are_disjoint_and_cover_the_epoch():
    for drop_last, per_rank in ((True, 3), (False, 4)):
        shards = [ResumableSampler(10, seed=5, rank=r, world_size=3, drop_last=drop_last).shard(2) for r in range(3)]
        assert [len(s) for s in shards] == [per_rank] * 3
        together = [i for s in shards for i in s]
        if drop_last:
            assert len(set(together)) == 9
        else:
            assert set(together) == set(range(10)) and len(together) == 12
    one = ResumableSampler(10, seed=5)
    assert sorted(one.shard(0)) == list(range(10)) and one.shard(0) != one.shard(1)
    assert one.shard(0) == ResumableSampler(10, seed=5).shard(0) != ResumableSampler(10, seed=6).shard(0)
    assert ResumableSampler(10, shuffle=False, rank=1, world_size=2).shard(0) == [1, 3, 5, 7, 9]
    assert list(one) == one.shard(0) and one.state_dict()["epoch"] == 1 and list(one) == one.shard(1)


@pytest.mark.parametrize("stop", [3, 7, 10, 17])
def test_sampler_resumes_exactly_across_epochs(stop):
    straight = ResumableSampler(7, seed=11, rank=1, world_size=2)  # 3 samples per epoch on each rank
    expected = [key for _, key in zip(range(stop + 8), straight.infinite(), strict=False)]
    assert [k.epoch for k in expected[:7]] == [0, 0, 0, 1, 1, 1, 2]
    first = ResumableSampler(7, seed=11, rank=1, world_size=2)
    done = [key for _, key in zip(range(stop), first.infinite(), strict=False)]
    resumed = ResumableSampler(7, seed=11, rank=1, world_size=2)
    resumed.load_state_dict(first.state_after(done[-1]))
    assert done + [key for _, key in zip(range(8), resumed.infinite(), strict=False)] == expected
    again = ResumableSampler(7, seed=11, rank=1, world_size=2)
    again.load_state_dict(first.state_dict())
    assert next(again.infinite()) == expected[stop]
    with pytest.raises(DatasetError, match="seed 11 but this run has 12.*output_dir"):
        ResumableSampler(7, seed=12, rank=1, world_size=2).load_state_dict(first.state_dict())
    with pytest.raises(DatasetError, match="number of usable videos 7 but this run has 8"):
        ResumableSampler(8, seed=11, rank=1, world_size=2).load_state_dict(first.state_dict())


def _consumed(samplers, steps):
    """What ``steps`` lock-step batches of one sample take from every rank's sampler, in global order."""
    streams = [s.infinite() for s in samplers]
    out = []
    for _ in range(steps):
        keys = [next(stream) for stream in streams]
        out += [(k.epoch, k.index) for k in keys]
    return out, keys


@pytest.mark.parametrize("before, after", [(2, 1), (1, 2), (4, 3), (3, 4)])
def test_a_resized_resume_continues_the_epoch_without_repeats_or_gaps(before, after):
    length, seed = 23, 5
    old = [ResumableSampler(length, seed, r, before) for r in range(before)]
    head, keys = _consumed(old, 3)  # 3 steps on `before` processes, then a save
    saved = old[0].state_after(keys[0])  # every rank saves the same global position (rank 0's is written)
    assert saved["global_position"] == 3 * before
    new = [ResumableSampler(length, seed, r, after) for r in range(after)]
    for sampler in new:
        sampler.load_state_dict(saved)
        assert sampler.resized
    steps_left = (length - 3 * before) // after
    tail, _ = _consumed(new, steps_left)
    epoch0 = [i for e, i in head + tail if e == 0]
    assert len(epoch0) == len(set(epoch0))  # no sample of the epoch twice
    order = permutation(length, seed, 0).tolist()
    assert epoch0 == order[: len(epoch0)]  # the global order, no gap
    assert length - len(epoch0) < after  # only drop_last's remainder is left out
    nxt, _ = _consumed(new, 2)  # the next epoch is whole again, on the new world
    assert [e for e, _ in nxt] == [1] * (2 * after)
    assert [i for _, i in nxt] == permutation(length, seed, 1).tolist()[: 2 * after]
    # and a same-size resume inside the resized epoch stays exact
    again = [ResumableSampler(length, seed, r, after) for r in range(after)]
    middle = ResumableSampler(length, seed, 0, after)
    middle.load_state_dict(saved)
    _, keys = _consumed([middle], 1)
    state = middle.state_after(keys[0])
    for sampler in again:
        sampler.load_state_dict(state)
    assert next(again[0].infinite()).index == tail[after][1]


def test_plain_iteration_resumes_inside_an_epoch():
    sampler = ResumableSampler(9, seed=2)
    iterator = iter(sampler)
    head = [next(iterator) for _ in range(4)]
    state = sampler.state_dict()
    assert (state["epoch"], state["position"]) == (0, 4)
    other = ResumableSampler(9, seed=2)
    other.load_state_dict(state)
    assert head + list(other) == sampler.shard(0)


def _batches(loader, count):
    return [batch for _, batch in zip(range(count), loader, strict=False)]


def test_loader_batches_do_not_depend_on_workers_and_resume(index):
    dataset = VideoClipDataset(index, 4, 16, (2, 4), seed=9)
    plain = _batches(make_loader(dataset, ResumableSampler(len(dataset), seed=9), 3, workers=0, seed=9), 4)
    assert plain[0]["pixels"].shape == (3, 4, 3, 16, 16) and len(plain[0]["caption"]) == 3
    for batch in plain:
        for i, epoch, start, stride in zip(*(batch[k].tolist() for k in ("index", "epoch", "start", "stride")),
                                           strict=True):
            assert (start, stride) == dataset.clip(i, epoch)
    assert plain[1]["epoch"].tolist() == [0, 1, 1] and plain[3]["epoch"].tolist() == [2, 2, 2]  # 4 per epoch
    # workers fork from a fresh server, not from this process (a forked worker once hung CI); a stuck one fails
    # here within 120 s
    # (a worker's start, torch's import included, takes a few seconds on this 2-core machine)
    pooled_loader = make_loader(dataset, ResumableSampler(len(dataset), seed=9), 3, workers=2, seed=9, timeout=120)
    assert pooled_loader.multiprocessing_context.get_start_method() == "forkserver"
    pooled = _batches(pooled_loader, 4)
    resumed_sampler = ResumableSampler(len(dataset), seed=9)
    resumed_sampler.load_state_dict(resumed_sampler.state_after(plain[1]))
    resumed = _batches(make_loader(dataset, resumed_sampler, 3, workers=2, seed=9, timeout=120), 2)
    for a, b in zip(plain, pooled, strict=True):
        assert torch.equal(a["pixels"], b["pixels"]) and a["path"] == b["path"] and a["caption"] == b["caption"]
        assert all(torch.equal(a[k], b[k]) for k in ("start", "stride", "index", "epoch", "position"))
    for a, b in zip(plain[2:], resumed, strict=True):
        assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["position"], b["position"])


class _StuckDataset(torch.utils.data.Dataset):
    """A dataset whose every read takes far longer than the test's worker timeout (a decoder stuck on a file)."""

    def __len__(self):
        return 4

    def __getitem__(self, i):
        time.sleep(30)
        return {"pixels": torch.zeros(1), "caption": "x", "path": "x"}


def test_a_stuck_worker_stops_the_run_with_an_error_naming_the_setting():
    from atomo_core.training.trainer import next_batch

    # what the trainer does with data.worker_timeout (setup passes it to make_loader; optimizer_step reads batches
    # through next_batch), at 2 s against a 30 s read
    batches = iter(make_loader(_StuckDataset(), ResumableSampler(4, seed=0), 1, workers=1, timeout=2))
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match=r"in 2 s \(data\.worker_timeout\).*raise data\.worker_timeout") as err:
        next_batch(batches, 2)
    assert time.perf_counter() - start < 25 and "DataLoader timed out" in str(err.value.__cause__)
    del batches
    with pytest.raises(RuntimeError, match="^something else$"):  # other errors pass through untouched
        next_batch(_raising(), 2)


def _raising():
    raise RuntimeError("something else")
    yield


def test_latent_cache_round_trip(tmp_path):
    cache = LatentCache(tmp_path / "cache", namespace="vae-a fp32")
    key = cache.key("/videos/a.mp4", 3, 2, 16, (512, 512))
    assert key == cache.key("/videos/a.mp4", 3, 2, 16, (512, 512)) != cache.key("/videos/a.mp4", 4, 2, 16, (512, 512))
    assert key != LatentCache(tmp_path / "cache", namespace="vae-b").key("/videos/a.mp4", 3, 2, 16, (512, 512))
    assert cache.load(key) is None
    latents = torch.linspace(-3, 3, 16 * 4 * 8 * 8).reshape(16, 4, 8, 8)
    cache.save(key, latents)
    assert torch.equal(cache.load(key), latents)
    assert not [p for p in (tmp_path / "cache").rglob("*.tmp")]
    next((tmp_path / "cache").rglob("*.safetensors")).write_bytes(b"truncated")
    assert cache.load(key) is None


def test_sample_keys_and_sampler_errors():
    assert SampleKey(1, 2, 3).epoch == 2
    with pytest.raises(DatasetError, match="cannot be shared"):
        ResumableSampler(2, world_size=4)
    with pytest.raises(DatasetError, match="rank"):
        ResumableSampler(8, rank=2, world_size=2)
