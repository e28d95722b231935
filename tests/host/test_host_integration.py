"""Living inside ComfyUI: identity of a fresh AtomoVideo module, a clean base model after unloading and
switching, LoRA before/after the loader, ControlNet, frame limits, dtypes, and non-SD-1.5 models refused."""

from __future__ import annotations

import pytest
import torch
from sampling import conditioning, one_step, relative_error
from weights import animatediff_state_dict

FRAMES = 16


@pytest.fixture(scope="module")
def core(ours):
    return ours("atomo_core")


@pytest.fixture(scope="module")
def attach(ours):
    return ours("nodes.host_adapter").attach_motion_module


@pytest.fixture(scope="module")
def v2_module(core):
    """One AnimateDiff-v2-layout module, shared (ComfyUI ejects it from one clone before injecting into another)."""
    sd = animatediff_state_dict("v2", seed=11)
    return core.build_motion_module(sd, core.detect_config(sd), "v2.safetensors")


@pytest.fixture(scope="module")
def fresh_module(ours):
    return ours("atomo_core.atomovideo_format").new_atomovideo_module(max_frames=24, name="fresh.safetensors")


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _run(model, frames=FRAMES, seed=5, sigma_index=600, positive=None, negative=None):
    sigmas = model.get_model_object("model_sampling").sigmas
    noise = torch.randn(frames, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    out, calls = one_step(model, noise, sigmas[sigma_index], positive or conditioning(1), negative or conditioning(2))
    return out, calls


def test_fresh_atomovideo_module_leaves_sd15_output_unchanged(sd15, fresh_module, attach):
    _, base = sd15
    bare, _ = _run(base)
    patched = attach(base, fresh_module, apply_sampling=False)
    out, calls = _run(patched)
    assert len(calls) == 1 and calls[0]["input"].shape[0] == 2 * FRAMES
    assert torch.equal(out, bare)


def test_base_model_is_bit_identical_after_unloading_and_switching(sd15, v2_module, attach):
    import comfy.model_management

    _, base = sd15
    unet = base.model.diffusion_model
    state_before = _digests(base.model.state_dict())
    structure_before = [(name, type(module).__name__) for name, module in base.model.named_modules()]
    bare_before, _ = _run(base)

    patched = attach(base, v2_module)
    animated, _ = _run(patched)
    assert relative_error(animated, bare_before) > 1e-2  # the module really ran
    assert any(name.startswith("atomo_") for name in unet.output_blocks[5]._modules) is False  # ejected again

    switched, _ = _run(base)  # switching back to the bare model without an explicit unload
    assert torch.equal(switched, bare_before)
    comfy.model_management.unload_all_models()
    assert [(n, type(m).__name__) for n, m in base.model.named_modules()] == structure_before
    assert _digests(base.model.state_dict()) == state_before
    again, _ = _run(base)
    assert torch.equal(again, bare_before)


def _digests(state_dict):
    """Exact content fingerprint of every tensor (bytes, dtype, shape), without keeping a 3 GB copy."""
    import hashlib

    return {k: (v.dtype, tuple(v.shape), hashlib.sha256(v.detach().contiguous().view(torch.uint8).numpy()).hexdigest())
            for k, v in state_dict.items()}


def test_lora_before_or_after_the_loader(sd15, fresh_module, v2_module, attach):
    import comfy.sd
    from sd15_models import kohya_lora

    _, base = sd15
    lora = kohya_lora(seed=4, scale=0.5)

    def with_lora(model):
        return comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)[0]

    bare, _ = _run(base)
    lora_only, _ = _run(with_lora(base))
    assert relative_error(lora_only, bare) > 1e-2  # the LoRA does something
    # A fresh AtomoVideo module is the identity: the LoRA changes the frames exactly as without it.
    before, _ = _run(attach(with_lora(base), fresh_module, apply_sampling=False))
    after, _ = _run(with_lora(attach(base, fresh_module, apply_sampling=False)))
    assert torch.allclose(before, lora_only, atol=1e-6) and torch.allclose(after, lora_only, atol=1e-6)
    # With a real motion module the LoRA still applies, in either order, with the same result.
    motion, _ = _run(attach(base, v2_module))
    lora_then_motion, _ = _run(attach(with_lora(base), v2_module))
    motion_then_lora, _ = _run(with_lora(attach(base, v2_module)))
    assert relative_error(lora_then_motion, motion) > 1e-2
    assert relative_error(motion_then_lora, lora_then_motion) < 1e-5


