"""Seconds per sampling step and peak memory: bare SD-1.5 vs SD-1.5 + a motion module, through ComfyUI.

Configurations (each in its own subprocess, so every peak-memory figure belongs to one configuration):

- ``bare``: a random real-size SD-1.5 UNet built with ComfyUI's own model classes;
- ``animatediff_v2``: the same UNet + random weights in AnimateDiff v2's layout (21 temporal attentions),
  attached with ``nodes.host_adapter.attach_motion_module``;
- ``atomovideo``: the same UNet + an AtomoVideo module (temporal attention, temporal convolutions and the
  9-channel ``conv_in``) with random non-zero weights.

Each configuration runs real ComfyUI sampling (``comfy.sample.sample``, ``euler`` sampler, CFG > 1 so cond
and uncond share one UNet call) on a latent batch of ``--frames`` frames, and reports the median seconds per
step after ``--warmup`` steps, peak memory (CUDA: ``max_memory_allocated``; CPU: peak RSS), the FLOPs of a
step (counted on fake tensors, also at other sizes with ``--flops-at``), and the ratios to ``bare``.
See benchmarks/README.md.

    python benchmarks/bench_motion_module.py --comfyui /path/to/ComfyUI --out results.json   # GPU, 512x512
    python benchmarks/bench_motion_module.py --device cpu --width 64 --height 64 --steps 3 --warmup 1 --threads 1
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

import _host  # benchmarks/ is on sys.path when a script here runs

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = ("bare", "animatediff_v2", "atomovideo")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MIB = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _host.add_common_args(p, DTYPES)
    _host.add_step_timing_args(p)
    p.add_argument("--cfg", type=float, default=7.5, help="CFG scale (> 1: cond and uncond are evaluated)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--module-dtype", choices=("same", *sorted(DTYPES)), default="same",
                   help="the motion-module file's dtype (same: the UNet's --dtype), e.g. fp16 on an fp32 CPU UNet")
    p.add_argument("--storage", choices=("default", "smaller", "compute", "file"), default="default",
                   help="how the host keeps the module's weights: converted once to the UNet's compute dtype, in the "
                        "file's dtype and cast per call, or the smaller of the two (default: the host adapter's "
                        "DEFAULT_STORAGE)")
    p.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    _host.check_step_timing_args(p, args, CONFIGS)
    if args.width % 8 or args.height % 8:
        p.error("--width and --height must be multiples of 8")
    if args.cfg <= 1.0:
        p.error("--cfg must be > 1 so that the uncond pass runs (ComfyUI skips it at cfg 1)")
    return args


# ----------------------------------------------------------------------------------------------- worker
def run_worker(args: argparse.Namespace) -> dict:
    import torch
    from _models import build_motion_module, build_sd15, nbytes

    device, dtype = _host.start_worker(args, DTYPES)
    import comfy.model_management as mm
    import comfy.patcher_extension
    import comfy.sample

    t0 = time.perf_counter()
    model = build_sd15(dtype, args.seed)
    unet_bytes = nbytes(model.model.diffusion_model.parameters())
    unet_params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    module_bytes = module_params = 0
    storage = None
    if args.worker != "bare":
        host = _host.ours("nodes.host_adapter")
        storage = host.DEFAULT_STORAGE if args.storage == "default" else args.storage
        file_dtype = dtype if args.module_dtype == "same" else getattr(torch, DTYPES[args.module_dtype])
        module = build_motion_module(args.worker, file_dtype, args.frames, args.seed + 1)
        model = host.attach_motion_module(model, module, apply_sampling=True, storage=storage)
        del module  # what a loaded file leaves: only the host's copy (or the file's tensors it shares)
        module = model.get_attachment("atomo_video").module
        module_bytes = nbytes(module.parameters()) + nbytes(module.extra_tensors().values())
        module_params = sum(p.numel() for p in module.parameters())
    build_s = time.perf_counter() - t0

    probe = _host.UNetProbe(args.flop_sizes)
    model = model.clone()
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "atomo_bench_probe", probe)

    gen = torch.Generator().manual_seed(args.seed)
    latent_shape = (args.frames, 4, args.height // 8, args.width // 8)
    positive = [[torch.randn(1, 77, 768, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 768, generator=gen), {}]]
    latent = torch.zeros(latent_shape)
    noise = torch.randn(latent_shape, generator=gen)
    total = args.warmup + args.steps

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    stamps: list[float] = []
    cpu_stamps: list[float] = []  # this process's CPU time (all threads): steadier than wall time on a busy CPU

    def callback(step, x0, x, total_steps):
        sync()
        stamps.append(time.perf_counter())
        cpu_stamps.append(time.process_time())

    memory = _host.PeakMemory(device)
    memory.start()
    t_start = time.perf_counter()
    samples = comfy.sample.sample(
        model, noise, total, args.cfg, "euler", "simple", positive, negative, latent,
        callback=callback, disable_pbar=True, seed=args.seed,
    )
    sync()
    t_end = time.perf_counter()
    peak = memory.stop()
    if device == "cuda":
        peak["vram_state"] = mm.vram_state.name
    sampled_calls = list(probe.calls)  # before the FLOP-count step adds one
    if not args.no_flops:  # one more step, its UNet call(s) also counted: figures the machine's load cannot move
        with probe.counting():
            comfy.sample.sample(model, noise, 1, args.cfg, "euler", "simple", positive, negative, latent,
                                disable_pbar=True, seed=args.seed)
    result = {
        "config": args.worker,
        **_host.step_figures(stamps, cpu_stamps, args.warmup, probe.flops, f"{args.width}x{args.height}"),
        "first_step_incl_load_s": stamps[0] - t_start,
        "sampling_total_s": t_end - t_start,
        "build_s": build_s,
        "unet_calls": len(sampled_calls),
        "unet_calls_per_step": len(sampled_calls) / total,
        "unet_batch": max(b for b, _ in sampled_calls),
        "cond_uncond_batched": all(c == 2 for _, c in sampled_calls),
        "output_finite": bool(torch.isfinite(samples).all()),
        "unet_params": unet_params,
        "unet_bytes": unet_bytes,
        "module_params": module_params,
        "module_bytes": module_bytes,
        **_host.environment(device, args.dtype),
        "manual_cast_dtype": str(model.model.manual_cast_dtype).replace("torch.", "") if model.model.manual_cast_dtype else None,
        "module_file_dtype": None if args.worker == "bare" else (args.module_dtype if args.module_dtype != "same" else args.dtype),
        "module_storage": storage,
        "latent_shape": list(latent_shape),
        "image_size": [args.width, args.height],
        "frames": args.frames,
        "cfg": args.cfg,
        "sampler": "euler",
        "scheduler": "simple",
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        **peak,
    }
    return result


# ------------------------------------------------------------------------------------------------ driver
def _forward_args(args: argparse.Namespace) -> list[str]:
    return [*_host.common_forward_args(args), "--cfg", str(args.cfg), "--module-dtype", args.module_dtype,
            "--storage", args.storage]


def _peak(result: dict) -> int | None:
    # peak_rss_sampling_bytes: the name in results written before the workers shared _host.PeakMemory
    return (result.get("peak_allocated_bytes") or result.get("peak_rss_bytes") or result.get("peak_rss_sampling_bytes")
            or result.get("peak_rss_process_bytes"))


def table(results: dict) -> str:
    """A Markdown table of the results with ratios against ``bare``: median and fastest timed step (wall
    clock), and on the CPU also the process's CPU time per step."""
    bare = results.get("bare", {})
    gpu = any(r.get("device") == "cuda" for r in results.values())
    nan = float("nan")

    def ratio(r, key):
        return r[key] / bare[key] if key in bare else nan

    def peak(r):
        return _peak(r) / MIB if _peak(r) else nan

    def added(r):
        return f"{(_peak(r) - _peak(bare)) / MIB:+.0f}" if _peak(r) and _peak(bare) else "-"

    columns = [
        ("s/step (median)", lambda r: f"{r['sec_per_step']:.3f}"),
        ("x bare", lambda r: f"{ratio(r, 'sec_per_step'):.2f}"),
        ("s/step (fastest)", lambda r: f"{r['min_sec_per_step']:.3f}"),
        ("x bare", lambda r: f"{ratio(r, 'min_sec_per_step'):.2f}"),
    ]
    if not gpu:
        columns += [("CPU s/step (median)", lambda r: f"{r['cpu_sec_per_step']:.2f}"),
                    ("x bare", lambda r: f"{ratio(r, 'cpu_sec_per_step'):.2f}")]
    if all(r.get("gflops_per_step") for r in results.values() if "error" not in r):
        columns += [("GFLOP/step", lambda r: f"{r['gflops_per_step']:.0f}"),
                    ("x bare", lambda r: f"{ratio(r, 'gflops_per_step'):.2f}")]
    columns += [
        ("peak GPU memory allocated (MiB)" if gpu else "peak RSS while sampling (MiB)", lambda r: f"{peak(r):.0f}"),
        ("+ vs bare (MiB)", added),
        ("module weights (MiB)", lambda r: f"{r['module_bytes'] / MIB:.0f}"),
    ]
    return _host.markdown_table("configuration", columns, results)


