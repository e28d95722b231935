"""Classifier-free guidance variants: CFG rescale (Lin et al. 2023) and image/text double guidance.

Frames are the batch dimension, so every "per batch item" statistic below is per frame.
"""

from __future__ import annotations

import torch


def _std_per_item(x: torch.Tensor) -> torch.Tensor:
    """Standard deviation over all non-batch dims, ``[B, ...] -> [B, 1, ...]`` (unbiased, as ``torch.std``)."""
    return x.flatten(1).std(dim=1).view(x.shape[:1] + (1,) * (x.ndim - 1))


def cfg_rescale(x_cfg: torch.Tensor, x_pos: torch.Tensor, phi: float = 0.7) -> torch.Tensor:
    """Rescaled classifier-free guidance: ``x = phi * x_cfg * std(x_pos) / std(x_cfg) + (1 - phi) * x_cfg``.

    ``x_cfg = x_neg + scale * (x_pos - x_neg)`` is the guided prediction and ``x_pos`` the conditional one,
    both ``[B, ...]``; the std is taken per batch item (per frame) over all other dims. ``phi = 0`` is plain
    CFG, ``phi = 1`` matches the guided prediction's spread to the conditional one's.

    Which quantity to pass: the result depends on it, because v, eps and x0 are affine in one another with
    an offset that depends on the sample (``v = (sqrt(ab) x_t - x0) / sqrt(1 - ab)``), and ``std`` of a
    difference is not the difference of stds. Lin et al. and diffusers' ``rescale_noise_cfg`` rescale the
    model output of a v-prediction model, i.e. **v**. ComfyUI's ``RescaleCFG`` node also rescales **v**,
    whatever the model's own parameterisation: it turns the cond and uncond denoised predictions into
    ``v = (x / (sigma^2 + 1) - denoised) * sqrt(sigma^2 + 1) / sigma``, rescales, and turns the result back
    (``rescaled_cfg_denoised`` below does exactly that). Its std is ``torch.std`` over dims (1, 2, 3), the
    same per-item statistic as here (the unbiased/biased choice cancels in the ratio). There is no epsilon:
    a prediction with zero spread gives NaN, as in ComfyUI and diffusers.
    """
    return phi * x_cfg * (_std_per_item(x_pos) / _std_per_item(x_cfg)) + (1.0 - phi) * x_cfg


def rescale_denoised(
    x: torch.Tensor, sigma: torch.Tensor | float, guided: torch.Tensor, positive: torch.Tensor, phi: float = 0.7
) -> torch.Tensor:
    """CFG rescale of a guided *denoised* prediction, done in v-space as ComfyUI's ``RescaleCFG`` does.

    ``x [B, ...]`` is the sigma-space sample (``x = x0 + sigma eps``), ``sigma`` a scalar or ``[B]`` with
    ``sigma > 0``, ``guided`` the guided x0 prediction (any linear combination of conditions) and ``positive``
    the fully conditioned one. Both are mapped to ``v = (x / (sigma^2 + 1) - denoised) * sqrt(sigma^2 + 1) /
    sigma``, rescaled with ``cfg_rescale``, and mapped back with ``denoised = x / (sigma^2 + 1) - v sigma /
    sqrt(sigma^2 + 1)``.
    """
    if isinstance(sigma, torch.Tensor) and sigma.ndim == 1 and sigma.numel() > 1:
        sigma = sigma.view(sigma.shape[:1] + (1,) * (x.ndim - 1))
    scale_in = x / (sigma * sigma + 1.0)
    to_v = (sigma * sigma + 1.0) ** 0.5 / sigma
    v = cfg_rescale((scale_in - guided) * to_v, (scale_in - positive) * to_v, phi)
    return scale_in - v / to_v


def rescaled_cfg_denoised(
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    denoised_pos: torch.Tensor,
    denoised_neg: torch.Tensor,
    cond_scale: float,
    phi: float = 0.7,
) -> torch.Tensor:
    """Plain CFG on denoised predictions followed by ``rescale_denoised``: the same result as ComfyUI's
    ``RescaleCFG(multiplier=phi)``."""
    guided = denoised_neg + cond_scale * (denoised_pos - denoised_neg)
    return rescale_denoised(x, sigma, guided, denoised_pos, phi)


def image_text_guidance(
    uncond: torch.Tensor,
    image_cond: torch.Tensor,
    image_text_cond: torch.Tensor,
    image_scale: float,
    text_scale: float,
) -> torch.Tensor:
    """Double guidance (InstructPix2Pix, DreamVideo): ``u + s_I (i - u) + s_T (it - i)``.

    ``u`` = prediction with neither condition, ``i`` = with the image only, ``it`` = with image and text,
    all the same shape (eps, v or x0: the formula is linear, so any one parameterisation used throughout
    gives the same sample). ``s_I`` pulls towards the image, ``s_T`` towards the text given the image.

    Rewriting it as ``u + s_T (it - u) + (s_I - s_T)(i - u)`` shows exactly when it is plain CFG between
    ``u`` and ``it`` with scale ``s_T``: when ``(s_I - s_T)(i - u) == 0``, i.e. when the scales are equal
    (``image_scale == text_scale == s`` gives ``u + s (it - u)`` for any ``i``) or the image-only prediction
    equals the unconditional one. With unequal scales the image-only pass changes the result. Two more
    special cases: ``s_T = 0`` is plain image CFG ``u + s_I (i - u)``; ``s_I = 1`` is plain text CFG
    ``i + s_T (it - i)`` around the image-conditioned prediction.
    """
    return uncond + image_scale * (image_cond - uncond) + text_scale * (image_text_cond - image_cond)


def guidance_passes(text_scale: float, image_scale: float, has_image: bool = True) -> list[str]:
    """The predictions one step of ``image_text_guidance`` needs, in batch order.

    ``"it"`` (image and text) always; ``"u"`` (neither) only when ``s_I != 1`` and ``"i"`` (image only) only
    when ``s_I != s_T``, since ``u + s_I (i - u) + s_T (it - i) = (1 - s_I) u + (s_I - s_T) i + s_T it``.
    Without an image condition ``i == u`` and this is plain CFG: ``["it", "u"]``. With ``s_I == s_T == 1``
    the result is ``it`` alone; ``"i"`` is still returned so that guidance hooks see a second branch.
    """
    if not has_image:
        return ["it", "u"]
    passes = ["it"]
    if image_scale != 1.0:
        passes.append("u")
    if image_scale != text_scale:
        passes.append("i")
    if len(passes) == 1:
        passes.append("i")
    return passes


def combine_guidance(preds: dict[str, torch.Tensor], text_scale: float, image_scale: float) -> torch.Tensor:
    """``(1 - s_I) u + (s_I - s_T) i + s_T it`` over the predictions in ``preds`` (keys from ``guidance_passes``).

    A missing ``"u"``/``"i"`` must be one whose coefficient is zero; without an image (``has_image=False``)
    ``"u"`` stands for both ``u`` and ``i``, giving ``u + s_T (it - u)``.
    """
    out = text_scale * preds["it"]
    if "u" in preds and "i" in preds:
        return out + (1.0 - image_scale) * preds["u"] + (image_scale - text_scale) * preds["i"]
    if "u" in preds:  # i == u (no image condition) or s_I == s_T: the i term folds into u
        return out + (1.0 - text_scale) * preds["u"]
    if "i" in preds:  # s_I == 1: the u term vanishes
        return out + (image_scale - text_scale) * preds["i"]
    return out
