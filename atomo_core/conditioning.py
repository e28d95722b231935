"""The extra input channels of 9-channel image-to-video UNets: frame mask and image latent.

Both AtomoVideo and PIA feed the UNet ``noisy latent (4) | mask (1) | image latent (4)`` per frame.
ComfyUI appends ``c_concat`` after the noisy latent, so the tensors built here are ``c_concat``:
``[frames, 5, h, w]`` with channel 0 the mask and channels 1..4 the (scaled) image latent.

- AtomoVideo: the given frames (the input image, or the last frames of a previous clip for frame
  prediction) carry their latent and mask 1. The other frames carry mask 0 and, by the module's
  ``image_layout``, zeros (``"given_only"``, the layout of the first AtomoVideo files) or the latent of the
  nearest given frame (``"every_frame"``, as PIA and SVD repeat the image: every frame's input sees the image).
- PIA: the one image latent is repeated in every frame; the mask is a per-frame scalar "affinity" that
  falls with the distance from the condition frame, from PIA's preset tables (``PIA_PRESETS``).
"""

from __future__ import annotations

import torch
from einops import repeat

from .errors import ConditioningError

LATENT_CHANNELS = 4

# PIA's RANGE_LIST (open-mmlab/PIA, animatediff/utils/util.py), by the names its UI uses. PIA selects
# index m (motion), m + 3 (loop) and -m - 1 (style transfer) for m = 0 small, 1 moderate, 2 large.
PIA_PRESETS: dict[str, tuple[float, ...]] = {
    "small motion": (1.0, 0.9, 0.85, 0.85, 0.85, 0.8),
    "moderate motion": (1.0, 0.8, 0.8, 0.8, 0.79, 0.78, 0.75),
    "large motion": (1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7, 0.6, 0.5, 0.5),
    "loop (small)": (1.0, 0.9, 0.85, 0.85, 0.85, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.85, 0.85, 0.9, 1.0),
    "loop (moderate)": (1.0, 0.8, 0.8, 0.8, 0.79, 0.78, 0.75, 0.75, 0.75, 0.75, 0.75, 0.78, 0.79, 0.8, 0.8, 1.0),
    "loop (large)": (1.0, 0.8, 0.7, 0.7, 0.7, 0.7, 0.6, 0.5, 0.5, 0.6, 0.7, 0.7, 0.7, 0.7, 0.8, 1.0),
    "style transfer (small)": (0.5, 0.4, 0.4, 0.4, 0.35, 0.3),
    "style transfer (moderate)": (0.5, 0.4, 0.4, 0.4, 0.35, 0.35, 0.3, 0.25, 0.2),
    "style transfer (large)": (0.5, 0.2),
}


def _check_latents(latents: torch.Tensor, what: str) -> None:
    if latents.ndim != 4 or latents.shape[1] != LATENT_CHANNELS:
        raise ConditioningError(
            f"{what} must be SD-1.5 latents of shape [N, 4, h, w], got {tuple(latents.shape)}. "
            "Encode the image with an SD-1.5 VAE (VAE Encode) and pass the LATENT's samples."
        )


IMAGE_LAYOUTS = ("given_only", "every_frame")


def atomovideo_concat(image_latents: torch.Tensor, frames: int, given_frames: list[int],
                      layout: str = "given_only") -> torch.Tensor:
    """AtomoVideo's ``c_concat [frames, 5, h, w]``: mask 1 and the latent at given frames; elsewhere mask 0 and
    zeros (``layout="given_only"``) or the latent of the nearest given frame (``"every_frame"``; the earlier one
    on a tie).

    ``image_latents [L, 4, h, w]`` holds one latent per entry of ``given_frames`` (frame indices in
    ``0..frames-1``, unique, any order): ``image_latents[k]`` goes to frame ``given_frames[k]``. For
    image-to-video ``given_frames = [0]``; for frame prediction with 8 given frames, ``[0, ..., 7]``.
    """
    if layout not in IMAGE_LAYOUTS:
        raise ConditioningError(f"unknown AtomoVideo image layout {layout!r}; known: {', '.join(IMAGE_LAYOUTS)}.")
    _check_latents(image_latents, "image_latents")
    if frames < 1:
        raise ConditioningError(f"frames must be at least 1, got {frames}.")
    given = list(given_frames)
    if image_latents.shape[0] != len(given):
        raise ConditioningError(
            f"{image_latents.shape[0]} image latents but {len(given)} given frame indices {given}: "
            "pass one frame index per image latent."
        )
    if len(given) > frames:
        raise ConditioningError(
            f"{len(given)} given frames do not fit in a clip of {frames} frames: use more frames or fewer given images."
        )
    out_of_range = [i for i in given if not 0 <= i < frames]
    if out_of_range:
        raise ConditioningError(
            f"given frame indices {out_of_range} are outside 0..{frames - 1} for a clip of {frames} frames: "
            "use indices from 0 to frames - 1."
        )
    if len(set(given)) != len(given):
        duplicates = sorted({i for i in given if given.count(i) > 1})
        raise ConditioningError(
            f"given frame indices {duplicates} appear more than once: each frame can carry one image latent."
        )
    _, channels, height, width = image_latents.shape
    out = image_latents.new_zeros(frames, 1 + channels, height, width)
    index = torch.tensor(given, dtype=torch.long, device=image_latents.device)
    if layout == "every_frame":
        order = sorted(range(len(given)), key=lambda k: given[k])
        nearest = [min(order, key=lambda k: (abs(given[k] - f), given[k])) for f in range(frames)]
        out[:, 1:] = image_latents[torch.tensor(nearest, dtype=torch.long, device=image_latents.device)]
    out[index, 0] = 1.0
    out[index, 1:] = image_latents
    return out


