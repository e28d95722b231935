"""Host side of video sampling: the schedule a module needs, sigmas, initial noise, and one sampling run.

Shared by the Zero-SNR V Sampler and Predict Next Frames, so both sample the same way.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import comfy.model_management
import comfy.model_sampling
import comfy.sample
import comfy.sampler_helpers
import comfy.samplers
import comfy.utils
import latent_preview
import torch

from ..atomo_core.errors import ConditioningError
from ..atomo_core.noise_init import frame_init
from ..atomo_core.schedules import trailing_sigmas
from .conditioning import CONCAT_KEY, concat_of, first_given_latent, with_concat
from .guider import AtomoGuider
from .host_adapter import get_attachment
from .model_sampling import make_model_sampling

log = logging.getLogger("AtomoVideo")

TRAILING = "trailing"
FROM_MODULE = "from module"
PREDICTIONS = [FROM_MODULE, "v_prediction", "epsilon"]
ZERO_SNR = [FROM_MODULE, "on", "off"]
NOISE_INITS = ["none", "FrameInit"]


@dataclass(frozen=True)
class SamplingSettings:
    steps: int = 25
    cfg: float = 7.5
    image_cfg: float = 1.0
    cfg_rescale: float = 0.7
    sampler_name: str = "ddim"
    scheduler: str = TRAILING
    denoise: float = 1.0
    prediction: str = FROM_MODULE
    zero_terminal_snr: str = FROM_MODULE
    noise_init: str = "none"
    frameinit_tau: int = 850
    frameinit_cutoff: float = 0.25


def scheduler_names() -> list[str]:
    return [TRAILING] + list(comfy.samplers.SCHEDULER_NAMES)


@dataclass(frozen=True)
class Schedule:
    """What a sampling run uses: diffusers-named betas (``None``: not one we know), the prediction type, zero
    terminal SNR, and where it comes from (for the log line and messages)."""

    beta_schedule: str | None
    prediction: str
    zero_terminal_snr: bool
    source: str

    def describe(self) -> str:
        betas = {"linear": "sqrt_linear", "scaled_linear": "linear"}.get(self.beta_schedule, "custom")
        zsnr = "on" if self.zero_terminal_snr else "off"
        return f"{self.prediction} prediction, {betas} betas, zero terminal SNR {zsnr} ({self.source})"


def _prediction_of(model_sampling) -> str:
    for cls, name in ((comfy.model_sampling.EDM, "edm"), (comfy.model_sampling.V_PREDICTION, "v_prediction"),
                      (comfy.model_sampling.X0, "x0"), (comfy.model_sampling.EPS, "epsilon"),
                      (comfy.model_sampling.CONST, "flow")):
        if isinstance(model_sampling, cls):
            return name
    return type(model_sampling).__name__


def _betas_of(model, model_sampling, zsnr: bool) -> str | None:
    """The diffusers name of the betas behind ``model_sampling.sigmas``, if they are one of SD-1.5's two."""
    sigmas = getattr(model_sampling, "sigmas", None)
    if sigmas is None:
        return None
    for name in ("linear", "scaled_linear"):
        known = make_model_sampling(model, name, "epsilon", zsnr).sigmas
        if known.shape == sigmas.shape and torch.allclose(known.float().cpu(), sigmas.float().cpu(), rtol=1e-4):
            return name
    return None


