"""Long text-to-video with context windows: our Context Windows (video frames) node over core's handler.

Core's own Context Windows (Manual) node fails on the frame batch of SD-1.5 video (shown here, so that the README's
reason stays true for the ComfyUI we test with). Ours: 64 frames, windows of 16 overlapping by 4 (``standard_static``: 0-15, 12-27, 24-39, 36-51, 48-63), one step of
ComfyUI's real sampling path. Each UNet call must see one window (16 frames per cond/uncond chunk, below the
module's frame limit, which the whole batch exceeds), and the frames that only one window covers must be exactly
what a run of that window alone gives (the fused result of a frame is the weighted mean of the windows covering
it; with one window, that window's output). For AnimateDiff v1 that also shows the ResNet GroupNorm statistics
span the window, not the 64-frame batch (over the batch, frames 0-11 would see the statistics of all 64).
"""

from __future__ import annotations

import pytest
import torch
from host_models import install_model_file
from sampling import conditioning, one_step, relative_error
from tolerances import UNET_SAME_OPS
from weights import animatediff_state_dict

FRAMES, WINDOW, OVERLAP = 64, 16, 4


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


@pytest.fixture(scope="module")
def windows(ours):
    node = ours("nodes.context_windows").AtomoContextWindows

    def apply(model, schedule="standard_static", length=WINDOW, overlap=OVERLAP):
        return node.execute(model, length, overlap, schedule, 1, False, "pyramid").result[0]

    return apply


def _with_module(sd15, ours, tmp_path, family="v3"):
    _, base = sd15
    install_model_file("motion_modules", tmp_path / "motion_modules", f"{family}.safetensors",
                       animatediff_state_dict(family, seed=11))
    return ours("nodes.load_motion_module").AtomoLoadMotionModule.execute(base, f"{family}.safetensors").result[0]


