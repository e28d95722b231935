"""Noise-schedule maths: beta schedules, zero terminal SNR, trailing timesteps, prediction conversions.

Two parameterisations of the same forward process appear in this project:

- **alpha space** (DDPM/DDIM, diffusers, the papers): ``x_t = sqrt(ab) x0 + sqrt(1 - ab) eps`` with
  ``ab = alphas_cumprod[t]``; the v-prediction target is ``v = sqrt(ab) eps - sqrt(1 - ab) x0``.
- **sigma space** (k-diffusion, ComfyUI's samplers): ``x = x0 + sigma eps`` with
  ``sigma = sqrt((1 - ab) / ab)``, so ``x = x_t / sqrt(ab) = x_t * sqrt(sigma^2 + 1)``. The UNet still sees
  the alpha-space tensor ``x_t = x / sqrt(sigma^2 + 1)``.

Beta schedules use diffusers' names: ``"linear"`` (AnimateDiff, PIA and ConsistI2V were trained on it;
ComfyUI calls it ``sqrt_linear``) and ``"scaled_linear"`` (SD-1.5's; ComfyUI calls it ``linear``).
Tables are float64; callers cast where they store them.
"""

from __future__ import annotations

import torch

BETA_SCHEDULES = ("linear", "scaled_linear")

# ComfyUI replaces the exact zero of a zero-terminal-SNR schedule by this alpha-bar, giving a finite
# sigma_max = sqrt((1 - ab) / ab) ~= 4518.76 (comfy/model_sampling.py, rescale_zero_terminal_snr_sigmas).
COMFY_TERMINAL_ALPHAS_CUMPROD = 4.8973451890853435e-08


# ----------------------------------------------------------------------------------------------- tables


