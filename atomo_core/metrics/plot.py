"""A picture of a video's metrics: per-frame curves and the summary figures, drawn with Pillow.

Three panels, frame index on the x axis: SSIM to the input image per frame (appearance retention) with the
adjacent-frame SSIM; the mean optical-flow magnitude per frame pair with the dynamic-degree threshold and each
pair's top-5 % score; the mean absolute frame difference per pair (8-bit levels) with the warping error. Seams of
a long video are marked on every panel. The summary table is printed above the panels.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

BACKGROUND, AXES, GRID, TEXT = (250, 250, 250), (60, 60, 60), (220, 220, 220), (20, 20, 20)
COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40))


def _panel(draw, box, title, series, x_count, seams, font):
    """``series``: list of (label, values, x_offset, colour, dashed); x runs over 0..x_count-1 frames."""
    left, top, right, bottom = box
    draw.rectangle(box, outline=AXES)
    draw.text((left + 4, top + 2), title, fill=TEXT, font=font)
    values = [v for _, vs, *_ in series for v in vs if v is not None and v == v and abs(v) != float("inf")]
    if not values:
        draw.text((left + 4, top + 18), "not computable", fill=TEXT, font=font)
        return
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    pad = 0.08 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    inner_top, inner_bottom = top + 16, bottom - 14

    def xy(i, v):
        x = left + 40 + (right - left - 50) * (i / max(1, x_count - 1))
        y = inner_bottom - (inner_bottom - inner_top) * (v - lo) / (hi - lo)
        return x, y

    for frac in (0.0, 0.5, 1.0):
        v = lo + frac * (hi - lo)
        _, y = xy(0, v)
        draw.line([(left + 40, y), (right - 10, y)], fill=GRID)
        draw.text((left + 2, y - 5), f"{v:.3g}", fill=AXES, font=font)
    for s in seams:
        x, _ = xy(s, lo)
        draw.line([(x, inner_top), (x, inner_bottom)], fill=(180, 180, 180), width=1)
    for i in range(0, x_count, max(1, x_count // 8)):
        x, _ = xy(i, lo)
        draw.text((x - 3, bottom - 12), str(i), fill=AXES, font=font)
    legend_x = right - 10
    for label, vs, offset, colour, dashed in reversed(series):
        points = [xy(i + offset, v) for i, v in enumerate(vs) if v is not None and v == v and abs(v) != float("inf")]
        if len(points) == 1:
            x, y = points[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=colour)
        for a, b in zip(points, points[1:], strict=False):
            if dashed:
                mid = ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)
                draw.line([a, mid], fill=colour, width=1)
            else:
                draw.line([a, b], fill=colour, width=2)
        width = draw.textlength(label, font=font)
        legend_x -= width + 14
        draw.line([(legend_x, top + 8), (legend_x + 8, top + 8)], fill=colour, width=2)
        draw.text((legend_x + 10, top + 2), label, fill=colour, font=font)


def plot_metrics(metrics, width: int = 768) -> np.ndarray:
    """The metrics of ``evaluate_video`` as an RGB image ``[H, W, 3]`` uint8."""
    from .report import table_rows

    font = ImageFont.load_default()
    table = table_rows(metrics)
    per_column = (len(table) + 1) // 2
    text_height = 12 * per_column + 8
    panel_height = 150
    height = text_height + 3 * (panel_height + 8) + 8
    image = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(image)
    for i, (name, value) in enumerate(table):  # two columns of (name, value), values aligned
        x = 8 + (width // 2) * (i // per_column)
        y = 4 + 12 * (i % per_column)
        draw.text((x, y), name, fill=TEXT, font=font)
        draw.text((x + 150, y), value, fill=TEXT, font=font)
    count = int(metrics.summary["frames"])
    seams = metrics.extra.get("seams", {}).get("at", [])
    curves = metrics.curves
    dynamic = metrics.extra.get("dynamic", {})
    panels = [
        ("similarity to the input image (SSIM)", [
            ("per frame", curves.get("retention_ssim", []), 0, COLOURS[0], False),
            ("adjacent frames", curves.get("adjacent_ssim", []), 0.5, COLOURS[1], False)]),
        ("motion: mean optical flow per frame pair (px at the working size)", [
            ("mean |flow|", curves.get("flow", []), 0.5, COLOURS[2], False),
            ("top 5 %", dynamic.get("pair_scores", []), 0.5, COLOURS[0], True),
            ("dynamic threshold", [dynamic.get("threshold")] * max(0, count - 1), 0.5, COLOURS[3], True)]),
        ("frame difference per pair (8-bit levels) and warping error (x255)", [
            ("|f(i+1) - f(i)|", curves.get("frame_difference", []), 0.5, COLOURS[1], False),
            ("warp error", [None if v is None else v * 255.0 for v in curves.get("warp_error", [])], 0.5,
             COLOURS[3], False)]),
    ]
    top = text_height
    for title, series in panels:
        series = [s for s in series if s[1]]
        _panel(draw, (6, top, width - 6, top + panel_height), title, series, count, seams, font)
        top += panel_height + 8
    return np.asarray(image)
