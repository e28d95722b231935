"""The experiment's report: ``report.md`` (every figure, and a verdict per property with the numbers behind it),
PNG figures (loss curves, frame strips) and ``results.json`` (everything measured, per case)."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from . import world

SCALE = 5  # a 16-pixel frame is drawn 80 pixels wide
LABEL = 150
BLUE, ORANGE, GREY, TEXT = (31, 119, 180), (255, 127, 14), (150, 150, 150), (20, 20, 20)
NAMES = {"v_ztsnr": "v-pred + ZTSNR", "eps": "epsilon", "untrained": "untrained layers"}


def jsonable(value):
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------------- pictures


def _font():
    return ImageFont.load_default()


def _frames_row(video: torch.Tensor, seams: list[int] | None = None) -> Image.Image:
    """``[F, 3, H, W]`` (0..1) -> one row of frames, 2 px apart (a red tick above each seam's first frame)."""
    f, _, h, w = video.shape
    gap = 2
    row = Image.new("RGB", (f * (w * SCALE + gap), h * SCALE + 6), (255, 255, 255))
    pixels = (video.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    for i in range(f):
        frame = Image.fromarray(pixels[i]).resize((w * SCALE, h * SCALE), Image.NEAREST)
        row.paste(frame, (i * (w * SCALE + gap), 6))
    draw = ImageDraw.Draw(row)
    for s in seams or []:
        x = s * (w * SCALE + gap)
        draw.rectangle((x, 0, x + w * SCALE, 3), fill=(214, 39, 40))
    return row


def _stack(rows: list[tuple[str, Image.Image]]) -> Image.Image:
    width = LABEL + max(r.width for _, r in rows)
    height = sum(r.height + 4 for _, r in rows)
    out = Image.new("RGB", (width, height), (255, 255, 255))
    draw, font, y = ImageDraw.Draw(out), _font(), 0
    for label, row in rows:
        for k, line in enumerate(label.split("\n")):
            draw.text((4, y + 8 + 12 * k), line, fill=TEXT, font=font)
        out.paste(row, (LABEL, y))
        y += row.height + 4
    return out


def _loss_panel(draw, box, title, series, font):
    left, top, right, bottom = box
    draw.rectangle(box, outline=(60, 60, 60))
    draw.text((left + 4, top + 2), title, fill=TEXT, font=font)
    values = [v for _, vs, _ in series for v in vs]
    lo, hi = min(values), max(values)
    lo, hi = (lo - 0.5, hi + 0.5) if hi - lo < 1e-9 else (lo, hi)
    inner_top, inner_bottom, inner_left = top + 16, bottom - 14, left + 44
    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        y = inner_bottom - (inner_bottom - inner_top) * frac
        draw.line((inner_left, y, right - 4, y), fill=(225, 225, 225))
        draw.text((left + 2, y - 6), f"{v:.3f}", fill=TEXT, font=font)
    for _label, vs, colour in series:
        n = len(vs)
        points = [(inner_left + (right - 4 - inner_left) * i / max(1, n - 1),
                   inner_bottom - (inner_bottom - inner_top) * (v - lo) / (hi - lo)) for i, v in enumerate(vs)]
        if len(points) > 1:
            draw.line(points, fill=colour, width=1 if colour == GREY else 2)
    draw.text((inner_left, bottom - 12), f"step 1 .. {len(series[0][1])}", fill=TEXT, font=font)


def _smooth(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def loss_plot(losses: dict[str, list[float]]) -> Image.Image:
    """Stage 1's training loss; each stage-2 run's training loss (grey: per step, blue: running mean) and its
    held-out loss (orange: the fixed held-out batch, stretched over the same steps)."""
    panels = [("stage 1: image model (epsilon loss)", losses["stage1"], None),
              ("stage 2: v-pred + ZTSNR (v loss)", losses["v_ztsnr"]["train"], losses["v_ztsnr"]["held_out"]),
              ("stage 2: epsilon (epsilon loss)", losses["eps"]["train"], losses["eps"]["held_out"])]
    width, height = 960, 260
    out = Image.new("RGB", (width, height), (250, 250, 250))
    draw, font = ImageDraw.Draw(out), _font()
    panel_width = width // 3
    for i, (title, values, held_out) in enumerate(panels):
        window = max(1, len(values) // 25)
        series = [("raw", values, GREY), (f"mean of {window}", _smooth(values, window), BLUE)]
        if held_out:
            series.append(("held-out", _resample(held_out, len(values)), ORANGE))
        _loss_panel(draw, (i * panel_width + 6, 6, (i + 1) * panel_width - 6, height - 6), title, series, font)
    return out


def _resample(points: list[list[float]], steps: int) -> list[float]:
    """``[[step, value], ...]`` -> one value per step 1..steps, linear between the points."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    return np.interp(np.arange(1, steps + 1), xs, ys).tolist()


# ---------------------------------------------------------------------------------------------------- tables


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _verdict(holds: bool, text: str) -> str:
    return f"- **{'holds' if holds else 'does not hold'}**: {text}"


def _mean_first_last(values: list[float], share: float = 0.1) -> tuple[float, float]:
    k = max(1, int(len(values) * share))
    return sum(values[:k]) / k, sum(values[-k:]) / k


def _held_out_change(points: list[list[float]]) -> list[float]:
    return [points[0][1], points[-1][1], points[-1][1] / points[0][1]]


def markdown(results: dict) -> str:
    s, m = results["settings"], results["models"]
    secs, mach = results["seconds"], results["machine"]
    i2v = {k: v["image_to_video"]["summary"] for k, v in m.items()}
    out = [
        "# Toy AtomoVideo: the recipe trained and measured end to end",
        "",
        f"Generated by `python -m experiments.toy_atomovideo{' --reduced' if s['stage2_steps'] < 100 else ''}` in "
        f"{secs['total'] / 60:.1f} min on {mach['cpu']} ({mach['threads']} threads, torch {mach['torch']}): stage 1 "
        f"{secs['stage1'] / 60:.1f} min, stage 2 {secs['stage2_v_ztsnr'] / 60:.1f} + {secs['stage2_eps'] / 60:.1f} "
        f"min, evaluation {secs['evaluation'] / 60:.1f} min. Every figure below is in `results.json`, per case.",
        "",
        "## Set-up",
        "",
        f"- **World** (`world.py`): a textured shape on a textured background, {world.SIZE}x{world.SIZE} pixels, "
        "moving in one of four directions at 0.5 (\"slowly\") or 1.0 (\"fast\") px/frame, rendered at 4x and "
        "box-filtered so sub-pixel motion is exact. Captions: `moves left fast a red square on stripes`. Held out: "
        f"the shapes {', '.join(world.HELD_OUT_SHAPES)} and the background {', '.join(world.HELD_OUT_BACKGROUNDS)} "
        f"(training has {', '.join(world.TRAIN_SHAPES)} on {', '.join(world.TRAIN_BACKGROUNDS)}). Every evaluated "
        "first frame is held out.",
        "- **Space**: latents are the pixels (`toybase.LinearCodec`, a fixed orthogonal RGB -> 4-channel map, no "
        "spatial factor), so the truth is exact and no autoencoder error or training time sits in between.",
        f"- **Stage 1**: a diffusers `UNet2DConditionModel` of SD-1.5's layout (widths 32 per level) under a frozen "
        f"random 2-layer CLIP text model, trained as SD-1.5 was (epsilon, `scaled_linear`, 10 % empty captions), "
        f"{s['stage1_steps']} steps of {s['stage1_batch']} frames. Then frozen.",
        f"- **Stage 2**: our trainer (`build_trainable`, `train_step`, the `Objective`): the AtomoVideo module "
        f"(temporal convolutions + temporal attention at the host's sites) and the 5 image channels of `conv_in`, "
        f"{s['stage2_steps']} steps of {s['batch']} clips x {s['frames']} frames, AdamW {s['lr']:g} with warm-up and "
        f"cosine decay, 1..{min(3, s['frames'] - 1)} given frames, dropout text 10 % / image 10 % / both 5 %. Run **v-pred + ZTSNR**: "
        "v-prediction on zero-terminal-SNR `scaled_linear`. Run **epsilon**: epsilon on plain `scaled_linear`. Same "
        "data, seed and budget.",
        "- **Baseline untrained layers**: the module at initialisation (the identity: zero output projections, zero "
        "image channels), sampled as the base was trained (epsilon), i.e. the image model drawing each frame.",
        f"- **Sampling**: `sample_clip` (DDIM, trailing steps, the nodes' image/text guidance), {s['sampling_steps']} "
        f"steps, cfg {s['cfg']:g}, image_cfg {s['image_cfg']:g} unless stated. Fidelity is measured with the given "
        "frame free (the nodes' lock would make it exact by construction).",
        "- **Motion truth** (`measure.py`): the given frame's shape is tracked through every frame (masked "
        "sum-of-squared-differences template match on a 4x upsampled copy, sub-pixel peak); the velocity is the "
        "least-squares slope. Direction right = within 45 degrees and at least 0.1 px/frame. Warp error, flicker and "
        "adjacent SSIM come from `atomo_core.metrics` (at a 64-pixel working size).",
        "",
        f"The tracker on rendered truth ({results['tracker']['count']} held-out clips): direction right "
        f"{results['tracker']['direction_accuracy']:.0%}, velocity error {results['tracker']['velocity_error_mean']:.3f} "
        f"px/frame on average, {results['tracker']['velocity_error_max']:.3f} at most.",
        "",
        "## Training",
        "",
        "![loss curves](loss_curves.png)",
        "",
    ]
    loss_rows = []
    for key, label in (("stage1", "stage 1 (epsilon)"), ("v_ztsnr", "stage 2 v-pred + ZTSNR (v)"),
                       ("eps", "stage 2 epsilon (epsilon)")):
        train = results["losses"][key] if key == "stage1" else results["losses"][key]["train"]
        first, last = _mean_first_last(train)
        held = [None, None, None] if key == "stage1" else _held_out_change(results["losses"][key]["held_out"])
        loss_rows.append([label, first, last, last / first, *held])
    out += [_table(["run", "training loss, first 10 %", "last 10 %", "ratio", "held-out loss at start", "at end",
                    "ratio"], loss_rows), "",
            f"The held-out loss is the trainer's loss on a fixed batch of {8} held-out clips with fixed timesteps, "
            "noise, given frames and dropout. The two stage-2 losses have different targets (v and epsilon), so their "
            "levels are not comparable; each is compared with its own start.", ""]

    out += ["## Image to video (held-out first frames)", "", "![image to video](image_to_video.png)", ""]
    header = ["model", "frame 0 PSNR (dB)", "direction right", "speed error", "speed along truth", "PSNR vs true clip",
              "warp error", "flicker", "adjacent SSIM"]
    rows = [["truth", None, results["truth"]["direction_accuracy"], results["truth"]["speed_error"],
             results["truth"]["along"], None, results["truth"]["warp_error"], results["truth"]["flicker"],
             results["truth"]["adjacent_ssim"]]]
    for k in ("v_ztsnr", "eps", "untrained"):
        r = i2v[k]
        rows.append([NAMES[k], r["frame0_psnr"], r["direction_accuracy"], r["speed_error"], r["along"],
                     r["truth_psnr"], r["warp_error"], r["flicker"], r["adjacent_ssim"]])
    out += [_table(header, rows), "",
            f"{i2v['v_ztsnr']['count']} clips per row. \"Speed along truth\" is the tracked velocity's component "
            "along the caption's direction over the caption's speed (1.0 = exact, 0 = still, negative = backwards).",
            ""]

    out += ["## Text guidance: one image, two captions", "", "![text control](text_control.png)", ""]
    rows = [[NAMES[k], m[k]["text_control"]["both_correct"], m[k]["text_control"]["each_correct"],
             m[k]["text_control"]["separation"]] for k in ("v_ztsnr", "eps", "untrained")]
    out += [_table(["model", "both captions obeyed", "each caption obeyed", "separation (2.0 = both at true speed)"],
                   rows), "",
            f"{m['v_ztsnr']['text_control']['count']} held-out images, each sampled with the same noise and its "
            "caption's direction and the opposite one (left/right or up/down, slowly).", ""]

    out += ["## Image and text guidance scales", ""]
    for k in ("v_ztsnr", "eps"):
        grid = m[k]["guidance"]
        rows = [[f"{g['cfg']:g}", f"{g['image_cfg']:g}", g["frame0_psnr"], g["retention_ssim_mean"],
                 g["direction_accuracy"], g["along"], g["warp_error"]] for g in grid.values()]
        out += [f"**{NAMES[k]}** ({next(iter(grid.values()))['count']} clips per setting)", "",
                _table(["cfg (text)", "image_cfg", "frame 0 PSNR", "SSIM to the image, mean", "direction right",
                        "speed along truth", "warp error"], rows), ""]

    out += ["## Frame prediction", ""]
    rows = []
    for k in ("v_ztsnr", "eps", "untrained"):
        r = m[k]["frame_prediction"]["summary"]
        rows.append([NAMES[k], r["direction_accuracy"], r["speed_error"], r["along"], r["new_psnr"],
                     r["hold_last_psnr"]])
    out += [_table(["model", "direction right", "speed error", "speed along truth", "new frames PSNR vs truth",
                    "hold-last-frame PSNR"], rows), "",
            f"The first {s['given']} true frames given (locked), {s['frames'] - s['given']} predicted; velocity fitted "
            "over the last given frame and the new ones.", ""]

    out += ["## Long video by iteration", "", "![long video](long_video.png)", ""]
    rows = []
    for k in ("v_ztsnr", "eps"):
        r = m[k]["long_video"]["summary"]
        rows.append([NAMES[k], r["direction_accuracy"], r["segments_direction_ok"], r["along"],
                     r["last_segment_along"], r["pixel_seam_ratio"], r["motion_step_seam"], r["motion_step_inside"]])
    out += [_table(["model", "direction right (whole)", "segments moving right way", "speed along truth (whole)",
                    "last segment speed along truth", "frame-difference seam / inside", "tracked step at seams (px)",
                    "tracked step inside (px)"], rows), "",
            f"{m['v_ztsnr']['long_video']['summary']['count']} held-out images (slowly), {s['frames']} frames from the "
            f"image, then segments of {s['given']} given + {s['frames'] - s['given']} new to {s['long_total']} "
            "frames.", ""]

    out += ["## Verdicts", "", *verdicts(results), ""]
    return "\n".join(out)


def verdicts(results: dict) -> list[str]:
    m, t = results["models"], results["truth"]
    i2v = {k: v["image_to_video"]["summary"] for k, v in m.items()}
    v, e, u = i2v["v_ztsnr"], i2v["eps"], i2v["untrained"]
    first, last = _mean_first_last(results["losses"]["stage1"])
    lines = [_verdict(last < first, f"stage 1 loss falls: {first:.4f} -> {last:.4f} (first/last 10 % of steps).")]
    for key, label in (("v_ztsnr", "stage 2 v-pred + ZTSNR"), ("eps", "stage 2 epsilon")):
        start, end, ratio = _held_out_change(results["losses"][key]["held_out"])
        lines.append(_verdict(end < start, f"{label} held-out loss falls: {start:.4f} -> {end:.4f} ({ratio:.2f}x)."))
    lines.append(_verdict(v["frame0_psnr"] > u["frame0_psnr"] + 3,
                          f"first-frame fidelity: frame 0 at {v['frame0_psnr']:.1f} dB (v-pred) and "
                          f"{e['frame0_psnr']:.1f} dB (epsilon) against {u['frame0_psnr']:.1f} dB untrained "
                          "(criterion: 3 dB better)."))
    lines.append(_verdict(v["direction_accuracy"] >= 0.75,
                          f"motion follows the caption: direction right in {v['direction_accuracy']:.0%} of clips "
                          f"(epsilon {e['direction_accuracy']:.0%}, untrained {u['direction_accuracy']:.0%}; chance is "
                          f"at most 25 %); speed error {v['speed_error']:.2f} (epsilon {e['speed_error']:.2f}) "
                          "(criterion: 75 %)."))
    lines.append(_verdict(v["warp_error"] <= 2 * t["warp_error"] + 1 and v["flicker"] >= t["flicker"] - 0.01,
                          f"temporal consistency: warp error {v['warp_error']:.2f} (truth {t['warp_error']:.2f}, "
                          f"epsilon {e['warp_error']:.2f}, untrained {u['warp_error']:.2f}), flicker score "
                          f"{v['flicker']:.4f} (truth {t['flicker']:.4f}) (criterion: warp error at most twice the "
                          "truth's + 1, flicker within 0.01 of it)."))
    tc = m["v_ztsnr"]["text_control"]
    lines.append(_verdict(tc["both_correct"] >= 0.5,
                          f"text guidance: both opposite captions obeyed for {tc['both_correct']:.0%} of images "
                          f"(epsilon {m['eps']['text_control']['both_correct']:.0%}, untrained "
                          f"{m['untrained']['text_control']['both_correct']:.0%}; chance about 6 %) "
                          "(criterion: half)."))
    for k in ("v_ztsnr", "eps"):
        grid = list(m[k]["guidance"].values())
        cfgs = sorted({g["cfg"] for g in grid})
        images = sorted({g["image_cfg"] for g in grid})

        def at(cfg, image, field, _grid=grid):
            return next(g[field] for g in _grid if g["cfg"] == cfg and g["image_cfg"] == image)

        image_effect = [at(c, images[-1], "frame0_psnr") - at(c, images[0], "frame0_psnr") for c in cfgs]
        text_effect = [at(cfgs[-1], i, "along") - at(cfgs[0], i, "along") for i in images]
        lines.append(_verdict(all(d > 0 for d in image_effect),
                              f"{NAMES[k]}: raising image_cfg {images[0]:g} -> {images[-1]:g} raises frame-0 PSNR "
                              f"by {', '.join(f'{d:+.1f}' for d in image_effect)} dB (at cfg "
                              f"{', '.join(f'{c:g}' for c in cfgs)})."))
        lines.append(_verdict(all(d > 0 for d in text_effect),
                              f"{NAMES[k]}: raising cfg {cfgs[0]:g} -> {cfgs[-1]:g} raises the speed along the "
                              f"caption by {', '.join(f'{d:+.2f}' for d in text_effect)} (at image_cfg "
                              f"{', '.join(f'{i:g}' for i in images)})."))
    fp, fpu = m["v_ztsnr"]["frame_prediction"]["summary"], m["untrained"]["frame_prediction"]["summary"]
    lines.append(_verdict(fp["direction_accuracy"] >= 0.75 and fp["new_psnr"] > fpu["new_psnr"],
                          f"frame prediction keeps the velocity: direction right {fp['direction_accuracy']:.0%}, speed "
                          f"along truth {fp['along']:.2f}; new frames at {fp['new_psnr']:.1f} dB against the truth "
                          f"(untrained {fpu['new_psnr']:.1f} dB, holding the last frame {fp['hold_last_psnr']:.1f} "
                          "dB)."))
    lv = m["v_ztsnr"]["long_video"]["summary"]
    lines.append(_verdict(lv["segments_direction_ok"] >= 0.75 and lv["last_segment_along"] > 0.25,
                          f"a {results['settings']['long_total']}-frame video by iteration keeps moving: "
                          f"{lv['segments_direction_ok']:.0%} of segments move the right way, the last segment at "
                          f"{lv['last_segment_along']:.2f} of the true speed."))
    lines.append(_verdict(lv["pixel_seam_ratio"] <= 1.25,
                          f"seams are no worse than inside a segment: frame difference at seams / inside "
                          f"{lv['pixel_seam_ratio']:.2f}; tracked step {lv['motion_step_seam']:.2f} px at seams, "
                          f"{lv['motion_step_inside']:.2f} px inside (criterion: ratio at most 1.25)."))
    better = [name for name, a, b in (("frame-0 PSNR", v["frame0_psnr"], e["frame0_psnr"]),
                                      ("direction", v["direction_accuracy"], e["direction_accuracy"]),
                                      ("speed along truth", v["along"], e["along"]),
                                      ("PSNR vs true clip", v["truth_psnr"], e["truth_psnr"])) if a > b]
    lines.append(f"- **v-pred + ZTSNR vs epsilon**: v-pred is ahead on {len(better)} of 4 image-to-video figures "
                 f"({', '.join(better) or 'none'}); see the tables for the sizes of the differences.")
    return lines


def write(out: str, results: dict, strips: dict, cases, pairs, image_samples: torch.Tensor) -> None:
    loss_plot(results["losses"]).save(os.path.join(out, "loss_curves.png"))
    frames = results["settings"]["frames"]
    rows = []
    for i, case in enumerate(cases[:3]):
        rows.append((f"truth\n{case.video_caption()[:22]}\n{case.video_caption()[22:44]}",
                     _frames_row(world.render(case, frames))))
        for name in ("v_ztsnr", "eps", "untrained"):
            rows.append((NAMES[name], _frames_row(strips[name]["image_to_video"][i])))
    _stack(rows).save(os.path.join(out, "image_to_video.png"))
    rows = []
    case, other = pairs[0]
    for name in ("v_ztsnr", "eps", "untrained"):
        a, b = strips[name]["text_control"][0]
        rows += [(f"{NAMES[name]}\n'moves {case.direction}'", _frames_row(a)),
                 (f"{NAMES[name]}\n'moves {other.direction}'", _frames_row(b))]
    _stack(rows).save(os.path.join(out, "text_control.png"))
    s = results["settings"]
    seams = list(range(s["frames"], s["long_total"], s["frames"] - s["given"]))
    rows = [(NAMES[name], _frames_row(strips[name]["long_video"][0], seams)) for name in ("v_ztsnr", "eps")]
    _stack(rows).save(os.path.join(out, "long_video.png"))
    _stack([("image model\n(stage 1) samples", _frames_row(image_samples))]).save(
        os.path.join(out, "image_model_samples.png"))
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(markdown(results) + "\n\n![image model samples](image_model_samples.png)\n\nStage 1's image model "
                "alone (text to image, cfg 3): four captions of held-out shapes, then four of training shapes.\n")
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(jsonable(results), f, indent=1)
