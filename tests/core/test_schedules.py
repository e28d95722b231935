"""Noise-schedule maths against its formulas and against diffusers' DDIMScheduler (test-only oracle)."""

from __future__ import annotations

import math

import _torchvision_shim
import numpy as np
import pytest
import torch
from tolerances import (
    FLOAT32_FEW_OPS,
    FLOAT32_REORDERED,
    FLOAT64_FEW_OPS,
    FLOAT64_REORDERED,
    assert_close_scaled,
    assert_far_off,
    quoted,
)

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
    # float64 tables against their formulas: the endpoints are a few ops (measured exact), inner entries come
    # from linspace, another formula for the same number (measured <= 3.6e-16 relative).
    assert_close_scaled(linear[0].item(), 0.00085, FLOAT64_FEW_OPS, "linear beta_0")
    assert_close_scaled(linear[-1].item(), 0.012, FLOAT64_FEW_OPS, "linear beta_T")
    assert_close_scaled(linear[1].item(), 0.00085 + (0.012 - 0.00085) / 999, FLOAT64_REORDERED, "linear beta_1")
    scaled = S.make_betas("scaled_linear")
    step = (0.012**0.5 - 0.00085**0.5) / 999
    assert_close_scaled(scaled[500].item(), (0.00085**0.5 + 500 * step) ** 2, FLOAT64_REORDERED, "scaled beta_500")
    for name in S.BETA_SCHEDULES:
        ours = S.make_betas(name)
        theirs = DDIMScheduler(beta_schedule=name, **SD15).betas.double()
        # diffusers computes in float32: linspace (and a square), a few float32 roundings per entry
        # (measured 6.1e-8 and 1.5e-7 of the largest beta)
        assert_close_scaled(ours, theirs, FLOAT32_FEW_OPS, f"{name} betas vs diffusers")
        # ComfyUI's and diffusers' names mixed up (the other schedule) is far off: 1.3e5x the bound.
        other = next(n for n in S.BETA_SCHEDULES if n != name)
        assert_far_off(S.make_betas(other), theirs, FLOAT32_FEW_OPS, 1e3, f"{other} betas for {name}")
    with pytest.raises(ValueError, match="sqrt_linear"):
        S.make_betas("sqrt_linear")  # ComfyUI's name is not ours


def test_sd15_alphas_cumprod_and_comfy_sigma_range():
    ab = S.alphas_cumprod(S.make_betas("scaled_linear"))
    assert_close_scaled(ab[0].item(), 1 - 0.00085, FLOAT64_REORDERED, "alpha-bar_0")  # measured exact
    three = math.prod(1 - b for b in S.make_betas("scaled_linear")[:3].tolist())
    assert_close_scaled(ab[2].item(), three, FLOAT64_FEW_OPS, "alpha-bar_2")  # a product of 3: measured exact
    sigmas = S.sigmas_from_alphas_cumprod(ab)
    assert sigmas[0].item() == quoted("0.0292")  # ComfyUI's SD-1.5 sigma_min, as printed (0.029167)
    assert sigmas[-1].item() == quoted("14.6146")  # and sigma_max without zero SNR (14.614641)


def test_zero_terminal_snr_follows_algorithm_1():
    ab = S.alphas_cumprod(S.make_betas("scaled_linear"))
    zsnr = S.rescale_zero_terminal_snr(ab)
    assert zsnr[-1].item() == 0.0
    assert_close_scaled(zsnr[0].item(), ab[0].item(), FLOAT64_FEW_OPS, "rescaled alpha-bar_0")  # measured exact
    s, s_new = ab.sqrt(), zsnr.sqrt()
    s1, sT = s[0].item(), s[-1].item()
    for t in (1, 250, 600, 998):  # s' = (s - s_T) s_1 / (s_1 - s_T), pointwise
        # float64; s_998 - s_T cancels (s_998 is s_T + 0.6%), which amplifies round-off ~170x (measured exact)
        assert_close_scaled(s_new[t].item(), (s[t].item() - sT) * s1 / (s1 - sT), FLOAT64_REORDERED, f"s'_{t}")
    assert sT == quoted("0.068265")  # SD-1.5's terminal sqrt(ab): the SNR being removed (0.06826491)
    assert bool((zsnr[1:] < zsnr[:-1]).all())


