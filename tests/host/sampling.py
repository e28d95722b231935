"""Drive ComfyUI's real sampling path for one step and capture what its UNet saw and returned (test-only)."""

from __future__ import annotations

import torch


def conditioning(seed: int, tokens: int = 77):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, 768, generator=gen), {}]]


def one_step(model, noise, sigma, positive, negative, cfg=7.5, latent=None):
    """Run ``comfy.sample.sample_custom`` for one step from ``sigma``; return the denoised latent and a list of
    every UNet call: ``dict(input, timestep, context, cond_or_uncond, output)``."""
    import comfy.patcher_extension
    import comfy.sample
    import comfy.samplers

    calls = []
    model = model.clone()

    def capture(executor, x, timesteps, context, *args, **kwargs):
        """Wraps the UNet's forward itself: ``x`` is what the UNet sees (scaled, with any concat channels)."""
        transformer_options = args[2] if len(args) > 2 else kwargs.get("transformer_options", {})
        out = executor(x, timesteps, context, *args, **kwargs)
        calls.append(dict(input=x.clone(), timestep=timesteps.clone(), context=context.clone(),
                          cond_or_uncond=list(transformer_options.get("cond_or_uncond", [])), output=out.clone()))
        return out

    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_capture", capture)

    def single_step(model_wrap, x, sigmas, extra_args=None, callback=None, disable=None):
        return model_wrap(x, sigmas[0] * x.new_ones([x.shape[0]]), **(extra_args or {}))

    sampler = comfy.samplers.KSAMPLER(single_step)
    sigmas = torch.tensor([float(sigma), 0.0])
    latent = torch.zeros_like(noise) if latent is None else latent
    out = comfy.sample.sample_custom(model, noise, cfg, sampler, sigmas, positive, negative, latent,
                                     disable_pbar=True, seed=0)
    return out, calls


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    """max |ours - reference| over the RMS of the reference."""
    return ((ours - reference).abs().max() / reference.pow(2).mean().sqrt()).item()
