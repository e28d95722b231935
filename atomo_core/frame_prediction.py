"""Video frame prediction: extend a clip segment by segment, each segment conditioned on the last frames.

AtomoVideo predicts the next frames from the last ``L`` given frames (8 in the paper, with 16 new); iterated,
this makes videos of any length. Each segment is one sampling run of ``len(context) + new`` frames whose
first frames are the given context; only the new frames are appended, so the frames already in the video are
kept exactly and nothing is duplicated or dropped at a seam. Memory is that of one segment.

``plan_segments`` decides the segments; ``extend_video`` runs them with any ``sample_segment`` function
(the host passes its sampler); ``anchor_statistics`` optionally pulls each new segment's per-channel latent
statistics towards the first clip's, against colour drift; ``seam_report`` measures how visible seams are.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import ConditioningError


@dataclass(frozen=True)
class Segment:
    """One sampling run: frames ``[context_start, context_start + context)`` of the video so far are given,
    ``new`` frames are predicted after them. ``index`` counts segments from 0."""

    index: int
    context_start: int
    context: int
    new: int

    @property
    def length(self) -> int:
        return self.context + self.new


def plan_segments(existing: int, context_frames: int, new_frames: int, total_frames: int,
                  max_frames: int | None = None) -> list[Segment]:
    """Segments that grow a video of ``existing`` frames to ``total_frames``.

    Each segment gives the last ``min(context_frames, frames so far)`` frames and predicts
    ``min(new_frames, frames still missing)``; the last segment may be shorter. ``max_frames`` (the module's
    limit per clip) bounds ``context + new``.
    """
    if existing < 1:
        raise ConditioningError("Frame prediction needs at least one existing frame to continue from.")
    if context_frames < 1 or new_frames < 1:
        raise ConditioningError(
            f"context_frames ({context_frames}) and new_frames ({new_frames}) must both be at least 1."
        )
    if total_frames < existing:
        raise ConditioningError(
            f"total_frames ({total_frames}) is shorter than the {existing} frames already there; set it to at "
            f"least {existing} (equal returns them unchanged)."
        )
    if max_frames is not None and context_frames + new_frames > max_frames:
        raise ConditioningError(
            f"context_frames + new_frames = {context_frames + new_frames} exceeds the module's {max_frames} frames "
            f"per clip. Lower new_frames to {max(1, max_frames - context_frames)} or fewer."
        )
    segments, have = [], existing
    while have < total_frames:
        context = min(context_frames, have)
        new = min(new_frames, total_frames - have)
        segments.append(Segment(len(segments), have - context, context, new))
        have += new
    return segments


def anchor_statistics(latents: torch.Tensor, reference: torch.Tensor, strength: float) -> torch.Tensor:
    """Pull the per-channel mean and std of ``latents [F, C, h, w]`` towards those of ``reference [R, C, h, w]``.

    ``strength`` 0 returns ``latents`` unchanged, 1 matches the reference's statistics (over frames and pixels)
    exactly; in between interpolates linearly. Against the slow colour drift of chained clips.
    """
    if strength <= 0:
        return latents
    dims = (0, 2, 3)
    mean, std = latents.mean(dims, keepdim=True), latents.std(dims, keepdim=True).clamp_min(1e-6)
    ref_mean, ref_std = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
    matched = (latents - mean) / std * ref_std + ref_mean
    return latents + float(strength) * (matched - latents)


def extend_video(
    video: torch.Tensor,
    segments: list[Segment],
    sample_segment: Callable[[Segment, torch.Tensor], torch.Tensor],
    anchor_strength: float = 0.0,
    reference: torch.Tensor | None = None,
    between_segments: Callable[[Segment], None] | None = None,
) -> torch.Tensor:
    """Run ``segments`` on ``video [F, C, h, w]``; returns the longer video (the input frames untouched).

    ``sample_segment(segment, context [context, C, h, w]) -> [segment.length, C, h, w]`` samples one segment
    whose first ``context`` frames are the given ones; only its last ``new`` frames are kept.
    ``between_segments`` runs before each segment (a place to check for Cancel).
    """
    pieces = [video]  # the input, then each segment's new frames: concatenated once, at the end
    reference = video if reference is None else reference
    have = video.shape[0]
    for segment in segments:
        if between_segments is not None:
            between_segments(segment)
        if segment.context_start + segment.context != have:
            raise ConditioningError(f"segment {segment.index} does not continue the video at frame {have}")
        out = sample_segment(segment, _last_frames(pieces, segment.context))
        if out.shape[0] != segment.length:
            raise ConditioningError(
                f"segment {segment.index} returned {out.shape[0]} frames, expected {segment.length}"
            )
        pieces.append(anchor_statistics(out[segment.context :].to(video), reference, anchor_strength))
        have += segment.new
    return torch.cat(pieces) if len(pieces) > 1 else video


def _last_frames(pieces: list[torch.Tensor], count: int) -> torch.Tensor:
    """The last ``count`` frames of the video the ``pieces`` make, concatenating only the pieces they lie in."""
    used, have = [], 0
    for piece in reversed(pieces):
        used.append(piece)
        have += piece.shape[0]
        if have >= count:
            break
    return torch.cat(used[::-1])[-count:] if len(used) > 1 else used[0][-count:]


def frame_differences(frames: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between consecutive frames ``[F, ...] -> [F - 1]``."""
    return (frames[1:] - frames[:-1]).abs().flatten(1).mean(dim=1)


def seam_report(frames: torch.Tensor, seams: list[int]) -> dict[str, float]:
    """Frame-difference at seams versus inside segments.

    ``seams`` are the indices of the first new frame of each segment (the difference between frame ``s - 1``
    and ``s`` crosses the seam). Returns ``seam``, ``inside`` (means) and ``ratio`` (seam / inside; about 1 means
    seams are as smooth as the motion within a segment).
    """
    diffs = frame_differences(frames.float())
    at_seam = torch.zeros_like(diffs, dtype=torch.bool)
    at_seam[[s - 1 for s in seams if 1 <= s < frames.shape[0]]] = True
    seam = diffs[at_seam].mean().item() if at_seam.any() else float("nan")
    inside = diffs[~at_seam].mean().item() if (~at_seam).any() else float("nan")
    return {"seam": seam, "inside": inside, "ratio": seam / inside if inside else float("nan")}
