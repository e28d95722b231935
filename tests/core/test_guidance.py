"""CFG rescale and image/text double guidance against their formulas, with hand-computed numbers."""

from __future__ import annotations

import math

import pytest
import torch
from tolerances import (
    FLOAT32_FEW_OPS,
    FLOAT32_REORDERED,
    FLOAT64_REORDERED,
    assert_close_scaled,
    assert_far_off,
    scale_of,
)

from atomo_core.guidance import cfg_rescale, image_text_guidance, rescaled_cfg_denoised
from atomo_core.schedules import denoised_from_v_sigma


def _items(*rows):
    """Two 4-element batch items as ``[2, 2, 1, 2]``."""
    return torch.tensor(rows, dtype=torch.float64).view(2, 2, 1, 2)


def test_cfg_rescale_hand_numbers_per_item():
    # item 0: std(pos) = 2/sqrt(3), std(cfg) = 4/sqrt(3): ratio 1/2, factor 0.7 * 0.5 + 0.3 = 0.65
    # item 1: std(pos) = 2, std(cfg) = 2/sqrt(3): ratio sqrt(3), factor 0.7 * sqrt(3) + 0.3
    x_pos = _items([1, 3, 1, 3], [0, 0, 0, 4])
    x_cfg = _items([0, 4, 0, 4], [1, -1, 1, -1])
    out = cfg_rescale(x_cfg, x_pos, phi=0.7)
    # float64: per-item stds of 4 numbers and a ratio, another order than the hand formula (measured <= 1.5e-16)
    as_items = out.flatten(1)
    assert_close_scaled(as_items[0], [0.0, 2.6, 0.0, 2.6], FLOAT64_REORDERED, "item 0")
    f1 = 0.7 * math.sqrt(3) + 0.3
    assert_close_scaled(as_items[1], [f1, -f1, f1, -f1], FLOAT64_REORDERED, "item 1")
    # one std pooled over both items instead of per item: 4.3e11x the bound
    pooled = 0.7 * x_cfg * (x_pos.std() / x_cfg.std()) + 0.3 * x_cfg
    assert_far_off(pooled[1].flatten(), as_items[1], FLOAT64_REORDERED, 1e6, "std pooled over the batch")


def test_cfg_rescale_limits_and_frames_are_separate():
    g = torch.Generator().manual_seed(0)
    x_pos = torch.randn(3, 4, 5, 5, generator=g) * torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1, 1)
    x_cfg = 3.0 * torch.randn(3, 4, 5, 5, generator=g) + 0.2
    assert torch.equal(cfg_rescale(x_cfg, x_pos, phi=0.0), x_cfg)
    full = cfg_rescale(x_cfg, x_pos, phi=1.0)
    for f in range(3):  # phi = 1 gives each frame the spread of its own conditional prediction
        # float32 stds over 100 elements of differently scaled tensors, relative to the std (a magnitude,
        # which cannot cancel to 0): measured <= 6.7e-8
        assert_close_scaled(full[f].std(), x_pos[f].std(), FLOAT32_REORDERED, f"std of frame {f}")
    pooled = x_cfg * (x_pos.std() / x_cfg.std())  # one std over the whole batch would be wrong: 1.6e5x the bound
    assert_far_off(pooled[0].std(), x_pos[0].std(), FLOAT32_REORDERED, 1e3, "std pooled over the batch")
    assert (full - pooled).abs().max().item() > 0.5


def _comfy_style_rescale(x, sigma, cond_denoised, uncond_denoised, cond_scale, multiplier):
    """The RescaleCFG computation written out on ComfyUI's sampler_cfg_function arguments.

    ComfyUI passes ``cond = x - cond_denoised`` and ``uncond = x - uncond_denoised`` and expects back
    ``x - denoised``; it rescales v with ``torch.std`` over dims (1, 2, 3).
    """
    cond, uncond = x - cond_denoised, x - uncond_denoised
    scale_in = x / (sigma**2 + 1.0)
    v_cond = (scale_in - (x - cond)) * (sigma**2 + 1.0) ** 0.5 / sigma
    v_uncond = (scale_in - (x - uncond)) * (sigma**2 + 1.0) ** 0.5 / sigma
    v_cfg = v_uncond + cond_scale * (v_cond - v_uncond)
    ratio = torch.std(v_cond, dim=(1, 2, 3), keepdim=True) / torch.std(v_cfg, dim=(1, 2, 3), keepdim=True)
    v_final = multiplier * v_cfg * ratio + (1.0 - multiplier) * v_cfg
    returned = x - (scale_in - v_final * sigma / (sigma**2 + 1.0) ** 0.5)
    return x - returned


