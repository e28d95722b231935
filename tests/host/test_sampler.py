"""The Zero-SNR V Sampler inside ComfyUI: the schedule from the module, guidance passes batched in one call,
CFG rescale, FrameInit, progress over every step, Cancel, and refused overrides."""

from __future__ import annotations

import pytest
import torch
from host_models import injected_atomovideo

FRAMES = 6


@pytest.fixture(scope="module")
def atomo(sd15, ours, vae):
    """An AtomoVideo module (v-prediction, zero terminal SNR) with the image injected."""
    return injected_atomovideo(sd15, ours, vae, FRAMES)


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _sample(ours, model, positive, negative, latent, **kwargs):
    node = ours("nodes.zero_snr_sampler").AtomoZeroSNRVSampler
    args = dict(steps=2, cfg=5.0, image_cfg=1.0, cfg_rescale=0.7, sampler_name="euler", scheduler="trailing",
                denoise=1.0)
    args.update(kwargs)
    return node.execute(model, positive, negative, latent, 3, **args).result[0]["samples"]


def _with_capture(model):
    import comfy.patcher_extension

    calls = []

    def capture(executor, x, timesteps, *args, **kwargs):
        calls.append((x.shape[0], float(timesteps[0])))
        return executor(x, timesteps, *args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_capture", capture)
    return clone, calls


@pytest.mark.parametrize(("image_cfg", "chunks"), [(1.0, 2), (5.0, 2), (2.5, 3)])
def test_guidance_passes_go_to_the_unet_in_one_call(atomo, ours, image_cfg, chunks):
    model, positive, negative, latent = atomo
    clone, calls = _with_capture(model)
    out = _sample(ours, clone, positive, negative, latent, image_cfg=image_cfg)
    assert [batch for batch, _ in calls] == [chunks * FRAMES] * 2  # two steps, one call each
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], latent["samples"][0])  # the given frame is locked


def test_schedule_comes_from_the_module(atomo, ours):
    model, positive, negative, latent = atomo
    clone, calls = _with_capture(model)
    _sample(ours, clone, positive, negative, latent, steps=4)
    timesteps = [t for _, t in calls]
    assert timesteps[0] == pytest.approx(999.0, abs=0.5)  # trailing: start at the pure-noise step
    assert timesteps == sorted(timesteps, reverse=True) and timesteps[-1] == pytest.approx(249.0, abs=0.5)
    sampling = ours("nodes.sampling")
    settings = sampling.SamplingSettings()
    clone2, schedule = sampling.sampling_model(model, settings)
    assert schedule.zero_terminal_snr and schedule.prediction == "v_prediction" and schedule.beta_schedule == "scaled_linear"
    assert "from 'atomo.safetensors'" in schedule.describe()
    sigmas = clone2.get_model_object("model_sampling").sigmas
    assert float(sigmas[-1]) == pytest.approx(4518.76, rel=1e-3)
    import comfy.model_sampling

    assert isinstance(clone2.get_model_object("model_sampling"), comfy.model_sampling.V_PREDICTION)


def test_zero_snr_with_epsilon_is_refused_with_the_reason(atomo, ours):
    model, positive, negative, latent = atomo
    with pytest.raises(ours("atomo_core").AtomoError, match="Zero terminal SNR with epsilon prediction cannot work"):
        _sample(ours, model, positive, negative, latent, prediction="epsilon")
    eps = _sample(ours, model, positive, negative, latent, prediction="epsilon", zero_terminal_snr="off")
    assert torch.isfinite(eps).all()


def test_cfg_rescale_and_frameinit_change_the_result(atomo, ours):
    model, positive, negative, latent = atomo
    base = _sample(ours, model, positive, negative, latent, cfg_rescale=0.0)
    rescaled = _sample(ours, model, positive, negative, latent, cfg_rescale=0.7)
    frameinit = _sample(ours, model, positive, negative, latent, cfg_rescale=0.0, noise_init="FrameInit")
    assert not torch.allclose(base[1:], rescaled[1:])
    assert not torch.allclose(base[1:], frameinit[1:])
    again = _sample(ours, model, positive, negative, latent, cfg_rescale=0.0)
    assert torch.equal(base, again)  # deterministic for a seed


def test_progress_over_every_step_and_cancel_mid_run(atomo, ours):
    import comfy.model_management
    import comfy.utils

    model, positive, negative, latent = atomo
    seen = []
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, *a, **k: seen.append((value, total, preview)))
    try:
        _sample(ours, model, positive, negative, latent, steps=3)
        assert [(v, t) for v, t, _ in seen] == [(1, 3), (2, 3), (3, 3)]

        def cancel(value, total, preview, *args, **kwargs):
            if value == 1:
                comfy.model_management.interrupt_current_processing()
            comfy.model_management.throw_exception_if_processing_interrupted()

        comfy.utils.set_progress_bar_global_hook(cancel)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            _sample(ours, model, positive, negative, latent, steps=3)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    assert torch.isfinite(_sample(ours, model, positive, negative, latent, steps=1)).all()


def test_mismatched_latent_is_explained(atomo, ours):
    model, positive, negative, _ = atomo
    with pytest.raises(ours("atomo_core").AtomoError, match="conditioning is for 6 frames.*latent has 5 frames"):
        _sample(ours, model, positive, negative, {"samples": torch.zeros(5, 4, 8, 8)})
