"""Noise-schedule maths against its formulas and against diffusers' DDIMScheduler (test-only oracle)."""

from __future__ import annotations

import math

import _torchvision_shim
import numpy as np
import pytest
import torch

from atomo_core import schedules as S

_torchvision_shim.install()
from diffusers import DDIMScheduler  # noqa: E402

# SD-1.5's scheduler config; diffusers' own defaults are beta_start=1e-4, beta_end=0.02 (and clip_sample=True)
SD15 = dict(beta_start=0.00085, beta_end=0.012)
ZSNR = dict(SD15, beta_schedule="scaled_linear", rescale_betas_zero_snr=True, prediction_type="v_prediction")


def _ddim(**overrides) -> DDIMScheduler:
    kwargs = dict(ZSNR, timestep_spacing="trailing", clip_sample=False)
    kwargs.update(overrides)
    return DDIMScheduler(**kwargs)


def _zsnr_alphas_cumprod() -> torch.Tensor:
    return S.rescale_zero_terminal_snr(S.alphas_cumprod(S.make_betas("scaled_linear")))


# ------------------------------------------------------------------------------------------- tables


def test_betas_follow_their_definitions_and_diffusers():
    linear = S.make_betas("linear")
    assert linear.dtype == torch.float64 and linear.shape == (1000,)
    assert linear[0].item() == pytest.approx(0.00085) and linear[-1].item() == pytest.approx(0.012)
    assert linear[1].item() == pytest.approx(0.00085 + (0.012 - 0.00085) / 999, rel=1e-12)
    scaled = S.make_betas("scaled_linear")
    step = (0.012**0.5 - 0.00085**0.5) / 999
    assert scaled[500].item() == pytest.approx((0.00085**0.5 + 500 * step) ** 2, rel=1e-12)
    for name in S.BETA_SCHEDULES:
        ours = S.make_betas(name)
        theirs = DDIMScheduler(beta_schedule=name, **SD15).betas.double()
        assert (ours - theirs).abs().max().item() < 1e-8  # diffusers computes in float32
    with pytest.raises(ValueError, match="sqrt_linear"):
        S.make_betas("sqrt_linear")  # ComfyUI's name is not ours


def test_sd15_alphas_cumprod_and_comfy_sigma_range():
    ab = S.alphas_cumprod(S.make_betas("scaled_linear"))
    assert ab[0].item() == pytest.approx(1 - 0.00085, rel=1e-12)
    assert ab[2].item() == pytest.approx(math.prod(1 - b for b in S.make_betas("scaled_linear")[:3].tolist()))
    sigmas = S.sigmas_from_alphas_cumprod(ab)
    assert sigmas[0].item() == pytest.approx(0.0292, abs=1e-4)  # ComfyUI's SD-1.5 sigma_min
    assert sigmas[-1].item() == pytest.approx(14.6146, abs=1e-3)  # and sigma_max without zero SNR


def test_zero_terminal_snr_follows_algorithm_1():
    ab = S.alphas_cumprod(S.make_betas("scaled_linear"))
    zsnr = S.rescale_zero_terminal_snr(ab)
    assert zsnr[-1].item() == 0.0
    assert zsnr[0].item() == pytest.approx(ab[0].item(), rel=1e-14)
    s, s_new = ab.sqrt(), zsnr.sqrt()
    s1, sT = s[0].item(), s[-1].item()
    for t in (1, 250, 600, 998):  # s' = (s - s_T) s_1 / (s_1 - s_T), pointwise
        assert s_new[t].item() == pytest.approx((s[t].item() - sT) * s1 / (s1 - sT), rel=1e-12)
    assert sT == pytest.approx(0.068265, abs=1e-6)  # SD-1.5's terminal sqrt(ab): the SNR being removed
    assert bool((zsnr[1:] < zsnr[:-1]).all())


def test_zero_terminal_snr_matches_diffusers():
    ours = _zsnr_alphas_cumprod()
    theirs = _ddim().alphas_cumprod.double()  # float32 in diffusers
    assert theirs[-1].item() == 0.0
    assert (ours - theirs).abs().max().item() < 2e-6
    plain = S.alphas_cumprod(S.make_betas("scaled_linear"))
    assert (plain - theirs).abs().max().item() > 4e-3  # the comparison sees the rescale