def test_rescaled_cfg_denoised_is_rescale_in_v_space():
    g = torch.Generator().manual_seed(1)
    sigma = 3.0
    x = sigma * torch.randn(4, 4, 6, 6, generator=g, dtype=torch.float64)
    v_pos = torch.randn(4, 4, 6, 6, generator=g, dtype=torch.float64)
    v_neg = 0.5 * torch.randn(4, 4, 6, 6, generator=g, dtype=torch.float64)
    d_pos, d_neg = denoised_from_v_sigma(x, v_pos, sigma), denoised_from_v_sigma(x, v_neg, sigma)
    ours = rescaled_cfg_denoised(x, sigma, d_pos, d_neg, cond_scale=7.5, phi=0.7)
    expected = denoised_from_v_sigma(x, cfg_rescale(v_neg + 7.5 * (v_pos - v_neg), v_pos, 0.7), sigma)
    # float64, the same maths by other routes (v from denoised and back, ComfyUI's arrangement); the terms reach
    # 7.5 x the predictions, above the output's scale, hence REORDERED. Measured <= 7.3e-16.
    assert_close_scaled(ours, expected, FLOAT64_REORDERED, "rescale in v space")
    assert_close_scaled(ours, _comfy_style_rescale(x, sigma, d_pos, d_neg, 7.5, 0.7), FLOAT64_REORDERED, "ComfyUI")
    # rescaling x0 (or eps) instead of v is a different method: it moves the result by a lot here (7.2e10x)
    in_x0 = cfg_rescale(d_neg + 7.5 * (d_pos - d_neg), d_pos, 0.7)
    assert_far_off(in_x0, ours, FLOAT64_REORDERED, 1e6, "rescale in x0 space")
    assert (ours - in_x0).abs().max().item() > 0.1
    # phi = 0 is plain CFG on denoised (CFG is linear, so the space does not matter without rescale)
    plain = rescaled_cfg_denoised(x, sigma, d_pos, d_neg, cond_scale=7.5, phi=0.0)
    assert_close_scaled(plain, d_neg + 7.5 * (d_pos - d_neg), FLOAT64_REORDERED, "phi = 0")  # measured 7.2e-17


def test_rescaled_cfg_denoised_per_frame_sigma():
    g = torch.Generator().manual_seed(2)
    sigma = torch.tensor([0.5, 14.0], dtype=torch.float64)
    x = torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64)
    d_pos, d_neg = (
        torch.randn(2, 4, 3, 3, generator=g, dtype=torch.float64),
        torch.zeros(2, 4, 3, 3, dtype=torch.float64),
    )
    ours = rescaled_cfg_denoised(x, sigma, d_pos, d_neg, cond_scale=5.0)
    for f in range(2):
        s = sigma[f].item()
        alone = rescaled_cfg_denoised(x[f : f + 1], s, d_pos[f : f + 1], d_neg[f : f + 1], cond_scale=5.0)
        # float64, another batch shape and a scalar sigma; then ComfyUI's arrangement (measured <= 3.0e-16)
        assert_close_scaled(ours[f : f + 1], alone, FLOAT64_REORDERED, f"frame {f} alone")
        comfy = _comfy_style_rescale(x[f : f + 1], s, d_pos[f : f + 1], d_neg[f : f + 1], 5.0, 0.7)
        assert_close_scaled(ours[f : f + 1], comfy, FLOAT64_REORDERED, f"frame {f} as ComfyUI")
        # the other frame's sigma: 1.6e11x and 1.7e11x the bound
        other = sigma[1 - f].item()
        wrong = rescaled_cfg_denoised(x[f : f + 1], other, d_pos[f : f + 1], d_neg[f : f + 1], cond_scale=5.0)
        assert_far_off(wrong, alone, FLOAT64_REORDERED, 1e6, f"frame {f} with the other sigma")


