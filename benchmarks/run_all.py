"""Run the benchmarks and write one Markdown table of their headline figures (device, versions, figures).

    python benchmarks/run_all.py --device cpu --size small     # this 2-core CPU: 64x64, few steps (about an hour)
    python benchmarks/run_all.py --device cuda --size full     # a GPU: 512x512, the scripts' defaults
    python benchmarks/run_all.py --only metrics                # one benchmark (metrics, motion_module, ...)

Each benchmark script runs in its own process and writes its JSON under ``--results`` (default
``benchmarks/results/run_all_<device>_<size>``); the table goes to ``<results>/summary.md`` and, with
``--update-readme`` (the default), between the ``<!-- run_all -->`` markers of benchmarks/README.md, which the
main README points to. The GPU smoke test is ``gpu_smoke.py`` (checks, not figures) and is not run here.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
README = HERE / "README.md"
START, END = "<!-- run_all:start -->", "<!-- run_all:end -->"
BENCHMARKS = ("metrics", "motion_module", "image_to_video", "long_video", "train")


def commands(size: str, device: str, results: pathlib.Path) -> dict[str, list[str]]:
    """The command line of every benchmark for ``size`` (``small``: what a 2-core CPU can do; ``full``: 512x512)."""
    small = size == "small"
    px = ["--width", "64", "--height", "64"] if small else []
    common = ["--device", device, *px] + (["--threads", "1", "--dtype", "fp32"] if small else [])
    steps = ["--steps", "3", "--warmup", "1", "--repeat", "2"] if small else ["--repeat", "3"]
    py = sys.executable
    return {
        "metrics": [py, str(HERE / "bench_metrics.py"), "--out", str(results / "metrics.json")],
        "motion_module": [py, str(HERE / "bench_motion_module.py"), *common, *steps, "--flops-at", "512x512",
                          "--out", str(results / "motion_module.json")],
        "image_to_video": [py, str(HERE / "bench_image_to_video.py"), *common, *steps, "--flops-at", "512x512",
                           "--out", str(results / "image_to_video.json")],
        "long_video": [py, str(HERE / "bench_long_video.py"), *common,
                       *(["--steps", "2", "--sampler", "euler"] if small else []),
                       "--out", str(results / "long_video.json")],
        "train": [py, str(HERE / "bench_train.py"), "--device", device,
                  *(["--resolution", "64", "--steps", "2", "--threads", "2"] if small else ["--resolution", "512"]),
                  "--out", str(results / "train.json")],
    }


def _f(value, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rows_of(name: str, data: dict) -> list[tuple[str, str, str]]:
    """``(benchmark, figure, value)`` rows of one benchmark's JSON."""
    if "error" in data:
        return [(name, "error", data["error"])]
    if name == "metrics":
        return [(name, f"evaluate_video, {data['frames']} x {data['width']}x{data['height']}, working size "
                       f"{data['working_size']} (target < 5 s)", f"{_f(data['seconds_median'], 2)} s")]
    results = data.get("results", {})
    out = []
    if name == "motion_module":
        for config, r in results.items():
            if "sec_per_step" in r:
                out.append((name, f"{config}: s/step (x bare)",
                            f"{_f(r['sec_per_step'])} ({_f(r.get('step_time_ratio_vs_bare'), 2)})"))
        return out
    if name == "image_to_video":
        for ratio in data.get("ratios", []):
            out.append((name, f"{ratio['ratio']}: s/step ratio (target {ratio['target_reads']})",
                        _f(ratio["sec_per_step"], 3)))
        return out
    if name == "long_video":
        for length, r in results.items():
            out.append((name, f"{length} frames: peak memory x shortest, s per new frame",
                        f"{_f(r.get('peak_memory_ratio_vs_shortest'))}, {_f(r.get('sec_per_new_frame'), 2)}"))
        return out
    if name == "train":
        for config, r in data.items():
            if "sec_per_step" in r:
                peak = (r.get("peak_allocated_bytes") or r.get("peak_rss_bytes") or 0) / 2**20
                out.append((name, f"{config}: s/step, peak memory ({r['frames']} x {r['resolution']}^2)",
                            f"{_f(r['sec_per_step'], 2)} s, {peak:.0f} MiB"))
        return out
    return [(name, "figures", json.dumps(results)[:80])]


def environment(data: dict) -> str:
    meta = data.get("meta") or data
    parts = [meta.get("device_name") or meta.get("cpu") or meta.get("device"), f"torch {meta.get('torch')}"]
    if meta.get("comfyui"):
        parts.append(f"ComfyUI {meta['comfyui']}")
    if meta.get("attention"):
        parts.append(meta["attention"])
    return ", ".join(str(p) for p in parts if p)


def table(found: dict[str, dict], device: str, size: str) -> str:
    envs = sorted({environment(d) for d in found.values() if "error" not in d})
    lines = [f"Measured {datetime.date.today().isoformat()} by `benchmarks/run_all.py --device {device} --size {size}`"
             f" on: {'; '.join(envs) or 'unknown'}.", "",
             "| benchmark | figure | value |", "|---|---|---|"]
    for name, data in found.items():
        lines += [f"| {b} | {f} | {v} |" for b, f, v in rows_of(name, data)]
    return "\n".join(lines)


def update_readme(text: str, readme: pathlib.Path = README) -> None:
    content = readme.read_text()
    block = f"{START}\n{text}\n{END}"
    if START in content and END in content:
        content = content[: content.index(START)] + block + content[content.index(END) + len(END):]
    else:
        content = content.rstrip() + "\n\n## All benchmarks: `run_all.py`\n\n" + block + "\n"
    readme.write_text(content)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", choices=("small", "full"), default=None, help="small (CPU default) or full (GPU default)")
    p.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of {', '.join(BENCHMARKS)}")
    p.add_argument("--results", type=pathlib.Path, help="folder for the JSON results and summary.md")
    p.add_argument("--no-update-readme", action="store_true", help="do not rewrite benchmarks/README.md")
    args = p.parse_args(argv)
    size = args.size or ("small" if args.device == "cpu" else "full")
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        p.error(f"unknown benchmarks {unknown}; known: {', '.join(BENCHMARKS)}")
    results = args.results or HERE / "results" / f"run_all_{args.device}_{size}"
    results.mkdir(parents=True, exist_ok=True)
    found = {}
    for name in chosen:
        command = commands(size, args.device, results)[name]
        print(f"[run_all] {name}: {' '.join(command[1:])}", flush=True)
        proc = subprocess.run(command, check=False, env=os.environ.copy())
        out = pathlib.Path(command[command.index("--out") + 1])
        found[name] = json.loads(out.read_text()) if proc.returncode == 0 and out.is_file() else {
            "error": f"exit status {proc.returncode}"}
    text = table(found, args.device, size)
    (results / "summary.md").write_text(text + "\n")
    print(text)
    if not args.no_update_readme:
        update_readme(text)
    return 0 if all("error" not in d for d in found.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
