"""Load Motion LoRA through a real ComfyUI: the maths against the original AnimateDiff with the LoRA merged by hand,
reversibility, stacking, low-VRAM partial loading, v2 LoRAs on a module without the mid block, and refusals.

Random real-size SD-1.5 weights; a random v2 motion module in the released layout (sensitive weights) and random
motion LoRAs in the released key layout at the released rank (64), with ``up @ down`` about half the size of the
weights it updates (trained LoRAs are smaller; a visible update makes a wrong rule visible). 16 frames, cond and
uncond in one UNet call. The reference is the ORIGINAL AnimateDiff (``animatediff_oracle``) on the state dict with
``W + strength * up @ down`` merged in by this test (AnimateDiff's rule, its ``alpha`` being our strength).
"""

from __future__ import annotations

import pytest
import torch
from animatediff_oracle import build as build_oracle
from animatediff_oracle import predict
from host_models import install_model_file
from sampling import conditioning, one_step, relative_error
from tolerances import UNET_OTHER_KERNEL, UNET_SAME_OPS
from weights import animatediff_state_dict, domain_adapter_state_dict, motion_lora_state_dict

FRAMES = 16
RANK = 64  # the released v2 camera LoRAs' rank (19.3 M parameters per file)


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def random_motion_lora(seed: int, mid_block: bool = True) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, empty in motion_lora_state_dict(rank=RANK).items():
        if not mid_block and key.startswith("mid_block."):
            continue
        if key.endswith("down.weight"):  # [r, C]: N(0, 1/C); up [C, r]: N(0, 0.0625^2) -> (up @ down) ~ 0.5/sqrt(C)
            out[key] = torch.randn(empty.shape, generator=gen) / empty.shape[1] ** 0.5
        else:
            out[key] = torch.randn(empty.shape, generator=gen) * 0.0625
    return out


def merge(motion_sd: dict, loras: list[tuple[dict, float]]) -> dict:
    """AnimateDiff's own merge, written out here: ``W += alpha * up @ down`` on to_q/k/v and to_out.0."""
    merged = dict(motion_sd)
    for lora, strength in loras:
        for key, down in lora.items():
            if not key.endswith("_lora.down.weight"):
                continue
            up = lora[key.replace("_lora.down.", "_lora.up.")]
            target = key.replace("processor.", "").replace("_lora.down.weight", ".weight").replace("to_out.", "to_out.0.")
            if target in merged:
                merged[target] = merged[target] + strength * torch.mm(up, down)
    return merged


@pytest.fixture(scope="module")
def v2_sd():
    return animatediff_state_dict("v2", seed=11)


@pytest.fixture(scope="module")
def files(tmp_path_factory, v2_sd, pack):
    root = tmp_path_factory.mktemp("models")
    install_model_file("motion_modules", root / "motion_modules", "v2.safetensors", v2_sd)
    install_model_file("motion_modules", root / "motion_modules", "v3.safetensors", animatediff_state_dict("v3", seed=12))
    loras = {"pan.safetensors": random_motion_lora(21), "zoom.safetensors": random_motion_lora(22)}
    for name, sd in loras.items():
        install_model_file("motion_lora", root / "motion_lora", name, sd)
    install_model_file("motion_lora", root / "motion_lora", "adapter.safetensors",
                       {k: torch.zeros(v.shape) for k, v in domain_adapter_state_dict(rank=4).items()})
    torch.save(loras["zoom.safetensors"], root / "motion_lora" / "zoom_as_released.ckpt")  # the released .ckpt form
    return loras


def _load(ours, base, name):
    return ours("nodes.load_motion_module").AtomoLoadMotionModule.execute(base, name).result[0]


def _lora(ours, model, name, strength):
    node = ours("nodes.motion_lora").AtomoLoadMotionLoRA
    assert name in node.GET_SCHEMA().inputs[1].options
    return node.execute(model, name, strength).result[0]


def _call(model):
    sigmas = model.get_model_object("model_sampling").sigmas
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    _, calls = one_step(model, noise, sigmas[600], conditioning(1), conditioning(2), cfg=7.0)
    assert len(calls) == 1
    return calls[0]


