"""Prompt Travel inside ComfyUI: a real CLIP (random weights, the SD-1.5 checkpoint layout) encodes a schedule into
one prompt per frame; the samplers and the context windows take it."""

from __future__ import annotations

import pytest
import torch
from host_models import install_model_file
from sampling import conditioning, one_step, relative_error
from tolerances import UNET_SAME_OPS
from weights import animatediff_state_dict

FRAMES = 32
A, B = "a red fox runs through deep snow", "a blue whale swims in the open ocean"

pytestmark = pytest.mark.usefixtures("free_models")


@pytest.fixture(scope="module")
def checkpoint(pack):
    import comfy.sd
    import random_checkpoint

    path = random_checkpoint.sd15_checkpoint(seed=0)
    model, clip, _, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=True)
    return model, clip


def _travel(ours, clip, schedule, interpolation="linear"):
    return ours("nodes.prompt_travel").AtomoPromptTravel.execute(clip, schedule, FRAMES, interpolation).result[0]


def test_every_frame_gets_its_scheduled_embedding(checkpoint, ours):
    _, clip = checkpoint
    a, b = (clip.encode_from_tokens(clip.tokenize(p)) for p in (A, B))
    cond = _travel(ours, clip, f"0: {A}\n8: {A}\n24: {B}")
    rows = cond[0][0]
    assert rows.shape == (FRAMES, 77, 768) and cond[0][1]["pooled_output"].shape[0] == 1
    assert all(torch.equal(rows[i], a[0]) for i in range(9))  # held between two keyframes of the same prompt
    assert all(torch.equal(rows[i], b[0]) for i in range(24, FRAMES))  # after the last keyframe
    for i in range(9, 24):  # linear in between
        t = (i - 8) / 16
        assert torch.allclose(rows[i], (1 - t) * a[0] + t * b[0], atol=1e-5)
    stepped = _travel(ours, clip, f"0: {A}\n8: {A}\n24: {B}", "none")[0][0]
    assert all(torch.equal(stepped[i], a[0]) for i in range(24)) and torch.equal(stepped[24], b[0])
    with pytest.raises(ours("atomo_core.errors").AtomoError, match="keyframe 40 is outside"):
        _travel(ours, clip, f"0: {A}\n40: {B}")


def test_windows_far_from_the_change_equal_single_prompt_runs(checkpoint, ours, tmp_path):
    """Batched windows of 16 (no overlap) are independent runs, so where a window holds one prompt on every frame
    its frames must equal that prompt's run; the change (a cut between frames 15 and 16) separates the windows.
    A blend across a window (frames 8-24) differs from both prompts' runs."""
    import nodes

    model, clip = checkpoint
    install_model_file("motion_modules", tmp_path / "motion_modules", "v3.safetensors",
                       animatediff_state_dict("v3", seed=11))
    model = ours("nodes.load_motion_module").AtomoLoadMotionModule.execute(model, "v3.safetensors").result[0]
    windows = ours("nodes.context_windows").AtomoContextWindows.execute(model, 16, 0, "batched", 1, False,
                                                                        "flat").result[0]
    a, b = (clip.encode_from_tokens(clip.tokenize(p)) for p in (A, B))
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = model.get_model_object("model_sampling").sigmas[600]
    negative = conditioning(2)
    run = lambda positive: one_step(windows, noise, sigma, positive, negative)[0]  # noqa: E731
    cut = run(_travel(ours, clip, f"0: {A}\n15: {A}\n16: {B}"))
    only_a, only_b = run([[a, {}]]), run([[b, {}]])
    assert relative_error(cut[:16], only_a[:16]) < UNET_SAME_OPS
    assert relative_error(cut[16:], only_b[16:]) < UNET_SAME_OPS
    assert relative_error(only_a, only_b) > 1e-2  # the prompts matter (else the comparison shows nothing)
    blend = run(_travel(ours, clip, f"0: {A}\n8: {A}\n24: {B}"))
    assert relative_error(blend[:16], only_a[:16]) > 1e-4 and relative_error(blend[16:], only_b[16:]) > 1e-4
    # KSampler takes it too, windows and all (two steps, every frame finite)
    latent = {"samples": torch.zeros(FRAMES, 4, 8, 8)}
    out = nodes.KSampler().sample(windows, 1, 2, 7.0, "euler", "simple", _travel(ours, clip, f"0: {A}\n24: {B}"),
                                  negative, latent)[0]["samples"]
    assert out.shape == (FRAMES, 4, 8, 8) and torch.isfinite(out).all()
