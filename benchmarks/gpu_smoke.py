"""GPU smoke test: what only a GPU shows, in a few minutes, with random real-size weights.

    python benchmarks/gpu_smoke.py --comfyui /path/to/ComfyUI --out benchmarks/results/gpu_smoke.json
    python benchmarks/gpu_smoke.py --reduced --device cpu ...      # the same checks, tiny, on a CPU (the tests)

Checks, each recorded with its median step time and peak memory (CUDA ``max_memory_allocated``; CPU peak RSS):

1. ``full``: 512x512 x 16 frames with the AnimateDiff-v2, PIA and AtomoVideo layouts, UNet and module in fp16
   and in bf16 (v2 through ComfyUI's ``comfy.sample.sample`` like KSampler; PIA and AtomoVideo through Image
   Inject Conditioning and the Zero-SNR V Sampler's ``sample_video``);
2. ``partial``: the same runs with the UNet and the module each given a weight budget of ``--budget`` of its
   size (ComfyUI's partial low-VRAM load, as ``--reserve-vram`` forces on a small card), so that most layers stay
   on the offload device and are cast per call; the frames must match the fully loaded run;
3. ``split``: 1024x1024 x 16 frames, AtomoVideo layout, three-pass image/text guidance: the temporal attention
   batch (3 x 128 x 128) exceeds ComfyUI's ``SDP_BATCH_LIMIT`` (2^15 on NVIDIA); every SDPA call must stay within
   it and the frames must be finite.

``--reduced`` (for a CPU): 64x64 x 4 frames, fp32, one timed step, and 128x128 for the split check with
``SDP_BATCH_LIMIT`` lowered below its temporal batch, so every code path runs in about a minute per layout.
Exit status 1 if any check fails. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import statistics
import sys
import time

import _host  # benchmarks/ is on sys.path when a script here runs

LAYOUTS = ("animatediff_v2", "pia", "atomovideo")
MATCH = {"float32": 1e-4, "float16": 2e-2, "bfloat16": 5e-2}  # rms(partial - full) / rms(full), see _compare


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfyui", default=os.environ.get("COMFYUI_PATH"), help="ComfyUI source tree (default $COMFYUI_PATH)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--reduced", action="store_true", help="tiny sizes, fp32: the CPU mode the tests run")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma list of {', '.join(LAYOUTS)}")
    p.add_argument("--dtypes", default=None, help="comma list of fp16,bf16,fp32 (default fp16,bf16; --reduced fp32)")
    p.add_argument("--steps", type=int, default=None, help="sampling steps per run (default 3; --reduced 2)")
    p.add_argument("--budget", type=float, default=0.25, help="partial load: weight budget, fraction of each model")
    p.add_argument("--no-split", action="store_true", help="skip the 1024x1024 three-pass check")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="gpu_smoke.json")
    args = p.parse_args(argv)
    args.layouts = [x for x in args.layouts.split(",") if x]
    if set(args.layouts) - set(LAYOUTS):
        p.error(f"unknown layouts {sorted(set(args.layouts) - set(LAYOUTS))}")
    args.dtypes = (args.dtypes or ("fp32" if args.reduced else "fp16,bf16")).split(",")
    args.steps = args.steps or (2 if args.reduced else 3)
    args.size, args.frames = (64, 4) if args.reduced else (512, 16)
    args.split_size = 128 if args.reduced else 1024
    return args


class Case:
    """One sampling run's inputs: a model (UNet + module), conditioning, latent; ``run`` samples it."""

    def __init__(self, layout, model, positive, negative, latent, image_cfg=1.0):
        self.layout, self.model, self.positive, self.negative, self.latent = layout, model, positive, negative, latent
        self.image_cfg = image_cfg

    def run(self, steps: int, seed: int, device: str):
        import comfy.sample
        import torch

        stamps = []

        def callback(step, x0, x, total):
            if device == "cuda":
                torch.cuda.synchronize()
            stamps.append(time.perf_counter())

        memory = _host.PeakMemory(device)
        memory.start()
        if self.layout == "animatediff_v2":
            noise = comfy.sample.prepare_noise(self.latent["samples"], seed)
            out = comfy.sample.sample(self.model, noise, steps, 7.5, "euler", "simple", self.positive, self.negative,
                                      self.latent["samples"], callback=callback, disable_pbar=True, seed=seed)
        else:
            sampling = _host.ours("nodes.sampling")
            settings = sampling.SamplingSettings(steps=steps, cfg=7.5, image_cfg=self.image_cfg, sampler_name="euler")
            out = sampling.sample_video(self.model, self.positive, self.negative, self.latent, seed, settings,
                                        callback=callback, disable_pbar=True)
        peak = memory.stop()
        durations = [b - a for a, b in zip(stamps, stamps[1:], strict=False)] or [float("nan")]
        return out.float().cpu(), {"sec_per_step": statistics.median(durations), **peak}


