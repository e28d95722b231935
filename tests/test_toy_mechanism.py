"""The toy study's bug-or-budget measurements (experiments/toy_atomovideo/budget.py) on inputs whose answer is known."""

from __future__ import annotations

import torch

from atomo_core.schedules import alphas_cumprod, make_betas, rescale_zero_terminal_snr
from experiments.toy_atomovideo import budget


def test_linear_readout_reads_what_is_there_and_not_what_is_not():
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(4, (400,), generator=gen)
    centres = torch.randn(4, 16, generator=gen) * 3
    separable = centres[labels] + torch.randn(400, 16, generator=gen)
    noise = torch.randn(400, 16, generator=gen)
    assert budget._linear_accuracy(separable[:300], labels[:300], separable[300:], labels[300:]) > 0.95
    # features that hold nothing of the label: about chance (0.25) on 100 held-out points, never near 1
    assert budget._linear_accuracy(noise[:300], labels[:300], noise[300:], labels[300:]) < 0.45


class _Echo(torch.nn.Module):
    """A v-prediction 'model' at the pure-noise step: ``x0_hat = -v``. ``echo``: v = -(image channels) -
    ``echo`` * (noisy input), so ``echo`` of the input noise passes into the prediction."""

    def __init__(self, echo: float):
        super().__init__()
        self.echo = echo
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, context, frames):
        return -(x[:, 5:9] + self.echo * x[:, :4])


def test_noise_leak_separates_the_noise_passed_through_from_the_bias():
    ab = rescale_zero_terminal_snr(alphas_cumprod(make_betas("scaled_linear", 1000))).float()
    gen = torch.Generator().manual_seed(1)
    latents = torch.randn(3, 4, 4, 8, 8, generator=gen)
    context = torch.zeros(3, 2, 8)
    # the image in every frame's channels: the prediction is the given frame; nothing of the noise passes
    clean = budget.noise_leak(_Echo(0.0), ab, "v_prediction", latents, context, 0, "every_frame")
    assert clean["variance"] < 1e-12 and clean["leak"] < 1e-10
    assert abs(clean["error"] - float((latents[:, :1] - latents[:, 1:]).pow(2).mean())) < 1e-6  # copying frame 0
    # half the unit-variance noise passed through: variance 0.25; the bias stays the copying error. Tolerances: 4
    # draws of 2304 values give the variance a sampling error of ~0.004 and the bias (through the cross term of a
    # ~1.5 bias with the 0.5 noise) ~0.016; 0.05 and 0.08 are over 5 of those
    leaky = budget.noise_leak(_Echo(0.5), ab, "v_prediction", latents, context, 0, "every_frame")
    assert abs(leaky["variance"] - 0.25) < 0.05
    assert abs(leaky["bias"] - clean["error"]) < 0.08 and leaky["leak"] > clean["leak"] + 0.05


def test_spatial_reach_layer_starts_as_identity_and_can_shift_a_pixel_per_frame():
    import atomo_core.motion_module as motion_module
    from experiments.toy_atomovideo import stage2

    layer = stage2.SpatioTemporalConvLayer(32)
    x = torch.randn(2 * 3, 32, 5, 5, generator=torch.Generator().manual_seed(2))
    assert torch.equal(layer(x, 3), x)  # zero-initialised: the identity, as AtomoVideo's layer starts
    with torch.no_grad():  # read the previous frame one pixel to the left: what a 1 px/frame motion needs
        layer.conv.weight[:, :, 0, 1, 0] = torch.eye(32)
    out = layer(x, 3).view(2, 3, 32, 5, 5) - x.view(2, 3, 32, 5, 5)
    h = torch.nn.functional.silu(layer.norm(x)).view(2, 3, 32, 5, 5)
    assert torch.allclose(out[:, 1:, :, :, 1:], h[:, :-1, :, :, :-1], atol=1e-6)  # frame f, x+1 <- frame f-1, x
    assert torch.equal(out[:, 0], torch.zeros_like(out[:, 0]))  # no frame before the first (zero padding)
    saved = motion_module.TemporalConvLayer
    with stage2.spatial_reach():
        assert motion_module.TemporalConvLayer is stage2.SpatioTemporalConvLayer
    assert motion_module.TemporalConvLayer is saved


def test_one_motion_batches_all_move_the_one_way():
    from experiments.toy_atomovideo import world

    cases = budget.one_motion_cases(12, 6, 0, held_out=True)
    assert {(c.direction, c.speed) for c in cases} == {budget.ONE_MOTION}
    assert {c.shape for c in cases} <= set(world.HELD_OUT_SHAPES)

    class Config:
        seed, batch_size, frames = 0, 3, 6

    batch = next(budget.one_motion_batches(Config()))
    assert batch["pixels"].shape == (3, 6, 3, world.SIZE, world.SIZE)
    assert all(c.startswith("moves right fast ") for c in batch["caption"])
