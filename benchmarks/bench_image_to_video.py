"""Seconds and FLOPs per sampling step of image-to-video: plain CFG vs image/text guidance, without and with IP-Adapter.

Issue targets: "image/text guidance costs 1.5x plain CFG, no more; IP-Adapter adds under 5 % to a step".

One model for every configuration: a random real-size SD-1.5 UNet + a random AtomoVideo module (temporal
attention, temporal convolutions, 9-channel ``conv_in``) attached by ``attach_motion_module``, then a random
image through the real **Image Inject Conditioning** node (``AtomoImageInjectConditioning.execute`` with a random
SD-1.5 VAE: the ``conv_in`` weight patch, the ``noise_concat`` image channels and the locked first frame are the
node's own). Configurations, each sampled by ``nodes.sampling.sample_video`` (what the Zero-SNR V Sampler runs):

- ``plain``: ``image_cfg = 1``, CFG against the image-conditioned uncond: 2 condition passes per step;
- ``double``: ``image_cfg`` != 1 and != ``cfg`` (DreamVideo's image/text guidance): 3 passes per step;
- ``plain_ip`` / ``double_ip``: the same with IP-Adapter attention at the 16 cross-attention sites (random
  ``base``-layout weights, ``apply_ip_adapter`` with 4 image tokens, weight 1.0);
- ``plain_sdpa``: a control, ``plain`` with each of the 16 cross-attentions replaced by the text half of the
  IP-Adapter patch (the same ``scaled_dot_product_attention`` call, no image tokens). The IP-Adapter patch computes
  the text attention with torch's SDPA instead of ComfyUI's attention function; where ComfyUI's is another kernel
  (sub-quadratic attention on a CPU) ``plain_ip / plain`` includes that swap, ``plain_ip / plain_sdpa`` does not.

Every step's passes go to the UNet as one batch (the script checks and records this). Reports the median seconds
per step after ``--warmup`` steps (also the fastest step and, on a CPU, the process's CPU time), GFLOP per step
(counted on fake tensors, also at other sizes with ``--flops-at``), peak memory per configuration, and the
ratios double/plain (target <= 1.5) and ip/no-ip (target < 1.05). See benchmarks/README.md.

    python benchmarks/bench_image_to_video.py --comfyui /path/to/ComfyUI --out results.json   # GPU, 512x512
    python benchmarks/bench_image_to_video.py --device cpu --width 64 --height 64 --steps 3 --warmup 1 --threads 1
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
CONFIGS = ("plain", "double", "plain_ip", "double_ip", "plain_sdpa")
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MIB = 2**20
# (numerator, denominator, target, how the target reads): the ratios the issue asks for.
RATIOS = (
    ("double", "plain", 1.5, "<= 1.5"),
    ("double_ip", "plain_ip", 1.5, "<= 1.5"),
    ("plain_ip", "plain", 1.05, "< 1.05"),
    ("double_ip", "double", 1.05, "< 1.05"),
    ("plain_ip", "plain_sdpa", 1.05, "< 1.05"),
)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _host.add_common_args(p, DTYPES)
    _host.add_step_timing_args(p)
    p.add_argument("--cfg", type=float, default=7.5, help="text guidance scale (> 1)")
    p.add_argument("--image-cfg", type=float, default=2.5,
                   help="image guidance scale of the 'double' configurations (not 1 and not --cfg: three passes)")
    p.add_argument("--ip-weight", type=float, default=1.0, help="IP-Adapter weight of the '_ip' configurations")
    p.add_argument("--sampler", default="euler", help="ComfyUI sampler (one UNet call per step: euler, ddim)")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma list of {', '.join(CONFIGS)}")
    # --repeat: worker processes one after the other, each sampling every configuration once in an order rotated
    # per process; the timed steps are pooled.
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the run's index: rotates the configuration order
    args = p.parse_args(argv)
    _host.check_step_timing_args(p, args, CONFIGS)
    if args.width % 8 or args.height % 8 or min(args.width, args.height) < 64:
        p.error("--width and --height must be multiples of 8, at least 64 (Image Inject Conditioning's minimum)")
    if args.cfg <= 1.0:
        p.error("--cfg must be > 1 so that guidance runs")
    if args.image_cfg in (1.0, args.cfg):
        p.error("--image-cfg must differ from 1 and from --cfg (otherwise 'double' is two passes, like 'plain')")
    return args


# ----------------------------------------------------------------------------------------------- worker
class _TextAttention:
    """attn2 replace: the text half of ``IPAttentionPatch`` (torch SDPA over the text tokens), no image tokens."""

    def __init__(self, attention):
        self.attention = attention

    def __call__(self, q, k, v, extra_options):
        return self.attention(q, k, v, extra_options["n_heads"]).to(q.dtype)


def _build(args, dtype):
    """``(models by configuration, positive, negative, latent, sizes)``: one patched model, cloned per configuration."""
    import torch
    ours = _host.ours
    from _models import build_motion_module, build_sd15, build_vae, nbytes, random_ip_adapter

    model = build_sd15(dtype, args.seed)
    unet_bytes = nbytes(model.model.diffusion_model.parameters())
    module = build_motion_module("atomovideo", dtype, args.frames, args.seed + 1)
    module_bytes = nbytes(module.parameters()) + nbytes(module.extra_tensors().values())
    model = ours("nodes.host_adapter").attach_motion_module(model, module, apply_sampling=True)
    vae = build_vae(args.seed + 2)
    gen = torch.Generator().manual_seed(args.seed)
    image = torch.rand(1, args.height, args.width, 3, generator=gen)
    positive = [[torch.randn(1, 77, 768, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 768, generator=gen), {}]]
    node = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        patched, positive, negative, latent = node.execute(
            model, positive, negative, vae, image, args.frames, args.width, args.height, "crop").result
    del vae
    ip_weights, tokens, uncond = random_ip_adapter(args.seed + 3)
    with_ip = patched.clone()
    ours("nodes.ip_adapter_patch").apply_ip_adapter(with_ip, ip_weights, tokens, uncond, args.ip_weight)
    text_sdpa = patched.clone()
    text_only = _TextAttention(ours("atomo_core.ip_adapter_attention").multihead_attention)
    for site in ours("atomo_core.ip_adapter").IP_SITES:
        text_sdpa.set_model_attn2_replace(text_only, *site.block)
    models = {"plain": patched, "double": patched, "plain_ip": with_ip, "double_ip": with_ip, "plain_sdpa": text_sdpa}
    sizes = {"unet_bytes": unet_bytes, "module_bytes": module_bytes, "ip_adapter_bytes": nbytes(ip_weights.values()),
             "ip_tokens": int(tokens.shape[1])}
    return models, positive, negative, latent, sizes


def run_worker(args: argparse.Namespace) -> dict:
    import torch

    device, dtype = _host.start_worker(args, DTYPES)
    import comfy.patcher_extension

    sampling = _host.ours("nodes.sampling")
    t0 = time.perf_counter()
    models, positive, negative, latent, sizes = _build(args, dtype)
    build_s = time.perf_counter() - t0

    probe = _host.UNetProbe(args.flop_sizes)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    total = args.warmup + args.steps
    order = args.configs[args.worker % len(args.configs):] + args.configs[: args.worker % len(args.configs)]
    results = {}
    for config in order:
        model = models[config].clone()
        model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "atomo_bench_probe", probe)
        image_cfg = args.image_cfg if config.startswith("double") else 1.0
        settings = sampling.SamplingSettings(steps=total, cfg=args.cfg, image_cfg=image_cfg,
                                             sampler_name=args.sampler, scheduler="trailing")
        stamps: list[float] = []
        cpu_stamps: list[float] = []

        def callback(step, x0, x, total_steps, stamps=stamps, cpu_stamps=cpu_stamps):
            sync()
            stamps.append(time.perf_counter())
            cpu_stamps.append(time.process_time())

        probe.reset()
        memory = _host.PeakMemory(device)
        memory.start()
        t_start = time.perf_counter()
        with torch.inference_mode():
            samples = sampling.sample_video(model, positive, negative, latent, args.seed, settings,
                                            callback=callback, disable_pbar=True)
        sync()
        t_end = time.perf_counter()
        peak = memory.stop()
        sampled_calls = list(probe.calls)
        if not args.no_flops:  # one more step, its UNet call also counted on fake tensors
            with probe.counting(), torch.inference_mode():
                sampling.sample_video(model, positive, negative, latent, args.seed,
                                      sampling.SamplingSettings(steps=1, cfg=args.cfg, image_cfg=image_cfg,
                                                                sampler_name=args.sampler, scheduler="trailing"),
                                      callback=lambda *a: None, disable_pbar=True)
        own = f"{args.width}x{args.height}"
        results[config] = {
            "config": config,
            "image_cfg": image_cfg,
            "ip_adapter": config.endswith("_ip"),
            "attn2": "IP-Adapter patch" if config.endswith("_ip") else "text-only SDPA patch" if config == "plain_sdpa"
            else "ComfyUI's",
            **_host.step_figures(stamps, cpu_stamps, args.warmup, probe.flops, own),
            "first_step_s": stamps[0] - t_start,
            "sampling_total_s": t_end - t_start,
            "unet_calls": len(sampled_calls),
            "unet_calls_per_step": len(sampled_calls) / total,
            "unet_batch": max(b for b, _ in sampled_calls),
            "passes": max(c for _, c in sampled_calls),
            "passes_batched": all(b == c * args.frames for b, c in sampled_calls) and len(sampled_calls) == total,
            "output_finite": bool(torch.isfinite(samples).all()),
            "run_order": order.index(config),
            **peak,
        }
        print(f"[bench] {config}: {results[config]['sec_per_step']:.3f} s/step "
              f"(steps {[round(t, 3) for t in results[config]['step_times_s']]}), {results[config]['passes']} passes in a UNet batch of "
              f"{results[config]['unet_batch']}", flush=True)
    meta = {
        **_host.environment(device, args.dtype),
        "latent_shape": list(latent["samples"].shape),
        "image_size": [args.width, args.height],
        "frames": args.frames,
        "cfg": args.cfg,
        "image_cfg_double": args.image_cfg,
        "ip_weight": args.ip_weight,
        "sampler": args.sampler,
        "scheduler": "trailing",
        "warmup_steps": args.warmup,
        "timed_steps": args.steps,
        "build_s": build_s,
        **sizes,
    }
    return {"meta": meta, "results": results}


# ------------------------------------------------------------------------------------------------ driver
def _forward_args(args: argparse.Namespace) -> list[str]:
    return [*_host.common_forward_args(args), "--cfg", str(args.cfg), "--image-cfg", str(args.image_cfg),
            "--ip-weight", str(args.ip_weight), "--sampler", args.sampler, "--configs", ",".join(args.configs)]


def _run_worker_process(args: argparse.Namespace, rep: int) -> dict:
    return _host.run_worker_process(__file__, _forward_args(args), str(rep), f"run {rep + 1}/{args.repeat}")


def _peak(r: dict) -> int | None:
    return r.get("peak_allocated_bytes") or r.get("peak_rss_bytes") or r.get("peak_rss_process_bytes")


def _aggregate(all_runs: list[dict]) -> dict:
    """Pool one configuration's runs: medians over all timed steps, the largest peak memory.

    A run in which ComfyUI split a step's passes over several UNet calls (it does when it judges free memory
    short, e.g. while other work runs on the machine) times something else: it is left out of the pool when
    another run batched them (and listed under ``runs_left_out``).
    """
    batched = [r for r in all_runs if r["passes_batched"]]
    runs = batched or all_runs
    out = _host.pool_runs(runs)
    out["runs_left_out"] = [i for i, r in enumerate(all_runs) if batched and not r["passes_batched"]]
    flops = {}
    for r in all_runs:  # deterministic counts: any run that has one for a size
        for size, n in r.get("gflops_per_step_at", {}).items():
            flops.setdefault(size, n)
    out["gflops_per_step_at"] = flops
    out["runs_order"] = [r["run_order"] for r in runs]
    out["passes_batched"] = all(r["passes_batched"] for r in runs)
    out["runs_passes_batched"] = [r["passes_batched"] for r in all_runs]
    out["output_finite"] = all(r["output_finite"] for r in all_runs)
    out.pop("run_order", None)
    return out


def ratios(results: dict) -> list[dict]:
    """The issue's ratios, on every estimator: median, fastest and CPU time per step, FLOPs at every size."""
    rows = []
    for num, den, target, reads in RATIOS:
        a, b = results.get(num), results.get(den)
        if not a or not b or "error" in a or "error" in b:
            continue
        row = {"ratio": f"{num} / {den}", "target": target, "target_reads": reads}
        for key in ("sec_per_step", "min_sec_per_step", "cpu_sec_per_step"):
            row[key] = a[key] / b[key]
        # Paired within each worker process (same machine state): the spread says how far the CPU can be trusted.
        if len(a["runs_sec_per_step"]) == len(b["runs_sec_per_step"]) and not a["runs_left_out"] + b["runs_left_out"]:
            row["runs_sec_per_step"] = [x / y for x, y in zip(a["runs_sec_per_step"], b["runs_sec_per_step"], strict=True)]
        row["gflops_at"] = {size: n / b["gflops_per_step_at"][size] for size, n in a.get("gflops_per_step_at", {}).items()
                            if b.get("gflops_per_step_at", {}).get(size)}
        strict = reads.startswith("<") and not reads.startswith("<=")
        row["meets_target_timed"] = row["sec_per_step"] < target if strict else row["sec_per_step"] <= target
        rows.append(row)
    return rows