def flops_table(results: dict) -> str:
    """GFLOP per sampling step (one CFG step: cond + uncond) at every counted image size, and x bare."""
    done = {name: r for name, r in results.items() if r.get("gflops_per_step_at")}
    sizes = list(next(iter(done.values()))["gflops_per_step_at"]) if done else []
    bare = done.get("bare", {}).get("gflops_per_step_at", {})
    rows = ["| configuration | " + " | ".join(f"GFLOP/step at {s} | x bare" for s in sizes) + " |",
            "|---" * (2 * len(sizes) + 1) + "|"]
    for name, r in done.items():
        at = r["gflops_per_step_at"]
        cells = [("- | -" if s not in at else f"{at[s]:.0f} | {at[s] / bare[s]:.3f}" if s in bare else f"{at[s]:.0f} | -")
                 for s in sizes]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _run_config(args: argparse.Namespace, config: str, rep: int) -> dict:
    """One configuration in a fresh Python process; its result dict, or ``{"error": ...}``."""
    r = _host.run_worker_process(__file__, _forward_args(args), config, f"{config} (run {rep + 1}/{args.repeat})")
    if "error" in r:
        return r
    print(f"[bench] {config}: {r['sec_per_step']:.3f} s/step (steps {[round(t, 3) for t in r['step_times_s']]}; "
          f"CPU time {[round(t, 2) for t in r['cpu_step_times_s']]}), "
          f"UNet batch {r['unet_batch']}, cond/uncond batched: {r['cond_uncond_batched']}", flush=True)
    if not r["cond_uncond_batched"]:
        print(f"[bench] warning: ComfyUI ran cond and uncond as separate UNet calls in some steps of {config} "
              "(too little free memory, as it judged); those steps cost more than a batched one.", flush=True)
    return r


