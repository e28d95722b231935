"""Motion LoRA files: the released layout is mapped onto the motion module's weights, other files are refused with
what they are, and the merge rule is AnimateDiff's ``W + alpha * up @ down``."""

from __future__ import annotations

import pytest
import torch
from weights import animatediff_state_dict, domain_adapter_state_dict, motion_lora_state_dict

from atomo_core.motion_lora import MotionLoRAError, merged_weight, motion_lora_targets

RELEASED_RANK = 64  # v2 camera LoRAs: 19.3 M parameters = 302,080 x 64 (README: "19 M | 74 MB")


def test_released_layout_maps_onto_every_temporal_attention_projection():
    lora = motion_lora_state_dict(rank=RELEASED_RANK)
    assert sum(v.numel() for v in lora.values()) == 302_080 * RELEASED_RANK
    targets = motion_lora_targets(lora, "v2_lora_ZoomIn.ckpt")
    assert len(targets) == 21 * 2 * 4  # 21 motion modules (v2 has the mid block), 2 attentions, q/k/v/out
    module_keys = set(animatediff_state_dict("v2", device="meta"))
    assert set(targets.values()) <= module_keys
    prefix = "down_blocks.0.motion_modules.0.temporal_transformer.transformer_blocks.0.attention_blocks.1.processor."
    assert targets[prefix + "to_out"].endswith("attention_blocks.1.to_out.0.weight")
    assert targets[prefix + "to_q"].endswith("attention_blocks.1.to_q.weight")


def test_alpha_keys_and_config_entry_are_accepted():
    lora = motion_lora_state_dict(rank=4)
    first = next(k for k in lora if k.endswith("_lora.down.weight")).removesuffix("_lora.down.weight")
    lora[first + ".alpha"] = torch.tensor(2.0)
    lora["animatediff_config"] = torch.zeros(())
    assert len(motion_lora_targets(lora, "x.safetensors")) == 168


@pytest.mark.parametrize(("state_dict", "message"), [
    (domain_adapter_state_dict(), "LoRA for the image layers.*LoraLoaderModelOnly"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.empty(4, 320, device="meta")},
     "LoraLoaderModelOnly"),
    (animatediff_state_dict("v2", device="meta"), "is a motion module.*Load Motion Module"),
    ({"model.diffusion_model.out.2.weight": torch.empty(4, 320, 3, 3, device="meta")}, "whole checkpoint"),
    ({"foo.weight": torch.empty(3, device="meta")}, "not a motion LoRA.*'foo.weight'"),
], ids=["domain-adapter", "kohya-image-lora", "motion-module", "checkpoint", "unknown"])
def test_other_files_are_refused_with_what_they_are(state_dict, message):
    with pytest.raises(MotionLoRAError, match=message) as info:
        motion_lora_targets(state_dict, "picked.ckpt")
    assert "'picked.ckpt'" in str(info.value)


def test_broken_pairs_are_refused():
    lora = motion_lora_state_dict(rank=4)
    missing = dict(lora)
    missing.pop(next(k for k in lora if k.endswith("to_v_lora.up.weight")))
    with pytest.raises(MotionLoRAError, match="incomplete.*to_v_lora.up.weight"):
        motion_lora_targets(missing, "a.ckpt")
    bad = dict(lora)
    key = next(k for k in lora if k.endswith("to_k_lora.down.weight"))
    bad[key] = torch.empty(5, 320, device="meta")  # rank 5 against the up half's 4
    with pytest.raises(MotionLoRAError, match="down \\[rank, C_in\\]"):
        motion_lora_targets(bad, "a.ckpt")
    extra = dict(lora)
    extra["down_blocks.0.motion_modules.0.temporal_transformer.proj_in.lora_down.weight"] = torch.empty(
        4, 320, device="meta")
    with pytest.raises(MotionLoRAError, match="besides the temporal attention"):
        motion_lora_targets(extra, "a.ckpt")


def test_merged_weight_is_animatediffs_rule():
    gen = torch.Generator().manual_seed(0)
    weight, up, down = torch.randn(6, 5, generator=gen), torch.randn(6, 2, generator=gen), torch.randn(2, 5, generator=gen)
    expected = weight + 0.7 * torch.einsum("or,ri->oi", up, down)
    assert torch.allclose(merged_weight(weight, up, down, 0.7), expected, atol=1e-6)
    # with a file alpha: scaled by alpha / rank (kohya's convention, which ComfyUI applies)
    assert torch.allclose(merged_weight(weight, up, down, 0.7, alpha=1.0),
                          weight + 0.35 * torch.einsum("or,ri->oi", up, down), atol=1e-6)
    assert torch.equal(merged_weight(weight, up, down, 0.0), weight)