def test_controlnet_still_steers_the_frames(sd15, fresh_module, v2_module, attach):
    from sd15_models import random_controlnet

    import nodes

    unet2d, base = sd15
    controlnet = random_controlnet(unet2d, seed=2)
    hint = torch.rand(FRAMES, 64, 64, 3, generator=torch.Generator().manual_seed(9))
    positive, negative = nodes.ControlNetApplyAdvanced().apply_controlnet(
        conditioning(1), conditioning(2), controlnet, hint, 1.0, 0.0, 1.0
    )
    bare, _ = _run(base)
    cn_only, _ = _run(base, positive=positive, negative=negative)
    assert relative_error(cn_only, bare) > 1e-2
    fresh_cn, _ = _run(attach(base, fresh_module, apply_sampling=False), positive=positive, negative=negative)
    assert torch.allclose(fresh_cn, cn_only, atol=1e-6)
    v2 = attach(base, v2_module)
    motion, _ = _run(v2)
    motion_cn, _ = _run(v2, positive=positive, negative=negative)
    assert relative_error(motion_cn, motion) > 1e-2


def test_too_many_frames_is_refused_with_the_limit_and_comfyui_keeps_working(sd15, core, attach):
    _, base = sd15
    sd = animatediff_state_dict("v1", seed=1)
    v1 = attach(base, core.build_motion_module(sd, core.detect_config(sd), "mm_sd_v15.ckpt"))
    with pytest.raises(core.FrameLimitError, match=r"'mm_sd_v15.ckpt' \(AnimateDiff v1\).*at most 24 frames.*25 "
                       r"frames.*Context Windows \(video frames\)"):
        _run(v1, frames=25)
    ok, _ = _run(v1, frames=24)
    assert torch.isfinite(ok).all()
    bare, _ = _run(base)
    assert torch.isfinite(bare).all()


def test_motion_module_follows_a_bf16_unet(sd15, core, v2_module, attach):
    sd = animatediff_state_dict("v2", seed=11)
    v2_bf16 = core.build_motion_module(sd, core.detect_config(sd), "v2.safetensors")
    from sd15_models import comfy_model_from_diffusers

    unet2d, base = sd15
    base_bf16 = comfy_model_from_diffusers(unet2d, dtype=torch.bfloat16)
    assert base_bf16.model.get_dtype() == torch.bfloat16
    patched = attach(base_bf16, v2_bf16)
    attachment = patched.get_attachment("atomo_video")
    # The module computes in the UNet's compute dtype: bf16 where the device runs bf16, else ComfyUI's manual
    # cast dtype (fp32 on this CPU), exactly the dtype of the activations the UNet hands it.
    compute = base_bf16.model.manual_cast_dtype or torch.bfloat16
    assert {p.dtype for p in attachment.module.parameters()} == {compute}
    low, calls = _run(patched)
    assert calls[0]["input"].dtype == compute
    full, _ = _run(attach(base, v2_module))
    assert torch.isfinite(low).all()
    rms_error = ((low - full).pow(2).mean().sqrt() / full.pow(2).mean().sqrt()).item()
    assert rms_error < 0.05  # bf16 weight rounding through a random 1B-parameter network
    del base_bf16, patched, v2_bf16


def test_non_sd15_model_is_refused(core, attach):
    import comfy.model_detection
    import comfy.model_patcher

    sd2 = {"image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "num_classes": None,
           "in_channels": 4, "num_res_blocks": [2, 2, 2, 2], "channel_mult": [1, 2, 4, 4],
           "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "transformer_depth_output": [1] * 12,
           "transformer_depth_middle": 1, "num_head_channels": 64, "num_heads": -1, "context_dim": 1024,
           "model_channels": 320, "use_linear_in_transformer": True, "adm_in_channels": None,
           "use_temporal_attention": False, "use_temporal_resblock": False}
    config = comfy.model_detection.model_config_from_unet_config(sd2)
    model = comfy.model_patcher.ModelPatcher(config.get_model({}, device="meta"), torch.device("cpu"), torch.device("cpu"))
    with pytest.raises(core.AtomoError, match="SD-1.5 motion module, but the MODEL connected is SD20"):
        attach(model, _fresh_atomo_meta(core))


def _fresh_atomo_meta(core):
    import importlib

    fmt = importlib.import_module(core.__name__ + ".atomovideo_format")
    with torch.device("meta"):
        return fmt.new_atomovideo_module(name="fresh.safetensors")
