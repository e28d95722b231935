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


class ConditioningError(AtomoError):
    """Inputs to a conditioning or sampling step do not fit together."""
