"""ComfyUI's sampler hooks in the Zero-SNR V Sampler, each against the same graph in ComfyUI's own KSampler.

At ``image_cfg = 1`` our sampler is CFG between the positive and the negative (both with the image), exactly what
KSampler computes for the same graph, so every core node that hooks into CFG must give the same frames in both:
RescaleCFG (``sampler_cfg_function``), APG (``sampler_pre_cfg_function``), SAG (``sampler_post_cfg_function``,
which also reads the uncond branch), PerpNeg (a CFG function that runs its own empty-prompt pass), the old
Apply ControlNet node (``control_apply_to_uncond``: the negative gets the positive's ControlNet), a schedule set
by ModelSamplingDiscrete after the loader, and the IP-Adapter's image tokens. Every comparison is paired with
a check that the hook really moves the frames, so "equal" is not "both unaffected".

Tolerance: the two paths run the same operations on the same tensors in the same order (ComfyUI's
``sampling_function`` itself), so they agree to float32 round-off; ``SAME`` leaves a margin of ~100x the
observed figure for kernels that reorder sums between calls.
"""

from __future__ import annotations

import pytest
import torch
from host_models import StubClipVision, install_model_file, random_base_adapter
from sampling import conditioning, relative_error
from weights import animatediff_state_dict

FRAMES = 4
SIZE = 64
SAME = 1e-5  # relative to the RMS of the frames; observed: 0 (identical operations)
MOVED = 1e-2  # a hook that acts moves the frames by more than this (observed 0.05 to 1)


@pytest.fixture(scope="module")
def pia_model(sd15, ours):
    _, base = sd15
    sd = animatediff_state_dict("pia", seed=21)
    core = ours("atomo_core")
    return ours("nodes.host_adapter").attach_motion_module(base, core.build_motion_module(sd, core.detect_config(sd),
                                                                                         "pia.ckpt"))


@pytest.fixture(scope="module")
def pia_i2v(pia_model, ours, vae):
    """``(model, positive, negative, latent)`` from the real Image Inject Conditioning node."""
    node = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(6))
    return node.execute(pia_model, conditioning(1), conditioning(2), vae, image, FRAMES, SIZE, SIZE, "crop").result


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def run_node(class_type: str, **inputs):
    """Run a core ComfyUI node (V1 or V3 schema) by its class type; returns its outputs as a tuple."""
    import nodes

    cls = nodes.NODE_CLASS_MAPPINGS[class_type]
    if hasattr(cls, "FUNCTION"):
        return getattr(cls(), cls.FUNCTION)(**inputs)
    return tuple(cls.execute(**inputs).result)


STEPS, CFG, SEED = 2, 5.0, 3


def ours_sample(ours, model, positive, negative, latent, **kwargs):
    node = ours("nodes.zero_snr_sampler").AtomoZeroSNRVSampler
    args = dict(steps=STEPS, cfg=CFG, image_cfg=1.0, cfg_rescale=0.0, sampler_name="euler", scheduler="simple",
                denoise=1.0)
    args.update(kwargs)
    return node.execute(model, positive, negative, latent, SEED, **args).result[0]["samples"]


def ksampler(model, positive, negative, latent):
    (out,) = run_node("KSampler", model=model, seed=SEED, steps=STEPS, cfg=CFG, sampler_name="euler",
                      scheduler="simple", positive=positive, negative=negative, latent_image=latent, denoise=1.0)
    return out["samples"]


def assert_same_as_ksampler(ours, model, positive, negative, latent, plain=None):
    """Ours == KSampler on ``model``; and, given the hook-free frames ``plain``, the hook moved them."""
    a = ours_sample(ours, model, positive, negative, latent)
    b = ksampler(model, positive, negative, latent)
    assert torch.isfinite(a).all()
    error = relative_error(a, b)
    assert error < SAME, f"ours vs KSampler: {error:.2e}"
    if plain is not None:
        moved = relative_error(a, plain)
        assert moved > MOVED, f"the hook moved the frames by only {moved:.2e}"
    return a