def test_sigmas_clamp_the_terminal_zero_as_comfyui():
    sigmas = S.sigmas_from_alphas_cumprod(_zsnr_alphas_cumprod())
    c = S.COMFY_TERMINAL_ALPHAS_CUMPROD
    assert sigmas[-1].item() == pytest.approx(math.sqrt((1 - c) / c), rel=1e-12)
    assert sigmas[-1].item() == pytest.approx(4518.76, abs=0.01)
    assert math.isfinite(sigmas[-1].item())
    assert sigmas[-2].item() == pytest.approx(
        math.sqrt((1 - _zsnr_alphas_cumprod()[-2].item()) / _zsnr_alphas_cumprod()[-2].item())
    )
    assert S.sigmas_from_alphas_cumprod(torch.tensor([0.0]), terminal_alphas_cumprod=0.01).item() == pytest.approx(
        math.sqrt(99)
    )
    ab_back = S.alphas_cumprod_from_sigmas(sigmas)
    assert (ab_back[:-1] - _zsnr_alphas_cumprod()[:-1]).abs().max().item() < 1e-12


# ------------------------------------------------------------------------------------------- timesteps


def test_trailing_timesteps_equal_diffusers_formula_for_every_step_count():
    for steps in range(1, 1001):
        expected = np.round(np.arange(1000, 0, -1000 / steps)).astype(np.int64) - 1
        ours = S.trailing_timesteps(steps)
        assert ours.dtype == torch.int64 and ours.shape == (steps,)
        assert np.array_equal(ours.numpy(), expected[:steps]), steps
        assert len(expected) == steps or expected[steps:].tolist() == [-1]  # diffusers' stray extra step


def test_trailing_timesteps_equal_diffusers_scheduler():
    scheduler = _ddim()
    for steps in (1, 4, 7, 16, 25, 50):
        scheduler.set_timesteps(steps)
        assert torch.equal(S.trailing_timesteps(steps), scheduler.timesteps)
    assert S.trailing_timesteps(4).tolist() == [999, 749, 499, 249]
    assert S.trailing_timesteps(16).tolist()[:3] == [
        999,
        937,
        874,
    ]  # round(937.5) = 938 and round(875.0) = 875, minus 1
    scheduler.set_timesteps(61)
    assert scheduler.timesteps[-1].item() == -1 and len(scheduler.timesteps) == 62
    assert torch.equal(S.trailing_timesteps(61), scheduler.timesteps[:61])
    with pytest.raises(ValueError):
        S.trailing_timesteps(0)


def test_trailing_sigmas():
    table = S.sigmas_from_alphas_cumprod(_zsnr_alphas_cumprod())
    sig = S.trailing_sigmas(table, 4)
    assert sig.shape == (5,) and sig[-1].item() == 0.0
    assert sig[:4].tolist() == [table[999].item(), table[749].item(), table[499].item(), table[249].item()]
    assert sig[0].item() == pytest.approx(4518.76, abs=0.01)
    assert bool((sig[1:] < sig[:-1]).all())


# ------------------------------------------------------------------------------------------- conversions


def test_conversions_with_hand_numbers():
    ab = 0.64  # sqrt(ab) = 0.8, sqrt(1 - ab) = 0.6
    x0, eps = torch.tensor([0.5]), torch.tensor([1.0])
    x_t = torch.tensor([1.0])  # 0.8 * 0.5 + 0.6 * 1.0
    v = S.v_from_eps_x0(eps, x0, ab)
    assert v.item() == pytest.approx(0.5)  # 0.8 * 1.0 - 0.6 * 0.5
    assert S.x0_from_v(x_t, v, ab).item() == pytest.approx(0.5)
    assert S.eps_from_v(x_t, v, ab).item() == pytest.approx(1.0)
    assert S.x0_from_eps(x_t, eps, ab).item() == pytest.approx(0.5)
    sigma = 0.75  # sqrt(0.36 / 0.64); x = x_t / 0.8 = 1.25
    x = torch.tensor([1.25])
    assert S.denoised_from_v_sigma(x, v, sigma).item() == pytest.approx(0.5)  # 1.25 / 1.5625 - 0.5 * 0.75 / 1.25
    assert S.denoised_from_eps_sigma(x, eps, sigma).item() == pytest.approx(0.5)  # 1.25 - 0.75


def test_conversions_round_trip_with_per_sample_levels():
    g = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64),
        torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64),
    )
    ab = torch.tensor([0.9, 0.3, 0.01], dtype=torch.float64)
    x_t = ab.sqrt().view(3, 1, 1, 1) * x0 + (1 - ab).sqrt().view(3, 1, 1, 1) * eps
    v = S.v_from_eps_x0(eps, x0, ab)
    assert torch.allclose(S.x0_from_v(x_t, v, ab), x0, atol=1e-12)
    assert torch.allclose(S.eps_from_v(x_t, v, ab), eps, atol=1e-12)
    assert torch.allclose(S.x0_from_eps(x_t, eps, ab), x0, atol=1e-10)
    sigma = ((1 - ab) / ab).sqrt()
    x = x0 + sigma.view(3, 1, 1, 1) * eps
    assert torch.allclose(x / (sigma.view(3, 1, 1, 1) ** 2 + 1).sqrt(), x_t, atol=1e-12)  # the UNet input is x_t
    assert torch.allclose(S.denoised_from_v_sigma(x, v, sigma), x0, atol=1e-12)
    assert torch.allclose(S.denoised_from_eps_sigma(x, eps, sigma), x0, atol=1e-12)
    assert not torch.allclose(S.denoised_from_v_sigma(x, v, sigma.flip(0)), x0, atol=1e-2)  # per sample