def test_lora_matches_the_original_with_the_lora_merged(sd15, ours, files, v2_sd):
    unet2d, base = sd15
    model = _lora(ours, _load(ours, base, "v2.safetensors"), "pan.safetensors", 0.8)
    call = _call(model)
    expected = predict(build_oracle(unet2d, merge(v2_sd, [(files["pan.safetensors"], 0.8)]), "v2", FRAMES), call,
                       FRAMES)
    error = relative_error(call["output"], expected)
    print(f"motion LoRA at 0.8: max|ours - original merged| / rms = {error:.2e}")
    assert error < UNET_OTHER_KERNEL  # the same maths, ComfyUI's sub-quadratic attention vs diffusers' SDPA
    # Sensitivity: without the LoRA, or at strength 1.0 instead of 0.8, the figure is far outside the bound.
    unmerged = predict(build_oracle(unet2d, v2_sd, "v2", FRAMES), call, FRAMES)
    wrong_strength = predict(build_oracle(unet2d, merge(v2_sd, [(files["pan.safetensors"], 1.0)]), "v2", FRAMES),
                             call, FRAMES)
    print(f"  without the LoRA {relative_error(unmerged, expected):.2e}, at 1.0 "
          f"{relative_error(wrong_strength, expected):.2e}")
    assert relative_error(unmerged, expected) > 100 * UNET_OTHER_KERNEL
    assert relative_error(wrong_strength, expected) > 10 * UNET_OTHER_KERNEL

    # the released .ckpt (pickle) form of a file loads to the same patch as its safetensors copy
    a = _call(_lora(ours, _load(ours, base, "v2.safetensors"), "zoom.safetensors", 1.0))["output"]
    b = _call(_lora(ours, _load(ours, base, "v2.safetensors"), "zoom_as_released.ckpt", 1.0))["output"]
    assert torch.equal(a, b)


def test_reversible_and_stackable(sd15, ours, files, v2_sd):
    unet2d, base = sd15
    plain = _load(ours, base, "v2.safetensors")
    module = ours("nodes.host_adapter").get_attachment(plain).module
    before = {k: v.clone() for k, v in module.state_dict().items()}
    plain_out = _call(plain)["output"]

    pan = _lora(ours, plain, "pan.safetensors", 0.5)
    both = _lora(ours, pan, "zoom.safetensors", 0.7)
    both_out = _call(both)["output"]
    expected = predict(build_oracle(unet2d, merge(v2_sd, [(files["pan.safetensors"], 0.5),
                                                           (files["zoom.safetensors"], 0.7)]), "v2", FRAMES),
                       _call(both), FRAMES)
    assert relative_error(both_out, expected) < UNET_OTHER_KERNEL
    pan_out = _call(pan)["output"]  # stacking made a new MODEL: the first one still has only its own LoRA
    assert relative_error(pan_out, both_out) > 1e-2

    import comfy.model_management

    comfy.model_management.unload_all_models()
    # removed: the MODEL without the node gives bit-identical frames and the module's weights are the file's
    assert torch.equal(_call(plain)["output"], plain_out)
    assert all(torch.equal(v, before[k]) for k, v in module.state_dict().items())
    # and after going back to the LoRA'd MODEL, it is patched again
    assert torch.equal(_call(pan)["output"], pan_out)


def test_forced_partial_load_applies_the_lora_per_call(sd15, ours, files, monkeypatch):
    import comfy.model_management

    _, base = sd15
    model = _lora(ours, _load(ours, base, "v2.safetensors"), "pan.safetensors", 0.8)
    module = ours("nodes.host_adapter").get_attachment(model).module
    full = _call(model)["output"]
    comfy.model_management.unload_all_models()
    real_load = comfy.model_management.LoadedModel.model_load

    def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
        if self.model.model is module:
            lowvram_model_memory = 4 * 2**20  # 4 MiB of 1.7 GiB: the LoRA must be applied per call
        return real_load(self, lowvram_model_memory, force_patch_weights)

    monkeypatch.setattr(comfy.model_management.LoadedModel, "model_load", model_load)
    partial = _call(model)["output"]
    patched_per_call = [n for n, m in module.named_modules() if getattr(m, "weight_function", None)]
    assert module.model_lowvram and len(patched_per_call) > 100
    assert relative_error(partial, full) < UNET_SAME_OPS  # the same fp32 merge, computed per call


def test_v2_lora_on_a_module_without_the_mid_block(sd15, ours, files):
    """As in AnimateDiff-Evolved, the mid-block pairs are skipped and the rest applies: the same output as the same
    LoRA without its mid-block pairs."""
    unet2d, base = sd15
    v3 = _load(ours, base, "v3.safetensors")
    out = _call(_lora(ours, v3, "pan.safetensors", 1.0))
    v3_sd = animatediff_state_dict("v3", seed=12)
    no_mid = {k: v for k, v in files["pan.safetensors"].items() if not k.startswith("mid_block.")}
    expected = predict(build_oracle(unet2d, merge(v3_sd, [(no_mid, 1.0)]), "v3", FRAMES), out, FRAMES)
    assert relative_error(out["output"], expected) < UNET_OTHER_KERNEL


def test_refusals_say_what_to_do(sd15, ours, files):
    _, base = sd15
    errors = ours("atomo_core.errors")
    with pytest.raises(errors.AtomoError, match="no motion module.*Load Motion Module"):
        _lora(ours, base, "pan.safetensors", 1.0)
    v2 = _load(ours, base, "v2.safetensors")
    with pytest.raises(errors.AtomoError, match="image layers.*LoraLoaderModelOnly"):
        _lora(ours, v2, "adapter.safetensors", 1.0)
    # the loader's refusal of a motion LoRA points here
    path = ours("nodes.folders").motion_lora_path("pan.safetensors")
    with pytest.raises(errors.AtomoError, match="is a motion LoRA.*Load Motion LoRA node"):
        ours("atomo_core.formats").load_motion_module(path)