@pytest.fixture(scope="module")
def plain_frames(pia_i2v, ours):
    model, positive, negative, latent = pia_i2v
    return assert_same_as_ksampler(ours, model, positive, negative, latent)


def test_rescale_cfg(pia_i2v, ours, plain_frames):
    model, positive, negative, latent = pia_i2v
    (patched,) = run_node("RescaleCFG", model=model, multiplier=0.7)
    assert_same_as_ksampler(ours, patched, positive, negative, latent, plain_frames)


def test_apg(pia_i2v, ours, plain_frames):
    model, positive, negative, latent = pia_i2v
    (patched,) = run_node("APG", model=model, eta=0.0, norm_threshold=1.0, momentum=-0.5)
    assert_same_as_ksampler(ours, patched, positive, negative, latent, plain_frames)


def test_perpneg_with_an_empty_prompt_that_carries_no_image(pia_i2v, ours, plain_frames):
    """PerpNeg runs its own pass on a prompt made without the image: the 9-channel UNet gets mask 0, latent 0."""
    model, positive, negative, latent = pia_i2v
    (patched,) = run_node("PerpNeg", model=model, empty_conditioning=conditioning(3), neg_scale=1.0)
    assert_same_as_ksampler(ours, patched, positive, negative, latent, plain_frames)


def test_self_attention_guidance(pia_model, ours, vae):
    """SAG blurs by the middle block's attention map, which needs at least 2x2 there: 128x128 pixels."""
    node = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    image = torch.rand(1, 128, 128, 3, generator=torch.Generator().manual_seed(6))
    model, positive, negative, latent = node.execute(pia_model, conditioning(1), conditioning(2), vae, image, FRAMES,
                                                     128, 128, "crop").result
    plain = ours_sample(ours, model, positive, negative, latent)
    (patched,) = run_node("SelfAttentionGuidance", model=model, scale=0.5, blur_sigma=2.0)
    assert_same_as_ksampler(ours, patched, positive, negative, latent, plain)


def test_old_apply_controlnet_reaches_the_negative(sd15, pia_i2v, ours, plain_frames):
    import node_helpers
    from sd15_models import random_controlnet

    unet2d, _ = sd15
    model, positive, negative, latent = pia_i2v
    controlnet = random_controlnet(unet2d, seed=4)
    hint = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(9))
    (controlled,) = run_node("ControlNetApply", conditioning=positive, control_net=controlnet, image=hint, strength=1.0)
    assert all(options.get("control_apply_to_uncond") for _, options in controlled)
    both = assert_same_as_ksampler(ours, model, controlled, negative, latent, plain_frames)
    # The check has teeth: without ComfyUI's negative-branch handling the negative would run without ControlNet.
    positive_only = node_helpers.conditioning_set_values(controlled, {"control_apply_to_uncond": False})
    assert relative_error(ours_sample(ours, model, positive_only, negative, latent), both) > MOVED
    del controlnet


def test_ip_adapter_acts_identically_in_ours_and_ksampler(pia_model, ours, vae, tmp_path, plain_frames):
    """One rule: the image tokens go with the positive only, in KSampler and in our sampler at image_cfg = 1."""
    install_model_file("ipadapter", tmp_path / "ipadapter", "ip-adapter_sd15.safetensors", random_base_adapter(seed=5))
    node = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    image = torch.rand(1, SIZE, SIZE, 3, generator=torch.Generator().manual_seed(6))
    model, positive, negative, latent = node.execute(
        pia_model, conditioning(1), conditioning(2), vae, image, FRAMES, SIZE, SIZE, "crop",
        clip_vision=StubClipVision(1024), ipadapter="ip-adapter_sd15.safetensors", ipadapter_weight=1.0).result
    assert_same_as_ksampler(ours, model, positive, negative, latent, plain_frames)


