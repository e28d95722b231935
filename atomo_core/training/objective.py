"""The training objective: AtomoVideo's noised videos, given frames, condition dropout and the loss.

One training example is a video's latents ``x0 [F, 4, h, w]`` and its caption. Per example:

- a timestep ``t`` (the same for all frames of the video) drawn by ``timestep_sampling``: ``uniform`` in
  ``0..T-1``, or ``high_noise`` (T2I-Adapter's cubic sampling ``t = (1 - u^3) T``: half the draws above
  ``0.79 T``, where the clip's layout and motion are decided), and noise ``eps``;
  ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` on the configured schedule (SD-1.5's ``scaled_linear`` rescaled to
  zero terminal SNR by default, so the last step is pure noise);
- ``L`` given frames, uniform in ``1..max_given``: the first ``L`` frames carry their clean latent and mask 1 in the
  image channels (``atomovideo_concat``, the exact layout Image Inject Conditioning and Predict Next Frames build,
  ``image_layout`` saying what the other frames carry), so one model learns image-to-video (``L = 1``) and frame
  prediction (``L > 1``);
- condition dropout, one draw per example: with ``drop_text`` the caption becomes the empty prompt, with
  ``drop_image`` the image channels become zeros (mask 0: "no image"), with ``drop_both`` both; the rest keeps
  both. This is what image/text guidance at inference contrasts (``u``, ``i``, ``it``).
- the target: ``v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0`` (v-prediction) or ``eps``; the loss is the mean squared
  error over the frames that are not given (``loss_on_given = False``, the default: a given frame's answer is in
  its input, so it teaches nothing about motion) or over all frames.

All randomness comes from the ``generator`` passed in, so a resumed run draws the same examples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..conditioning import IMAGE_LAYOUTS, atomovideo_concat
from ..schedules import alphas_cumprod, make_betas, rescale_zero_terminal_snr


def training_alphas_cumprod(beta_schedule: str = "scaled_linear", zero_terminal_snr: bool = True,
                            timesteps: int = 1000) -> torch.Tensor:
    """``ab [T]`` (float64) the model is trained on."""
    ab = alphas_cumprod(make_betas(beta_schedule, timesteps))
    return rescale_zero_terminal_snr(ab) if zero_terminal_snr else ab


TIMESTEP_SAMPLING = ("uniform", "high_noise")


def draw_timesteps(count: int, steps: int, sampling: str, generator: torch.Generator) -> torch.Tensor:
    """``[count]`` training timesteps in ``0..steps-1``: ``uniform``, or ``high_noise`` (``t = (1 - u^3) T``)."""
    if sampling == "uniform":
        return torch.randint(0, steps, (count,), generator=generator)
    u = torch.rand(count, generator=generator, dtype=torch.float64)
    return ((1 - u**3) * steps).long().clamp(0, steps - 1)


@dataclass(frozen=True)
class ObjectiveConfig:
    prediction_type: str = "v_prediction"
    beta_schedule: str = "scaled_linear"
    zero_terminal_snr: bool = True
    max_given: int = 8
    drop_text: float = 0.1
    drop_image: float = 0.1
    drop_both: float = 0.05
    loss_on_given: bool = False
    image_layout: str = "given_only"
    timestep_sampling: str = "uniform"

    def __post_init__(self):
        if self.prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"prediction_type must be v_prediction or epsilon, got {self.prediction_type!r}")
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise ValueError("zero terminal SNR needs v_prediction: at the last step an epsilon model sees pure noise "
                             "and cannot recover the image (set zero_terminal_snr: false for epsilon)")
        if self.max_given < 1:
            raise ValueError(f"max_given must be at least 1, got {self.max_given}")
        if self.image_layout not in IMAGE_LAYOUTS:
            raise ValueError(f"image_layout must be one of {', '.join(IMAGE_LAYOUTS)}, got {self.image_layout!r}")
        if self.timestep_sampling not in TIMESTEP_SAMPLING:
            raise ValueError(f"timestep_sampling must be one of {', '.join(TIMESTEP_SAMPLING)}, "
                             f"got {self.timestep_sampling!r}")


@dataclass
class Batch:
    """One step's model inputs for ``B`` videos of ``F`` frames (frames are the batch dimension, ``N = B F``)."""

    model_input: torch.Tensor  # [N, 9, h, w] (or [N, 4, h, w] for a text-only module)
    timesteps: torch.Tensor  # [N]
    text_keep: list[bool]  # per video: the caption is used (else the empty prompt)
    image_keep: list[bool]  # per video: the image channels are used (else zeros, "no image")
    target: torch.Tensor  # [N, 4, h, w]
    loss_weight: torch.Tensor  # [N]: 1 where the frame counts in the loss
    given: list[int]  # L per video


