"""Boot ComfyUI as a library for a benchmark and load this repository as its custom node pack.

Through the headless runner's ``boot`` (``tools/run_workflow.py``: ComfyUI's own ``load_custom_node`` on a link
named ``ComfyUI-AtomoVideo``), on the device the benchmark chooses. Also the
device, memory and worker helpers the benchmarks share (``resolve_device``, ``device_name``, ``PeakMemory``,
``UNetProbe``, ``step_durations``, ``parse_flop_sizes``, ``run_worker_process``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
_STATE: dict = {}


def comfyui_root(raw: str | None) -> pathlib.Path:
    if not raw:
        raise SystemExit("Set --comfyui or COMFYUI_PATH to a ComfyUI source tree (0.3.64 or newer).")
    path = pathlib.Path(raw).expanduser().resolve()
    if not (path / "comfy" / "model_patcher.py").is_file():
        raise SystemExit(f"{path} is not a ComfyUI source tree (no comfy/model_patcher.py).")
    return path


def boot(comfyui: str | None, cpu: bool):
    """Import ComfyUI once (on the CPU when ``cpu``) and load the pack, as the headless runner does
    (``tools/run_workflow.boot``); return the pack's package module."""
    if "pack" in _STATE:
        return _STATE["pack"]
    root = comfyui_root(comfyui)
    if str(REPO / "tools") not in sys.path:
        sys.path.insert(0, str(REPO / "tools"))
    import run_workflow

    nodes = run_workflow.boot(str(root), cpu=cpu)
    # ComfyUI names a pack folder's module after its path (dots escaped); the runner loaded ours from a link to REPO.
    path = next(d for d in nodes.LOADED_MODULE_DIRS.values() if os.path.realpath(d) == str(REPO))
    _STATE["pack"] = sys.modules[path.replace(".", "_x_")]
    return _STATE["pack"]


def ours(name: str):
    """One of our modules as ComfyUI loaded it, e.g. ``ours("nodes.host_adapter")``."""
    return importlib.import_module(f"{_STATE['pack'].__name__}.{name}")


