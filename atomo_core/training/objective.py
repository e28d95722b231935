"""The training objective: AtomoVideo's noised videos, given frames, condition dropout and the loss.

One training example is a video's latents ``x0 [F, 4, h, w]`` and its caption. Per example:

- a timestep ``t`` uniform in ``0..T-1`` (the same for all frames of the video) and noise ``eps``;
  ``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` on the configured schedule (SD-1.5's ``scaled_linear`` rescaled to
  zero terminal SNR by default, so the last step is pure noise);
- ``L`` given frames, uniform in ``1..max_given``: the first ``L`` frames carry their clean latent and mask 1 in the
  image channels (``atomovideo_concat``, the exact layout Image Inject Conditioning and Predict Next Frames build),
  so one model learns image-to-video (``L = 1``) and frame prediction (``L > 1``);
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

from ..conditioning import atomovideo_concat
from ..schedules import alphas_cumprod, make_betas, rescale_zero_terminal_snr


def training_alphas_cumprod(beta_schedule: str = "scaled_linear", zero_terminal_snr: bool = True,
                            timesteps: int = 1000) -> torch.Tensor:
    """``ab [T]`` (float64) the model is trained on."""
    ab = alphas_cumprod(make_betas(beta_schedule, timesteps))
    return rescale_zero_terminal_snr(ab) if zero_terminal_snr else ab


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

    def __post_init__(self):
        if self.prediction_type not in ("v_prediction", "epsilon"):
            raise ValueError(f"prediction_type must be v_prediction or epsilon, got {self.prediction_type!r}")
        if self.zero_terminal_snr and self.prediction_type == "epsilon":
            raise ValueError("zero terminal SNR needs v_prediction: at the last step an epsilon model sees pure noise "
                             "and cannot recover the image (set zero_terminal_snr: false for epsilon)")
        if self.max_given < 1:
            raise ValueError(f"max_given must be at least 1, got {self.max_given}")


@dataclass
class Batch:
    """One step's model inputs for ``B`` videos of ``F`` frames (frames are the batch dimension, ``N = B F``)."""

    model_input: torch.Tensor  # [N, 9, h, w] (or [N, 4, h, w] for a text-only module)
    timesteps: torch.Tensor  # [N]
    text_keep: torch.Tensor  # [B] bool: the caption is used (else the empty prompt)
    image_keep: torch.Tensor  # [B] bool: the image channels are used (else zeros, "no image")
    target: torch.Tensor  # [N, 4, h, w]
    loss_weight: torch.Tensor  # [N]: 1 where the frame counts in the loss
    given: list[int]  # L per video


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

    def make_batch(self, latents: torch.Tensor, generator: torch.Generator) -> Batch:
        """``latents [B, F, 4, h, w]`` (scaled, clean) -> the noised inputs, target and loss weights."""
        b, f = latents.shape[:2]
        x0 = latents.reshape(b * f, *latents.shape[2:]).float()
        t = torch.randint(0, len(self.ab), (b,), generator=generator)
        eps = torch.randn(x0.shape, generator=generator)
        ab = self.ab[t].repeat_interleave(f).view(-1, 1, 1, 1)
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        target = ab.sqrt() * eps - (1 - ab).sqrt() * x0 if self.config.prediction_type == "v_prediction" else eps
        keep_text, keep_image = self._dropout(generator, b)
        given = torch.randint(1, min(self.config.max_given, f - 1) + 1, (b,), generator=generator).tolist()
        weight = torch.ones(b, f)
        parts = [x_t]
        if self.image_channels:
            concats = []
            for i in range(b):
                frames = list(range(given[i]))
                concat = atomovideo_concat(latents[i, : given[i]].float(), f, frames)
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
