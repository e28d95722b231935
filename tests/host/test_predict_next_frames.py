"""Predict Next Frames inside ComfyUI: exact given frames, counts, the per-segment conditioning, seeds, one
progress bar, Cancel between segments, and modules that cannot continue a video."""

from __future__ import annotations

import pytest
import torch
from host_models import meta_family_module, random_atomovideo
from sampling import conditioning

LATENT = 8  # latent side (64 px)


@pytest.fixture(scope="module")
def atomo_model(sd15, ours):
    _, base = sd15
    return ours("nodes.host_adapter").attach_motion_module(base, random_atomovideo(ours, seed=3))


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _predict(ours, model, latent, **kwargs):
    """Predict Next Frames with its sampling set up from the core custom-sampling pieces: our Video Guider and
    Trailing Sigmas, core's sampler object and RandomNoise."""
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    node = ours("nodes.predict_next_frames").AtomoPredictNextFrames
    custom = ours("nodes.custom_sampling")
    args = dict(context_frames=2, new_frames=3, total_frames=10, seed=11, steps=1, cfg=5.0, image_cfg=1.0,
                cfg_rescale=0.7, sampler_name="euler")
    args.update(kwargs)
    guider = custom.AtomoVideoGuider.execute(model, conditioning(1), conditioning(2), args.pop("cfg"),
                                             args.pop("image_cfg"), args.pop("cfg_rescale")).result[0]
    sigmas = custom.AtomoTrailingSigmas.execute(model, args.pop("steps"), 1.0).result[0]
    sampler = comfy.samplers.sampler_object(args.pop("sampler_name"))
    noise = Noise_RandomNoise(args.pop("seed"))
    return node.execute(guider, sampler, sigmas, noise, latent=latent, **args).result[0]["samples"]


def _capture_concats(model):
    """Record the image channels and frame counts every UNet call sees."""
    import comfy.patcher_extension

    seen = []

    def capture(executor, x, *args, **kwargs):
        seen.append(x[:, 4:].clone())
        return executor(x, *args, **kwargs)

    clone = model.clone()
    clone.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, "test_capture", capture)
    return clone, seen


def test_counts_exact_given_frames_and_segment_layout(atomo_model, ours):
    video = torch.randn(4, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(0))
    model, seen = _capture_concats(atomo_model)
    out = _predict(ours, model, {"samples": video}, total_frames=11)
    assert out.shape == (11, 4, LATENT, LATENT)
    assert torch.equal(out[:4], video)  # the given frames, bit-exact
    assert torch.isfinite(out).all()
    # 4 -> 11 frames with 2 given and 3 new: segments of 5, 5 and 2 + 1 frames; each call batches cond and uncond.
    assert [c.shape[0] for c in seen] == [10, 10, 6]
    scale = 0.18215
    for call, context_start, length in zip(seen, (2, 5, 8), (5, 5, 3), strict=True):
        chunk = call[:length]  # the first chunk; the other chunk has the same image channels
        assert torch.equal(chunk[:2, 0], torch.ones(2, LATENT, LATENT))  # mask 1 on the given frames
        assert torch.equal(chunk[2:, 0], torch.zeros(length - 2, LATENT, LATENT))  # and 0 on the new ones
        given = out[context_start : context_start + 2] * scale
        assert torch.allclose(chunk[:2, 1:], given, atol=1e-6)  # the last two frames of the video so far
        assert torch.count_nonzero(chunk[2:, 1:]) == 0
        assert torch.equal(call[length:], chunk)


def test_image_guidance_of_the_guider_applies_to_every_segment(atomo_model, ours):
    """A Video Guider built on the plain prompts (no image yet) still guides each segment with its image_cfg:
    three passes (image and text, image only, neither) batched in every call."""
    video = torch.randn(4, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(3))
    model, seen = _capture_concats(atomo_model)
    _predict(ours, model, {"samples": video}, total_frames=7, image_cfg=2.5)
    assert [c.shape[0] for c in seen] == [15]  # one segment of 5 frames x 3 passes
    masks = seen[0][:, 0].reshape(3, 5, -1).amax(dim=2)
    assert sorted(masks[:, :2].tolist()) == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0]]  # one pass without the image


def test_seed_determinism(atomo_model, ours):
    video = torch.randn(4, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(1))
    a = _predict(ours, atomo_model, {"samples": video}, total_frames=7)
    b = _predict(ours, atomo_model, {"samples": video}, total_frames=7)
    c = _predict(ours, atomo_model, {"samples": video}, total_frames=7, seed=12)
    assert torch.equal(a, b)
    assert not torch.allclose(a[4:], c[4:])


def test_one_progress_bar_over_all_segments_and_cancel_between_segments(atomo_model, ours):
    import comfy.model_management
    import comfy.utils

    video = torch.randn(4, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(2))
    updates = []

    def hook(value, total, preview, *args, **kwargs):
        updates.append((value, total))

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        _predict(ours, atomo_model, {"samples": video}, steps=2)
        assert updates[-1] == (4, 4) and {t for _, t in updates} == {4}  # 2 segments x 2 steps, one bar
        updates.clear()

        def cancel_after_first_segment(value, total, preview, *args, **kwargs):
            updates.append(value)
            if value == 2:
                comfy.model_management.interrupt_current_processing()
            comfy.model_management.throw_exception_if_processing_interrupted()

        comfy.utils.set_progress_bar_global_hook(cancel_after_first_segment)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            _predict(ours, atomo_model, {"samples": video}, steps=2)
        assert max(updates) == 2
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        comfy.model_management.interrupt_current_processing(False)
    again = _predict(ours, atomo_model, {"samples": video}, total_frames=5)  # ComfyUI is still usable
    assert again.shape[0] == 5 and torch.isfinite(again).all()


def test_text_to_video_modules_and_bad_settings_are_explained(sd15, ours):
    _, base = sd15
    core = ours("atomo_core")
    t2v = ours("nodes.host_adapter").attach_motion_module(base, meta_family_module(ours, "v3", "v3_sd15_mm.ckpt"))
    latent = {"samples": torch.zeros(4, 4, LATENT, LATENT)}
    with pytest.raises(core.AtomoError, match="text-to-video module and cannot take given frames"):
        _predict(ours, t2v, latent)
    pia_model = ours("nodes.host_adapter").attach_motion_module(base, meta_family_module(ours, "pia", "pia.ckpt"))
    with pytest.raises(core.AtomoError, match="PIA continues from one frame"):
        _predict(ours, pia_model, latent, context_frames=8)


def test_bad_plans_and_missing_inputs(atomo_model, ours):
    errors = ours("atomo_core").AtomoError
    latent = {"samples": torch.zeros(4, 4, LATENT, LATENT)}
    with pytest.raises(errors, match="exceeds the module's 24 frames"):
        _predict(ours, atomo_model, latent, context_frames=8, new_frames=20)
    with pytest.raises(errors, match="exactly one of 'latent' or 'images'"):
        _predict(ours, atomo_model, None)
    with pytest.raises(errors, match="shorter than the 4 frames"):
        _predict(ours, atomo_model, latent, total_frames=3)