# ------------------------------------------------------------------------------- end to end: DDIM vs ours

MU_SEED, STEPS, DATA_STD = 7, 25, 0.6


class GaussianData:
    """Data x0 ~ N(mu, s^2) per element: the optimal denoiser is closed-form, expressed as a v-model.

    ``E[x0 | x_t] = mu + a s^2 / (a^2 s^2 + b^2) (x_t - a mu)`` with ``a = sqrt(ab_t)``, ``b = sqrt(1 - ab_t)``;
    ``v = (a x_t - x0_hat) / b``. ``ab`` is a fixed table indexed by the integer timestep, like a UNet's.
    """

    def __init__(self, shape, alphas_cumprod):
        g = torch.Generator().manual_seed(MU_SEED)
        self.mu = 0.8 * torch.randn(shape, generator=g, dtype=torch.float64)
        self.ab = alphas_cumprod

    def v(self, x_t: torch.Tensor, t: int) -> torch.Tensor:
        a, b = math.sqrt(self.ab[t].item()), math.sqrt(1.0 - self.ab[t].item())
        s2 = DATA_STD**2
        x0_hat = self.mu + a * s2 / (a * a * s2 + b * b) * (x_t - a * self.mu)
        return (a * x_t - x0_hat) / b


def _run_ddim(model: GaussianData, noise: torch.Tensor, **overrides) -> torch.Tensor:
    scheduler = _ddim(**overrides)
    scheduler.set_timesteps(STEPS)
    x = noise.clone()  # alpha space; x_T is the noise itself (init_noise_sigma = 1)
    for t in scheduler.timesteps:
        x = scheduler.step(model.v(x, int(t)), int(t), x, eta=0.0).prev_sample
    return x


def _run_euler(model: GaussianData, noise: torch.Tensor, sigma_table: torch.Tensor, steps: int = STEPS) -> torch.Tensor:
    """ComfyUI's path: sigma space, timestep recovered from sigma by nearest log-sigma, Euler steps."""
    sigmas = S.trailing_sigmas(sigma_table, steps)
    # DDIM's x_T = noise corresponds to x = x_T / sqrt(ab_T) = noise * sqrt(sigma_max^2 + 1) (ComfyUI's max_denoise)
    x = noise * math.sqrt(sigmas[0].item() ** 2 + 1.0)
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        t = int((sigma_table.log() - math.log(sigma)).abs().argmin())
        v = model.v(x / math.sqrt(sigma * sigma + 1.0), t)
        denoised = S.denoised_from_v_sigma(x, v, sigma)
        x = x + (x - denoised) / sigma * (sigma_next - sigma)
    return x


@pytest.fixture(scope="module")
def problem():
    ab = _zsnr_alphas_cumprod()
    model = GaussianData((2, 4, 8, 8), ab)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    return model, noise, S.sigmas_from_alphas_cumprod(ab)


def test_zero_snr_v_sampling_matches_diffusers_ddim(problem):
    model, noise, table = problem
    ddim = _run_ddim(model, noise)
    ours = _run_euler(model, noise, table)
    assert (ours - ddim).abs().max().item() < 1e-3  # 3.0e-4: ComfyUI's finite sigma_max vs DDIM's ab_T = 0
    # The probability-flow ODE of Gaussian data maps x_T to mu + s * x_T exactly; 25 first-order steps
    # miss it by 0.17, 1000 steps by 0.0067: the denoiser is right and the sampler converges to it.
    exact = model.mu + DATA_STD * noise
    assert (ddim - exact).abs().max().item() < 0.25
    assert (_run_euler(model, noise, table, steps=1000) - exact).abs().max().item() < 0.01


def test_end_to_end_comparison_sees_a_wrong_schedule(problem):
    model, noise, table = problem
    ours = _run_euler(model, noise, table)
    leading = _run_ddim(model, noise, timestep_spacing="leading")
    assert (ours - leading).abs().max().item() > 1e-2  # 0.035
    no_zsnr = S.sigmas_from_alphas_cumprod(S.alphas_cumprod(S.make_betas("scaled_linear")))
    assert (_run_euler(model, noise, no_zsnr) - _run_ddim(model, noise)).abs().max().item() > 1e-2  # 0.086