@dataclass
class Draws:
    """The random choices behind one ``Batch``."""

    t: torch.Tensor  # [B] timesteps
    eps: torch.Tensor  # [B F, 4, h, w] noise
    keep_text: list[bool]
    keep_image: list[bool]
    given: list[int]


class Objective:
    def __init__(self, config: ObjectiveConfig, image_channels: bool = True):
        self.config = config
        self.image_channels = image_channels
        self.ab = training_alphas_cumprod(config.beta_schedule, config.zero_terminal_snr).float()

    def _dropout(self, generator: torch.Generator, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per video: (keep text, keep image)."""
        c = self.config
        u = torch.rand(count, generator=generator)
        both = u < c.drop_both
        text_only = (u >= c.drop_both) & (u < c.drop_both + c.drop_text)
        image_only = (u >= c.drop_both + c.drop_text) & (u < c.drop_both + c.drop_text + c.drop_image)
        return ~(both | text_only), ~(both | image_only)

    def draw(self, shape: tuple[int, ...], videos: int, frames: int, generator: torch.Generator) -> Draws:
        """Every random choice of one step, in a fixed order (a resumed run draws the same): timesteps, noise of
        ``shape`` (``[B F, 4, h, w]``), dropout, given frames."""
        t = draw_timesteps(videos, len(self.ab), self.config.timestep_sampling, generator)
        eps = torch.randn(shape, generator=generator)
        keep_text, keep_image = self._dropout(generator, videos)
        given = torch.randint(1, min(self.config.max_given, frames - 1) + 1, (videos,), generator=generator)
        return Draws(t, eps, keep_text.tolist(), keep_image.tolist(), given.tolist())

    def make_batch(self, latents: torch.Tensor, generator: torch.Generator) -> Batch:
        """``latents [B, F, 4, h, w]`` (scaled, clean) -> the noised inputs, target and loss weights."""
        b, f = latents.shape[:2]
        return self.build(latents, self.draw((b * f, *latents.shape[2:]), b, f, generator))

    def build(self, latents: torch.Tensor, draws: Draws) -> Batch:
        """The batch ``make_batch`` makes from ``draws`` (no randomness here)."""
        b, f = latents.shape[:2]
        x0 = latents.reshape(b * f, *latents.shape[2:]).float()
        t, eps, keep_text, keep_image, given = draws.t, draws.eps, draws.keep_text, draws.keep_image, draws.given
        ab = self.ab[t].repeat_interleave(f).view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        target = ab.sqrt() * eps - (1 - ab).sqrt() * x0 if self.config.prediction_type == "v_prediction" else eps
        weight = torch.ones(b, f)
        parts = [x_t]
        if self.image_channels:
            concats = []
            for i in range(b):
                frames = list(range(given[i]))
                concat = atomovideo_concat(latents[i, : given[i]].float(), f, frames, self.config.image_layout)
                concats.append(concat if keep_image[i] else torch.zeros_like(concat))
                if not self.config.loss_on_given and keep_image[i]:
                    weight[i, : given[i]] = 0.0
            parts.append(torch.cat(concats))
        return Batch(torch.cat(parts, dim=1), t.repeat_interleave(f), keep_text, keep_image, target,
                     weight.reshape(-1), given)

    @staticmethod
    def loss(prediction: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Mean squared error over the frames with weight 1 (all elements of those frames)."""
        per_frame = (prediction.float() - batch.target.to(prediction.device)).pow(2).flatten(1).mean(dim=1)
        weight = batch.loss_weight.to(per_frame.device)
        return (per_frame * weight).sum() / weight.sum().clamp_min(1.0)