def test_image_text_guidance_hand_numbers():
    # Small integers: every product and sum is exact in float32, so the results are compared exactly.
    u, i, it = torch.tensor([1.0]), torch.tensor([3.0]), torch.tensor([4.0])
    assert image_text_guidance(u, i, it, 2.0, 5.0).item() == 10.0  # 1 + 2*2 + 5*1
    assert (u + 5.0 * (it - u)).item() == 16.0  # plain CFG with s_T differs by (2 - 5)(3 - 1)
    assert image_text_guidance(u, i, it, 3.0, 3.0).item() == 10.0  # = 1 + 3 * (4 - 1)
    assert image_text_guidance(u, i, it, 1.0, 5.0).item() == 8.0  # s_I = 1: i + s_T (it - i)
    assert image_text_guidance(u, i, it, 2.0, 0.0).item() == 5.0  # s_T = 0: u + s_I (i - u)
    assert image_text_guidance(u, u, it, 2.0, 5.0).item() == 16.0  # i == u: plain CFG with s_T


def test_image_text_guidance_reduces_to_cfg_exactly_when_stated():
    g = torch.Generator().manual_seed(3)
    u, i, it = (torch.randn(2, 4, 5, 5, generator=g, dtype=torch.float64) for _ in range(3))
    # float64, the same linear combination rearranged; the terms reach 7.5 x the inputs (measured <= 2.7e-16)
    for s in (1.0, 2.5, 7.5):
        assert_close_scaled(image_text_guidance(u, i, it, s, s), u + s * (it - u), FLOAT64_REORDERED, f"s = {s}")
    out = image_text_guidance(u, i, it, 1.5, 7.5)
    assert_close_scaled(out, u + 7.5 * (it - u) + (1.5 - 7.5) * (i - u), FLOAT64_REORDERED, "rewritten")
    # unequal scales are not plain CFG: 9.1e11x the bound
    assert_far_off(out, u + 7.5 * (it - u), FLOAT64_REORDERED, 1e6, "plain CFG for unequal scales")
    assert (out - (u + 7.5 * (it - u))).abs().max().item() > 1.0


# ------------------------------------------------------------------- passes needed per step, and their combination


def test_guidance_passes_follow_the_coefficients():
    from atomo_core.guidance import guidance_passes

    assert guidance_passes(7.5, 1.0) == ["it", "i"]  # image conditions every branch: PIA's own sampling
    assert guidance_passes(7.5, 7.5) == ["it", "u"]  # plain CFG against no image and no text
    assert guidance_passes(7.5, 3.0) == ["it", "u", "i"]  # double guidance: three passes
    assert guidance_passes(1.0, 1.0) == ["it", "i"]
    assert guidance_passes(7.5, 3.0, has_image=False) == ["it", "u"]


@pytest.mark.parametrize(("text", "image"), [(7.5, 1.0), (7.5, 7.5), (7.5, 3.0), (1.0, 1.0), (5.0, 0.0)])
def test_combined_guidance_equals_the_double_guidance_formula(text, image):
    from atomo_core.guidance import combine_guidance, guidance_passes, image_text_guidance

    gen = torch.Generator().manual_seed(0)
    u, i, it = (torch.randn(4, 3, 2, 2, generator=gen) for _ in range(3))
    full = image_text_guidance(u, i, it, image, text)
    preds = {"u": u, "i": i, "it": it}
    needed = guidance_passes(text, image)
    # float32, the same linear combination with other coefficients ((1 - s_I) u + (s_I - s_T) i + s_T it):
    # a few roundings of terms up to max(|s|) x max|input|, which is the scale (measured <= 1.1e-7)
    scale = max(1.0, abs(text), abs(image)) * max(scale_of(t) for t in (u, i, it))
    combined = combine_guidance({k: preds[k] for k in needed}, text, image)
    assert_close_scaled(combined, full, FLOAT32_FEW_OPS, "combined guidance", scale)
    if text != image:  # the two scales swapped: 1.1e6..1.9e6x the bound
        swapped = combine_guidance(preds, image, text)
        assert_far_off(swapped, full, FLOAT32_FEW_OPS, 1e3, "text and image scales swapped", scale)
    # Without an image condition i == u, and "u" alone stands for both.
    no_image = image_text_guidance(u, u, it, image, text)
    assert_close_scaled(combine_guidance({"it": it, "u": u}, text, image), no_image, FLOAT32_FEW_OPS, "no image", scale)
    assert_close_scaled(no_image, u + text * (it - u), FLOAT32_FEW_OPS, "no image as plain CFG", scale)
