"""SparseCtrl (ComfyUI-Advanced-ControlNet) on our AnimateDiff v3 MODEL, run beside ours.

Advanced-ControlNet loads a SparseCtrl file as a ControlNet plus its own AnimateDiff motion modules, and builds those
through AnimateDiff-Evolved (its "DinkLink"), so both packs must be installed: set ``ADVANCED_CONTROLNET_PATH`` and
``ANIMATEDIFF_EVOLVED_PATH`` to their folders. Both declare ``requires-comfyui >= 0.3.68`` (run this file on a newer
ComfyUI, e.g. the installable fork; see tests/host/README.md).

What a user does: Load SparseCtrl Model (RGB) with an index method, RGB SparseCtrl preprocessing of one or two
keyframe images, Apply Advanced ControlNet, then sample with our motion module's MODEL. What must hold: it runs; the
control acts on every frame; one and two keyframes differ and the mask marks exactly the keyframes' frames; the
SparseCtrl's own motion modules act (use_motion on against off) and see the whole clip; our temporal layers still act.
"""

from __future__ import annotations

import pytest
import torch
from host_models import install_model_file, register_model_folder
from sampling import conditioning, one_step, relative_error
from weights import animatediff_state_dict, sparsectrl_rgb_state_dict

FRAMES = 8  # 64x64 frames: 8x8 latents keep a real-size SD-1.5 step (and its ControlNet) to seconds on a CPU


def _older_than(version: str, minimum: tuple[int, ...]) -> bool:
    return tuple(int(p) for p in version.split(".")[:3] if p.isdigit()) < minimum


@pytest.fixture(scope="module")
def acn(pack):
    import comfy_host

    import nodes

    version = comfy_host.comfyui_version()
    if _older_than(version, (0, 3, 68)):  # measured on 0.3.64: its V3 schema check refuses ACN's Apply node
        pytest.skip(f"ComfyUI-Advanced-ControlNet and AnimateDiff-Evolved need ComfyUI >= 0.3.68 (this is {version})")
    comfy_host.load_other_pack("ANIMATEDIFF_EVOLVED_PATH", "ADE_AnimateDiffLoaderGen1")  # first: ACN links to it
    comfy_host.load_other_pack("ADVANCED_CONTROLNET_PATH", "ACN_SparseCtrlLoaderAdvanced")
    return nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def setup(acn, sd15, ours, vae, tmp_path_factory):
    folder = tmp_path_factory.mktemp("sparsectrl")
    install_model_file("controlnet", folder / "controlnet", "v3_sd15_sparsectrl_rgb.safetensors",
                       sparsectrl_rgb_state_dict(seed=3))
    install_model_file("motion_modules", folder / "motion_modules", "v3.safetensors",
                       animatediff_state_dict("v3", seed=11))
    register_model_folder("controlnet", folder / "controlnet")
    _, base = sd15
    # "keep model's": the same sampling as the bare MODEL, so runs with and without it differ only by its layers
    model = ours("nodes.load_motion_module").AtomoLoadMotionModule.execute(base, "v3.safetensors",
                                                                           "keep model's").result[0]
    gen = torch.Generator().manual_seed(4)
    return dict(base=base, model=model, vae=vae, keyframes=torch.rand(2, 64, 64, 3, generator=gen),
                latent={"samples": torch.zeros(FRAMES, 4, 8, 8)},
                noise=torch.randn(FRAMES, 4, 8, 8, generator=gen))


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _result(output):
    return output.result if hasattr(output, "result") else output  # V3 NodeOutput or a V1 tuple


def _controlled(acn, s, indexes: str, images: torch.Tensor, use_motion: bool = True):
    """``(positive, negative, control)`` with a SparseCtrl RGB on ``images`` at frames ``indexes``."""
    method = _result(acn["ACN_SparseCtrlIndexMethodNode"].execute(indexes))[0]
    control = _result(acn["ACN_SparseCtrlLoaderAdvanced"].execute("v3_sd15_sparsectrl_rgb.safetensors", use_motion,
                                                                   1.0, 1.0, sparse_method=method))[0]
    hint = _result(acn["ACN_SparseCtrlRGBPreprocessor"].execute(s["vae"], images, s["latent"]))[0]
    positive, negative = _result(acn["ACN_AdvancedControlNetApply_v2"].execute(
        conditioning(1), conditioning(2), control, hint, 1.0, 0.0, 1.0))[:2]
    return positive, negative, _recording(positive[0][1]["control"])


def _recording(control):
    """Keep what the control computed at each call (ComfyUI cleans controls up after sampling): its hint with the
    keyframe mask, and the clip length its motion modules were given."""
    control.seen = []
    get_control = control.get_control

    def recorded(*args, **kwargs):
        out = get_control(*args, **kwargs)
        motion = control.motion_model
        control.seen.append({"hint": control.cond_hint.clone(),
                             "video_length": getattr(motion, "AD_video_length", None) if motion else None})
        return out

    control.get_control = recorded
    return control


def _step(s, model, positive=None, negative=None):
    sigma = s["base"].get_model_object("model_sampling").sigmas[600]
    return one_step(model, s["noise"], sigma, positive or conditioning(1), negative or conditioning(2))[0]


def test_sparsectrl_rgb_with_one_and_two_keyframes_on_our_v3_model(acn, setup):
    s = setup
    plain = _step(s, s["model"])
    one = _controlled(acn, s, "0", s["keyframes"][:1])
    two = _controlled(acn, s, "0, 7", s["keyframes"])
    with_one, with_two = _step(s, s["model"], *one[:2]), _step(s, s["model"], *two[:2])
    for out in (with_one, with_two):
        assert torch.isfinite(out).all()
        # the control acts on every frame (its motion modules carry the keyframes to the others)
        assert all(relative_error(out[f], plain[f]) > 1e-3 for f in range(FRAMES))
    assert relative_error(with_two, with_one) > 1e-3
    # the hint's mask channel marks exactly the keyframes' frames, in the cond and the uncond halves
    for (_, _, control), frames in ((one, {0}), (two, {0, 7})):
        assert control.seen, "the SparseCtrl was never called"
        for seen in control.seen:
            mask = seen["hint"][:, -1].flatten(1).amax(1).tolist()
            assert len(mask) % FRAMES == 0
            assert {i % FRAMES for i, m in enumerate(mask) if m > 0} == frames
            assert all(m in (0.0, 1.0) for m in mask)
            assert seen["video_length"] == FRAMES  # its motion modules see the whole clip


def test_sparsectrl_motion_modules_and_ours_both_act(acn, setup):
    s = setup
    on = _controlled(acn, s, "0, 7", s["keyframes"])
    off = _controlled(acn, s, "0, 7", s["keyframes"], use_motion=False)
    animated_on, animated_off = _step(s, s["model"], *on[:2]), _step(s, s["model"], *off[:2])
    assert all(seen["video_length"] is None for seen in off[2].seen)  # no motion modules with use_motion off
    assert relative_error(animated_on, animated_off) > 1e-3  # SparseCtrl's temporal layers act inside its ControlNet
    bare_on = _step(s, s["base"], *_controlled(acn, s, "0, 7", s["keyframes"])[:2])
    assert relative_error(animated_on, bare_on) > 1e-3  # and ours still act in the UNet
