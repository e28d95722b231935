"""Our sampling as core custom-sampling pieces: Video Guider (GUIDER), Trailing Sigmas (SIGMAS) and FrameInit Noise
(NOISE) through core SamplerCustomAdvanced give the Zero-SNR V Sampler's frames; and the measured reasons for not
using core's DualCFGGuider and ``simple`` scheduler instead."""

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


def _one_node(ours, model, positive, negative, latent, **kwargs):
    node = ours("nodes.zero_snr_sampler").AtomoZeroSNRVSampler
    args = dict(steps=3, cfg=5.0, image_cfg=2.5, cfg_rescale=0.7, sampler_name="ddim", scheduler="trailing",
                denoise=1.0)
    args.update(kwargs)
    return node.execute(model, positive, negative, latent, 9, **args).result[0]["samples"]


def _custom(ours, model, positive, negative, latent, noise=None, cfg=5.0, image_cfg=2.5, steps=3):
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

    custom = ours("nodes.custom_sampling")
    guider = custom.AtomoVideoGuider.execute(model, positive, negative, cfg, image_cfg, 0.7).result[0]
    sigmas = custom.AtomoTrailingSigmas.execute(model, steps, 1.0).result[0]
    noise = noise or Noise_RandomNoise(9)
    out = SamplerCustomAdvanced().sample(noise, guider, comfy.samplers.sampler_object("ddim"), sigmas, latent)
    return out[0]["samples"]


@pytest.mark.parametrize("image_cfg", [1.0, 2.5])
def test_sampler_custom_advanced_gives_the_one_node_samplers_frames(atomo, ours, image_cfg):
    model, positive, negative, latent = atomo
    ours_one = _one_node(ours, model, positive, negative, latent, image_cfg=image_cfg)
    composed = _custom(ours, model, positive, negative, latent, image_cfg=image_cfg)
    # the same operations on the same inputs: bit-identical, except the locked given frame, which the one-node
    # sampler pastes back exactly where the sampler's per-step blending leaves float rounding
    assert torch.equal(ours_one[1:], composed[1:])
    assert torch.allclose(ours_one[:1], composed[:1], atol=1e-5 * float(ours_one.abs().max()))
    other = _custom(ours, model, positive, negative, latent, image_cfg=image_cfg, cfg=3.0)
    assert (other[1:] - composed[1:]).abs().max() > 1e-3  # the figure sees the guidance


def test_frameinit_noise_node_is_the_samplers_frameinit(atomo, ours):
    model, positive, negative, latent = atomo
    noise = ours("nodes.custom_sampling").AtomoFrameInitNoise.execute(model, positive, 9, 850, 0.25).result[0]
    one = _one_node(ours, model, positive, negative, latent, noise_init="FrameInit")
    composed = _custom(ours, model, positive, negative, latent, noise=noise)
    assert torch.equal(one[1:], composed[1:])
    plain = _custom(ours, model, positive, negative, latent)
    assert (plain[1:] - composed[1:]).abs().max() > 1e-3


def test_dual_cfg_guider_puts_the_negative_first(atomo, ours):
    """Why the Video Guider is not core's DualCFGGuider: with the same three conditions, DualCFG's condition 0 (the
    one image-token IP-Adapters serve) is the condition without image and text; ours is the positive."""
    import comfy.patcher_extension
    from comfy_extras.nodes_custom_sampler import DualCFGGuider

    model, positive, negative, latent = atomo
    conditioning_module = ours("nodes.conditioning")
    no_image = conditioning_module.without_image(negative)
    first_chunks = {}

    for name in ("dual", "ours"):
        seen = []

        def capture(executor, x, timesteps, context, *args, _seen=seen, **kwargs):
            options = args[2] if len(args) > 2 else kwargs.get("transformer_options", {})
            order = list(options["cond_or_uncond"])  # the condition index of each chunk of the batch
            chunk = order.index(0)  # condition 0: the one an IP-Adapter gives the image tokens
            _seen.append(x[chunk * FRAMES : (chunk + 1) * FRAMES, 4].clone())  # its mask channel
            return executor(x, timesteps, context, *args, **kwargs)

        clone = model.clone()
        clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_capture", capture)
        if name == "dual":
            guider = DualCFGGuider().get_guider(clone, positive, negative, no_image, 5.0, 2.5, "regular")[0]
        else:
            guider = ours("nodes.custom_sampling").AtomoVideoGuider.execute(clone, positive, negative, 5.0, 2.5,
                                                                            0.0).result[0]
        import comfy.samplers
        from comfy_extras.nodes_custom_sampler import Noise_RandomNoise, SamplerCustomAdvanced

        sigmas = ours("nodes.custom_sampling").AtomoTrailingSigmas.execute(clone, 1, 1.0).result[0]
        SamplerCustomAdvanced().sample(Noise_RandomNoise(1), guider, comfy.samplers.sampler_object("ddim"), sigmas,
                                      latent)
        first_chunks[name] = seen[0]
    assert float(first_chunks["ours"][0].max()) == 1.0  # the given frame's mask: condition 0 is the positive
    assert float(first_chunks["dual"].abs().max()) == 0.0  # no image at all: condition 0 is the "neither" one


def test_trailing_sigmas_differ_from_core_simple_where_it_floors(atomo, ours):
    import comfy.samplers

    model = atomo[0]
    sampling = model.get_model_object("model_sampling")
    custom = ours("nodes.custom_sampling").AtomoTrailingSigmas
    for steps, same in ((20, True), (25, True), (3, False), (6, False)):
        ours_sigmas = custom.execute(model, steps, 1.0).result[0]
        simple = comfy.samplers.calculate_sigmas(sampling, "simple", steps)
        assert torch.equal(ours_sigmas, simple.float()) == same, steps
