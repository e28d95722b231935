"""Every motion-module family recognised from full-size layouts (on the meta device), and every rejection."""

from __future__ import annotations

import pytest
import torch
from weights import (
    animatediff_state_dict,
    domain_adapter_state_dict,
    hotshotxl_state_dict,
    motion_lora_state_dict,
    to_diffusers_motion_adapter,
)

from atomo_core import layout
from atomo_core.errors import MotionModuleFormatError
from atomo_core.formats import build_motion_module, detect_config

# family in tests/weights.py -> (family, mid block, max frames, ResNet norms across frames, image conditioning,
#                                temporal-attention sites, parameters)
EXPECTED = {
    "v1": ("animatediff_v1", False, 24, True, None, 20, 417_137_600),
    "v2": ("animatediff_v2", True, 32, False, None, 21, 453_209_280),
    "v3": ("animatediff_v3", False, 32, False, None, 20, 417_137_600),
    "animatelcm": ("animatelcm", True, 64, False, None, 21, 453_209_280),
    "pia": ("pia", False, 32, True, "pia", 20, 417_137_600),
}


@pytest.mark.parametrize("family", sorted(EXPECTED))
def test_family_is_recognised_and_built_on_meta(family):
    sd = animatediff_state_dict(family, device="meta", dtype=torch.float16)
    config = detect_config(sd, {}, f"{family}.ckpt")
    name, mid, frames, across, image, sites, params = EXPECTED[family]
    assert (config.family, config.mid_block, config.max_frames) == (name, mid, frames)
    assert config.resnet_norm_across_frames is across
    assert config.image_conditioning == image
    assert (config.beta_schedule, config.prediction_type, config.zero_terminal_snr) == ("linear", "epsilon", False)
    module = build_motion_module(sd, config, f"{family}.ckpt", dtype=torch.float16)
    assert len(module.placements()) == sites
    assert sum(p.numel() for p in module.parameters()) == params
    assert all(p.dtype == torch.float16 and p.device.type == "meta" for p in module.parameters())
    assert (module.conv_in_weight is not None) == (family == "pia")
    assert module.accepts_images == (family == "pia")


def test_placements_follow_the_original_layout():
    sd = animatediff_state_dict("v2", device="meta")
    module = build_motion_module(sd, detect_config(sd), "v2")
    where = {site.name: (site.block, site.after, site.channels) for site, _ in module.placements()}
    assert where["down_blocks.0.motion_modules.0"] == (("input", 1), 1, 320)  # after the spatial attention
    assert where["down_blocks.3.motion_modules.1"] == (("input", 11), 0, 1280)  # after the ResBlock
    assert where["mid_block.motion_modules.0"] == (("middle", 0), 1, 1280)  # between attention and 2nd ResBlock
    assert where["up_blocks.0.motion_modules.2"] == (("output", 2), 0, 1280)  # before the upsampler
    assert where["up_blocks.1.motion_modules.2"] == (("output", 5), 1, 1280)
    assert where["up_blocks.3.motion_modules.2"] == (("output", 11), 1, 320)
    # the skip connections are taken after the whole input block, hence after the module: one module per block
    blocks = [site.block for site, _ in module.placements()]
    assert len(blocks) == len(set(blocks)) == 21


def test_atomovideo_layout_has_a_temporal_conv_after_every_resblock():
    convs = layout.sites(layout.TEMPORAL_CONV)
    assert len(convs) == 8 + 2 + 12
    assert all(site.after in (0, 2) for site in convs)
    mid = [s for s in convs if s.block == ("middle", 0)]
    assert [s.after for s in mid] == [0, 2]


@pytest.mark.parametrize(
    ("state_dict", "message"),
    [
        (motion_lora_state_dict(), "is a motion LoRA.*Load Motion LoRA node"),
        (domain_adapter_state_dict(), "LoraLoaderModelOnly"),
        (hotshotxl_state_dict(), "HotshotXL"),
        (animatediff_state_dict("sdxl", device="meta"), "SDXL motion module"),
        ({"model.diffusion_model.input_blocks.0.0.weight": torch.empty(320, 4, 3, 3, device="meta")}, "Load Checkpoint"),
        (to_diffusers_motion_adapter(animatediff_state_dict("v2", device="meta")), "diffusers MotionAdapter"),
        ({"foo.weight": torch.empty(3, device="meta"), "bar.bias": torch.empty(3, device="meta")}, "'foo.weight'"),
        ({"controlnet_cond_embedding.conv_in.weight": torch.empty(16, 3, 3, 3, device="meta")}, "SparseCtrl"),
    ],
    ids=["motion-lora", "domain-adapter", "hotshotxl", "sdxl", "checkpoint", "diffusers", "unknown", "sparsectrl"],
)
def test_foreign_files_are_rejected_with_their_name_and_the_fix(state_dict, message):
    with pytest.raises(MotionModuleFormatError, match=message) as info:
        detect_config(state_dict, {}, "picked.ckpt")
    assert "'picked.ckpt'" in str(info.value)


def test_unknown_layout_says_what_was_expected():
    with pytest.raises(MotionModuleFormatError, match="expected SD-1.5 motion-module keys"):
        detect_config({"a.weight": torch.empty(1)}, {}, "x.safetensors")


def test_one_attention_per_block_is_refused():
    sd = {k: v for k, v in animatediff_state_dict("v3", device="meta").items() if "attention_blocks.1." not in k}
    with pytest.raises(MotionModuleFormatError, match="one temporal attention per block"):
        detect_config(sd, {}, "sparse.ckpt")


def test_pia_conv_in_of_the_wrong_shape_is_refused():
    sd = animatediff_state_dict("pia", device="meta")
    sd["conv_in.weight"] = torch.empty(320, 8, 3, 3, device="meta")
    with pytest.raises(MotionModuleFormatError, match=r"\[320, 9, 3, 3\]"):
        detect_config(sd, {}, "pia.ckpt")


def test_incomplete_file_names_missing_keys():
    sd = animatediff_state_dict("v2", device="meta")
    del sd["up_blocks.3.motion_modules.2.temporal_transformer.proj_out.weight"]
    with pytest.raises(MotionModuleFormatError, match="lacks 1 of the 546 weights.*up_blocks.3.motion_modules.2"):
        build_motion_module(sd, detect_config(sd), "v2.ckpt")


def test_mismatched_shape_is_named():
    sd = animatediff_state_dict("v2", device="meta")
    key = "mid_block.motion_modules.0.temporal_transformer.transformer_blocks.0.ff.net.2.weight"
    sd[key] = torch.empty(1280, 1280, device="meta")
    with pytest.raises(MotionModuleFormatError, match="ff.net.2.weight' has shape \\[1280, 1280\\], expected \\[1280, 5120\\]"):
        build_motion_module(sd, detect_config(sd), "v2.ckpt")


def test_sd15_width_mismatch_is_refused():
    sd = animatediff_state_dict("v3", device="meta")
    sd["down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"] = torch.empty(640, 640, device="meta")
    with pytest.raises(MotionModuleFormatError, match="SD-1.5 needs \\[320, 320\\]"):
        detect_config(sd, {}, "odd.ckpt")


def test_extra_spatial_keys_in_a_pia_file_are_ignored():
    sd = animatediff_state_dict("pia", device="meta")
    sd["down_blocks.0.attentions.0.proj_in.weight"] = torch.empty(320, 320, 1, 1, device="meta")
    module = build_motion_module(sd, detect_config(sd), "pia.ckpt")
    assert "down_blocks.0.attentions.0.proj_in.weight" not in module.state_dict()