def make_betas(
    beta_schedule: str, timesteps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012
) -> torch.Tensor:
    """Training betas ``[timesteps]`` (float64).

    ``"linear"``: ``linspace(beta_start, beta_end)``; ``"scaled_linear"``: ``linspace(sqrt(beta_start),
    sqrt(beta_end))^2``.
    """
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start**0.5, beta_end**0.5, timesteps, dtype=torch.float64) ** 2
    raise ValueError(f"unknown beta_schedule {beta_schedule!r}; expected one of {BETA_SCHEDULES}")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """``ab_t = prod_{s <= t} (1 - beta_s)``, ``[T] -> [T]``."""
    return torch.cumprod(1.0 - betas, dim=0)


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Lin et al. 2023, Algorithm 1: shift and scale ``sqrt(ab)`` so the last step has zero SNR.

    ``s = sqrt(ab)``; ``s' = (s - s_T) * s_1 / (s_1 - s_T)``; returns ``ab' = s'^2`` ``[T]``. The first value
    is unchanged and ``ab'_T == 0`` exactly: the last training step is pure noise.
    """
    s = alphas_cumprod.sqrt()
    s_first, s_last = s[0].clone(), s[-1].clone()
    return ((s - s_last) * s_first / (s_first - s_last)) ** 2  # s_T - s_T is an exact zero


def sigmas_from_alphas_cumprod(
    alphas_cumprod: torch.Tensor, terminal_alphas_cumprod: float = COMFY_TERMINAL_ALPHAS_CUMPROD
) -> torch.Tensor:
    """The sigma-space table ``sigma_t = sqrt((1 - ab_t) / ab_t)``, ``[T] -> [T]`` (ascending in t).

    A zero-terminal-SNR schedule has ``ab_T == 0`` and an infinite ``sigma_T``; an exact zero is replaced by
    ``terminal_alphas_cumprod`` first. The default is ComfyUI's own value, so the table's last entry is its
    ``sigma_max ~= 4518.76`` and our sigmas index the same timesteps as ComfyUI's ``model_sampling``. At that
    sigma the UNet input ``x / sqrt(sigma^2 + 1)`` is the noise to within ``1 / sigma_max ~= 2.2e-4``.
    """
    ab = torch.where(alphas_cumprod == 0, torch.full_like(alphas_cumprod, terminal_alphas_cumprod), alphas_cumprod)
    return ((1.0 - ab) / ab).sqrt()


def alphas_cumprod_from_sigmas(sigmas: torch.Tensor | float) -> torch.Tensor | float:
    """Inverse of ``sigmas_from_alphas_cumprod``: ``ab = 1 / (sigma^2 + 1)``."""
    return 1.0 / (sigmas * sigmas + 1.0)


def trailing_timesteps(steps: int, timesteps: int = 1000) -> torch.Tensor:
    """Descending int64 timesteps ``[steps]``: diffusers' ``timestep_spacing="trailing"`` (Lin et al. Table 2).

    ``t_i = round(T - i * T / steps) - 1`` (round half to even), so the first step is always the last
    training timestep ``T - 1``, the one where a zero-terminal-SNR schedule is pure noise. Equal to
    ``DDIMScheduler(timestep_spacing="trailing").set_timesteps(steps).timesteps``; for 62 step counts in
    1..1000 (61, 103, ...) diffusers' float ``arange`` yields one extra, invalid timestep ``-1``, which is
    left out here.
    """
    if not 1 <= steps <= timesteps:
        raise ValueError(f"steps must be between 1 and {timesteps}, got {steps}")
    ratio = timesteps / steps
    delta = (timesteps - ratio) - timesteps  # numpy's arange steps by (start + step) - start
    grid = timesteps + torch.arange(steps, dtype=torch.float64) * delta
    return torch.round(grid).to(torch.int64) - 1


def trailing_sigmas(sigma_table: torch.Tensor, steps: int) -> torch.Tensor:
    """Sampling sigmas ``[steps + 1]``, descending: the table at the trailing timesteps, then ``0.0``.

    ``sigma_table [T]`` is indexed by timestep (``sigmas_from_alphas_cumprod``). The final zero makes the
    last sampler step return the model's denoised prediction, as DDIM's final ``ab = 1`` does.
    """
    picked = sigma_table[trailing_timesteps(steps, sigma_table.shape[0]).to(sigma_table.device)]
    return torch.cat([picked, picked.new_zeros(1)])


# ---------------------------------------------------------------------------------- alpha space


def _per_sample(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """A scalar, or a ``[B]`` tensor viewed as ``[B, 1, ...]`` to broadcast over ``like [B, ...]``."""
    if isinstance(value, torch.Tensor) and value.ndim == 1 and value.numel() > 1:
        return value.view(value.shape[:1] + (1,) * (like.ndim - 1))
    return value


def _sqrt(value: torch.Tensor | float) -> torch.Tensor | float:
    return value.sqrt() if isinstance(value, torch.Tensor) else value**0.5


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alphas_cumprod: torch.Tensor | float) -> torch.Tensor:
    """``x0 = sqrt(ab) x_t - sqrt(1 - ab) v``. ``x_t, v: [B, ...]``; ``ab`` a scalar or ``[B]``."""
    ab = _per_sample(alphas_cumprod, x_t)
    return _sqrt(ab) * x_t - _sqrt(1.0 - ab) * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alphas_cumprod: torch.Tensor | float) -> torch.Tensor:
    """``eps = sqrt(1 - ab) x_t + sqrt(ab) v``. Shapes as ``x0_from_v``."""
    ab = _per_sample(alphas_cumprod, x_t)
    return _sqrt(1.0 - ab) * x_t + _sqrt(ab) * v


def v_from_eps_x0(eps: torch.Tensor, x0: torch.Tensor, alphas_cumprod: torch.Tensor | float) -> torch.Tensor:
    """The v-prediction target ``v = sqrt(ab) eps - sqrt(1 - ab) x0``. Shapes as ``x0_from_v``."""
    ab = _per_sample(alphas_cumprod, eps)
    return _sqrt(ab) * eps - _sqrt(1.0 - ab) * x0


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alphas_cumprod: torch.Tensor | float) -> torch.Tensor:
    """``x0 = (x_t - sqrt(1 - ab) eps) / sqrt(ab)``; undefined at ``ab == 0`` (use v-prediction there)."""
    ab = _per_sample(alphas_cumprod, x_t)
    return (x_t - _sqrt(1.0 - ab) * eps) / _sqrt(ab)


# ---------------------------------------------------------------------------------- sigma space


def denoised_from_v_sigma(x: torch.Tensor, v: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """k-diffusion/ComfyUI v-prediction: ``denoised = x / (sigma^2 + 1) - v sigma / sqrt(sigma^2 + 1)``.

    ``x = x0 + sigma eps`` is the sigma-space sample and ``v`` the model's output for the input
    ``x / sqrt(sigma^2 + 1)``; this is ``x0_from_v`` with ``x_t = x / sqrt(sigma^2 + 1)`` and
    ``ab = 1 / (sigma^2 + 1)``. ``sigma`` a scalar or ``[B]``.
    """
    sigma = _per_sample(sigma, x)
    return x / (sigma * sigma + 1.0) - v * sigma / _sqrt(sigma * sigma + 1.0)


def denoised_from_eps_sigma(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """k-diffusion/ComfyUI eps-prediction: ``denoised = x - eps sigma``. Shapes as ``denoised_from_v_sigma``."""
    return x - eps * _per_sample(sigma, x)
