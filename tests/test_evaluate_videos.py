"""tools/evaluate_videos.py on generated videos (mp4, webm, gif, animated webp, frame folders) and broken files."""

from __future__ import annotations

import csv
import math
import pathlib
import sys

import numpy as np
import pytest
import torch
from PIL import Image

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import evaluate_videos  # noqa: E402

from atomo_core.metrics import COLUMNS  # noqa: E402

FRAMES, H, W = 8, 64, 96


def _texture(seed: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 12, 40, generator=gen)
    big = torch.nn.functional.interpolate(coarse, size=(H, W + 4 * FRAMES), mode="bicubic").clamp(0, 1)
    return (big[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def _frames(seed: int = 0, step: int = 2) -> np.ndarray:
    big = _texture(seed)
    return np.stack([big[:, step * i : step * i + W] for i in range(FRAMES)])


def _write_av(path: pathlib.Path, frames: np.ndarray, codec: str) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for array in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")))
        container.mux(stream.encode(None))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    clips, refs = root / "clips", root / "refs"
    clips.mkdir()
    refs.mkdir()
    frames = _frames(0)
    _write_av(clips / "pan.mp4", frames, "libx264")
    _write_av(clips / "pan_vp9.webm", frames, "libvpx-vp9")
    images = [Image.fromarray(a) for a in frames]
    images[0].save(clips / "pan_lossless.webp", save_all=True, append_images=images[1:], lossless=True, duration=125)
    images[0].save(clips / "pan.gif", save_all=True, append_images=images[1:], duration=125)
    folder = clips / "still"
    folder.mkdir()
    for i in range(4):
        Image.fromarray(frames[0]).save(folder / f"{i:04d}.png")
    (clips / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 100)
    (clips / "notes.webp").write_text("not an image")
    for name in ("pan", "pan_lossless", "still"):
        Image.fromarray(frames[0]).save(refs / f"{name}.png")
    return clips, refs


def test_evaluates_every_readable_video_and_skips_the_rest(videos, tmp_path, capsys):
    clips, refs = videos
    out = tmp_path / "results.csv"
    assert evaluate_videos.main([str(clips), "--references", str(refs), "--out", str(out), "--plots",
                                 str(tmp_path / "plots"), "--quiet"]) == 0
    with open(out) as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = {row[0]: dict(zip(header, row, strict=True)) for row in reader}
    assert tuple(header) == COLUMNS
    assert sorted(rows) == ["pan.gif", "pan.mp4", "pan_lossless.webp", "pan_vp9.webm", "still"]
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.mp4" in err and "notes.webp" in err and "5 video(s) evaluated, 2 skipped" in err
    lossless, still, mp4 = rows["pan_lossless.webp"], rows["still"], rows["pan.mp4"]
    assert lossless["first_frame_psnr"] == "inf" and float(lossless["first_frame_ssim"]) == pytest.approx(1.0)
    assert (lossless["frames"], lossless["width"], lossless["height"]) == (str(FRAMES), str(W), str(H))
    assert still["frames"] == "4" and float(still["flicker"]) == 1.0 and float(still["motion_mean_flow"]) < 1e-3
    # mp4 is lossy (H.264, 4:2:0 chroma on a colourful 64x96 texture: 26 dB seen): a finite PSNR, still near the
    # reference; the pan of 2 px per frame at 64 px tall is 8 px per frame at the 256-pixel working size.
    assert 20 < float(mp4["first_frame_psnr"]) < math.inf
    assert float(mp4["motion_mean_flow"]) == pytest.approx(8.0, rel=0.1)
    assert rows["pan_vp9.webm"]["first_frame_ssim"] == ""  # no pan_vp9.png among the references: empty
    assert float(rows["pan.gif"]["first_frame_ssim"]) > 0.8  # pan.png serves pan.gif too (a 256-colour palette)
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(f"{n}.png" for n in rows)


def test_an_unreadable_input_alone_is_an_error_exit_not_a_crash(videos, tmp_path):
    clips, _ = videos
    out = tmp_path / "none.csv"
    assert evaluate_videos.main([str(clips / "broken.mp4"), "--out", str(out), "--quiet"]) == 1
    assert out.read_text().strip() == ",".join(COLUMNS)