def pia_mask_coefficients(frames: int, preset: str, cond_frame: int = 0) -> list[float]:
    """PIA's per-frame mask values: ``coef[|i - cond_frame|]`` for frame ``i``.

    ``coef`` is ``PIA_PRESETS[preset]`` padded with its last value to ``frames`` entries (PIA's
    ``prepare_mask_coef_by_statistics``). The loop presets are 16 entries long and only loop for 16 frames
    with ``cond_frame = 0``; otherwise they act as an ordinary decay list.
    """
    if preset not in PIA_PRESETS:
        raise ConditioningError(f"unknown PIA preset {preset!r}; choose one of: {', '.join(PIA_PRESETS)}.")
    if frames < 1:
        raise ConditioningError(f"frames must be at least 1, got {frames}.")
    if not 0 <= cond_frame < frames:
        raise ConditioningError(
            f"cond_frame {cond_frame} is outside 0..{frames - 1} for a clip of {frames} frames: "
            "choose the frame the image should appear at, from 0 to frames - 1."
        )
    coef = list(PIA_PRESETS[preset])
    coef += [coef[-1]] * (frames - len(coef))
    return [coef[abs(i - cond_frame)] for i in range(frames)]


def pia_concat(image_latent: torch.Tensor, frames: int, preset: str, cond_frame: int = 0) -> torch.Tensor:
    """PIA's ``c_concat [frames, 5, h, w]``: per-frame scalar mask, the image latent in every frame.

    ``image_latent [1, 4, h, w]``; channel 0 of frame ``i`` is ``pia_mask_coefficients(...)[i]`` everywhere,
    channels 1..4 are ``image_latent[0]``. PIA uses the same tensor for the conditional and unconditional
    passes.
    """
    _check_latents(image_latent, "image_latent")
    if image_latent.shape[0] != 1:
        raise ConditioningError(
            f"PIA conditions on one image, got {image_latent.shape[0]} latents: pass a single image."
        )
    coef = pia_mask_coefficients(frames, preset, cond_frame)
    mask = torch.tensor(coef, dtype=image_latent.dtype, device=image_latent.device)
    height, width = image_latent.shape[-2:]
    mask = repeat(mask, "f -> f 1 h w", h=height, w=width)
    latents = repeat(image_latent[0], "c h w -> f c h w", f=frames)
    return torch.cat([mask, latents], dim=1)


def window_anchor_frames(concat: torch.Tensor, family: str) -> list[int]:
    """The frames a context window should always hold to keep a long clip on the image (``concat [F, 5, h, w]``):
    AtomoVideo's given frames (mask 1 everywhere), PIA's condition frame (its largest mask value; the first on a
    tie). ``[]`` for a condition without an image (mask all zero)."""
    mask = concat[:, 0].detach().flatten(1)
    if family == "atomovideo":
        return (mask == 1).all(dim=1).nonzero().flatten().tolist()
    if family == "pia":
        level = mask.amax(dim=1)
        return [] if float(level.max()) <= 0 else [int(torch.argmax(level))]
    raise ConditioningError(f"unknown image conditioning family {family!r}; known: atomovideo, pia.")


def window_concat(concat: torch.Tensor, family: str, index_list: list[int], anchors: list[int]) -> torch.Tensor:
    """The image channels of one context window ``[len(index_list), 5, h, w]`` whose frames are ``index_list``
    (the ``anchors`` first): AtomoVideo's are the clip's own (given frames mask 1 and their latent); PIA's window is a
    clip of its own length with the condition frame first, so the frame at window position ``p`` gets the strength
    of distance ``p`` from the condition frame (read from the clip's mask, whose values are PIA's coefficients by
    distance)."""
    window = concat[list(index_list)]
    if family != "pia" or not anchors or list(index_list[: len(anchors)]) != list(anchors):
        return window
    frames, cond = concat.shape[0], anchors[0]
    reference = [cond + p if cond + p < frames else max(cond - p, 0) for p in range(len(index_list))]
    window[:, :1] = concat[reference, :1]  # (indexing with a list made ``window`` a copy)
    return window