def table(results: dict, meta: dict) -> str:
    """Per configuration: passes, UNet batch, timed seconds per step, GFLOP per step, peak memory."""
    gpu = meta.get("device") == "cuda"
    own = "x".join(str(v) for v in meta["image_size"])
    columns = [
        ("image_cfg", lambda r: f"{r['image_cfg']:g}"),
        ("IP-Adapter", lambda r: "yes" if r["ip_adapter"] else "no"),
        ("cross-attention", lambda r: r["attn2"]),
        ("passes (UNet batch)", lambda r: f"{r['passes']} ({r['unet_batch']})"),
        ("s/step median (timed)", lambda r: f"{r['sec_per_step']:.3f}"),
        ("s/step fastest (timed)", lambda r: f"{r['min_sec_per_step']:.3f}"),
    ]
    if not gpu:
        columns.append(("CPU s/step median", lambda r: f"{r['cpu_sec_per_step']:.2f}"))
    columns += [
        (f"GFLOP/step at {own} (counted)", lambda r: f"{r['gflops_per_step']:.0f}" if r.get("gflops_per_step") else "-"),
        ("peak GPU memory allocated (MiB)" if gpu else "peak RSS while sampling (MiB)",
         lambda r: f"{_peak(r) / MIB:.0f}" if _peak(r) else "-"),
    ]
    return _host.markdown_table("configuration", columns, results)


