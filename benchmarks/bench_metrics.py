"""How long the weight-free video metrics take: one 16-frame 512x512 video with its reference image.

    python benchmarks/bench_metrics.py [--frames 16] [--width 512 --height 512] [--size 256] [--repeat 5] \
        [--threads 0] [--out benchmarks/results/metrics_cpu.json]

No ComfyUI needed (``atomo_core.metrics`` is pure torch/numpy/OpenCV). The video is a smooth random texture
panned by 3 pixels per frame, so the optical flow has real work to do (``evaluate_video`` computes 2 x (F - 1) + F/2
DIS flows). Reports the median and fastest wall time of ``evaluate_video`` over ``--repeat`` runs after one warm-up
run. Target (issue): under 5 s on a 2-core CPU at the default working size.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_video(frames: int, height: int, width: int, step: int = 3, seed: int = 0):
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 8 + 2, (width + step * frames) // 8 + 2, generator=gen)
    big = F.interpolate(coarse, size=(height, width + step * frames), mode="bicubic").clamp(0, 1)[0].permute(1, 2, 0)
    return torch.stack([big[:, step * i : step * i + width] for i in range(frames)])


def measure(args) -> dict:
    import cv2
    import torch

    from atomo_core import metrics

    if args.threads:
        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)
    video = synthetic_video(args.frames, args.height, args.width)
    reference = video[0].clone()
    metrics.evaluate_video(video, reference=reference, size=args.size)  # warm-up (OpenCV and torch kernels)
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = metrics.evaluate_video(video, reference=reference, size=args.size)
        times.append(time.perf_counter() - start)
    return {
        "benchmark": "metrics",
        "seconds_median": statistics.median(times),
        "seconds_fastest": min(times),
        "seconds_all": times,
        "frames": args.frames, "width": args.width, "height": args.height, "working_size": args.size,
        "target_seconds": 5.0,
        "meets_target": statistics.median(times) < 5.0,
        "motion_mean_flow": result.summary["motion_mean_flow"],
        "device": "cpu",
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "opencv": cv2.__version__, "opencv_threads": cv2.getNumThreads(),
        "python": platform.python_version(),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--width", type=int, default=512)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--size", type=int, default=256, help="working size (short side)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch and OpenCV threads (0: their defaults)")
    p.add_argument("--out", default="metrics.json")
    args = p.parse_args(argv)
    result = measure(args)
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"| video | working size | s (median of {args.repeat}) | s (fastest) | target |\n|---|---|---|---|---|\n"
          f"| {args.frames} x {args.width}x{args.height} | {args.size} | {result['seconds_median']:.2f} | "
          f"{result['seconds_fastest']:.2f} | < 5 s: {'met' if result['meets_target'] else 'NOT met'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