def resolve_schedule(model, settings: SamplingSettings) -> tuple[Schedule, bool]:
    """The schedule to sample with, and whether ``model_sampling`` must be patched for it.

    The MODEL's ``model_sampling`` is used as it is unless the sampler's ``prediction`` or ``zero_terminal_snr``
    override it: the module's (set by Load Motion Module with ``sampling = from module``), or the user's own
    (``keep model's``, ModelSamplingDiscrete after the loader, or no motion module at all).

    Zero terminal SNR with epsilon prediction is refused: at the last training step the input is pure noise,
    so a model that predicts the noise learns nothing about the image there (x0 = (x - sqrt(1-ab) eps)/sqrt(ab)
    divides by zero) and sampling cannot start from it.
    """
    attachment = get_attachment(model)
    current = model.get_model_object("model_sampling")
    if attachment is not None and attachment.model_sampling is not None and current is attachment.model_sampling:
        config = attachment.config
        schedule = Schedule(config.beta_schedule, config.prediction_type, config.zero_terminal_snr,
                            f"from '{attachment.module.name}'")
    else:
        zsnr = bool(getattr(current, "zsnr", False))
        source = "the MODEL's own sampling" if attachment is not None else "the MODEL's own sampling, no motion module"
        schedule = Schedule(_betas_of(model, current, zsnr), _prediction_of(current), zsnr, source)
    prediction, zsnr = schedule.prediction, schedule.zero_terminal_snr
    if settings.prediction != FROM_MODULE:
        prediction = settings.prediction
    if settings.zero_terminal_snr != FROM_MODULE:
        zsnr = settings.zero_terminal_snr == "on"
    patch = (prediction, zsnr) != (schedule.prediction, schedule.zero_terminal_snr)
    if patch:
        if schedule.beta_schedule is None or schedule.prediction not in ("epsilon", "v_prediction"):
            raise ConditioningError(
                f"The sampler's prediction/zero_terminal_snr overrides need a discrete SD-1.5 schedule, but the MODEL "
                f"samples with {schedule.describe()}. Set both overrides to 'from module' to use the MODEL's own "
                "sampling, or remove the node that set it."
            )
        schedule = Schedule(schedule.beta_schedule, prediction, zsnr, f"{schedule.source}, overridden in the sampler")
    if zsnr and prediction == "epsilon":
        raise ConditioningError(
            f"Zero terminal SNR with epsilon prediction cannot work ({schedule.source}): the last step is pure noise, "
            "where a noise-predicting model cannot recover the image. Use v_prediction with zero terminal SNR "
            "(AtomoVideo), or turn zero terminal SNR off for epsilon modules (AnimateDiff, PIA)."
        )
    return schedule, patch


def sampling_model(model, settings: SamplingSettings):
    """``(model, schedule)``: a clone with ``model_sampling`` patched when the sampler overrides it, else the
    MODEL itself; the schedule is logged."""
    schedule, patch = resolve_schedule(model, settings)
    if patch:
        model = model.clone()
        model.add_object_patch("model_sampling", make_model_sampling(
            model, schedule.beta_schedule, schedule.prediction, schedule.zero_terminal_snr))
    log.info("AtomoVideo sampler: %s", schedule.describe())
    return model, schedule


def video_guider(model, positive, negative, settings: SamplingSettings):
    """``(guider, schedule)``: the image/text guider over ``model`` (its sampling resolved and logged, patched where
    ``settings`` override it), conditions set; CFG rescale only under zero terminal SNR."""
    model, schedule = sampling_model(model, settings)
    rescale = settings.cfg_rescale if schedule.zero_terminal_snr else 0.0
    guider = AtomoGuider(model, settings.cfg, settings.image_cfg, rescale, concat_of(positive) is not None)
    guider.set_conds(positive, negative)
    return guider, schedule


def compute_sigmas(model_sampling, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """Sampling sigmas ``[steps + 1]``; ``denoise < 1`` keeps the last ``steps`` of ``steps / denoise``."""
    if not 0.0 < denoise <= 1.0:
        raise ConditioningError(f"denoise must be in (0, 1], got {denoise}.")
    total = steps if denoise >= 1.0 else int(steps / denoise)
    if scheduler == TRAILING:
        sigmas = trailing_sigmas(model_sampling.sigmas.float().cpu(), total)
    else:
        sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, total).cpu()
    return sigmas[-(steps + 1):].float()


def initial_noise(latent: torch.Tensor, seed: int, positive, model_sampling, settings: SamplingSettings):
    """Seeded noise ``[F, 4, h, w]``, optionally FrameInit-mixed with the first given frame."""
    noise = comfy.sample.prepare_noise(latent, seed)
    if settings.noise_init == "none":
        return noise
    first = first_given_latent(positive)
    if first is None:
        raise ConditioningError("FrameInit needs an image: connect the conditioning from Image Inject Conditioning.")
    sigma_tau = model_sampling.sigma(torch.tensor([float(settings.frameinit_tau)]))
    alpha_cumprod_tau = float(1.0 / (sigma_tau.float() ** 2 + 1.0))
    cutoff = settings.frameinit_cutoff
    return frame_init(noise, first.to(noise), alpha_cumprod_tau, d_s=cutoff, d_t=cutoff)


