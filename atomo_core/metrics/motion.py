"""Motion from optical flow: amount (mean |flow|, mean flow squared, VBench's dynamic degree), temporal
consistency (flow warping error) and motion smoothness (VBench-style frame interpolation).

Flow is OpenCV's DIS optical flow (``DISOpticalFlow``, ``MEDIUM`` preset: weight-free, deterministic, fast on a
CPU) between grey 8-bit frames at the working size, in pixels of that size. VBench uses RAFT for the dynamic
degree and a learned interpolator (AMT) for motion smoothness; both need weights, so DIS flow and flow-based
warping stand in, with VBench's thresholds and scores.
"""

from __future__ import annotations

import numpy as np

OCCLUSION_ALPHA, OCCLUSION_BETA = 0.01, 0.5  # forward-backward check (Sundaram, Brox and Keutzer 2010)


def opencv():
    """OpenCV, imported when a metric needs it, with the fix in the message when it is missing."""
    try:
        import cv2
    except ImportError as exc:
        raise ImportError(
            "The motion metrics need OpenCV: pip install opencv-python-headless (in the Python that runs ComfyUI)."
        ) from exc
    return cv2


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Flow ``[h, w, 2]`` (x, y) from grey uint8 frame ``a`` to ``b``: ``a(p) ~ b(p + flow(p))`` (DIS, MEDIUM)."""
    cv2 = opencv()
    engine = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return engine.calc(np.ascontiguousarray(a), np.ascontiguousarray(b), None)


def warp(image: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """``image`` sampled at ``p + flow(p)`` for every pixel ``p`` (bilinear, border replicated)."""
    cv2 = opencv()
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(image, grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def magnitude(flow: np.ndarray) -> np.ndarray:
    return np.sqrt((flow.astype(np.float64) ** 2).sum(axis=-1))


def dynamic_degree(magnitudes: list[np.ndarray], frames: int, height: int, width: int) -> dict:
    """VBench's dynamic degree: per pair the mean of its top 5 % flow magnitudes; the video is dynamic when at
    least ``round(4 * frames / 16)`` pairs exceed ``6 * min(h, w) / 256`` pixels."""
    threshold = 6.0 * min(height, width) / 256.0
    needed = max(1, round(4 * frames / 16))
    scores = []
    for m in magnitudes:
        flat = np.sort(m.ravel())
        top = flat[-max(1, int(round(flat.size * 0.05))):]
        scores.append(float(top.mean()))
    moving = sum(s > threshold for s in scores)
    return {"pair_scores": scores, "threshold": threshold, "moving_pairs": moving, "needed_pairs": needed,
            "dynamic_fraction": moving / len(scores) if scores else 0.0, "dynamic": bool(moving >= needed)}


def visible(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of frame i whose forward flow is undone by the backward flow where it lands (not occluded)."""
    back_at = warp(backward, forward)
    round_trip = ((forward + back_at) ** 2).sum(axis=-1)
    bound = OCCLUSION_ALPHA * ((forward**2).sum(axis=-1) + (back_at**2).sum(axis=-1)) + OCCLUSION_BETA
    return round_trip < bound


def warp_error(frames: np.ndarray, forwards: list[np.ndarray], backwards: list[np.ndarray]) -> tuple[float, list]:
    """Mean |frame_i - frame_{i+1} warped onto frame i| over visible pixels, in 0..1; and the per-pair values.

    ``frames [F, h, w, 3]`` float32 0..255; ``forwards[i]`` is the flow i -> i+1, ``backwards[i]`` i+1 -> i.
    """
    per_pair = []
    for i, (fwd, bwd) in enumerate(zip(forwards, backwards, strict=True)):
        mask = visible(fwd, bwd)
        warped = warp(frames[i + 1], fwd)
        error = np.abs(frames[i] - warped).mean(axis=-1)
        per_pair.append(float(error[mask].mean() / 255.0) if mask.any() else float("nan"))
    values = [v for v in per_pair if v == v]
    return (float(np.mean(values)) if values else float("nan")), per_pair


def smoothness(frames: np.ndarray, gray: np.ndarray) -> float:
    """VBench-style motion smoothness: every odd frame rebuilt from its even neighbours, ``(255 - MAE) / 255``.

    The middle frame is taken halfway along the flow from the previous to the next frame, from both sides
    (``mid(p) = prev(p - f/2) = next(p + f/2)`` for a flow ``f`` prev -> next), and the two averaged.
    """
    errors = []
    for i in range(1, frames.shape[0] - 1, 2):
        flow = dis_flow(gray[i - 1], gray[i + 1])
        rebuilt = 0.5 * (warp(frames[i - 1], -0.5 * flow) + warp(frames[i + 1], 0.5 * flow))
        errors.append(float(np.abs(frames[i] - rebuilt).mean()))
    return (255.0 - float(np.mean(errors))) / 255.0 if errors else float("nan")