def test_core_context_windows_on_the_frame_batch(sd15, ours, tmp_path):
    """Why we have a node, on the ComfyUI under test. 0.3.64: core's handler looks the step up with the whole
    per-frame timestep vector and fails. Newer core (its handler takes ``freenoise``): it looks the first frame up
    and runs; the newest adds its causal anchor frame, so every window after the first is 17 frames."""
    import inspect

    import comfy.context_windows as cw
    from comfy_extras.nodes_context_windows import ContextWindowsManualNode

    model = _with_module(sd15, ours, tmp_path)
    options = inspect.signature(ContextWindowsManualNode.execute).parameters
    core = ContextWindowsManualNode.execute(model, WINDOW, OVERLAP, "standard_static", 1, False, "pyramid",
                                            *([0] if "freenoise" not in options else []),
                                            **({"dim": 0, "freenoise": False} if "freenoise" in options else {}))
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = model.get_model_object("model_sampling").sigmas[600]
    if "freenoise" not in inspect.signature(cw.IndexListContextHandler.__init__).parameters:
        with pytest.raises(RuntimeError, match="must match the size of tensor b"):
            one_step(core.result[0], noise, sigma, conditioning(1), conditioning(2))
        return
    _, calls = one_step(core.result[0], noise, sigma, conditioning(1), conditioning(2))
    handler_options = inspect.signature(cw.IndexListContextHandler.__init__).parameters
    # the newest core adds its causal anchor frame to every window after the first; the fork (0.12.1) has none yet
    expected = [WINDOW, WINDOW + 1] if "causal_window_fix" in handler_options else [WINDOW]
    assert sorted({c["input"].shape[0] // 2 for c in calls}) == expected


@pytest.mark.parametrize("family", ["v3", "v2", "v1"])
def test_windows_see_their_own_frames(sd15, ours, tmp_path, windows, family):
    model = _with_module(sd15, ours, tmp_path, family)
    limit = ours("nodes.host_adapter").get_attachment(model).module.max_frames
    assert limit < FRAMES
    sigma = model.get_model_object("model_sampling").sigmas[600]
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    positive, negative = conditioning(1), conditioning(2)

    with pytest.raises(ours("atomo_core.errors").FrameLimitError, match=f"at most {limit} frames"):
        one_step(model, noise, sigma, positive, negative)  # without windows, 64 frames are refused

    out, calls = one_step(windows(model), noise, sigma, positive, negative)
    assert len(calls) == 5 and all(c["input"].shape[0] == 2 * WINDOW for c in calls)  # 5 windows x (cond, uncond)
    alone, _ = one_step(model, noise[:WINDOW], sigma, positive, negative)
    only_first = WINDOW - OVERLAP  # frames 0..11 lie in window 0 only
    error = relative_error(out[:only_first], alone[:only_first])
    print(f"{family}: frames 0-11 of the 64-frame run vs window 0 alone: {error:.2e}")
    assert error < UNET_SAME_OPS
    last, _ = one_step(model, noise[-WINDOW:], sigma, positive, negative)
    assert relative_error(out[-only_first:], last[-only_first:]) < UNET_SAME_OPS
    # the overlap mixes two windows: it is not either window's output
    assert relative_error(out[only_first:WINDOW], alone[only_first:]) > 1e-3
    # and a 16-frame window is not the same as 16 frames of a 64-frame clip: the figure sees the temporal layers
    shifted, _ = one_step(model, noise[1 : WINDOW + 1], sigma, positive, negative)
    assert relative_error(out[1:only_first], shifted[: only_first - 1]) > 1e-2


def test_ksampler_makes_64_frames_with_windows(sd15, ours, tmp_path, windows):
    """Two KSampler steps with the uniform schedule, whose windows move from step to step (the step lookup)."""
    import nodes

    model = windows(_with_module(sd15, ours, tmp_path), "standard_uniform")
    handler = model.model_options["context_handler"]
    steps_seen = []
    original = handler.get_context_windows

    def record(*args, **kwargs):
        found = original(*args, **kwargs)
        steps_seen.append((handler._step, found[0].index_list[0]))
        return found

    handler.get_context_windows = record
    latent = {"samples": torch.zeros(FRAMES, 4, 8, 8)}
    out = nodes.KSampler().sample(model, 1, 2, 7.0, "euler", "simple", conditioning(1), conditioning(2),
                                  latent)[0]["samples"]
    assert out.shape == (FRAMES, 4, 8, 8) and torch.isfinite(out).all()
    # step 0 starts its windows at frame 0, step 1 half way round (ordered halving: pad 32, first window 32-47)
    assert steps_seen == [(0, 0), (1, 32)]


class RecordingControl:
    """A ControlNet stand-in (ComfyUI's ControlBase) that records which hint frames each call got."""

    @staticmethod
    def make(frames):
        from comfy.controlnet import ControlBase

        class Control(ControlBase):
            def __init__(self):
                super().__init__()
                self.seen = []

            def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
                self.seen.append(self.cond_hint_original[:, 0, 0, 0].round().long().tolist())
                return None

        control = Control()
        hint = torch.arange(frames, dtype=torch.float32).view(frames, 1, 1, 1).expand(frames, 3, 64, 64)
        control.set_cond_hint(hint.clone())
        return control, hint


def test_controlnet_hints_follow_the_window(sd15, ours, tmp_path, windows):
    """Core cuts a 64-frame hint batch to its first 16 frames in every window; ours gives each window its own."""
    model = windows(_with_module(sd15, ours, tmp_path))
    control, hint = RecordingControl.make(FRAMES)
    positive = [[conditioning(1)[0][0], {"control": control}]]
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    one_step(model, noise, model.get_model_object("model_sampling").sigmas[600], positive, conditioning(2))
    step = WINDOW - OVERLAP
    expected = [list(range(start, start + WINDOW)) for start in range(0, FRAMES - WINDOW + 1, step)]
    assert control.seen == expected
    assert torch.equal(control.cond_hint_original, hint) and control.cond_hint is None  # restored for the next step


def test_per_frame_conditioning_follows_the_window(sd15, ours, tmp_path, windows):
    """A prompt per frame (prompt travel's conditioning, frame f's rows filled with f): every window's UNet call sees
    its own frames' rows. ComfyUI 0.3.64 left per-frame conds whole at dimension 0 (every window got rows 0..15)."""
    model = windows(_with_module(sd15, ours, tmp_path))
    per_frame = torch.arange(FRAMES, dtype=torch.float32).view(FRAMES, 1, 1).expand(FRAMES, 77, 768).clone()
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    _, calls = one_step(model, noise, model.get_model_object("model_sampling").sigmas[600], [[per_frame, {}]],
                        [[torch.full((1, 77, 768), -1.0), {}]])
    step = WINDOW - OVERLAP
    starts = list(range(0, FRAMES - WINDOW + 1, step))
    seen = []
    for call in calls:
        chunk = call["cond_or_uncond"].index(0)  # the positive chunk of this call
        seen.append(call["context"][chunk * WINDOW : (chunk + 1) * WINDOW, 0, 0].round().long().tolist())
    assert seen == [list(range(start, start + WINDOW)) for start in starts]


def test_freenoise_reschedules_the_initial_noise_and_repeats(sd15, ours, tmp_path):
    """FreeNoise on the node: the sampler starts from noise whose later windows are shuffled copies of the first
    window's (the FreeNoise rule), the same for the same seed; without it, the noise is the sampler's own."""
    import comfy.sample
    import comfy.samplers

    node = ours("nodes.context_windows").AtomoContextWindows
    base = _with_module(sd15, ours, tmp_path)
    seen = []

    def record_start(model_wrap, x, sigmas, extra_args=None, callback=None, disable=None):
        seen.append(x.clone())
        return x

    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    for freenoise in (True, True, False):
        model = node.execute(base, WINDOW, OVERLAP, "standard_static", 1, False, "pyramid", freenoise).result[0]
        sigmas = torch.tensor([1.0, 0.0])
        # a copy each run: current core's FreeNoise reschedules the noise tensor it is given in place
        comfy.sample.sample_custom(model, noise.clone(), 7.5, comfy.samplers.KSAMPLER(record_start), sigmas,
                                   conditioning(1), conditioning(2), torch.zeros_like(noise), disable_pbar=True,
                                   seed=7)
    rescheduled, again, plain = (x / x[:1].std() for x in seen)  # the sampler scales the noise by sigma[0]
    assert torch.equal(rescheduled, again)  # seeded: a run repeats exactly
    assert torch.allclose(plain, noise / noise[:1].std(), atol=1e-5)
    assert torch.allclose(rescheduled[:WINDOW], plain[:WINDOW], atol=1e-5)  # the first window keeps its noise
    step = WINDOW - OVERLAP
    for start in range(WINDOW, FRAMES, step):  # each later block is a permutation of the block a window before
        block = rescheduled[start : start + step]
        source = rescheduled[start - WINDOW : start - WINDOW + block.shape[0]]
        assert sorted(block.flatten(1)[:, 0].tolist()) == pytest.approx(sorted(source.flatten(1)[:, 0].tolist()))
    assert not torch.allclose(rescheduled[WINDOW:], plain[WINDOW:])


def test_node_refuses_windows_the_module_cannot_take(sd15, ours, tmp_path, windows):
    AtomoError = ours("atomo_core.errors").AtomoError
    model = _with_module(sd15, ours, tmp_path, "v1")
    with pytest.raises(AtomoError, match="at most 24 frames"):
        windows(model, length=32)
    with pytest.raises(AtomoError, match="must be smaller than context_length"):
        windows(model, overlap=16)


def test_windows_honour_current_cores_window_fields(ours):
    """The newer window contract at the seam (0.3.64 cannot run it): current core builds
    ``IndexListContextWindow(index_list, dim, total_frames)``, may set a ``causal_anchor_index`` and calls
    ``get_tensor(full, device, dim, retain_index_list)``; our re-typed windows keep those fields and honour them."""
    import comfy.context_windows as cw

    VideoWindow = ours("nodes.context_windows").VideoWindow
    import inspect

    takes_total = "total_frames" in inspect.signature(cw.IndexListContextWindow.__init__).parameters
    window = cw.IndexListContextWindow([4, 5, 6, 7], **({"total_frames": 12} if takes_total else {}))
    window.dim, window.total_frames = 0, 12  # what current core's constructor records
    window.__class__ = VideoWindow
    full = torch.arange(12.0).view(12, 1).expand(12, 3).clone()
    assert window.get_tensor(full)[:, 0].tolist() == [4, 5, 6, 7] and window.total_frames == 12
    assert window.get_tensor(full, None, 0, [0])[:, 0].tolist() == [0, 5, 6, 7]  # frame 0 retained in the window
    assert window.get_tensor(full.T.contiguous(), None, 1)[0].tolist() == [4, 5, 6, 7]  # another dimension
    assert window.get_tensor(full[:1])[:, 0].tolist() == [0]  # one entry for every frame stays whole
    window.causal_anchor_index = 3  # current core's causal_window_fix: one leading anchor frame
    assert window.get_tensor(full)[:, 0].tolist() == [3, 4, 5, 6, 7]
    out = window.add_window(torch.zeros(12, 3), torch.ones(4, 3))
    assert out[:, 0].tolist() == [0] * 4 + [1] * 4 + [0] * 4
    handler = ours("nodes.context_windows").VideoContextHandler(
        context_schedule=cw.get_matching_context_schedule("standard_static"),
        fuse_method=cw.get_matching_fuse_method("pyramid"), context_length=4, context_overlap=1)
    if "causal_window_fix" in ours("nodes.context_windows").HANDLER_OPTIONS:
        assert handler.causal_window_fix is False  # AnimateDiff windows as trained, no anchor frame
    assert handler.dim == 0


IMAGE_FRAMES = 48


@pytest.mark.parametrize("family", ["atomovideo", "pia"])
def test_image_modules_hold_the_given_frame_in_every_window(sd15, ours, tmp_path, vae, family):
    """A 48-frame PIA or AtomoVideo clip through windows of 16 overlapping by 4: each window is the given frame
    (PIA: the condition frame) followed by 15 frames of its own, scheduled over the other 47 frames (0 + 1-15,
    0 + 12-26, 0 + 23-37, 0 + 33-47); every UNet call sees, at the window's first frame, the given frame's latent
    with mask 1 in its image channels; AtomoVideo's other frames carry mask 0, PIA's the preset's strengths for a
    16-frame clip. With ``image_in_every_window`` off, later windows see only their own frames (mask 0)."""
    from host_models import random_atomovideo

    _, base = sd15
    if family == "pia":
        install_model_file("motion_modules", tmp_path / "motion_modules", "pia.safetensors",
                           animatediff_state_dict("pia", seed=12))
        model = ours("nodes.load_motion_module").AtomoLoadMotionModule.execute(base, "pia.safetensors").result[0]
    else:
        model = ours("nodes.host_adapter").attach_motion_module(base, random_atomovideo(ours, seed=5))
    node = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(6))
    model, positive, negative, latent = node.execute(model, conditioning(1), conditioning(2), vae, image,
                                                     IMAGE_FRAMES, 64, 64, "crop").result
    concat = positive[0][1]["noise_concat"]
    given = concat[0, 1:]
    noise = torch.randn(IMAGE_FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    sigma = model.get_model_object("model_sampling").sigmas[600]
    windows_node = ours("nodes.context_windows").AtomoContextWindows
    expected = [[0] + list(range(1, 16)), [0] + list(range(12, 27)), [0] + list(range(23, 38)),
                [0] + list(range(33, 48))]
    coefficients = ours("atomo_core.conditioning").pia_mask_coefficients(WINDOW, "small motion", 0)
    for every_window in (True, False):
        windowed = windows_node.execute(model, WINDOW, OVERLAP, "standard_static", 1, False, "pyramid", False,
                                        every_window).result[0]
        out, calls = one_step(windowed, noise, sigma, positive, negative, latent=latent["samples"])
        assert torch.isfinite(out).all() and all(c["input"].shape[0] == 2 * WINDOW for c in calls)
        inputs = [c["input"][:WINDOW] for c in calls]  # one chunk of each call (cond and uncond carry the same)
        masks = [x[:, 4, 0, 0].tolist() for x in inputs]
        noisy = (latent["samples"] + noise * sigma).flatten(1)  # each frame's noisy latent, before the UNet's scaling
        frames_seen = [torch.nn.functional.cosine_similarity(x[:, None, :4].flatten(2), noisy[None], dim=2)
                       .argmax(dim=1).tolist() for x in inputs]
        if every_window:
            assert frames_seen == expected
            for x, mask in zip(inputs, masks, strict=True):
                assert torch.allclose(x[0, 5:], given, atol=1e-6)
                if family == "atomovideo":
                    assert mask == [1.0] + [0.0] * (WINDOW - 1)
                else:
                    assert mask == pytest.approx(coefficients)
        else:  # core's windows 0-15, 12-27, 24-39, 32-47: the later ones start far from the image
            assert frames_seen == [list(range(start, start + WINDOW)) for start in (0, 12, 24, 32)]
            assert masks[0][0] == 1.0
            later = [m[0] for m in masks[1:]]
            assert later == ([0.0] * 3 if family == "atomovideo" else pytest.approx([coefficients[-1]] * 3))
    handler = windowed.model_options["context_handler"]
    assert handler.given_in_every_window is False
