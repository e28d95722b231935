"""Long videos by frame prediction: peak memory and time versus total length, and how visible the seams are.

Issue targets: "records peak memory and time versus total length (16, 32, 64 frames): memory flat within 10 %"
and "a seam metric (frame difference at seams vs inside segments)".

Each total length runs in its own Python process (so every peak-memory figure belongs to one length) and does
what the ``atomovideo_long_video`` workflow does, through the real nodes: a random real-size SD-1.5 UNet + a
random AtomoVideo module (``attach_motion_module``), a random image through **Image Inject Conditioning** (random
SD-1.5 VAE), a first clip of ``--start-frames`` frames from the **Zero-SNR V Sampler**, then **Predict Next
Frames** (``AtomoPredictNextFrames.execute``: ``--context-frames`` given, ``--new-frames`` new per segment,
latent hand-over) up to the total length. The length equal to ``--start-frames`` is the first clip alone: the
memory every longer video is compared with.

Reports per length: wall time (first clip, extension, seconds per new frame, UNet calls and their batch), peak
memory over the sampling (CUDA: ``max_memory_allocated``; CPU: peak RSS via ``/proc/self/clear_refs``) and its
ratio to the shortest length (target: within 10 %), and the seam metric of ``atomo_core.frame_prediction.seam_report``
(mean absolute frame difference across seams vs inside segments, and their ratio) on the VAE-decoded frames
(pixels in 0..1) and on the latents. With random weights the seam figures only check the harness: give
``--checkpoint`` (an SD-1.5 checkpoint: UNet, CLIP, VAE), ``--motion-module`` (an AtomoVideo file), ``--image`` and
``--prompt`` for figures that mean something (each one left out stays random). See benchmarks/README.md.

    python benchmarks/bench_long_video.py --comfyui /path/to/ComfyUI --out results.json   # GPU, 512x512
    python benchmarks/bench_long_video.py --device cpu --width 64 --height 64 --steps 2 --threads 1 --sampler euler
    python benchmarks/bench_long_video.py --checkpoint sd15.safetensors --motion-module atomo.safetensors \
        --image photo.png --prompt "a cat turning its head" --out seams.json                   # real weights
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
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
MIB = 2**20


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _host.add_common_args(p, DTYPES)
    p.add_argument("--lengths", default="16,32,64", help="total frames, comma list; each runs in its own process")
    p.add_argument("--start-frames", type=int, default=16, help="frames of the first clip (Zero-SNR V Sampler)")
    p.add_argument("--context-frames", type=int, default=8, help="given frames per segment (AtomoVideo: 8)")
    p.add_argument("--new-frames", type=int, default=8,
                   help="new frames per segment (8: segments as long as a 16-frame first clip; the paper's 16 makes "
                        "24-frame segments)")
    p.add_argument("--steps", type=int, default=25, help="sampling steps of the first clip and of every segment")
    p.add_argument("--cfg", type=float, default=7.5, help="text guidance scale")
    p.add_argument("--image-cfg", type=float, default=2.5, help="image guidance scale (2.5: three passes, as the workflow)")
    p.add_argument("--sampler", default="ddim", help="ComfyUI sampler (the nodes' default: ddim)")
    p.add_argument("--handover", choices=("latent", "pixels"), default="latent", help="Predict Next Frames' hand-over")
    p.add_argument("--anchor-strength", type=float, default=0.0, help="Predict Next Frames' anchor_strength")
    p.add_argument("--checkpoint", help="an SD-1.5 checkpoint file (UNet, CLIP, VAE); default: random UNet and VAE")
    p.add_argument("--motion-module", help="an AtomoVideo motion-module file; default: a random AtomoVideo module")
    p.add_argument("--image", help="the image to animate (PNG, JPEG...); default: random pixels")
    p.add_argument("--prompt", default="", help="positive prompt (needs --checkpoint for its CLIP); default: random")
    p.add_argument("--negative", default="", help="negative prompt (with --checkpoint)")
    p.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # the total length this process makes
    args = p.parse_args(argv)
    try:
        args.lengths = sorted({int(v) for v in args.lengths.split(",") if v.strip()})
    except ValueError:
        p.error(f"--lengths takes frame counts like 16,32,64, got {args.lengths!r}")
    if not args.lengths or args.lengths[0] < args.start_frames:
        p.error(f"--lengths must all be at least --start-frames ({args.start_frames})")
    if args.steps < 1 or args.context_frames < 1 or args.new_frames < 1:
        p.error("--steps, --context-frames and --new-frames must be at least 1")
    if args.context_frames > args.start_frames:
        p.error("--context-frames cannot exceed --start-frames")
    if args.width % 8 or args.height % 8 or min(args.width, args.height) < 64:
        p.error("--width and --height must be multiples of 8, at least 64 (Image Inject Conditioning's minimum)")
    if args.prompt and not args.checkpoint:
        p.error("--prompt needs --checkpoint (its CLIP encodes the prompt)")
    for name in ("checkpoint", "motion_module", "image"):
        path = getattr(args, name)
        if path:
            if not pathlib.Path(path).is_file():
                p.error(f"--{name.replace('_', '-')} {path}: no such file")
            setattr(args, name, str(pathlib.Path(path).resolve()))
    return args


def _inputs(args, dtype, frames_per_clip: int) -> dict:
    """MODEL (with the motion module), VAE, IMAGE and text conditioning: from the files given, random otherwise."""
    import numpy as np
    import torch
    from _host import ours
    from _models import build_motion_module, build_sd15, build_vae

    gen = torch.Generator().manual_seed(args.seed)
    clip = None
    if args.checkpoint:
        import comfy.sd

        model, clip, vae = comfy.sd.load_checkpoint_guess_config(
            args.checkpoint, output_vae=True, output_clip=True, model_options={"dtype": dtype})[:3]
    else:
        model, vae = build_sd15(dtype, args.seed), build_vae(args.seed + 2)
    if args.motion_module:
        module = ours("atomo_core.formats").load_motion_module(args.motion_module)
    else:
        module = build_motion_module("atomovideo", dtype, frames_per_clip, args.seed + 1)
    model = ours("nodes.host_adapter").attach_motion_module(model, module, apply_sampling=True)
    if args.image:
        from PIL import Image

        with Image.open(args.image) as img:
            image = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None]
    else:
        image = torch.rand(1, args.height, args.width, 3, generator=gen)
    if clip is not None:
        positive, negative = (clip.encode_from_tokens_scheduled(clip.tokenize(text)) for text in (args.prompt, args.negative))
    else:
        positive = [[torch.randn(1, 77, 768, generator=gen), {}]]
        negative = [[torch.randn(1, 77, 768, generator=gen), {}]]
    return {"model": model, "module": module, "vae": vae, "image": image, "positive": positive, "negative": negative}


# ----------------------------------------------------------------------------------------------- worker
def _seam_figures(frames, seams: list[int], start: int, report, differences) -> dict:
    """``seam_report`` plus the mean difference inside the predicted segments only and every frame difference."""
    import torch

    diffs = differences(frames.float())
    out = dict(report(frames, seams))
    predicted = [i for i in range(diffs.shape[0]) if i + 1 > start and (i + 1) not in seams]
    out["inside_predicted"] = diffs[torch.tensor(predicted)].mean().item() if predicted else None
    out["inside_first_clip"] = diffs[: start - 1].mean().item() if start > 1 else None
    out["frame_differences"] = [round(v, 6) for v in diffs.tolist()]
    return out


def run_worker(args: argparse.Namespace) -> dict:
    import torch
    from _models import nbytes

    device, dtype = _host.start_worker(args, DTYPES)
    import comfy.patcher_extension
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    ours = _host.ours
    prediction = ours("atomo_core.frame_prediction")
    total = args.worker
    t0 = time.perf_counter()
    frames_per_clip = max(args.start_frames, args.context_frames + args.new_frames)
    inputs = _inputs(args, dtype, frames_per_clip)
    model, vae, image, positive, negative = (inputs[k] for k in ("model", "vae", "image", "positive", "negative"))
    unet_bytes = nbytes(model.model.diffusion_model.parameters())
    module_bytes = nbytes(inputs["module"].parameters()) + nbytes(inputs["module"].extra_tensors().values())
    inject = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    with torch.inference_mode():
        patched, positive_i, negative_i, latent = inject.execute(
            model, positive, negative, vae, image, args.start_frames, args.width, args.height, "crop").result
    build_s = time.perf_counter() - t0

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    calls: list[tuple[int, float]] = []  # (UNet batch, seconds) of every UNet call

    def probe(executor, x, *a, **kw):
        sync()
        start = time.perf_counter()
        out = executor(x, *a, **kw)
        sync()
        calls.append((int(x.shape[0]), time.perf_counter() - start))
        return out

    patched = patched.clone()
    patched.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "atomo_bench_probe", probe)
    sampling_args = dict(steps=args.steps, cfg=args.cfg, image_cfg=args.image_cfg, cfg_rescale=0.7,
                         sampler_name=args.sampler, scheduler="trailing", denoise=1.0)
    sampler = ours("nodes.zero_snr_sampler").AtomoZeroSNRVSampler
    predict = ours("nodes.predict_next_frames").AtomoPredictNextFrames

    memory_first, memory_extend = _host.PeakMemory(device, trim=True), _host.PeakMemory(device, trim=True)
    memory_first.start()
    t_start = time.perf_counter()
    with torch.inference_mode():
        first = sampler.execute(patched, positive_i, negative_i, latent, args.seed, **sampling_args).result[0]
    sync()
    t_first = time.perf_counter()
    peak_first = memory_first.stop()
    first_calls = len(calls)
    memory_extend.start()  # collects garbage first: outside the timed stretches
    t_extend = time.perf_counter()
    video = first["samples"]
    if total > args.start_frames:
        with torch.inference_mode():
            custom = ours("nodes.custom_sampling")
            guider = custom.AtomoVideoGuider.execute(patched, positive, negative, args.cfg, args.image_cfg,
                                                     0.7).result[0]
            sigmas = custom.AtomoTrailingSigmas.execute(patched, args.steps, 1.0).result[0]
            video = predict.execute(
                guider, comfy.samplers.sampler_object(args.sampler), sigmas, Noise_RandomNoise(args.seed),
                args.context_frames, args.new_frames, total, latent=first, vae=vae, handover=args.handover,
                anchor_strength=args.anchor_strength,
            ).result[0]["samples"]
    sync()
    t_end = time.perf_counter()
    peak_extend = memory_extend.stop() if total > args.start_frames else {}
    assert video.shape[0] == total, (video.shape, total)

    segments = prediction.plan_segments(args.start_frames, args.context_frames, args.new_frames, total)
    seams = [s.context_start + s.context for s in segments]
    with torch.inference_mode():
        pixels = torch.cat([vae.decode(video[i:i + 8]) for i in range(0, total, 8)])
    seam_pixels = _seam_figures(pixels, seams, args.start_frames, prediction.seam_report, prediction.frame_differences)
    seam_latent = _seam_figures(video, seams, args.start_frames, prediction.seam_report, prediction.frame_differences)

    key = "peak_allocated_bytes" if device == "cuda" else "peak_rss_bytes"
    before = "allocated_before_bytes" if device == "cuda" else "rss_before_bytes"
    peaks = [p[key] for p in (peak_first, peak_extend) if p.get(key)]
    ext_calls = calls[first_calls:]
    result = {
        "total_frames": total,
        "segments": [{"context_start": s.context_start, "context": s.context, "new": s.new} for s in segments],
        "seams": seams,
        "wall_total_s": (t_first - t_start) + (t_end - t_extend),
        "first_clip_s": t_first - t_start,
        "extension_s": t_end - t_extend,
        "sec_per_new_frame": (t_end - t_extend) / (total - args.start_frames) if total > args.start_frames else None,
        "unet_calls_first_clip": first_calls,
        "unet_calls_extension": len(ext_calls),
        "unet_batches": sorted({b for b, _ in calls}),
        "unet_call_s_first_clip": [round(s, 4) for _, s in calls[:first_calls]],
        "unet_call_s_extension": [round(s, 4) for _, s in ext_calls],
        "peak_bytes": max(peaks) if peaks else None,
        "before_bytes": peak_first.get(before),
        "memory_first_clip": peak_first,
        "memory_extension": peak_extend,
        "seam_pixels": seam_pixels,
        "seam_latent": seam_latent,
        "first_clip_checksum": float(first["samples"].double().sum()),
        "output_finite": bool(torch.isfinite(video).all()),
        "build_s": build_s,
        "unet_bytes": unet_bytes,
        "module_bytes": module_bytes,
    }
    meta = {
        **_host.environment(device, args.dtype),
        "image_size": [args.width, args.height],
        "latent_hw": [args.height // 8, args.width // 8],
        "start_frames": args.start_frames,
        "context_frames": args.context_frames,
        "new_frames": args.new_frames,
        "steps": args.steps,
        "cfg": args.cfg,
        "image_cfg": args.image_cfg,
        "sampler": args.sampler,
        "scheduler": "trailing",
        "handover": args.handover,
        "anchor_strength": args.anchor_strength,
        "memory_measure": "torch.cuda.max_memory_allocated" if device == "cuda" else "peak RSS (VmHWM after clear_refs)",
        "seam_space": "VAE-decoded pixels in 0..1 (random VAE) and latents",
    }
    return {"meta": meta, "result": result}


# ------------------------------------------------------------------------------------------------ driver
def _forward_args(args: argparse.Namespace) -> list[str]:
    out = [*_host.common_forward_args(args), "--start-frames", str(args.start_frames),
           "--context-frames", str(args.context_frames), "--new-frames", str(args.new_frames),
           "--steps", str(args.steps), "--cfg", str(args.cfg), "--image-cfg", str(args.image_cfg),
           "--sampler", args.sampler, "--handover", args.handover, "--anchor-strength", str(args.anchor_strength)]
    for name in ("checkpoint", "motion_module", "image", "prompt", "negative"):
        if getattr(args, name):
            out += [f"--{name.replace('_', '-')}", getattr(args, name)]
    return out


def _run_length(args: argparse.Namespace, total: int) -> dict:
    data = _host.run_worker_process(__file__, _forward_args(args), str(total), f"{total} frames")
    if "error" in data:
        return data
    r = data["result"]
    print(f"[bench] {total} frames: {r['wall_total_s']:.1f} s, peak {r['peak_bytes'] / MIB:.0f} MiB, seam/inside "
          f"(pixels) {r['seam_pixels']['ratio']:.3f}", flush=True)
    return data


def table(results: dict, meta: dict) -> str:
    """Time and peak memory per total length, with ratios to the shortest length."""
    gpu = meta.get("device") == "cuda"
    key = "peak_allocated_bytes" if gpu else "peak_rss_bytes"
    done = {n: r for n, r in results.items() if "error" not in r}
    base = done[min(done)] if done else {}

    def ratio(r, key):
        return f"{r[key] / base[key]:.3f}" if r.get(key) and base.get(key) else "-"

    def added(r):
        return r["peak_bytes"] - r["before_bytes"] if r.get("peak_bytes") and r.get("before_bytes") else None

    columns = [
        ("segments (given + new)", lambda r: ", ".join(f"{s['context']}+{s['new']}" for s in r["segments"]) or "first clip only"),
        ("UNet batch", lambda r: "/".join(str(b) for b in r["unet_batches"])),
        ("wall s (total)", lambda r: f"{r['wall_total_s']:.1f}"),
        ("first clip s", lambda r: f"{r['first_clip_s']:.1f}"),
        ("extension s", lambda r: f"{r['extension_s']:.1f}"),
        ("s per new frame", lambda r: f"{r['sec_per_new_frame']:.2f}" if r["sec_per_new_frame"] else "-"),
        ("peak GPU memory allocated (MiB)" if gpu else "peak RSS (MiB)", lambda r: f"{r['peak_bytes'] / MIB:.0f}"),
        (f"x {min(done) if done else ''} frames", lambda r: ratio(r, "peak_bytes")),
        ("peak - before sampling (MiB)", lambda r: f"{added(r) / MIB:.0f}" if added(r) is not None else "-"),
        ("peak: first clip / extension (MiB)", lambda r: " / ".join(
            f"{p[key] / MIB:.0f}" if p.get(key) else "-" for p in (r["memory_first_clip"], r["memory_extension"]))),
    ]
    return _host.markdown_table("total frames", columns, results)


def seam_table(results: dict) -> str:
    """Mean absolute frame difference across seams and inside segments (pixels 0..1 and latents)."""
    head = ["total frames", "seams at", "pixels: seam", "inside", "seam / inside", "inside predicted only",
            "latent: seam", "inside", "seam / inside"]
    rows = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]

    def f(v, digits=4):
        return "-" if v is None or v != v else f"{v:.{digits}f}"

    for n, r in results.items():
        if "error" in r:
            continue
        p, lat = r["seam_pixels"], r["seam_latent"]
        rows.append(f"| {n} | {', '.join(map(str, r['seams'])) or '-'} | {f(p['seam'])} | {f(p['inside'])} | "
                    f"{f(p['ratio'], 3)} | {f(p['inside_predicted'])} | {f(lat['seam'])} | {f(lat['inside'])} | "
                    f"{f(lat['ratio'], 3)} |")
    return "\n".join(rows)


def main(argv=None) -> int:
    return _host.worker_or_driver(parse_args(argv), run_worker, drive)


def drive(args: argparse.Namespace) -> int:
    """Run the workers, pool and print their results, write the JSON."""
    runs = {total: _run_length(args, total) for total in args.lengths}
    done = {n: d for n, d in runs.items() if "error" not in d}
    if not done:
        print("[bench] every length failed", flush=True)
        return 1
    results = {n: (d["result"] if n in done else d) for n, d in runs.items()}
    meta = dict(done[min(done)]["meta"], python=platform.python_version(), lengths=args.lengths)
    shortest = results[min(done)]
    for r in results.values():
        if "error" not in r and r.get("peak_bytes") and shortest.get("peak_bytes"):
            r["peak_memory_ratio_vs_shortest"] = r["peak_bytes"] / shortest["peak_bytes"]
            r["peak_memory_within_10_percent"] = abs(r["peak_memory_ratio_vs_shortest"] - 1.0) <= 0.10
    checksums = {r["first_clip_checksum"] for r in results.values() if "error" not in r}
    meta["first_clip_identical_across_lengths"] = len(checksums) == 1
    pathlib.Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    print(f"\n{meta['device_name']}, torch {meta['torch']}, {meta['dtype']}, {args.width}x{args.height}, first clip "
          f"{args.start_frames} frames, {args.context_frames} given + {args.new_frames} new per segment, {args.steps} "
          f"steps, cfg {args.cfg}, image_cfg {args.image_cfg}, {args.sampler}\n")
    print(table(results, meta))
    print("\n" + seam_table(results))
    print(f"\nwrote {args.out}")
    return 0 if len(done) == len(runs) else 1


if __name__ == "__main__":
    sys.exit(main())
