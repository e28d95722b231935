"""Our patched ComfyUI UNet reproduces the ORIGINAL AnimateDiff motion module (v1, v2, v3, AnimateLCM).

Random real-size SD-1.5 weights; random motion-module weights in the released key layouts, made sensitive
(non-zero output projections, sharp temporal attention). 16 frames through ComfyUI's real sampling path
(``sample_custom`` -> CFGGuider -> calc_cond_batch), cond and uncond batched in one UNet call, fp32. The UNet
output is compared with diffusers' UNetMotionModel corrected to the original's GroupNorm behaviour.
"""

from __future__ import annotations

import gc

import pytest
import torch
from animatediff_oracle import build as build_oracle
from animatediff_oracle import predict
from safetensors.torch import save_file
from sampling import conditioning, one_step, relative_error
from weights import animatediff_state_dict

FRAMES = 16
TOLERANCE = 1e-4


def load_with_node(ours, tmp_path, state_dict, model, filename):
    """Write the weights where ComfyUI looks and run the real Load Motion Module node."""
    import folder_paths

    folder = tmp_path / "motion_modules"
    folder.mkdir(exist_ok=True)
    save_file(state_dict, str(folder / filename))
    paths, exts = folder_paths.folder_names_and_paths["motion_modules"]
    folder_paths.folder_names_and_paths["motion_modules"] = ([str(folder)] + list(paths), exts)
    node = ours("nodes.load_motion_module").AtomoLoadMotionModule
    assert filename in node.GET_SCHEMA().inputs[1].options
    return node.execute(model, filename).result[0]


@pytest.mark.parametrize("family", ["v2", "v3", "v1", "animatelcm"])
def test_patched_unet_matches_original_animatediff(family, sd15, ours, tmp_path):
    unet2d, base = sd15
    motion_sd = animatediff_state_dict(family, seed=11)
    model = load_with_node(ours, tmp_path, motion_sd, base, f"{family}.safetensors")
    attachment = ours("nodes.host_adapter").get_attachment(model)
    assert attachment.config.family == {"v1": "animatediff_v1", "v2": "animatediff_v2", "v3": "animatediff_v3",
                                        "animatelcm": "animatelcm"}[family]

    sigmas = model.get_model_object("model_sampling").sigmas
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    _, calls = one_step(model, noise, sigmas[600], conditioning(1), conditioning(2), cfg=7.0)
    assert len(calls) == 1, "cond and uncond must run in one UNet call"
    (call,) = calls
    assert call["input"].shape[0] == 2 * FRAMES and sorted(call["cond_or_uncond"]) == [0, 1]

    oracle = build_oracle(unet2d, motion_sd, family, FRAMES)
    expected = predict(oracle, call, FRAMES)
    error = relative_error(call["output"], expected)
    print(f"{family}: max|ours - original| / rms(original) = {error:.2e}")
    assert error < TOLERANCE

    # Sensitivity: the figure would see the temporal layers, the GroupNorm convention and the module family.
    plain = predict_without_motion(unet2d, call)
    assert relative_error(plain, expected) > 100 * TOLERANCE
    diffusers_norm = predict(build_oracle(unet2d, motion_sd, family, FRAMES, fix_motion_norm=False), call, FRAMES)
    assert relative_error(diffusers_norm, expected) > 10 * TOLERANCE
    del oracle
    gc.collect()


def predict_without_motion(unet2d, call):
    with torch.no_grad():
        return unet2d(call["input"], call["timestep"][0], encoder_hidden_states=call["context"]).sample


def test_sampling_schedule_is_animatediffs(sd15, ours):
    """AnimateDiff modules were trained on diffusers 'linear' betas = ComfyUI sqrt_linear, eps prediction."""
    _, base = sd15
    ha = ours("nodes.host_adapter")
    from atomo_core_shim import core

    cfg = core(ours).MotionModuleConfig(family="animatediff_v2")
    clone = base.clone()
    ours("nodes.model_sampling").patch_model_sampling(clone, cfg)
    sampling = clone.get_model_object("model_sampling")
    betas = torch.linspace(0.00085, 0.012, 1000, dtype=torch.float64)
    alphas_cumprod = torch.cumprod(1 - betas, 0)
    expected = ((1 - alphas_cumprod) / alphas_cumprod) ** 0.5
    assert torch.allclose(sampling.sigmas.double(), expected, rtol=1e-5)
    assert not isinstance(sampling, __import__("comfy.model_sampling").model_sampling.V_PREDICTION)
    assert ha.KEY == "atomo_video"