def build_case(layout, dtype, size, frames, seed, image_cfg=1.0):
    import torch
    from _models import build_motion_module, build_sd15, build_vae

    base = build_sd15(dtype, seed)
    host = _host.ours("nodes.host_adapter")
    gen = torch.Generator().manual_seed(seed)
    positive = [[torch.randn(1, 77, 768, generator=gen), {}]]
    negative = [[torch.randn(1, 77, 768, generator=gen), {}]]
    if layout == "pia":
        sys.path.insert(0, str(_host.REPO / "tests"))
        import weights

        formats = _host.ours("atomo_core.formats")
        sd = weights.animatediff_state_dict("pia", seed=seed + 1, dtype=dtype)
        module = formats.build_motion_module(sd, formats.detect_config(sd, None, "pia"), "random PIA", dtype=dtype)
    else:
        module = build_motion_module(layout, dtype, frames, seed + 1)
    model = host.attach_motion_module(base, module)
    if layout == "animatediff_v2":
        return Case(layout, model, positive, negative, {"samples": torch.zeros(frames, 4, size // 8, size // 8)})
    node = _host.ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    image = torch.rand(1, size, size, 3, generator=gen)
    out = node.execute(model, positive, negative, build_vae(seed + 2), image, frames, size, size, "crop").result
    return Case(layout, *out, image_cfg=image_cfg)


def forced_partial_load(budget: float):
    """Patch ComfyUI's ``LoadedModel.model_load`` so that every model gets ``budget`` x its size of device memory
    (what a small card leaves); returns the undo function."""
    import comfy.model_management as mm

    real = mm.LoadedModel.model_load

    def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
        return real(self, max(1, int(self.model.model_size() * budget)), force_patch_weights)

    mm.LoadedModel.model_load = model_load
    return lambda: setattr(mm.LoadedModel, "model_load", real)


def _compare(a, b) -> float:
    """rms(a - b) / rms(b): the same weights computed per call after a cast agree to round-off in float32; in
    fp16/bf16 a different kernel choice on differently placed weights may reorder sums (MATCH)."""
    return float((a - b).pow(2).mean().sqrt() / b.pow(2).mean().sqrt())


def run_split_check(args, device, dtype):
    import comfy.ldm.modules.attention as attention
    import comfy.ops
    import torch

    case = build_case("atomovideo", dtype, args.split_size, args.frames, args.seed, image_cfg=2.5)
    batches = []
    real_sdpa = comfy.ops.scaled_dot_product_attention
    restore = [(attention, "optimized_attention", attention.optimized_attention),
               (attention, "SDP_BATCH_LIMIT", attention.SDP_BATCH_LIMIT), (comfy.ops, "scaled_dot_product_attention",
                                                                           real_sdpa)]
    temporal_batch = 3 * (args.split_size // 8) ** 2
    limit = attention.SDP_BATCH_LIMIT if device == "cuda" else temporal_batch // 4

    def spy(q, k, v, *a, **kw):
        batches.append(q.shape[0])
        return real_sdpa(q, k, v, *a, **kw)

    try:
        attention.optimized_attention = attention.attention_pytorch
        attention.SDP_BATCH_LIMIT = limit
        comfy.ops.scaled_dot_product_attention = spy
        out, figures = case.run(args.steps, args.seed, device)
    finally:
        for obj, name, value in restore:
            setattr(obj, name, value)
    ok = bool(torch.isfinite(out).all()) and max(batches) <= limit and temporal_batch > limit
    return {"check": "split", "layout": "atomovideo", "dtype": str(dtype).replace("torch.", ""),
            "size": args.split_size, "frames": args.frames, "passes": 3, "sdp_batch_limit": limit,
            "temporal_batch": temporal_batch, "largest_sdpa_batch": max(batches), "ok": ok, **figures}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    device = _host.resolve_device(args.device)
    _host.boot(args.comfyui, cpu=device == "cpu")
    import comfy.model_management as mm

    dtypes = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
    rows = []
    for name in args.dtypes:
        dtype = dtypes[name]
        for layout in args.layouts:
            case = build_case(layout, dtype, args.size, args.frames, args.seed)
            full, figures = case.run(args.steps, args.seed, device)
            row = {"check": "full", "layout": layout, "dtype": str(dtype).replace("torch.", ""), "size": args.size,
                   "frames": args.frames, "ok": bool(torch.isfinite(full).all()), **figures}
            rows.append(row)
            mm.unload_all_models()
            undo = forced_partial_load(args.budget)
            try:
                partial, figures = case.run(args.steps, args.seed, device)
                module = case.model.get_attachment("atomo_video").module
                lowvram = bool(getattr(module, "model_lowvram", False))
            finally:
                undo()
                mm.unload_all_models()
            difference = _compare(partial, full)
            rows.append({**row, "check": "partial", "budget": args.budget, "module_partially_loaded": lowvram,
                         "rms_difference_to_full": difference,
                         "ok": lowvram and difference < MATCH[row["dtype"]], **figures})
            print(json.dumps(rows[-2:], indent=None), flush=True)
            del case, full, partial
            gc.collect()
            mm.soft_empty_cache()
    if not args.no_split:
        rows.append(run_split_check(args, device, dtypes[args.dtypes[0]]))
        print(json.dumps(rows[-1]), flush=True)
    result = {"meta": {**_host.environment(device, args.dtypes[0]), "reduced": args.reduced, "steps": args.steps},
              "rows": rows}
    pathlib.Path(args.out).write_text(json.dumps(result, indent=2))
    print(table(rows))
    return 0 if all(r["ok"] for r in rows) else 1


def table(rows) -> str:
    lines = ["| check | layout | dtype | size x frames | s/step | peak memory (MiB) | note | ok |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peak = (r.get("peak_allocated_bytes") or r.get("peak_rss_bytes") or 0) / 2**20
        note = ""
        if r["check"] == "partial":
            note = f"budget {r['budget']:.0%}, rms diff to full {r['rms_difference_to_full']:.1e}"
        elif r["check"] == "split":
            note = f"temporal batch {r['temporal_batch']}, largest SDPA batch {r['largest_sdpa_batch']} <= {r['sdp_batch_limit']}"
        lines.append(f"| {r['check']} | {r['layout']} | {r['dtype']} | {r['size']}^2 x {r['frames']} | "
                     f"{r['sec_per_step']:.3f} | {peak:.0f} | {note} | {'yes' if r['ok'] else 'NO'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
