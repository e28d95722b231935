"""Weight-free image-to-video metrics (AIGCBench's fidelity, VBench's flicker, dynamic degree and smoothness,
flow warping error) at a fixed working size; see ``report.py`` for the definitions."""

from .fidelity import mse, psnr, ssim
from .frames import DEFAULT_SIZE, working_frames, working_shape
from .plot import plot_metrics
from .report import COLUMNS, VideoMetrics, evaluate_video, format_table

__all__ = ["COLUMNS", "DEFAULT_SIZE", "VideoMetrics", "evaluate_video", "format_table", "mse", "plot_metrics",
           "psnr", "ssim", "working_frames", "working_shape"]