def test_zero_terminal_snr_matches_diffusers():
    ours = _zsnr_alphas_cumprod()
    theirs = _ddim().alphas_cumprod.double()  # float32 in diffusers
    assert theirs[-1].item() == 0.0
    # diffusers' float32 table: a cumulative product of 1000 float32 factors (random-walk error
    # sqrt(1000) eps = 3.8e-6 of the value) and the rescale, against our float64 (measured 3.9e-7 of scale 1).
    assert_close_scaled(ours, theirs, FLOAT32_REORDERED, "zero-SNR alpha-bar vs diffusers")
    plain = S.alphas_cumprod(S.make_betas("scaled_linear"))
    assert_far_off(plain, theirs, FLOAT32_REORDERED, 1e2, "no rescale")  # the comparison sees the rescale: 3.5e3x


def test_sigmas_clamp_the_terminal_zero_as_comfyui():
    sigmas = S.sigmas_from_alphas_cumprod(_zsnr_alphas_cumprod())
    c = S.COMFY_TERMINAL_ALPHAS_CUMPROD
    # float64, the same formula evaluated by torch and by math (measured exact)
    assert_close_scaled(sigmas[-1].item(), math.sqrt((1 - c) / c), FLOAT64_REORDERED, "sigma_max")
    assert sigmas[-1].item() == quoted("4518.76")  # ComfyUI's sigma_max, as printed (4518.7637)
    assert math.isfinite(sigmas[-1].item())
    ab_2 = _zsnr_alphas_cumprod()[-2].item()
    assert_close_scaled(sigmas[-2].item(), math.sqrt((1 - ab_2) / ab_2), FLOAT64_FEW_OPS, "sigma_998")
    clamped = S.sigmas_from_alphas_cumprod(torch.tensor([0.0]), terminal_alphas_cumprod=0.01).item()
    assert_close_scaled(clamped, math.sqrt(99), FLOAT32_FEW_OPS, "float32 clamp")  # a float32 tensor: 4.5e-8
    ab_back = S.alphas_cumprod_from_sigmas(sigmas)
    # the round trip sigma -> alpha-bar in float64 (measured 1.1e-16 of scale 1)
    assert_close_scaled(ab_back[:-1], _zsnr_alphas_cumprod()[:-1], FLOAT64_REORDERED, "alpha-bar from sigmas")


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
    assert sig[0].item() == quoted("4518.76")
    assert bool((sig[1:] < sig[:-1]).all())


# ------------------------------------------------------------------------------------------- conversions


def test_conversions_with_hand_numbers():
    ab = 0.64  # sqrt(ab) = 0.8, sqrt(1 - ab) = 0.6
    x0, eps = torch.tensor([0.5]), torch.tensor([1.0])
    x_t = torch.tensor([1.0])  # 0.8 * 0.5 + 0.6 * 1.0
    # float32 tensors, a few ops on numbers of order 1 (measured 0 and 6e-8 relative)
    v = S.v_from_eps_x0(eps, x0, ab)
    assert_close_scaled(v, 0.5, FLOAT32_FEW_OPS, "v")  # 0.8 * 1.0 - 0.6 * 0.5
    assert_close_scaled(S.x0_from_v(x_t, v, ab), 0.5, FLOAT32_FEW_OPS, "x0 from v")
    assert_close_scaled(S.eps_from_v(x_t, v, ab), 1.0, FLOAT32_FEW_OPS, "eps from v")
    assert_close_scaled(S.x0_from_eps(x_t, eps, ab), 0.5, FLOAT32_FEW_OPS, "x0 from eps")
    sigma = 0.75  # sqrt(0.36 / 0.64); x = x_t / 0.8 = 1.25
    x = torch.tensor([1.25])
    # 1.25 / 1.5625 - 0.5 * 0.75 / 1.25, and 1.25 - 0.75
    assert_close_scaled(S.denoised_from_v_sigma(x, v, sigma), 0.5, FLOAT32_FEW_OPS, "denoised from v")
    assert_close_scaled(S.denoised_from_eps_sigma(x, eps, sigma), 0.5, FLOAT32_FEW_OPS, "denoised from eps")


