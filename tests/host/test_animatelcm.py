"""AnimateLCM through ComfyUI's own ``lcm`` sampler at 4 and 8 steps, on the schedule AnimateLCM was trained with.

AnimateLCM's authors ship diffusers ``beta_schedule: "linear"`` (0.00085..0.012, 1000 steps) in their inference
configs and state that "the model is trained with linear scheduler" (README "AnimateLCM's schedule"); that is
ComfyUI's ``sqrt_linear``, which Load Motion Module sets ("from module"). The test runs core KSampler with
``sampler_name="lcm"`` end to end on a random AnimateLCM module in its released layout and checks what ComfyUI did:
one batched UNet call per step, the first at AnimateLCM's pure-noise end (sigma 25.1 on ``sqrt_linear``; it would be
14.6 on SD-1.5's ``linear``), and the LCM update (the result is the last step's denoised latent).
"""

from __future__ import annotations

import pytest
import torch
from host_models import install_model_file
from sampling import conditioning
from weights import animatediff_state_dict

FRAMES = 16


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _sqrt_linear_sigma_max() -> float:
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)  # diffusers "linear"
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    return float(((1 - alphas_cumprod[-1]) / alphas_cumprod[-1]).sqrt())


@pytest.mark.parametrize("steps", [4, 8])
def test_lcm_sampler_runs_animatelcm_on_its_schedule(sd15, ours, tmp_path, steps):
    import comfy.patcher_extension

    import nodes

    _, base = sd15
    install_model_file("motion_modules", tmp_path / "motion_modules", "AnimateLCM_sd15_t2v.safetensors",
                       animatediff_state_dict("animatelcm", seed=3))
    model = ours("nodes.load_motion_module").AtomoLoadMotionModule.execute(
        base, "AnimateLCM_sd15_t2v.safetensors").result[0]
    sampling = model.get_model_object("model_sampling")
    assert float(sampling.sigma_max) == pytest.approx(_sqrt_linear_sigma_max(), rel=1e-4)
    assert _sqrt_linear_sigma_max() == pytest.approx(25.15, abs=0.01)

    calls, denoised = [], []

    def capture(executor, x, timesteps, *args, **kwargs):
        calls.append((x.shape[0], float(timesteps[0])))
        return executor(x, timesteps, *args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_capture", capture)
    clone.set_model_sampler_post_cfg_function(lambda args: denoised.append(args["denoised"].clone()) or
                                              args["denoised"])
    latent = {"samples": torch.zeros(FRAMES, 4, 8, 8)}
    out = nodes.KSampler().sample(clone, 7, steps, 1.5, "lcm", "sgm_uniform", conditioning(1), conditioning(2),
                                  latent)[0]["samples"]
    assert out.shape == (FRAMES, 4, 8, 8) and torch.isfinite(out).all()
    assert len(calls) == steps and all(batch == 2 * FRAMES for batch, _ in calls)  # cond + uncond, one call a step
    assert calls[0][1] == pytest.approx(999, abs=1)  # the first step at the top of AnimateLCM's schedule
    assert [t for _, t in calls] == sorted((t for _, t in calls), reverse=True)
    # the lcm sampler returns the last step's denoised prediction (no noise is added after the final step)
    last = model.model.latent_format.process_out(denoised[-1]).to(out.dtype)  # KSampler returns unscaled latents
    assert torch.allclose(out, last, atol=1e-5 * float(out.abs().max()))
    assert out.std() > 0.01  # the frames are not blank
