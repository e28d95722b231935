"""All the weight-free metrics of one video, and the table they make.

``evaluate_video(frames, reference=None, size=256, seams=None)`` returns ``VideoMetrics``: the summary figures
(``COLUMNS`` order, the evaluator's CSV columns) and the per-frame curves the plot draws.

===================== ====================================================================================
figure                definition
===================== ====================================================================================
first_frame_mse/psnr  the first frame against the reference image, 8-bit levels (PSNR ``inf`` if identical)
first_frame_ssim      scikit-image's SSIM (``win_size=7``, colour), AIGCBench's protocol: the video resized to
                      the reference (both at the working size)
retention_ssim_mean   the mean over all frames of their SSIM to the reference (appearance retention)
flicker               VBench's temporal flickering: ``(255 - mean_i MAE(f_i, f_i+1)) / 255``, 1 for a still video
motion_mean_flow      mean |flow| between consecutive frames, pixels at the working size (DIS flow)
motion_flow_sq        mean squared flow magnitude
dynamic_degree        VBench's dynamic degree of this video: 1 if dynamic, else 0 (``dynamic_fraction``: the
                      share of pairs above the threshold)
adjacent_ssim         mean SSIM between consecutive frames
warp_error            mean |f_i - warp(f_i+1)| over pixels that pass the forward-backward check, 0..1
smoothness            VBench-style: odd frames rebuilt from their even neighbours, ``(255 - MAE) / 255``
===================== ====================================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..frame_prediction import seam_report
from . import motion
from .fidelity import fidelity, ssim
from .frames import DEFAULT_SIZE, as_video, gray_uint8, working_frames, working_shape

COLUMNS = ("video", "frames", "width", "height", "first_frame_mse", "first_frame_psnr", "first_frame_ssim",
           "retention_ssim_mean", "flicker", "motion_mean_flow", "motion_flow_sq", "dynamic_degree", "adjacent_ssim",
           "warp_error", "smoothness")


@dataclass
class VideoMetrics:
    """``summary``: the figures by name (``None`` where not computable); ``curves``: per-frame or per-pair lists
    (``retention_ssim`` per frame; ``flow``, ``frame_difference``, ``adjacent_ssim``, ``warp_error`` per pair);
    ``extra``: dynamic-degree details, the reference's VAE ceiling, seams."""

    summary: dict
    curves: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    def row(self, name: str) -> dict:
        """The CSV row: ``COLUMNS`` in order."""
        return {"video": name, **{k: self.summary.get(k) for k in COLUMNS[1:]}}


def evaluate_video(frames, reference=None, size: int = DEFAULT_SIZE, seams: list[int] | None = None,
                   ceiling=None) -> VideoMetrics:
    """Every metric of ``frames`` (``[F, H, W, 3]`` in 0..1, ComfyUI's IMAGE layout; at least 2 frames).

    ``reference``: the input image ``[H, W, 3]`` (or ``[1, H, W, 3]``), for the fidelity figures. ``ceiling``: the
    reference's own VAE round trip, whose fidelity figures no model can beat. ``seams``: indices of the first frame
    of each new segment of a long video, for the seam report.
    """
    video = as_video(frames)
    count, height, width = video.shape[:3]
    if count < 2:
        raise ValueError(f"The metrics need a video of at least 2 frames, got {count}.")
    frames8 = working_frames(video, size)
    summary: dict = {"frames": count, "width": width, "height": height}
    curves: dict = {}
    extra: dict = {"working_size": list(frames8.shape[1:3])}
    for key in ("first_frame_mse", "first_frame_psnr", "first_frame_ssim", "retention_ssim_mean"):
        summary[key] = None
    if reference is not None:
        ref = as_video(reference)[0]
        shape = working_shape(ref.shape[0], ref.shape[1], size)
        ref8 = working_frames(ref, shape=shape)[0]
        frames_at_ref = frames8 if tuple(frames8.shape[1:3]) == tuple(shape) else working_frames(video, shape=shape)
        figures = fidelity(frames_at_ref, ref8)
        curves["retention_ssim"] = figures.pop("retention_ssim")
        summary.update(figures)
        if ceiling is not None:
            round_trip = fidelity(working_frames(ceiling, shape=shape)[:1], ref8)
            extra["ceiling"] = {k: round_trip[k] for k in ("first_frame_mse", "first_frame_psnr", "first_frame_ssim")}

    differences = (frames8[1:] - frames8[:-1]).abs().mean(dim=(1, 2, 3))
    curves["frame_difference"] = differences.tolist()
    summary["flicker"] = float((255.0 - differences.mean()) / 255.0)
    adjacent = ssim(frames8[1:], frames8[:-1])
    curves["adjacent_ssim"] = adjacent.tolist()
    summary["adjacent_ssim"] = float(adjacent.mean())

    gray = gray_uint8(frames8)
    rgb = frames8.cpu().numpy().astype(np.float32)
    forwards = [motion.dis_flow(gray[i], gray[i + 1]) for i in range(count - 1)]
    backwards = [motion.dis_flow(gray[i + 1], gray[i]) for i in range(count - 1)]
    magnitudes = [motion.magnitude(f) for f in forwards]
    curves["flow"] = [float(m.mean()) for m in magnitudes]
    summary["motion_mean_flow"] = float(np.mean(curves["flow"]))
    summary["motion_flow_sq"] = float(np.mean([(m**2).mean() for m in magnitudes]))
    dynamic = motion.dynamic_degree(magnitudes, count, *frames8.shape[1:3])
    summary["dynamic_degree"] = 1.0 if dynamic["dynamic"] else 0.0
    extra["dynamic"] = dynamic
    summary["warp_error"], curves["warp_error"] = motion.warp_error(rgb, forwards, backwards)
    summary["smoothness"] = motion.smoothness(rgb, gray) if count >= 3 else None
    if seams:
        extra["seams"] = {"at": list(seams), **seam_report(torch.from_numpy(rgb / 255.0), list(seams))}
    return VideoMetrics(summary, curves, extra)


def _format(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "inf" if value == float("inf") else f"{value:.4f}"
    return str(value)


def table_rows(metrics: VideoMetrics) -> list[tuple[str, str]]:
    """``(name, value)`` rows: the summary, the dynamic-degree details, the VAE ceiling and the seams."""
    rows = [(k, _format(metrics.summary.get(k))) for k in COLUMNS[1:]]
    dynamic = metrics.extra.get("dynamic")
    if dynamic:
        rows.append(("dynamic pairs", f"{dynamic['moving_pairs']} of {len(dynamic['pair_scores'])} above "
                                      f"{dynamic['threshold']:.2f} px (needs {dynamic['needed_pairs']})"))
    for key, value in metrics.extra.get("ceiling", {}).items():
        rows.append((f"VAE ceiling: {key}", _format(value)))
    seams = metrics.extra.get("seams")
    if seams:
        rows.append(("seams at", ", ".join(map(str, seams["at"]))))
        rows.append(("seam / inside difference", f"{_format(seams['seam'])} / {_format(seams['inside'])} "
                                                 f"= {_format(seams['ratio'])}"))
    return rows


def format_table(metrics: VideoMetrics) -> str:
    """``table_rows`` as plain text, two aligned columns."""
    rows = table_rows(metrics)
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
