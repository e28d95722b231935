"""The learning probe (``atomo_core.training.probe``): its figures are the errors they claim to be, measured through
the same noising, image channels and prediction conversions as training, and a deliberate bug moves them.

The models here are oracles built on the probe's own contract (``model(x [(B F), 9, h, w], t, context, frames)``):
one that copies the given frame out of the image channels, and one that returns the exact v of the truth. Their
errors are known in closed form, so every figure is checked against a number computed independently."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from atomo_core.schedules import v_from_eps_x0
from atomo_core.training.objective import training_alphas_cumprod
from atomo_core.training.probe import learning_probe, one_step_x0

AB = training_alphas_cumprod()  # zero terminal SNR: ab[999] == 0, the pure-noise step


def _clips(seed: int = 0, b: int = 3, f: int = 5) -> torch.Tensor:
    return torch.randn(b, f, 4, 6, 6, generator=torch.Generator().manual_seed(seed))


class CopyGiven(nn.Module):
    """Predicts, as v, the clean frame that the image channels carry (mask 1 frame) for every frame of its video: the
    "hold the image still" model. Without an image it predicts a clean frame of zeros."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, timesteps, context, frames):
        x_t, mask, image = x[:, :4], x[:, 4:5], x[:, 5:]
        per_video = (mask * image).unflatten(0, (-1, frames)).sum(1, keepdim=True)  # the given frame's latent
        x0 = per_video.expand(-1, frames, -1, -1, -1).flatten(0, 1)
        a = AB[int(timesteps[0])].float()
        eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return v_from_eps_x0(eps, x0, a)


class Oracle(nn.Module):
    """Returns the exact v of ``truth`` (it knows the clips): its one-step prediction is the truth itself."""

    def __init__(self, truth: torch.Tensor):
        super().__init__()
        self.truth = truth.flatten(0, 1)
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, timesteps, context, frames):
        a = AB[int(timesteps[0])].float()
        eps = (x[:, :4] - a.sqrt() * self.truth) / (1 - a).sqrt()
        return v_from_eps_x0(eps, self.truth, a)


def test_the_figures_are_the_errors_they_name():
    clips = _clips()
    context = torch.zeros(3, 77, 8)
    figures = learning_probe(CopyGiven(), AB, "v_prediction", clips, context, given=1, seed=4)
    assert list(figures) == ["t999", "t500"]
    generated = clips[:, 1:]
    copy = ((clips[:, :1] - generated) ** 2).mean().item()
    zero = (generated**2).mean().item()
    mean = ((clips.mean(dim=(0, 1), keepdim=True) - generated) ** 2).mean().item()
    for key, p in figures.items():
        # float32 round trip x0 -> v -> x0 through sqrt(ab) factors: ~1e-6 relative (5e-5 at t500, where the
        # round trip divides by sqrt(1 - ab)); a wrong frame, channel or schedule index is off by order 1
        assert p["with_image"] == pytest.approx(copy, rel=1e-4), key
        assert p["without_image"] == pytest.approx(zero, rel=1e-4), key
        assert p["copy_given"] == pytest.approx(copy, rel=1e-6)
        assert p["mean_frame"] == pytest.approx(mean, rel=1e-6)
        assert p["image_gain"] == pytest.approx(zero / copy, rel=1e-4)


def test_an_oracle_scores_zero_and_a_wrong_schedule_does_not():
    clips = _clips(1)
    context = torch.zeros(3, 77, 8)
    figures = learning_probe(Oracle(clips), AB, "v_prediction", clips, context, given=2, seed=0)
    for p in figures.values():
        assert p["with_image"] < 1e-9 and p["without_image"] < 1e-9
    # a deliberate bug: converting with another schedule (no zero terminal SNR) than the model's
    wrong = learning_probe(Oracle(clips), training_alphas_cumprod(zero_terminal_snr=False), "v_prediction", clips,
                           context, given=2, seed=0)
    assert wrong["t500"]["with_image"] > 1e-3


def test_the_same_seed_gives_the_same_figures_and_the_layout_reaches_the_model():
    clips = _clips(2)
    context = torch.zeros(3, 77, 8)
    a = learning_probe(CopyGiven(), AB, "v_prediction", clips, context, seed=9, timesteps=(700,))
    b = learning_probe(CopyGiven(), AB, "v_prediction", clips, context, seed=9, timesteps=(700,))
    assert a == b
    seen = {}

    class Spy(CopyGiven):
        def forward(self, x, timesteps, context, frames):
            seen["image"] = x[:, 5:].clone()
            return super().forward(x, timesteps, context, frames)

    noise = torch.randn(clips.shape, generator=torch.Generator().manual_seed(0))
    one_step_x0(Spy(), AB, "v_prediction", clips, context, 999, noise, 1, True, image_layout="every_frame")
    assert torch.equal(seen["image"].unflatten(0, (3, 5)), clips[:, :1].expand(-1, 5, -1, -1, -1))
    one_step_x0(Spy(), AB, "v_prediction", clips, context, 999, noise, 1, True, image_layout="given_only")
    assert seen["image"].unflatten(0, (3, 5))[:, 1:].abs().max() == 0


def test_the_probe_refuses_a_clip_with_nothing_to_generate():
    with pytest.raises(ValueError, match="given < frames"):
        learning_probe(CopyGiven(), AB, "v_prediction", _clips(f=2), torch.zeros(3, 77, 8), given=2)