def ratio_table(rows: list[dict], meta: dict) -> str:
    """The issue's ratios: timed (median, fastest, CPU time) at the measured size, FLOPs at every counted size."""
    gpu = meta.get("device") == "cuda"
    own = "x".join(str(v) for v in meta["image_size"])
    sizes = list(rows[0]["gflops_at"]) if rows else []
    head = ["ratio", "target", f"s/step median (timed, {own})", "per run: min - max (timed)", "s/step fastest (timed)"]
    if not gpu:
        head.append("CPU s/step (timed)")
    head += [f"GFLOP/step at {s} (counted)" for s in sizes]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for row in rows:
        runs = row.get("runs_sec_per_step") or []
        spread = f"{min(runs):.3f} - {max(runs):.3f}" if len(runs) > 1 else "-"
        cells = [row["ratio"], row["target_reads"], f"{row['sec_per_step']:.3f}", spread, f"{row['min_sec_per_step']:.3f}"]
        if not gpu:
            cells.append(f"{row['cpu_sec_per_step']:.3f}")
        cells += [f"{row['gflops_at'][s]:.4f}" if s in row["gflops_at"] else "-" for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def flops_table(results: dict) -> str:
    """GFLOP per sampling step (all guidance passes of one step) at every counted image size."""
    done = {name: r for name, r in results.items() if r.get("gflops_per_step_at")}
    sizes = list(next(iter(done.values()))["gflops_per_step_at"]) if done else []
    rows = ["| configuration | " + " | ".join(f"GFLOP/step at {s}" for s in sizes) + " |", "|---" * (len(sizes) + 1) + "|"]
    for name, r in done.items():
        at = r["gflops_per_step_at"]
        rows.append(f"| {name} | " + " | ".join(f"{at[s]:.0f}" if s in at else "-" for s in sizes) + " |")
    return "\n".join(rows)


def main(argv=None) -> int:
    return _host.worker_or_driver(parse_args(argv), run_worker, drive)


def drive(args: argparse.Namespace) -> int:
    """Run the workers, pool and print their results, write the JSON."""
    runs = [_run_worker_process(args, rep) for rep in range(args.repeat)]
    done = [r for r in runs if "error" not in r]
    if not done:
        print(f"[bench] every run failed: {[r['error'] for r in runs]}", flush=True)
        return 1
    results = {c: _aggregate([r["results"][c] for r in done]) for c in args.configs}
    own = f"{args.width}x{args.height}"
    for r in results.values():
        r["gflops_per_step"] = r["gflops_per_step_at"].get(own)
    meta = dict(done[0]["meta"])
    meta.update(repeat=args.repeat, runs_ok=len(done), python=platform.python_version())
    rows = ratios(results)
    pathlib.Path(args.out).write_text(json.dumps({"meta": meta, "results": results, "ratios": rows}, indent=2))
    print(f"\n{meta['device_name']}, torch {meta['torch']}, {meta['dtype']}, latent {meta['latent_shape']}, cfg "
          f"{meta['cfg']}, double image_cfg {meta['image_cfg_double']}, {args.steps} timed steps after {args.warmup}, "
          f"x{len(done)}\n")
    print(table(results, meta))
    if rows:
        print("\n" + ratio_table(rows, meta))
    if len(args.flop_sizes) > 1:
        print("\n" + flops_table(results))
    left_out = {c: r["runs_left_out"] for c, r in results.items() if r["runs_left_out"]}
    if left_out:
        print(f"\n[bench] runs left out of the pool (ComfyUI split the passes over several UNet calls): {left_out}",
              flush=True)
    if not all(r["passes_batched"] for r in results.values()):
        print("\n[bench] warning: some steps did not run all guidance passes as one UNet batch", flush=True)
    print(f"\nwrote {args.out}")
    return 0 if len(done) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