def test_conversions_round_trip_with_per_sample_levels():
    g = torch.Generator().manual_seed(0)
    x0, eps = (
        torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64),
        torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64),
    )
    ab = torch.tensor([0.9, 0.3, 0.01], dtype=torch.float64)
    x_t = ab.sqrt().view(3, 1, 1, 1) * x0 + (1 - ab).sqrt().view(3, 1, 1, 1) * eps
    v = S.v_from_eps_x0(eps, x0, ab)
    # float64 round trips, a few element-wise ops each; dividing by sqrt(ab) = 0.1 amplifies round-off 10x at
    # most, still under 45 eps64 (measured <= 6.5e-16 of the scale, 3.1)
    assert_close_scaled(S.x0_from_v(x_t, v, ab), x0, FLOAT64_FEW_OPS, "x0 from v")
    assert_close_scaled(S.eps_from_v(x_t, v, ab), eps, FLOAT64_FEW_OPS, "eps from v")
    assert_close_scaled(S.x0_from_eps(x_t, eps, ab), x0, FLOAT64_FEW_OPS, "x0 from eps")
    sigma = ((1 - ab) / ab).sqrt()
    x = x0 + sigma.view(3, 1, 1, 1) * eps
    unet_input = x / (sigma.view(3, 1, 1, 1) ** 2 + 1).sqrt()
    assert_close_scaled(unet_input, x_t, FLOAT64_FEW_OPS, "UNet input")  # the UNet input is x_t
    assert_close_scaled(S.denoised_from_v_sigma(x, v, sigma), x0, FLOAT64_FEW_OPS, "denoised from v")
    assert_close_scaled(S.denoised_from_eps_sigma(x, eps, sigma), x0, FLOAT64_FEW_OPS, "denoised from eps")
    # the levels applied to the wrong samples are far off (measured 8.7e14x the bound): per sample
    assert_far_off(S.denoised_from_v_sigma(x, v, sigma.flip(0)), x0, FLOAT64_FEW_OPS, 1e11, "flipped levels")


# ------------------------------------------------------------------------------- end to end: DDIM vs ours

MU_SEED, STEPS, DATA_STD = 7, 25, 0.6
SIGMA_MAX_GAP = 3e-4  # of the sample's scale: ComfyUI's clamped sigma_max vs DDIM's exact zero SNR (see below)


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
    # float64 throughout, so no round-off bound: the bound covers ComfyUI's finite sigma_max (4518.76) against
    # DDIM's ab_T = 0, measured 3.0e-4 on a scale of 3.1 (9.7e-5 relative).
    assert_close_scaled(ours, ddim, SIGMA_MAX_GAP, "Euler in sigma space vs diffusers' DDIM")
    # The probability-flow ODE of Gaussian data maps x_T to mu + s * x_T exactly; 25 first-order steps
    # miss it by 0.17 (5.2% of the scale 3.3), 1000 steps by 0.0067 (0.2%): discretisation errors, not round-off.
    # The denoiser is right and the sampler converges to it.
    exact = model.mu + DATA_STD * noise
    assert_close_scaled(ddim, exact, 0.075, "25 DDIM steps vs the exact flow")
    assert_close_scaled(_run_euler(model, noise, table, steps=1000), exact, 0.003, "1000 Euler steps vs the flow")


def test_end_to_end_comparison_sees_a_wrong_schedule(problem):
    model, noise, table = problem
    ours = _run_euler(model, noise, table)
    leading = _run_ddim(model, noise, timestep_spacing="leading")
    assert_far_off(ours, leading, SIGMA_MAX_GAP, 10, "leading spacing")  # 0.035: 37x the bound
    no_zsnr = S.sigmas_from_alphas_cumprod(S.alphas_cumprod(S.make_betas("scaled_linear")))
    ddim = _run_ddim(model, noise)
    assert_far_off(_run_euler(model, noise, no_zsnr), ddim, SIGMA_MAX_GAP, 10, "no zero SNR")  # 0.086: 92x
