"""Video Metrics (``AtomoVideoMetrics``): weight-free figures of a generated clip, as a table and a plot.

Fidelity to the input image (AIGCBench's first-frame MSE/PSNR/SSIM and SSIM over time), VBench's temporal
flicker, dynamic degree and motion smoothness, optical-flow motion and warping error, the VAE ceiling and the seams
of a long video; the maths is ``atomo_core.metrics``.
"""

from __future__ import annotations

import numpy as np
import torch
from comfy_api.latest import io, ui

from ..atomo_core.errors import ConditioningError
from ..atomo_core.metrics import DEFAULT_SIZE, evaluate_video, format_table, plot_metrics


def parse_seams(text: str, frames: int) -> list[int]:
    """``"16, 32, 48"`` -> frame indices where a new segment starts (each within the video)."""
    seams = []
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        if not part.isdigit() or not 0 < int(part) < frames:
            raise ConditioningError(
                f"seams: '{part}' is not a frame index between 1 and {frames - 1}. Give the first frame of every "
                "new segment, e.g. '16, 32, 48' for a 16-frame clip continued by 16 new frames at a time."
            )
        seams.append(int(part))
    return sorted(set(seams))


class AtomoVideoMetrics(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoVideoMetrics",
            display_name="Video Metrics",
            category="AtomoVideo",
            is_output_node=True,
            description=(
                "Measures a clip without any model weights: fidelity to the input image (AIGCBench's first-frame "
                "PSNR/SSIM and SSIM over time), flicker, motion (optical flow, VBench's dynamic degree), warping "
                "error and motion smoothness, at a fixed working size so figures compare across resolutions."
            ),
            inputs=[
                io.Image.Input("images", tooltip="The frames of the clip (VAE Decode's IMAGE batch)."),
                io.Image.Input("reference", optional=True,
                               tooltip="The input image the clip was made from, for the fidelity figures."),
                io.Vae.Input("vae", optional=True,
                             tooltip="With a reference: the ceiling, the reference's own VAE round trip, which no "
                                     "model using this VAE can beat."),
                io.Int.Input("size", default=DEFAULT_SIZE, min=64, max=2048, step=8, optional=True,
                             tooltip="Working size: every frame is resized so its short side is this many pixels "
                                     "before measuring (256 makes figures comparable across resolutions)."),
                io.String.Input("seams", default="", optional=True,
                                tooltip="Long videos: the first frame of every new segment, comma-separated (e.g. "
                                        "'16, 32, 48'), to compare frame differences across seams with those "
                                        "inside segments."),
            ],
            outputs=[
                io.String.Output(display_name="table", tooltip="The figures as a plain-text table."),
                io.Image.Output(display_name="plot", tooltip="Per-frame curves (SSIM to the input, optical flow, "
                                                             "frame difference) and the figures, as an image."),
            ],
        )

    @classmethod
    def execute(cls, images, reference=None, vae=None, size=DEFAULT_SIZE, seams="") -> io.NodeOutput:
        if images.shape[0] < 2:
            raise ConditioningError(
                f"Video Metrics needs a clip of at least 2 frames; this IMAGE batch has {images.shape[0]}. Connect "
                "the VAE Decode output of the whole clip."
            )
        ceiling = None
        if vae is not None and reference is not None:
            ceiling = vae.decode(vae.encode(reference[:1, ..., :3]))
        try:
            metrics = evaluate_video(images, reference=None if reference is None else reference[:1], size=size,
                                     seams=parse_seams(seams, images.shape[0]), ceiling=ceiling)
        except ValueError as exc:
            raise ConditioningError(f"Video Metrics: {exc}") from exc
        table = format_table(metrics)
        plot = torch.from_numpy(np.ascontiguousarray(plot_metrics(metrics))).float().div(255.0)[None]
        return io.NodeOutput(table, plot, ui={**ui.PreviewImage(plot, cls=cls).as_dict(), "text": (table,)})
