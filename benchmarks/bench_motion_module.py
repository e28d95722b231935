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
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
CONFIGS = ("bare", "animatediff_v2", "atomovideo")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MIB = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI source tree (default $COMFYUI_PATH)")
    p.add_argument("--width", type=int, default=512, help="image width in pixels (latent = width/8)")
    p.add_argument("--height", type=int, default=512, help="image height in pixels (latent = height/8)")
    p.add_argument("--frames", type=int, default=16, help="frames per clip (the latent batch)")
    p.add_argument("--steps", type=int, default=10, help="timed sampling steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    p.add_argument("--cfg", type=float, default=7.5, help="CFG scale (> 1: cond and uncond are evaluated)")
    p.add_argument("--dtype", choices=("auto", *sorted(DTYPES)), default="auto",
                   help="UNet weight dtype (auto: fp16 on a GPU, fp32 on the CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--flops-at", default="",
                   help="image sizes WxH (comma list) at which to count the FLOPs of one step besides --width x "
                        "--height; counted on fake tensors, so 512x512 costs nothing on a CPU")
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (one extra sampling step)")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the configuration list this many times, interleaved (for noisy shared machines)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results.json", help="where to write the JSON results")
    p.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    p.add_argument("--worker-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; known: {', '.join(CONFIGS)}")
    if args.warmup < 1 or args.steps < 1 or args.repeat < 1:
        p.error("--warmup, --steps and --repeat must be at least 1 (the first step also loads the model)")
    if args.width % 8 or args.height % 8:
        p.error("--width and --height must be multiples of 8")
    try:
        extra = [tuple(int(v) for v in size.lower().split("x")) for size in args.flops_at.split(",") if size.strip()]
    except ValueError:
        p.error(f"--flops-at takes sizes like 512x512, got {args.flops_at!r}")
    if any(len(size) != 2 or size[0] % 8 or size[1] % 8 for size in extra):
        p.error(f"--flops-at takes sizes like 512x512 (multiples of 8), got {args.flops_at!r}")
    args.flop_sizes = list(dict.fromkeys([(args.width, args.height), *extra]))
    if args.cfg <= 1.0:
        p.error("--cfg must be > 1 so that the uncond pass runs (ComfyUI skips it at cfg 1)")
    return args


