"""Evaluate generated videos with the weight-free metrics and write one CSV row per video.

    python tools/evaluate_videos.py VIDEO_OR_DIR... [--references DIR] [--size 256] --out results.csv [--plots DIR]

A video is an .mp4/.webm/.mov/.mkv/.avi file (read with PyAV), a .gif or animated .webp (Pillow), or a folder of
frames (.png/.jpg/.jpeg/.webp, in name order). A folder that holds video files or frame folders is searched for
them (not recursively); its .webp files count as animated videos there.
The reference image of ``name.mp4`` (or of a frame folder ``name/``) is ``name.png``/``.jpg``/``.jpeg``/``.webp``
in ``--references``; without one the fidelity columns are empty. Columns: ``atomo_core.metrics.COLUMNS`` (see
``atomo_core/metrics/report.py`` for the definitions); PSNR of an identical first frame is written ``inf``.
Files that cannot be read are reported and skipped.
"""

from __future__ import annotations

import argparse
import csv
import math
import pathlib
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from atomo_core.metrics import COLUMNS, DEFAULT_SIZE, evaluate_video, plot_metrics  # noqa: E402

AV_VIDEOS = (".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v")
PILLOW_VIDEOS = (".gif", ".webp")
FRAME_IMAGES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
REFERENCE_IMAGES = (".png", ".jpg", ".jpeg", ".webp")


class UnreadableVideo(Exception):
    """A file or folder that is not a video we can read (the message says why)."""


def read_av(path: pathlib.Path) -> np.ndarray:
    import av

    try:
        with av.open(str(path)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise UnreadableVideo(f"not a video PyAV can decode ({exc.__class__.__name__}: {exc})") from None
    if not frames:
        raise UnreadableVideo("it has no video frames")
    return np.stack(frames)


def read_pillow(path: pathlib.Path) -> np.ndarray:
    from PIL import Image, ImageSequence, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            frames = [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise UnreadableVideo(f"not an image Pillow can read ({exc})") from None
    return np.stack(frames)


def read_folder(path: pathlib.Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in FRAME_IMAGES)
    if not files:
        raise UnreadableVideo("the folder holds no frame images")
    try:
        frames = [np.asarray(Image.open(p).convert("RGB")) for p in files]
    except (UnidentifiedImageError, OSError) as exc:
        raise UnreadableVideo(f"a frame cannot be read ({exc})") from None
    if len({f.shape for f in frames}) > 1:
        raise UnreadableVideo("its frames do not all have the same size")
    return np.stack(frames)


def read_video(path: pathlib.Path) -> np.ndarray:
    """``[F, H, W, 3]`` uint8 frames of a video file or a frame folder; ``UnreadableVideo`` otherwise."""
    if path.is_dir():
        return read_folder(path)
    suffix = path.suffix.lower()
    if suffix in AV_VIDEOS:
        return read_av(path)
    if suffix in PILLOW_VIDEOS:
        return read_pillow(path)
    raise UnreadableVideo(f"'{suffix}' is not a video type this tool reads ({', '.join(AV_VIDEOS + PILLOW_VIDEOS)})")


def _is_frame_folder(path: pathlib.Path) -> bool:
    return path.is_dir() and any(q.suffix.lower() in FRAME_IMAGES for q in path.iterdir())


def find_videos(inputs: list[str]) -> list[pathlib.Path]:
    """Video files and frame folders named on the command line. A folder that holds video files (or frame
    folders) is a collection: its videos, animated .webp included, and frame folders; otherwise it is itself a
    folder of frames."""
    found = []
    for raw in inputs:
        path = pathlib.Path(raw)
        if not path.is_dir():
            found.append(path)
            continue
        entries = sorted(path.iterdir())
        collection = any(p.suffix.lower() in AV_VIDEOS + (".gif",) or _is_frame_folder(p) for p in entries)
        if collection:
            found += [p for p in entries if p.suffix.lower() in AV_VIDEOS + PILLOW_VIDEOS or _is_frame_folder(p)]
        else:
            found.append(path)
    return found


def find_reference(video: pathlib.Path, references: pathlib.Path | None) -> pathlib.Path | None:
    if references is None:
        return None
    stem = video.name if video.is_dir() else video.stem
    for suffix in REFERENCE_IMAGES:
        candidate = references / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return "inf" if value == math.inf else f"{value:.6g}"
    return str(value)


def progress(items, enabled: bool):
    try:
        from tqdm import tqdm
    except ImportError:  # a plain counter on stderr
        for i, item in enumerate(items, 1):
            if enabled:
                print(f"[{i}/{len(items)}] {item}", file=sys.stderr, flush=True)
            yield item
        return
    yield from tqdm(items, desc="videos", unit="video", disable=not enabled)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("videos", nargs="+", help="video files, frame folders, or folders of videos")
    p.add_argument("--references", type=pathlib.Path, help="folder of reference images (name.png for name.mp4)")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE, help="working size: short side in pixels (256)")
    p.add_argument("--out", type=pathlib.Path, required=True, help="the CSV file to write")
    p.add_argument("--plots", type=pathlib.Path, help="also write one metrics plot (PNG) per video here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from PIL import Image

    videos = find_videos(args.videos)
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
    rows, skipped = [], []
    for path in progress(videos, not args.quiet):
        try:
            frames = read_video(path)
            reference_path = find_reference(path, args.references)
            reference = np.asarray(Image.open(reference_path).convert("RGB")) if reference_path else None
            metrics = evaluate_video(frames, reference=reference, size=args.size)
        except (UnreadableVideo, ValueError, OSError) as exc:
            skipped.append((path, str(exc)))
            print(f"skipped {path}: {exc}", file=sys.stderr)
            continue
        rows.append(metrics.row(path.name))
        if args.plots:
            Image.fromarray(plot_metrics(metrics)).save(args.plots / f"{path.name}.png")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow([cell(row[c]) for c in COLUMNS])
    print(f"{len(rows)} video(s) evaluated, {len(skipped)} skipped; wrote {args.out}", file=sys.stderr)
    return 0 if rows or not videos else 1


if __name__ == "__main__":
    sys.exit(main())
