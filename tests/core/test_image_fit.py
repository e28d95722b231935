"""Fitting images to the video size: crop, pad, stretch, and sizes that are not multiples of 8."""

from __future__ import annotations

import pytest
import torch
from tolerances import FLOAT32_FEW_OPS, assert_close_scaled, assert_far_off

from atomo_core.errors import ConditioningError
from atomo_core.image_fit import check_video_size, fit_images


def _bars(h, w):
    """Vertical stripes: left third 0, middle third 0.5, right third 1 (easy to see what a fit keeps).

    The pixels the tests sample lie farther inside a stripe than the antialiased filter reaches (2 source pixels
    at a 2x shrink, 3 at 3x): a resampler there averages one constant with weights that sum to 1, which returns
    it up to float32 round-off (``FLOAT32_FEW_OPS``), so no blur allowance is needed.
    """
    img = torch.zeros(1, h, w, 3)
    img[:, :, w // 3 : 2 * w // 3] = 0.5
    img[:, :, 2 * w // 3 :] = 1.0
    return img


def test_crop_keeps_the_centre_and_fills_the_frame():
    out = fit_images(_bars(64, 192), 64, 64, "crop")  # 3:1 -> 1:1: only the middle stripe survives
    assert out.shape == (1, 64, 64, 3)
    assert_close_scaled(out, 0.5, FLOAT32_FEW_OPS, "centre crop")  # measured exact
    # a crop from the left edge keeps the black stripe: 1e6x the bound
    assert_far_off(_bars(64, 192)[:, :, :64], 0.5, FLOAT32_FEW_OPS, 1e3, "left crop")


def test_pad_keeps_everything_inside_grey_borders():
    out = fit_images(_bars(64, 192), 96, 96, "pad", pad_value=0.25)  # scaled to 96x32, centred vertically
    assert out.shape == (1, 96, 96, 3)
    assert torch.all(out[:, :32] == 0.25) and torch.all(out[:, 64:] == 0.25)
    stripes = torch.tensor([0.0, 0.5, 1.0])  # at columns 5, 48, 90: the three stripes, halved in width
    assert_close_scaled(out[0, 48, [5, 48, 90], 0], stripes, FLOAT32_FEW_OPS, "padded stripes")  # measured exact
    cropped = fit_images(_bars(64, 192), 96, 96, "crop")  # a crop instead of a pad: 5e5x the bound
    assert_far_off(cropped[0, 48, [5, 48, 90], 0], stripes, FLOAT32_FEW_OPS, 1e3, "crop instead of pad")


def test_stretch_resizes_as_is():
    out = fit_images(_bars(64, 192), 64, 64, "stretch")
    edges = torch.tensor([0.0, 1.0])  # all three stripes squeezed in: the outer ones at columns 2 and 61
    assert_close_scaled(out[0, 32, [2, 61], 0], edges, FLOAT32_FEW_OPS, "stretched stripes")  # measured exact
    cropped = fit_images(_bars(64, 192), 64, 64, "crop")  # a crop instead of a stretch: 5e5x the bound
    assert_far_off(cropped[0, 32, [2, 61], 0], edges, FLOAT32_FEW_OPS, 1e3, "crop instead of stretch")


def test_same_size_is_untouched_and_alpha_is_dropped():
    img = torch.rand(2, 64, 80, 4)
    out = fit_images(img, 80, 64, "crop")
    assert torch.equal(out, img[..., :3])  # exact: nothing is resampled, the channels are sliced


@pytest.mark.parametrize(("w", "h", "message"), [(500, 512, "width 500.*Use 496 or 504"), (512, 7, "height 7")])
def test_sizes_that_are_not_multiples_of_8_are_refused(w, h, message):
    with pytest.raises(ConditioningError, match=message):
        check_video_size(w, h)
    with pytest.raises(ConditioningError, match=message):
        fit_images(torch.rand(1, 64, 64, 3), w, h)


def test_unknown_mode_and_bad_shapes():
    with pytest.raises(ConditioningError, match="fit mode"):
        fit_images(torch.rand(1, 8, 8, 3), 64, 64, "zoom")
    with pytest.raises(ConditioningError, match=r"\[B, H, W, C\]"):
        fit_images(torch.rand(8, 8, 3), 64, 64)
