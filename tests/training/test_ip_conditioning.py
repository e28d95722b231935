"""IP-Adapter semantics in training on the tiny base: the processors compute the decoupled attention, examples
without caption or image get the unconditional tokens, the projection trains when asked and is exported."""

from __future__ import annotations

import torch
from test_trainer import WORLD, _config, videos  # noqa: F401  (the fixture)
from tolerances import FLOAT32_REORDERED, assert_close_scaled, assert_far_off

from atomo_core.formats import load_motion_module
from atomo_core.ip_adapter import decoupled_attention, ip_key_value
from atomo_core.training.base import tiny_base
from atomo_core.training.ip_conditioning import build_ip_conditioner
from atomo_core.training.trainer import train


def test_the_site_processor_is_the_decoupled_attention():
    base = tiny_base(0)
    plain_site = base.unet.get_submodule("down_blocks.1.attentions.0.transformer_blocks.0.attn2")
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(4, 16, 64, generator=gen)
    context = torch.randn(4, 77, 32, generator=gen)
    with torch.no_grad():
        plain = plain_site(hidden, encoder_hidden_states=context)
    ip = build_ip_conditioner("tiny", "", base.unet, base.widths, scale=0.7, train_projection=False)
    pixels = torch.rand(2, 3, 64, 64, generator=gen) * 2 - 1
    ip.set_tokens(pixels, torch.tensor([True, False]), frames=2)
    assert ip.current.shape == (4, 4, 32)
    assert torch.equal(ip.current[2], ip.current[3]) and not torch.equal(ip.current[0], ip.current[2])
    with torch.no_grad():
        ours = plain_site(hidden, encoder_hidden_states=context)
        q, k, v = plain_site.to_q(hidden), plain_site.to_k(context), plain_site.to_v(context)
        proc = plain_site.processor
        k_ip, v_ip = ip_key_value(ip.current, proc.to_k_ip, proc.to_v_ip)
        expected = plain_site.to_out[0](decoupled_attention(q, k, v, k_ip, v_ip, plain_site.heads, 0.7))
    assert_close_scaled(ours, expected, FLOAT32_REORDERED, "IP processor vs decoupled attention")
    assert_far_off(plain, expected, FLOAT32_REORDERED, 100, "the image tokens were ignored")
    # Row 2 (caption or image dropped) attends to the unconditional tokens: those of zero image_embeds.
    from atomo_core.ip_adapter import uncond_image_tokens

    assert_close_scaled(ip.current[2], uncond_image_tokens(ip.adapter)[0].detach(), FLOAT32_REORDERED, "uncond")


def test_training_with_an_ip_adapter_trains_the_projection_and_exports_it(videos, tmp_path):  # noqa: F811
    config = _config(videos, tmp_path / "ip", steps=2, **{"ip_adapter.file": "tiny", "train.image_proj": True,
                                                          "learning_rate": 1e-3})
    train(config, WORLD)
    module = load_motion_module(str(tmp_path / "ip" / "motion_module.safetensors"))
    keys = set(module.ip_adapter_weights)
    assert {"image_proj.proj.weight", "image_proj.norm.weight"} <= keys
    assert sum(k.startswith("ip_adapter.") for k in keys) == 32  # to_k_ip and to_v_ip at the 16 sites
    base = tiny_base(0)
    fresh = build_ip_conditioner("tiny", "", base.unet, base.widths, 1.0, False, seed=0)
    assert not torch.equal(module.ip_adapter_weights["image_proj.proj.weight"],
                           fresh.image_proj.proj.weight.detach())  # trained
    assert torch.equal(module.ip_adapter_weights["ip_adapter.1.to_k_ip.weight"],
                       fresh.adapter.ip_weights["ip_adapter.1.to_k_ip.weight"])  # frozen
