"""Seconds per training step and peak memory of the trainer, with and without gradient checkpointing.

    python benchmarks/bench_train.py --device cuda --resolution 512 --frames 16 --out benchmarks/results/train_gpu.json
    python benchmarks/bench_train.py --device cpu --resolution 64 --frames 16 --steps 2 --out benchmarks/results/train_cpu.json

No ComfyUI needed. Each configuration runs in its own process (its peak is its own): full-size SD-1.5 with random
weights (``base_model: random-sd15``; the costs do not depend on the values), a fresh AtomoVideo module (temporal
attention, temporal convolutions, image channels), batch 1, the paper's objective, on synthetic clips of
``--resolution``. Reports the median of the timed steps after one warm-up step, peak memory (CUDA
``max_memory_allocated``; CPU peak RSS over the timed steps) beside ``tools/train.py --estimate``'s figure for the
same settings (``atomo_core.training.estimate``), the trainable and frozen parameter counts. The GPU
target (issue): 16 x 512^2 at batch 1 fits in 24 GB with checkpointing.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))


def _videos(root: pathlib.Path, resolution: int, frames: int) -> None:
    import av
    import numpy as np

    root.mkdir(parents=True, exist_ok=True)
    size = resolution + resolution % 2
    with av.open(str(root / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames * 2):
            a = np.full((size, size, 3), 60, np.uint8)
            x = (2 * i) % (size // 2)
            a[size // 4 : size // 2, x : x + size // 4] = (200, 100, 80)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")))
        container.mux(stream.encode(None))
    (root / "clip.txt").write_text("a square moves right")


def worker(args) -> dict:
    import torch
    from _host import PeakMemory

    from atomo_core.training.config import load_config
    from atomo_core.training.distributed import setup
    from atomo_core.training.setup import build_run
    from atomo_core.training.trainer import train_step

    if args.threads:
        torch.set_num_threads(args.threads)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="atomo_train_bench_"))
    _videos(tmp / "videos", args.resolution, args.frames)
    sets = [f"base_model={args.base}", f"output_dir={tmp / 'out'}", f"data.videos={tmp / 'videos'}",
            f"frames={args.frames}", f"resolution={args.resolution}", "batch_size=1", "data.workers=0",
            "data.stride=1", f"precision={args.precision}", f"gradient_checkpointing={args.checkpointing}",
            f"max_frames={max(32, args.frames)}", "steps=1000"]
    config = load_config(None, sets)
    from atomo_core.training.estimate import estimate

    predicted = estimate(config, "cuda" if args.device == "cuda" else "cpu").as_dict()  # before anything is built
    world = setup()
    run = build_run(config, world)
    batches = iter(run.loader)
    train_step(run, batches)  # warm-up (allocator, kernels)
    memory = PeakMemory("cuda" if world.device.type == "cuda" else "cpu")
    memory.start()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        figures = train_step(run, batches)
        if world.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {
        "gradient_checkpointing": args.checkpointing == "true", "sec_per_step": statistics.median(times),
        "step_times_s": times, "loss": figures["loss"], **memory.stop(),
        "trainable_params": sum(p.numel() for p in run.model.trainable_parameters()),
        "frozen_params": sum(p.numel() for p in run.base.unet.parameters() if not p.requires_grad),
        "device": str(world.device), "device_name": torch.cuda.get_device_name() if world.device.type == "cuda"
        else "cpu", "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "resolution": args.resolution, "frames": args.frames, "precision": args.precision, "base": args.base,
        "estimate": predicted,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    p.add_argument("--precision", default=None, help="fp32 | fp16 | bf16 (default: bf16 on a GPU, fp32 on a CPU)")
    p.add_argument("--base", default="random-sd15", help="random-sd15 (default) or tiny")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--checkpointing", choices=("true", "false", "both"), default="both")
    p.add_argument("--out", default="train.json")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    if args.worker:
        pathlib.Path(args.worker_out).write_text(json.dumps(worker(args)))
        return 0
    results = {}
    for choice in (("true", "false") if args.checkpointing == "both" else (args.checkpointing,)):
        with tempfile.TemporaryDirectory() as tmp:
            out = pathlib.Path(tmp) / "r.json"
            forward = ["--device", args.device, "--resolution", str(args.resolution), "--frames", str(args.frames),
                       "--steps", str(args.steps), "--precision", args.precision, "--base", args.base,
                       "--threads", str(args.threads), "--checkpointing", choice]
            cmd = [sys.executable, __file__, *forward, "--worker", "--worker-out", str(out)]
            proc = subprocess.run(cmd, check=False)
            results[f"checkpointing={choice}"] = json.loads(out.read_text()) if proc.returncode == 0 else {
                "error": f"exit status {proc.returncode}"}
    pathlib.Path(args.out).write_text(json.dumps(results, indent=2))
    print("| gradient checkpointing | s/step | peak memory (MiB) | estimate (MiB) | trainable params (M) |\n"
          "|---|---|---|---|---|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | {r['error']} | | | |")
            continue
        peak = (r.get("peak_allocated_bytes") or r.get("peak_rss_bytes") or 0) / 2**20
        print(f"| {r['gradient_checkpointing']} | {r['sec_per_step']:.2f} | {peak:.0f} | "
              f"{r['estimate']['peak_bytes'] / 2**20:.0f} | {r['trainable_params'] / 1e6:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