def sample_video(model, positive, negative, latent: dict, seed: int, settings: SamplingSettings,
                 callback=None, disable_pbar=None) -> torch.Tensor:
    """Sample one clip; returns the LATENT samples ``[F, 4, h, w]`` (unscaled, like every ComfyUI LATENT)."""
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    if samples.ndim != 4:
        raise ConditioningError(f"Expected image latents [frames, 4, h, w], got shape {list(samples.shape)}.")
    _check_concat_matches(positive, samples)
    guider, _ = video_guider(model, positive, negative, settings)
    model = guider.model_patcher
    model_sampling = model.get_model_object("model_sampling")
    sigmas = compute_sigmas(model_sampling, settings.scheduler, settings.steps, settings.denoise)
    noise = initial_noise(samples, seed, positive, model_sampling, settings)
    if callback is None:
        callback = latent_preview.prepare_callback(model, sigmas.shape[-1] - 1)
    if disable_pbar is None:
        disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED
    sampler = comfy.samplers.sampler_object(settings.sampler_name)
    out = guider.sample(noise, samples, sampler, sigmas, denoise_mask=latent.get("noise_mask"), callback=callback,
                        disable_pbar=disable_pbar, seed=seed)
    out = out.to(comfy.model_management.intermediate_device())
    out = _paste_locked_frames(out, samples, latent.get("noise_mask"))
    if not torch.isfinite(out).all():
        raise ConditioningError(
            "Sampling produced NaN values. Try fp32 or bf16 for the UNet (--force-fp32 / --bf16-unet), fewer "
            "sampler steps at huge sigmas (the 'trailing' scheduler), or check the inputs for NaNs."
        )
    return out


def _check_concat_matches(positive, samples: torch.Tensor) -> None:
    concat = concat_of(positive)
    if concat is not None and (concat.shape[0] != samples.shape[0] or concat.shape[-2:] != samples.shape[-2:]):
        raise ConditioningError(
            f"The image conditioning is for {concat.shape[0]} frames of {concat.shape[-1] * 8}x{concat.shape[-2] * 8}, "
            f"but the latent has {samples.shape[0]} frames of {samples.shape[-1] * 8}x{samples.shape[-2] * 8}. Use "
            "the LATENT from the same Image Inject Conditioning node (or one of the same size and frame count)."
        )


def _paste_locked_frames(out: torch.Tensor, samples: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Where a latent-sized denoise mask is 0 the input latent is kept; make that exact (the sampler's per-step
    blending leaves rounding differences)."""
    if mask is None or tuple(mask.shape) != (out.shape[0], 1, *out.shape[2:]):
        return out
    keep = (mask.to(out.device) == 0).expand_as(out)
    return torch.where(keep, samples.to(out), out)


# ------------------------------------------------------------------ one segment of Predict Next Frames


def _segment_cond(cond: dict, concat: torch.Tensor) -> dict:
    """A converted condition with the segment's image channels; one that carried the "no image" condition (all
    zeros) keeps it."""
    old = cond.get(CONCAT_KEY)
    return {**cond, CONCAT_KEY: torch.zeros_like(concat) if old is not None and not bool(old.any()) else concat}


def segment_guider(guider, model, concat: torch.Tensor, prompt=None):
    """A copy of ``guider`` on ``model`` whose conditions carry ``concat``; ``prompt`` (a CONDITIONING) replaces the
    positive's text. Our guider sets its conditions anew (its "neither" branch is derived from the negative); any
    other CFGGuider-like GUIDER gets the image channels on every condition but a "no image" one."""
    if isinstance(guider, AtomoGuider):  # made anew: a guider built on prompts without an image gets the image now
        out = AtomoGuider(model, *guider.requested, has_image=True)
        out.set_conds(with_concat(prompt if prompt is not None else guider.positive, concat),
                      with_concat(guider.negative, concat))
        return out
    out = copy.copy(guider)
    out.model_patcher, out.model_options = model, model.model_options
    conds = {}
    for name, items in guider.original_conds.items():
        if prompt is not None and name == "positive":
            items = comfy.sampler_helpers.convert_cond(with_concat(prompt, concat))
        conds[name] = [_segment_cond(c, concat) for c in items]
    out.original_conds = conds
    return out


def segment_noise(noise, index: int, concat: torch.Tensor):
    """The NOISE of segment ``index``: seed + index; a FrameInit noise takes the segment's first given frame."""
    out = copy.copy(noise)
    if hasattr(out, "seed"):
        out.seed = int(noise.seed) + index
    if hasattr(out, "positive"):
        out.positive = [[None, {CONCAT_KEY: concat}]]
    return out


def sample_segment_with(guider, sampler, sigmas, noise, samples: torch.Tensor, mask: torch.Tensor, callback):
    """What SamplerCustomAdvanced does, for one segment (given frames locked by ``mask``); returns its latents."""
    samples = comfy.sample.fix_empty_latent_channels(guider.model_patcher, samples)
    out = guider.sample(noise.generate_noise({"samples": samples}), samples, sampler, sigmas, denoise_mask=mask,
                        callback=callback, disable_pbar=True, seed=noise.seed)
    out = _paste_locked_frames(out.to(comfy.model_management.intermediate_device()), samples, mask)
    if not torch.isfinite(out).all():
        raise ConditioningError("Sampling a segment produced NaN values; see the Zero-SNR V Sampler's advice.")
    return out