# ----------------------------------------------------------------------------- device and memory measurement
def resolve_device(choice: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; refuse ``cuda`` without one."""
    import torch

    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    return choice


def device_name(device: str) -> str:
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


def comfyui_version() -> str | None:
    try:
        import comfyui_version

        return comfyui_version.__version__
    except ImportError:
        return None


def rss_kib(field: str) -> int | None:
    """A field of ``/proc/self/status`` in KiB (``VmRSS``: now, ``VmHWM``: the high-water mark)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


class PeakMemory:
    """Peak memory over a stretch of code: ``start()``, the code, ``stop()`` -> a dict of bytes.

    CUDA: ``torch.cuda.max_memory_allocated`` (and reserved). CPU: the process's RSS high-water mark, reset by
    ``start()`` through ``/proc/self/clear_refs`` (Linux); ``rss_before_bytes`` is the RSS at ``start()``, so
    ``peak - before`` is what the code added on top of what was resident (weights, mostly). With ``trim`` a CPU
    ``start()`` first collects garbage and hands freed heap memory back to the OS (glibc ``malloc_trim``), so that
    memory freed earlier and reused by the code counts as the code's (a steadier ``peak - before``).
    """

    def __init__(self, device: str, trim: bool = False):
        self.device = device
        self.trim = trim
        self.before = None
        self.reset_ok = False

    def start(self) -> None:
        import torch

        if self.trim and self.device != "cuda":
            import ctypes
            import ctypes.util
            import gc

            gc.collect()
            try:
                ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
            except (OSError, AttributeError):  # not glibc
                pass
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before = torch.cuda.memory_allocated()
            return
        self.before = rss_kib("VmRSS")
        self.before = self.before * 1024 if self.before else None
        try:
            pathlib.Path("/proc/self/clear_refs").write_text("5")
            self.reset_ok = True
        except OSError:
            self.reset_ok = False

    def stop(self) -> dict:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            return {"allocated_before_bytes": self.before, "peak_allocated_bytes": torch.cuda.max_memory_allocated(),
                    "peak_reserved_bytes": torch.cuda.max_memory_reserved()}
        import resource

        hwm = rss_kib("VmHWM")
        return {"rss_before_bytes": self.before,
                "peak_rss_bytes": hwm * 1024 if (hwm and self.reset_ok) else None,
                "peak_rss_process_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}


# ------------------------------------------------------------------------------- shared pieces of the workers
class UNetProbe:
    """A ``DIFFUSION_MODEL`` wrapper that records each UNet call and, inside ``counting()``, its FLOPs.

    ``calls``: ``(UNet batch, condition chunks)`` of every call made while not counting. Inside ``with
    probe.counting():`` each call is also run on fake tensors under torch's FLOP counter at every ``(width,
    height)`` of ``flop_sizes`` and added to ``flops["WxH"]``; a size whose count failed (an attention kernel
    without a fake-tensor rule, say) is dropped and its error kept in ``flop_errors``.
    """

    def __init__(self, flop_sizes):
        self.flop_sizes = list(flop_sizes)
        self.calls: list[tuple[int, int]] = []
        self.flops: dict[str, int] = {}
        self.flop_errors: dict[str, str] = {}
        self._counting = False

    def __call__(self, executor, x, *args, **kwargs):
        if self._counting:
            from _models import count_unet_flops

            for width, height in self.flop_sizes:
                key = f"{width}x{height}"
                try:
                    self.flops[key] = self.flops.get(key, 0) + count_unet_flops(
                        executor, x, (height // 8, width // 8), args, kwargs)
                except Exception as exc:  # no figure for this size, and say why
                    print(f"[bench] could not count FLOPs at {key}: {exc!r}", flush=True)
                    self.flop_errors[key] = repr(exc)
        else:
            options = args[4] if len(args) > 4 else kwargs.get("transformer_options", {})
            self.calls.append((int(x.shape[0]), len(options.get("cond_or_uncond") or [0])))
        return executor(x, *args, **kwargs)

    def reset(self) -> None:
        self.calls.clear()
        self.flops.clear()
        self.flop_errors.clear()

    @contextlib.contextmanager
    def counting(self):
        self._counting = True
        try:
            yield self
        finally:
            self._counting = False
            for key in self.flop_errors:
                self.flops.pop(key, None)


def step_durations(stamps: list[float], warmup: int) -> list[float]:
    """Durations of the steps after ``warmup`` from the stamps taken at the end of every step."""
    return [b - a for a, b in zip(stamps[warmup - 1:-1], stamps[warmup:], strict=True)]


def parse_flop_sizes(parser, args) -> None:
    """``args.flop_sizes``: ``(width, height)`` of the run, then those of ``--flops-at`` (e.g. ``512x512,256x256``)."""
    try:
        extra = [tuple(int(v) for v in size.lower().split("x")) for size in args.flops_at.split(",") if size.strip()]
    except ValueError:
        parser.error(f"--flops-at takes sizes like 512x512, got {args.flops_at!r}")
    if any(len(size) != 2 or size[0] % 8 or size[1] % 8 for size in extra):
        parser.error(f"--flops-at takes sizes like 512x512 (multiples of 8), got {args.flops_at!r}")
    args.flop_sizes = list(dict.fromkeys([(args.width, args.height), *extra]))


def run_worker_process(script: str, argv: list[str], worker: str, label: str) -> dict:
    """Run ``script argv --worker <worker>`` in a fresh Python process; its JSON result, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="atomo_bench_") as tmp:
        out = pathlib.Path(tmp) / "result.json"
        cmd = [sys.executable, str(pathlib.Path(script).resolve()), *argv, "--worker", worker, "--worker-out", str(out)]
        print(f"[bench] {label}: {' '.join(cmd[1:])}", flush=True)
        proc = subprocess.run(cmd, check=False)
        if proc.returncode != 0 or not out.is_file():
            return {"error": f"worker exited with status {proc.returncode}"}
        return json.loads(out.read_text())


def start_worker(args, dtypes: dict[str, str]):
    """A worker's first lines: resolve ``args.device``, boot ComfyUI there, resolve ``args.dtype`` (``auto``: fp16 on
    a GPU, fp32 on a CPU; ``dtypes`` maps its names to torch's) and apply ``args.threads``; ``(device, dtype)``."""
    import torch

    device = resolve_device(args.device)
    boot(args.comfyui, cpu=device == "cpu")
    if args.dtype == "auto":
        args.dtype = "fp16" if device == "cuda" else "fp32"
    if args.threads:
        torch.set_num_threads(args.threads)
    return device, getattr(torch, dtypes[args.dtype])


# ---------------------------------------------------------------------------------- command line and output
def add_common_args(p, dtypes: dict[str, str]) -> None:
    """The options every benchmark takes: where ComfyUI is, the image size, dtype, device, threads, seed, output."""
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI source tree (default $COMFYUI_PATH)")
    p.add_argument("--width", type=int, default=512, help="video width in pixels (latent = width/8)")
    p.add_argument("--height", type=int, default=512, help="video height in pixels (latent = height/8)")
    p.add_argument("--dtype", choices=("auto", *sorted(dtypes)), default="auto",
                   help="UNet weight dtype (auto: fp16 on a GPU, fp32 on the CPU)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="results.json", help="where to write the JSON results")
    p.add_argument("--worker-out", help=argparse.SUPPRESS)


def add_step_timing_args(p) -> None:
    """The options of the seconds-per-step benchmarks: frames, timed and warm-up steps, FLOP sizes, repeats."""
    p.add_argument("--frames", type=int, default=16, help="frames per clip (the latent batch)")
    p.add_argument("--steps", type=int, default=10, help="timed sampling steps per configuration and run")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (at least 1)")
    p.add_argument("--flops-at", default="",
                   help="image sizes WxH (comma list) at which to count the FLOPs of one step besides --width x "
                        "--height; counted on fake tensors, so 512x512 costs nothing on a CPU")
    p.add_argument("--no-flops", action="store_true", help="skip counting FLOPs (one extra step per configuration)")
    p.add_argument("--repeat", type=int, default=1, help="repeat the runs this many times (for noisy shared machines)")


def check_step_timing_args(p, args, configs: tuple[str, ...]) -> None:
    """Validate what ``add_step_timing_args`` added and ``--configs``; set ``args.configs`` and ``args.flop_sizes``."""
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in configs]
    if unknown:
        p.error(f"unknown configuration(s) {unknown}; known: {', '.join(configs)}")
    if args.warmup < 1 or args.steps < 1 or args.repeat < 1:
        p.error("--warmup, --steps and --repeat must be at least 1 (the first step also loads the model)")
    parse_flop_sizes(p, args)


def worker_or_driver(args, run_worker, drive) -> int:
    """In a worker process (``--worker``) run ``run_worker(args)`` and write its JSON; otherwise ``drive(args)``."""
    if args.worker is not None:
        pathlib.Path(args.worker_out).write_text(json.dumps(run_worker(args), indent=2))
        return 0
    return drive(args)


def markdown_table(first: str, columns, results: dict) -> str:
    """Rows of ``results`` (name -> dict) under ``first`` and ``columns`` (header, cell function); errors in a row."""
    rows = [f"| {first} | " + " | ".join(h for h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, r in results.items():
        if "error" in r:
            rows.append(f"| {name} | failed: {r['error']} |" + " |" * (len(columns) - 1))
        else:
            rows.append(f"| {name} | " + " | ".join(cell(r) for _, cell in columns) + " |")
    return "\n".join(rows)


def environment(device: str, dtype_name: str) -> dict:
    """What a result was measured on: device and its name, torch and its threads, ComfyUI, dtype, attention kernel."""
    import comfy.ldm.modules.attention
    import torch

    return {
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "comfyui": comfyui_version(),
        "dtype": dtype_name,
        "attention": comfy.ldm.modules.attention.optimized_attention.__name__,
    }


def common_forward_args(args) -> list[str]:
    """The options of ``add_common_args`` (and ``add_step_timing_args`` where present) as a worker's argv."""
    out = ["--width", str(args.width), "--height", str(args.height), "--dtype", args.dtype, "--device", args.device,
           "--seed", str(args.seed), "--threads", str(args.threads)]
    if hasattr(args, "warmup"):
        out += ["--frames", str(args.frames), "--steps", str(args.steps), "--warmup", str(args.warmup)]
        if args.no_flops:
            out.append("--no-flops")
        if args.flops_at:
            out += ["--flops-at", args.flops_at]
    if args.comfyui:
        out += ["--comfyui", args.comfyui]
    return out


def step_figures(stamps: list[float], cpu_stamps: list[float], warmup: int, flops: dict[str, int], own: str) -> dict:
    """Timed steps after ``warmup`` (wall clock and CPU time: all, median, fastest) and GFLOP per step (at the run's
    size ``own`` and at every counted size)."""
    import statistics

    step_times = step_durations(stamps, warmup)
    cpu_times = step_durations(cpu_stamps, warmup)
    return {
        "gflops_per_step": flops[own] / 1e9 if own in flops else None,
        "gflops_per_step_at": {size: n / 1e9 for size, n in flops.items()},
        "sec_per_step": statistics.median(step_times),
        "min_sec_per_step": min(step_times),
        "step_times_s": step_times,
        "cpu_sec_per_step": statistics.median(cpu_times),
        "cpu_step_times_s": cpu_times,
    }


def pool_runs(runs: list[dict]) -> dict:
    """Pool the runs of one configuration: the first run's fields, medians over all timed steps, each run's median,
    and the largest of every peak-memory figure."""
    import statistics

    out = dict(runs[0])
    for key in ("step_times_s", "cpu_step_times_s"):
        out[key] = [t for r in runs for t in r[key]]
    out["sec_per_step"] = statistics.median(out["step_times_s"])
    out["min_sec_per_step"] = min(out["step_times_s"])
    out["cpu_sec_per_step"] = statistics.median(out["cpu_step_times_s"])
    out["runs_sec_per_step"] = [r["sec_per_step"] for r in runs]
    for key in ("peak_allocated_bytes", "peak_reserved_bytes", "peak_rss_bytes", "peak_rss_process_bytes"):
        values = [r[key] for r in runs if r.get(key)]
        if values:
            out[key] = max(values)
    return out