def _aggregate(runs: list[dict]) -> dict:
    """Pool the runs of one configuration: median over all timed steps, the largest peak memory."""
    out = _host.pool_runs(runs)
    out["output_finite"] = all(r["output_finite"] for r in runs)
    out["cond_uncond_batched"] = all(r["cond_uncond_batched"] for r in runs)
    out["runs_cond_uncond_batched"] = [r["cond_uncond_batched"] for r in runs]
    out["unet_calls"] = sum(r["unet_calls"] for r in runs)
    out["unet_calls_per_step"] = out["unet_calls"] / sum(r["warmup_steps"] + r["timed_steps"] for r in runs)
    return out


def main(argv=None) -> int:
    return _host.worker_or_driver(parse_args(argv), run_worker, drive)


def drive(args: argparse.Namespace) -> int:
    """Run the workers, pool and print their results, write the JSON."""
    runs: dict[str, list[dict]] = {config: [] for config in args.configs}
    errors: dict[str, str] = {}
    for rep in range(args.repeat):
        for config in args.configs:
            if config in errors:
                continue
            result = _run_config(args, config, rep)
            if "error" in result:
                errors[config] = result["error"]
            else:
                runs[config].append(result)
    results = {c: {"config": c, "error": errors[c]} if c in errors else _aggregate(runs[c]) for c in args.configs}
    bare = results.get("bare", {})
    for r in results.values():
        if "sec_per_step" in r and "sec_per_step" in bare:
            r["step_time_ratio_vs_bare"] = r["sec_per_step"] / bare["sec_per_step"]
            r["fastest_step_ratio_vs_bare"] = r["min_sec_per_step"] / bare["min_sec_per_step"]
            r["cpu_time_ratio_vs_bare"] = r["cpu_sec_per_step"] / bare["cpu_sec_per_step"]
            if r.get("gflops_per_step") and bare.get("gflops_per_step"):
                r["flops_ratio_vs_bare"] = r["gflops_per_step"] / bare["gflops_per_step"]
                r["flops_ratio_vs_bare_at"] = {size: n / bare["gflops_per_step_at"][size]
                                               for size, n in r["gflops_per_step_at"].items()
                                               if size in bare["gflops_per_step_at"]}
            if _peak(r) and _peak(bare):
                r["peak_memory_ratio_vs_bare"] = _peak(r) / _peak(bare)
    first = next((r for r in results.values() if "error" not in r), {})
    meta = {k: first.get(k) for k in ("device", "device_name", "torch", "torch_threads", "comfyui", "dtype",
                                       "manual_cast_dtype", "attention", "latent_shape", "image_size", "frames",
                                       "cfg", "sampler", "scheduler", "warmup_steps", "timed_steps")}
    meta["repeat"] = args.repeat
    meta["python"] = platform.python_version()
    pathlib.Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\n{meta['device_name']}, torch {meta['torch']}, {meta['dtype']}, latent {meta['latent_shape']}, "
          f"cfg {args.cfg}, {args.steps} timed steps after {args.warmup}, x{args.repeat}\n")
    print(table(results))
    if len(args.flop_sizes) > 1:
        print("\n" + flops_table(results))
    print(f"\nwrote {args.out}")
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
