"""Sampling the trained toy models on held-out first frames, and every measurement of the report.

Sampling is the trainer's ``sample.sample_clip``, which samples as the nodes do: DDIM on trailing timesteps with the
nodes' guidance (``u + s_I (i - u) + s_T (it - i)``) and CFG rescale 0.7 on zero-terminal-SNR schedules (the sampler
node's default), the given frames in the image channels in the module's layout (``conditioning.atomovideo_concat``),
and the given frames locked as ComfyUI's denoise mask locks them (re-noised from their clean latent at every step).
Long videos grow with ``frame_prediction.plan_segments`` / ``extend_video``, Predict Next Frames' own core. Motion is
measured with the lock on (as the nodes run); fidelity with the lock on and off (off: how well the model itself
reproduces the given frame), beside the flat mean frame and holding the given frame still.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from atomo_core.frame_prediction import extend_video, plan_segments, seam_report
from atomo_core.metrics.report import evaluate_video
from atomo_core.training.base import BaseModel
from atomo_core.training.sample import sample_clip

from . import measure, world


@dataclass(frozen=True)
class Sampling:
    steps: int = 20
    cfg: float = 3.0
    image_cfg: float = 1.5
    cfg_rescale: float = 0.7  # the sampler node's default (applied with zero terminal SNR only, as there)


class Sampler:
    """One attached model (``stage2.attached``) and the base's text encoder and codec."""

    def __init__(self, base: BaseModel, model, alphas_cumprod, prediction_type: str, sampling: Sampling,
                 layout: str = "given_only", zero_terminal_snr: bool = False):
        self.base, self.model, self.ab, self.prediction_type, self.sampling = (base, model, alphas_cumprod,
                                                                              prediction_type, sampling)
        self.layout = layout
        self.rescale = sampling.cfg_rescale if zero_terminal_snr else 0.0  # as the nodes: only with zero SNR
        self.empty = base.encode_text([""])

    def latents(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` 0..1 -> latents."""
        return self.base.encode_video(pixels * 2 - 1)

    def pixels(self, latents: torch.Tensor) -> torch.Tensor:
        return ((self.base.decode(latents) + 1) / 2).clamp(0, 1)

    def clip(self, given: torch.Tensor, frames: int, caption: str, seed: int, cfg: float | None = None,
             image_cfg: float | None = None, lock: bool = False) -> torch.Tensor:
        """``given [L, 3, H, W]`` (0..1) -> ``[frames, 3, H, W]`` (0..1)."""
        s = self.sampling
        out = sample_clip(self.model, self.ab, self.latents(given), frames, self.base.encode_text([caption]),
                          self.empty, steps=s.steps, cfg=s.cfg if cfg is None else cfg,
                          image_cfg=s.image_cfg if image_cfg is None else image_cfg,
                          prediction_type=self.prediction_type, generator=torch.Generator().manual_seed(seed),
                          lock_given=lock, rescale=self.rescale, image_layout=self.layout)
        return self.pixels(out)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return float(sum(values) / len(values)) if values else float("nan")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of ``a`` against ``b`` (0..1) over all their elements."""
    error = float((a.double() - b.double()).pow(2).mean())
    return 10.0 * math.log10(1.0 / error) if error > 0 else math.inf


def video_figures(video: torch.Tensor, case: world.Case, reference: torch.Tensor, truth: torch.Tensor | None = None,
                  fit_frames: list[int] | None = None) -> dict:
    """Fidelity, motion against the caption's velocity, and the metrics module's consistency figures."""
    positions = measure.track(video, reference, case)
    estimated = measure.velocity(positions, fit_frames)
    figures = {"frame0_psnr": _psnr(video[0], reference), "frame0_mse": float((video[0] - reference).pow(2).mean()),
               "velocity": estimated, **measure.motion_figures(estimated, case.velocity)}
    metrics = evaluate_video(video.permute(0, 2, 3, 1), reference.permute(1, 2, 0), size=64)
    for key in ("warp_error", "flicker", "adjacent_ssim", "motion_mean_flow", "retention_ssim_mean"):
        figures[key] = metrics.summary.get(key)
    if truth is not None:
        figures["truth_psnr"] = _psnr(video, truth)
    return figures


def _summary(rows: list[dict]) -> dict:
    keys = ("frame0_psnr", "frame0_mse", "speed", "speed_error", "along", "warp_error", "flicker", "adjacent_ssim",
            "motion_mean_flow", "retention_ssim_mean", "truth_psnr")
    out = {k: _mean(r.get(k) for r in rows) for k in keys if any(k in r for r in rows)}
    out["direction_accuracy"] = _mean(float(r["direction_ok"]) for r in rows)
    out["count"] = len(rows)
    return out


def held_out_cases(count: int, frames: int, seed: int, speed: str | None = None) -> list[world.Case]:
    """``count`` held-out cases, the four directions in turn (speeds drawn unless given)."""
    gen = torch.Generator().manual_seed(seed)
    directions = tuple(world.DIRECTIONS)
    return [world.random_case(gen, frames, held_out=True, direction=directions[i % 4], speed=speed)
            for i in range(count)]


def paired_cases(count: int, frames: int, seed: int) -> list[tuple[world.Case, world.Case]]:
    """Held-out images that fit moving both ways along an axis: ``(case, the same image moving the other way)``."""
    gen = torch.Generator().manual_seed(seed)
    pairs = []
    while len(pairs) < count:
        direction = ("left", "up")[len(pairs) % 2]
        case = world.random_case(gen, frames, held_out=True, direction=direction, speed="slowly")
        other = replace(case, direction=world.OPPOSITE[direction])  # the same image, the other way
        if world.fits(other, frames):
            pairs.append((case, other))
    return pairs


def image_to_video(sampler: Sampler, cases: list[world.Case], frames: int, seed: int) -> dict:
    """Held-out first frames to clips, lock on (as the nodes) and off, with the baselines: the flat mean of the given
    frame (frame 0 and the whole clip) and the given frame held still for the whole clip."""
    rows, videos = [], []
    for i, case in enumerate(cases):
        truth = world.render(case, frames)
        locked = sampler.clip(truth[:1], frames, case.video_caption(), seed + i, lock=True)
        free = sampler.clip(truth[:1], frames, case.video_caption(), seed + i, lock=False)
        row = video_figures(locked, case, truth[0], truth)
        flat = truth[0].mean(dim=(1, 2), keepdim=True).expand_as(truth[0])
        row.update({
            "frame0_psnr": _psnr(free[0], truth[0]), "frame0_flat_psnr": _psnr(flat, truth[0]),
            "truth_psnr_free": _psnr(free, truth), "hold_psnr": _psnr(truth[:1].expand_as(truth), truth),
            "flat_psnr": _psnr(flat.expand_as(truth), truth),
            "appearance_kept": measure.appearance_kept(locked, truth[0], case),
        })
        rows.append(row)
        videos.append(locked)
    summary = _summary(rows)
    for key in ("frame0_flat_psnr", "truth_psnr_free", "hold_psnr", "flat_psnr"):
        summary[key] = _mean(r[key] for r in rows)
    summary["appearance_kept"] = _mean(float(r["appearance_kept"]) for r in rows)
    summary["median_along"] = sorted(r["along"] for r in rows)[len(rows) // 2]
    return {"summary": summary, "rows": rows, "videos": videos}


def text_control(sampler: Sampler, pairs, frames: int, seed: int) -> dict:
    """The same image with the two opposite captions: does each move its own way?"""
    rows, videos = [], []
    for i, (case, other) in enumerate(pairs):
        image = world.render(case, 1)
        video_a = sampler.clip(image, frames, case.video_caption(), seed + i)
        video_b = sampler.clip(image, frames, other.video_caption(), seed + i)
        a, b = video_figures(video_a, case, image[0]), video_figures(video_b, other, image[0])
        videos.append((video_a, video_b))
        rows.append({"a": a, "b": b, "both_ok": a["direction_ok"] and b["direction_ok"],
                     "separation": a["along"] + b["along"],  # along each caption's axis; 2.0 = both at true speed
                     # each clip moves along its own caption's direction (the captions are opposite), and moves
                     "opposite_ways": a["along"] > 0 and b["along"] > 0 and a["speed"] >= measure.MIN_SPEED
                     and b["speed"] >= measure.MIN_SPEED})
    return {"opposite_ways": _mean(float(r["opposite_ways"]) for r in rows),
            "both_correct": _mean(float(r["both_ok"]) for r in rows),
            "each_correct": _mean([float(r["a"]["direction_ok"]) for r in rows] +
                                  [float(r["b"]["direction_ok"]) for r in rows]),
            "separation": _mean(r["separation"] for r in rows), "count": len(rows), "rows": rows, "videos": videos}


def guidance_grid(sampler: Sampler, cases, frames: int, seed: int, cfgs, image_cfgs) -> dict:
    grid = {}
    for cfg in cfgs:
        for image_cfg in image_cfgs:
            rows = []
            for i, case in enumerate(cases):
                truth = world.render(case, frames)
                video = sampler.clip(truth[:1], frames, case.video_caption(), seed + i, cfg=cfg, image_cfg=image_cfg)
                rows.append(video_figures(video, case, truth[0], truth))
            grid[f"cfg={cfg:g} image_cfg={image_cfg:g}"] = {"cfg": cfg, "image_cfg": image_cfg, **_summary(rows)}
    return grid


def frame_prediction(sampler: Sampler, cases, frames: int, given: int, seed: int) -> dict:
    """Given the true first ``given`` frames, predict the rest: velocity over the new frames, error against the truth,
    and the "hold the last frame" baseline's error."""
    rows = []
    for i, case in enumerate(cases):
        truth = world.render(case, frames)
        video = sampler.clip(truth[:given], frames, case.video_caption(), seed + i, lock=True)
        new = list(range(given - 1, frames))  # the last given frame anchors the new frames' line
        figures = video_figures(video, case, truth[0], fit_frames=new)
        figures["new_psnr"] = _psnr(video[given:], truth[given:])
        figures["hold_last_psnr"] = _psnr(truth[given - 1 : given].expand(frames - given, -1, -1, -1), truth[given:])
        rows.append(figures)
    summary = _summary(rows)
    summary["new_psnr"] = _mean(r["new_psnr"] for r in rows)
    summary["hold_last_psnr"] = _mean(r["hold_last_psnr"] for r in rows)
    return {"summary": summary, "rows": rows}


def long_video(sampler: Sampler, cases, frames: int, context: int, total: int, seed: int) -> dict:
    """Image -> ``frames`` frames, then Predict Next Frames' segments (``context`` given, ``frames - context`` new)
    to ``total`` frames. Velocity per segment, over the whole video, and the seams against the inside."""
    rows, videos = [], []
    for i, case in enumerate(cases):
        truth = world.render(case, total)
        first = sampler.clip(truth[:1], frames, case.video_caption(), seed + i)
        segments = plan_segments(frames, context, frames - context, total, max_frames=frames)

        def segment(seg, given, _case=case, _i=i):
            return sampler.clip(given, seg.length, _case.video_caption(), seed + 1000 * (seg.index + 1) + _i,
                                lock=True)

        video = extend_video(first, segments, segment)
        seams = [s.context_start + s.context for s in segments]
        positions = measure.track(video, truth[0], case)
        whole = measure.velocity(positions)
        pieces = [list(range(0, frames))] + [list(range(s.context_start + s.context - 1, s.context_start + s.length))
                                              for s in segments]
        per_segment = [measure.motion_figures(measure.velocity(positions, p), case.velocity) for p in pieces]
        steps = (positions[1:] - positions[:-1]).norm(dim=1)
        at_seam = torch.zeros(total - 1, dtype=torch.bool)
        at_seam[[s - 1 for s in seams]] = True
        rows.append({
            "velocity": whole, **measure.motion_figures(whole, case.velocity),
            "segments_direction_ok": _mean(float(p["direction_ok"]) for p in per_segment),
            "last_segment_along": per_segment[-1]["along"],
            "pixel_seam_ratio": seam_report(video, seams)["ratio"],
            "motion_step_seam": float(steps[at_seam].mean()), "motion_step_inside": float(steps[~at_seam].mean()),
            "final_in_frame": bool(0 <= positions[-1, 0] <= world.SIZE and 0 <= positions[-1, 1] <= world.SIZE),
        })
        videos.append(video)
    summary = {k: _mean(r[k] for r in rows) for k in ("speed", "speed_error", "along", "segments_direction_ok",
                                                       "last_segment_along", "pixel_seam_ratio", "motion_step_seam",
                                                       "motion_step_inside")}
    summary["direction_accuracy"] = _mean(float(r["direction_ok"]) for r in rows)
    summary["count"] = len(rows)
    return {"summary": summary, "rows": rows, "videos": videos}


def tracker_check(count: int, frames: int, seed: int) -> dict:
    """The tracker on rendered truth (held-out cases): how well it recovers the known velocity."""
    cases = held_out_cases(count, frames, seed)
    errors, ok = [], []
    for case in cases:
        video = world.render(case, frames)
        estimated = measure.velocity(measure.track(video, video[0], case))
        errors.append(math.dist(estimated, case.velocity))
        ok.append(measure.motion_figures(estimated, case.velocity)["direction_ok"])
    return {"count": count, "velocity_error_mean": _mean(errors), "velocity_error_max": max(errors),
            "direction_accuracy": _mean(float(v) for v in ok)}


def truth_figures(cases, frames: int) -> dict:
    """The metrics on the true clips (what a perfect model would score)."""
    rows = []
    for case in cases:
        truth = world.render(case, frames)
        rows.append(video_figures(truth, case, truth[0], truth))
    summary = _summary(rows)
    summary.pop("truth_psnr", None)
    summary.pop("frame0_psnr", None)
    return summary
