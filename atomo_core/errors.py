"""Errors raised by the core, worded for a ComfyUI user.

Every message names what was wrong (the file, the tensor, the number) and what to do about it. The
host shows ``str(error)`` in its error dialog, so the text is the whole user interface of a failure.
"""

from __future__ import annotations


class AtomoError(ValueError):
    """Base class: a problem the user can fix (bad file, bad input, bad setting)."""


class MotionModuleFormatError(AtomoError):
    """A file is not a motion module we can load, or is one for another model family."""


class FrameLimitError(AtomoError):
    """More frames were asked of a module than its position encoding was trained for."""


def frame_limit_advice(limit: int, image_module: bool) -> str:
    """What to do when a clip is longer than a module's ``limit``: text-only modules (AnimateDiff, AnimateLCM) make
    long videos with context windows; image modules (PIA, AtomoVideo) by continuing the clip with Predict Next Frames
    (context windows work too, each window held to the given frames)."""
    if image_module:
        return (f"Set the frame count to {limit} or fewer, or make a longer video with Predict Next Frames, which "
                "continues the clip segment by segment from its last frames (or put Context Windows (video frames) "
                f"with context_length {limit} or less before the sampler).")
    return (f"Set the frame count to {limit} or fewer, or put Context Windows (video frames) with context_length "
            f"{limit} or less (16 is what AnimateDiff was trained on) before the sampler for a longer video. "
            "(Predict Next Frames needs an image module: PIA or AtomoVideo.)")


class ConditioningError(AtomoError):
    """Inputs to a conditioning or sampling step do not fit together."""