def _timesteps_seen(model):
    import comfy.patcher_extension

    seen = []

    def capture(executor, x, timesteps, *args, **kwargs):
        seen.append(float(timesteps[0]))
        return executor(x, timesteps, *args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_timesteps", capture)
    return clone, seen


def test_model_sampling_discrete_after_the_loader_is_the_schedule_used(pia_i2v, ours, plain_frames):
    model, positive, negative, latent = pia_i2v
    (vpred,) = run_node("ModelSamplingDiscrete", model=model, sampling="v_prediction", zsnr=True)
    sampling = ours("nodes.sampling")
    _, schedule = sampling.sampling_model(vpred, sampling.SamplingSettings())
    assert (schedule.prediction, schedule.zero_terminal_snr, schedule.beta_schedule) == ("v_prediction", True,
                                                                                         "scaled_linear")
    assert "the MODEL's own sampling" in schedule.describe()
    clone, seen = _timesteps_seen(vpred)
    frames = assert_same_as_ksampler(ours, clone, positive, negative, latent, plain_frames)
    assert seen[0] == pytest.approx(999.0, abs=0.5)  # zero terminal SNR, simple = trailing: the pure-noise step
    # The module's own schedule (what the sampler used to re-impose) is another run altogether.
    assert relative_error(ours_sample(ours, model, positive, negative, latent), frames) > MOVED


def test_keep_models_sampling_is_kept(sd15, ours):
    _, base = sd15
    sd = animatediff_state_dict("pia", seed=21)
    core = ours("atomo_core")
    module = core.build_motion_module(sd, core.detect_config(sd), "pia.ckpt")
    kept = ours("nodes.host_adapter").attach_motion_module(base, module, apply_sampling=False)
    sampling = ours("nodes.sampling")
    model, schedule = sampling.sampling_model(kept, sampling.SamplingSettings())
    assert model is kept  # nothing re-patched
    assert (schedule.prediction, schedule.zero_terminal_snr, schedule.beta_schedule) == ("epsilon", False,
                                                                                         "scaled_linear")
    _, overridden = sampling.sampling_model(kept, sampling.SamplingSettings(prediction="v_prediction",
                                                                            zero_terminal_snr="on"))
    assert "overridden in the sampler" in overridden.describe() and overridden.beta_schedule == "scaled_linear"


def test_three_passes_give_every_hook_the_arguments_it_expects(pia_i2v, ours):
    """Pre-CFG hooks get the (positive, negative) pair, the CFG function runs, post-CFG hooks get real conds."""
    model, positive, negative, latent = pia_i2v
    seen = {"pre": [], "cfg": [], "post": []}

    def pre(args):
        seen["pre"].append((len(args["conds"]), len(args["conds_out"])))
        return args["conds_out"]

    def cfg(args):
        seen["cfg"].append(args["cond_scale"])
        # plain CFG in ComfyUI's convention for this hook: on "noise" (x - denoised), returning noise
        return args["uncond"] + args["cond_scale"] * (args["cond"] - args["uncond"])

    def post(args):
        seen["post"].append((args["uncond"] is not None, args["cond"] is not None, args["uncond_denoised"].shape))
        return args["denoised"]

    hooked = model.clone()
    hooked.set_model_sampler_pre_cfg_function(pre)
    hooked.set_model_sampler_cfg_function(cfg)
    hooked.set_model_sampler_post_cfg_function(post)
    out = ours_sample(ours, hooked, positive, negative, latent, image_cfg=2.5)
    reference = ours_sample(ours, model, positive, negative, latent, image_cfg=2.5)
    assert seen["pre"] == [(2, 2)] * STEPS and seen["cfg"] == [CFG] * STEPS
    assert seen["post"] == [(True, True, latent["samples"].shape)] * STEPS
    # The CFG function above is plain CFG, so the frames are those of our own three-pass guidance.
    assert relative_error(out, reference) < SAME
