"""Prompt travel: a prompt per frame range, the text embeddings interpolated between keyframes.

A schedule is written one keyframe per line, ``frame: prompt`` (``0: a bud``, ``16: a flower opening``); the
quoted form of the AnimateDiff prompt-travel tools (``"0": "a bud",``) is read too. Frame ``i`` between keyframes
``a`` (prompt ``A``) and ``b`` (prompt ``B``) gets ``(1 - t) E_A + t E_B`` with ``t = (i - a) / (b - a)`` (``linear``)
or ``E_A`` (``none``: hold each prompt until the next keyframe); frames before the first keyframe take the first
prompt, frames after the last the last. ``E`` is the prompt's CLIP hidden states (77 tokens per chunk); prompts of
different lengths are tiled to the least common multiple of their token counts, as ComfyUI does when it batches
conditions.
"""

from __future__ import annotations

import math
import re

import torch

from .errors import AtomoError

INTERPOLATIONS = ("linear", "none")
_LINE = re.compile(r'^\s*"?\s*(-?\d+)\s*"?\s*:\s*(.*?)\s*,?\s*$')


class PromptScheduleError(AtomoError):
    """A prompt schedule that cannot be read or does not fit the video."""


def parse_schedule(text: str, frames: int) -> list[tuple[int, str]]:
    """``[(frame, prompt), ...]`` sorted by frame, from ``frame: prompt`` lines (blank lines and ``#`` comments
    skipped; surrounding ``{ }`` of a pasted JSON object ignored)."""
    if frames < 1:
        raise PromptScheduleError(f"frames must be at least 1, got {frames}.")
    keys: dict[int, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#") or line in ("{", "}"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise PromptScheduleError(
                f"prompt schedule line {number} ({line[:40]!r}) is not 'frame: prompt'. Write one keyframe per line, "
                "e.g. '0: a bud' and '16: a flower opening'.")
        frame, prompt = int(match.group(1)), match.group(2).strip()
        if len(prompt) >= 2 and prompt[0] == prompt[-1] == '"':
            prompt = prompt[1:-1]
        if frame < 0 or frame >= frames:
            raise PromptScheduleError(
                f"prompt schedule line {number}: keyframe {frame} is outside the video's frames 0..{frames - 1}. "
                f"Use a frame from 0 to {frames - 1}, or make the video longer.")
        if frame in keys:
            raise PromptScheduleError(f"prompt schedule: frame {frame} has two prompts (line {number}); keep one.")
        keys[frame] = prompt
    if not keys:
        raise PromptScheduleError("the prompt schedule is empty: write at least one line 'frame: prompt', e.g. '0: a "
                                  "bud'.")
    return sorted(keys.items())


def frame_weights(keyframes: list[int], frames: int, interpolation: str = "linear") -> list[tuple[int, int, float]]:
    """For each frame ``(k, k_next, t)``: the keyframe positions (indices into ``keyframes``) it lies between and
    how far from the first it is; frame embedding ``(1 - t) E[k] + t E[k_next]``."""
    if interpolation not in INTERPOLATIONS:
        raise PromptScheduleError(f"unknown interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}.")
    out = []
    for i in range(frames):
        after = next((k for k, frame in enumerate(keyframes) if frame > i), None)
        if after is None:
            out.append((len(keyframes) - 1, len(keyframes) - 1, 0.0))
        elif after == 0:
            out.append((0, 0, 0.0))
        else:
            a, b = keyframes[after - 1], keyframes[after]
            t = (i - a) / (b - a) if interpolation == "linear" else 0.0
            out.append((after - 1, after, t))
    return out


def tile_tokens(embeddings: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each ``[1, T_k, D]`` repeated along tokens to the least common multiple of the ``T_k``."""
    lengths = [e.shape[1] for e in embeddings]
    common = math.lcm(*lengths)
    return [e.repeat(1, common // e.shape[1], 1) for e in embeddings]


def travel(embeddings: list[torch.Tensor], keyframes: list[int], frames: int,
           interpolation: str = "linear") -> torch.Tensor:
    """Per-frame embeddings ``[frames, T, D]`` from one ``[1, T_k, D]`` per keyframe (in ``keyframes`` order),
    computed in float32 and returned in the embeddings' dtype."""
    if len(embeddings) != len(keyframes):
        raise PromptScheduleError(f"{len(embeddings)} embeddings for {len(keyframes)} keyframes.")
    tiled = [e.float() for e in tile_tokens(embeddings)]
    rows = []
    for k, k_next, t in frame_weights(keyframes, frames, interpolation):
        same = t == 0.0 or embeddings[k] is embeddings[k_next] or torch.equal(embeddings[k], embeddings[k_next])
        rows.append(tiled[k] if same else tiled[k] * (1.0 - t) + tiled[k_next] * t)  # a held prompt stays exact
    return torch.cat(rows, dim=0).to(embeddings[0].dtype)