# ----------------------------------------------------------------------------------------------- worker
def _rss_kib(field: str) -> int | None:
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux ``clear_refs`` 5)."""
    try:
        pathlib.Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _device_name(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} logical CPUs)"


def run_worker(args: argparse.Namespace) -> dict:
    import resource

    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    sys.path.insert(0, str(HERE))
    import _host
    from _models import build_motion_module, build_sd15, count_unet_flops, nbytes

    _host.boot(args.comfyui, cpu=device == "cpu")
    import comfy.ldm.modules.attention
    import comfy.model_management as mm
    import comfy.patcher_extension
    import comfy.sample

    if args.dtype == "auto":
        args.dtype = "fp16" if device == "cuda" else "fp32"
    dtype = getattr(torch, DTYPES[args.dtype])
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = build_sd15(dtype, args.seed)
    unet_bytes = nbytes(model.model.diffusion_model.parameters())
    unet_params = sum(p.numel() for p in model.model.diffusion_model.parameters())
    module_bytes = module_params = 0
    if args.worker != "bare":
        module = build_motion_module(args.worker, dtype, args.frames, args.seed + 1)
        model = _host.ours("nodes.host_adapter").attach_motion_module(model, module, apply_sampling=True)
        module_bytes = nbytes(module.parameters()) + nbytes(module.extra_tensors().values())
        module_params = sum(p.numel() for p in module.parameters())
    build_s = time.perf_counter() - t0

    calls: list[tuple[int, int]] = []  # (UNet batch, cond/uncond chunks) of every UNet call
    flops: dict[str, int] = {}  # "WxH" -> FLOPs of one step's UNet call(s), filled while count_flops is set
    count_flops = [False]
    flop_errors: dict[str, str] = {}

    def probe(executor, x, *a, **kw):
        options = a[4] if len(a) > 4 else kw.get("transformer_options", {})
        if count_flops[0]:
            for width, height in args.flop_sizes:
                key = f"{width}x{height}"
                try:
                    flops[key] = flops.get(key, 0) + count_unet_flops(executor, x, (height // 8, width // 8), a, kw)
                except Exception as exc:  # an attention kernel without a fake-tensor rule, say: no figure
                    print(f"[bench] could not count FLOPs at {key}: {exc!r}", flush=True)
                    flop_errors[key] = repr(exc)
        else:
            calls.append((int(x.shape[0]), len(options.get("cond_or_uncond") or [0])))
        return executor(x, *a, **kw)

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

    rss_before = _rss_kib("VmRSS")
    if device == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
    rss_reset = _reset_peak_rss()
    sync()
    t_start = time.perf_counter()
    samples = comfy.sample.sample(
        model, noise, total, args.cfg, "euler", "simple", positive, negative, latent,
        callback=callback, disable_pbar=True, seed=args.seed,
    )
    sync()
    t_end = time.perf_counter()
    # stamps[i] ends step i; step i >= 1 took stamps[i] - stamps[i-1]; time the steps after the warmup.
    step_times = [b - a for a, b in zip(stamps[args.warmup - 1:-1], stamps[args.warmup:], strict=True)]
    cpu_times = [b - a for a, b in zip(cpu_stamps[args.warmup - 1:-1], cpu_stamps[args.warmup:], strict=True)]
    memory = {}
    if device == "cuda":
        memory["peak_allocated_bytes"] = torch.cuda.max_memory_allocated()
        memory["peak_reserved_bytes"] = torch.cuda.max_memory_reserved()
        memory["vram_state"] = mm.vram_state.name
    else:
        hwm = _rss_kib("VmHWM")
        memory["rss_before_sampling_bytes"] = rss_before * 1024 if rss_before else None
        memory["peak_rss_sampling_bytes"] = hwm * 1024 if (hwm and rss_reset) else None
        memory["peak_rss_process_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sampled_calls = list(calls)  # before the FLOP-count step adds one
    if not args.no_flops:  # one more step, its UNet call(s) also counted: figures the machine's load cannot move
        count_flops[0] = True
        comfy.sample.sample(model, noise, 1, args.cfg, "euler", "simple", positive, negative, latent,
                            disable_pbar=True, seed=args.seed)
        count_flops[0] = False
        for key in flop_errors:
            flops.pop(key, None)
    result = {
        "config": args.worker,
        "gflops_per_step": flops[f"{args.width}x{args.height}"] / 1e9 if f"{args.width}x{args.height}" in flops else None,
        "gflops_per_step_at": {size: n / 1e9 for size, n in flops.items()},
        "sec_per_step": statistics.median(step_times),
        "min_sec_per_step": min(step_times),
        "step_times_s": step_times,
        "cpu_sec_per_step": statistics.median(cpu_times),
        "cpu_step_times_s": cpu_times,
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
        "device": device,
        "device_name": _device_name(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "comfyui": _comfyui_version(),
        "dtype": args.dtype,
        "manual_cast_dtype": str(model.model.manual_cast_dtype).replace("torch.", "") if model.model.manual_cast_dtype else None,
        "attention": comfy.ldm.modules.attention.optimized_attention.__name__,
        "latent_shape": list(latent_shape),
        "image_size": [args.width, args.height],
        "frames": args.frames,
        "cfg": args.cfg,
        "sampler": "euler",
        "scheduler": "simple",
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        **memory,
    }
    return result


def _comfyui_version() -> str | None:
    try:
        import comfyui_version

        return comfyui_version.__version__
    except ImportError:
        return None


# ------------------------------------------------------------------------------------------------ driver
def _forward_args(args: argparse.Namespace) -> list[str]:
    out = ["--width", str(args.width), "--height", str(args.height), "--frames", str(args.frames),
           "--steps", str(args.steps), "--warmup", str(args.warmup), "--cfg", str(args.cfg),
           "--dtype", args.dtype, "--device", args.device, "--seed", str(args.seed), "--threads", str(args.threads)]
    if args.no_flops:
        out.append("--no-flops")
    if args.flops_at:
        out += ["--flops-at", args.flops_at]
    if args.comfyui:
        out += ["--comfyui", args.comfyui]
    return out


def _peak(result: dict) -> int | None:
    return result.get("peak_allocated_bytes") or result.get("peak_rss_sampling_bytes") or result.get("peak_rss_process_bytes")


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
    rows = ["| configuration | " + " | ".join(h for h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, r in results.items():
        if "error" in r:
            rows.append(f"| {name} | failed: {r['error']} |" + " |" * (len(columns) - 1))
        else:
            rows.append(f"| {name} | " + " | ".join(cell(r) for _, cell in columns) + " |")
    return "\n".join(rows)


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
    with tempfile.TemporaryDirectory(prefix="atomo_bench_") as tmp:
        out = pathlib.Path(tmp) / "result.json"
        cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), *_forward_args(args),
               "--worker", config, "--worker-out", str(out)]
        print(f"[bench] {config} (run {rep + 1}/{args.repeat}): {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0 or not out.is_file():
            return {"error": f"worker exited with status {proc.returncode}"}
        r = json.loads(out.read_text())
    print(f"[bench] {config}: {r['sec_per_step']:.3f} s/step (steps {[round(t, 3) for t in r['step_times_s']]}; "
          f"CPU time {[round(t, 2) for t in r['cpu_step_times_s']]}), "
          f"UNet batch {r['unet_batch']}, cond/uncond batched: {r['cond_uncond_batched']}", flush=True)
    if not r["cond_uncond_batched"]:
        print(f"[bench] warning: ComfyUI ran cond and uncond as separate UNet calls in some steps of {config} "
              "(too little free memory, as it judged); those steps cost more than a batched one.", flush=True)
    return r


def _aggregate(runs: list[dict]) -> dict:
    """Pool the runs of one configuration: median over all timed steps, the largest peak memory."""
    out = dict(runs[0])
    out["step_times_s"] = [t for r in runs for t in r["step_times_s"]]
    out["sec_per_step"] = statistics.median(out["step_times_s"])
    out["min_sec_per_step"] = min(out["step_times_s"])
    out["cpu_step_times_s"] = [t for r in runs for t in r["cpu_step_times_s"]]
    out["cpu_sec_per_step"] = statistics.median(out["cpu_step_times_s"])
    out["runs_sec_per_step"] = [r["sec_per_step"] for r in runs]
    for key in ("peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_sampling_bytes", "peak_rss_process_bytes"):
        values = [r[key] for r in runs if r.get(key)]
        if values:
            out[key] = max(values)
    out["output_finite"] = all(r["output_finite"] for r in runs)
    out["cond_uncond_batched"] = all(r["cond_uncond_batched"] for r in runs)
    out["runs_cond_uncond_batched"] = [r["cond_uncond_batched"] for r in runs]
    out["unet_calls"] = sum(r["unet_calls"] for r in runs)
    out["unet_calls_per_step"] = out["unet_calls"] / sum(r["warmup_steps"] + r["timed_steps"] for r in runs)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        result = run_worker(args)
        pathlib.Path(args.worker_out).write_text(json.dumps(result, indent=2))
        return 0
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
