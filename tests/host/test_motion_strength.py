"""Motion Strength inside ComfyUI: strength 0 is the image model alone, frame by frame; 1 is the module as trained;
a per-frame list reaches every context window and every Predict Next Frames segment as that part's own frames."""

from __future__ import annotations

import pytest
import torch
from host_models import install_model_file, random_atomovideo
from sampling import conditioning, one_step, relative_error
from tolerances import UNET_SAME_OPS
from weights import animatediff_state_dict

FRAMES = 16

pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _with_module(sd15, ours, tmp_path, family):
    _, base = sd15
    install_model_file("motion_modules", tmp_path / "motion_modules", f"{family}.safetensors",
                       animatediff_state_dict(family, seed=11))
    # "keep model's": the same sampling as the bare MODEL, so the two runs differ only by the temporal layers
    return ours("nodes.load_motion_module").AtomoLoadMotionModule.execute(base, f"{family}.safetensors",
                                                                          "keep model's").result[0]


def _strength(ours, model, strength, per_frame="", mask=None):
    return ours("nodes.motion_strength").AtomoMotionStrength.execute(model, strength, per_frame, mask).result[0]


@pytest.mark.parametrize("family", ["v3", "v1"])
def test_strength_0_is_the_image_model_and_1_is_the_module(sd15, ours, tmp_path, family):
    """v1 also normalises its ResNet features over all frames: at strength 0 that stops too (frame by frame)."""
    _, base = sd15
    model = _with_module(sd15, ours, tmp_path, family)
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = base.get_model_object("model_sampling").sigmas[600]
    run = lambda m: one_step(m, noise, sigma, conditioning(1), conditioning(2))[0]  # noqa: E731
    bare, animated = run(base), run(model)
    assert relative_error(animated, bare) > 1e-2  # the module changes the frames (else the test shows nothing)
    assert torch.equal(run(_strength(ours, model, 0.0)), bare)
    assert torch.equal(run(_strength(ours, model, 0.0, mask=torch.zeros(1, 64, 64))), bare)
    assert torch.equal(run(_strength(ours, model, 1.0)), animated)
    # a mask of ones multiplies each residual by a tensor of ones: the same numbers up to float rounding
    assert relative_error(run(_strength(ours, model, 1.0, mask=torch.ones(FRAMES, 64, 64))), animated) < UNET_SAME_OPS
    half = run(_strength(ours, model, 0.5))
    assert relative_error(half, bare) > 1e-3 and relative_error(half, animated) > 1e-3
    fade = run(_strength(ours, model, 1.0, "0, 0, 1"))  # frames 0-7 still, then fading in
    assert relative_error(fade, bare) > 1e-3 and relative_error(fade, animated) > 1e-3


def _recording(ours, values):
    MotionStrength = ours("atomo_core.motion_strength").MotionStrength
    seen = []

    class Recording(MotionStrength):
        def factor(self, frames, total, videos, size, like):
            seen.append((tuple(frames), total))
            return super().factor(frames, total, videos, size, like)

    return Recording(1.0, tuple(values)), seen


def _with_strength(ours, model, strength):
    clone = model.clone()
    clone.model_options["transformer_options"][ours("nodes.host_adapter").STRENGTH_KEY] = strength
    return clone


def test_each_context_window_gets_its_frames_strengths(sd15, ours, tmp_path):
    frames = 48
    model = _with_module(sd15, ours, tmp_path, "v3")
    strength, seen = _recording(ours, [i / (frames - 1) for i in range(frames)])
    windows = ours("nodes.context_windows").AtomoContextWindows.execute(
        _with_strength(ours, model, strength), 16, 4, "standard_static", 1, False, "pyramid").result[0]
    noise = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    one_step(windows, noise, model.get_model_object("model_sampling").sigmas[600], conditioning(1), conditioning(2))
    assert sorted(set(seen)) == [(tuple(range(start, start + 16)), frames) for start in (0, 12, 24, 32)]


def test_each_predict_next_frames_segment_gets_its_frames_strengths(sd15, ours):
    from test_predict_next_frames import _predict

    _, base = sd15
    model = ours("nodes.host_adapter").attach_motion_module(base, random_atomovideo(ours, seed=3))
    strength, seen = _recording(ours, [1.0] * 11)
    video = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    out = _predict(ours, _with_strength(ours, model, strength), {"samples": video}, total_frames=11)
    assert out.shape[0] == 11
    # segments of the 11-frame video: frames 2-6, 5-9 and 8-10 (2 given + 3 new each, the last 2 + 1)
    assert sorted(set(seen)) == [(tuple(range(2, 7)), 11), (tuple(range(5, 10)), 11), (tuple(range(8, 11)), 11)]
