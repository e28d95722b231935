"""The 9-channel conditioning layouts (c_concat = mask | image latent), frame by frame, and their errors.

Every comparison here is exact (``torch.equal``, ``==``): the layouts only copy, index and fill tensors, and the
PIA coefficients are table entries, so the results are bit-identical on any machine (tests/tolerances.py).
"""

from __future__ import annotations

import pytest
import torch

from atomo_core.conditioning import PIA_PRESETS, atomovideo_concat, pia_concat, pia_mask_coefficients
from atomo_core.errors import AtomoError, ConditioningError

h, w = 3, 5


def _latents(n, seed=0):
    return torch.randn(n, 4, h, w, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ AtomoVideo


def test_atomovideo_single_image_goes_to_frame_zero():
    latent = _latents(1)
    out = atomovideo_concat(latent, 16, [0])
    assert out.shape == (16, 5, h, w) and out.dtype == latent.dtype
    assert torch.equal(out[0, 0], torch.ones(h, w))  # channel 0 is the mask
    assert torch.equal(out[0, 1:], latent[0])  # channels 1..4 the latent
    assert torch.equal(out[1:], torch.zeros(15, 5, h, w))


def test_atomovideo_frame_prediction_layout():
    given = _latents(8, seed=1)
    out = atomovideo_concat(given, 24, list(range(8)))
    assert out[:, 0, 0, 0].tolist() == [1.0] * 8 + [0.0] * 16
    for f in range(8):
        assert torch.equal(out[f, 1:], given[f])
    assert out[8:].abs().sum().item() == 0.0


def test_atomovideo_given_frames_in_any_order():
    given = _latents(3, seed=2)
    out = atomovideo_concat(given, 6, [5, 0, 2])
    assert out[:, 0, 1, 1].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert torch.equal(out[5, 1:], given[0]) and torch.equal(out[0, 1:], given[1]) and torch.equal(out[2, 1:], given[2])
    assert out[[1, 3, 4]].abs().sum().item() == 0.0


@pytest.mark.parametrize(
    "n, frames, given, message",
    [
        (2, 16, [0], "2 image latents but 1 given frame"),
        (1, 16, [16], r"outside 0\.\.15"),
        (1, 16, [-1], r"outside 0\.\.15"),
        (2, 16, [3, 3], r"\[3\] appear more than once"),
        (3, 2, [0, 1, 2], "do not fit in a clip of 2 frames"),
        (1, 0, [0], "at least 1"),
    ],
)
def test_atomovideo_errors_name_the_problem(n, frames, given, message):
    with pytest.raises(ConditioningError, match=message):
        atomovideo_concat(_latents(n), frames, given)


def test_atomovideo_every_frame_layout_repeats_the_nearest_given_frame():
    given = _latents(3, seed=3)
    out = atomovideo_concat(given, 8, [5, 0, 2], layout="every_frame")
    assert out[:, 0, 0, 0].tolist() == [1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0]  # the mask is the same as given_only
    # frame -> the given frame whose latent it carries: nearest by index, the earlier one on a tie (frame 1: 0 and 2)
    source = {0: 1, 1: 1, 2: 2, 3: 2, 4: 0, 5: 0, 6: 0, 7: 0}
    for frame, k in source.items():
        assert torch.equal(out[frame, 1:], given[k]), frame
    one = atomovideo_concat(given[:1], 4, [0], layout="every_frame")  # image to video: the image in every frame
    assert torch.equal(one[:, 1:], given[:1].expand(4, -1, -1, -1)) and one[:, 0, 0, 0].tolist() == [1, 0, 0, 0]
    with pytest.raises(ConditioningError, match="unknown AtomoVideo image layout 'everywhere'"):
        atomovideo_concat(given, 8, [0, 1, 2], layout="everywhere")


def test_atomovideo_rejects_non_latents():
    with pytest.raises(ConditioningError, match=r"\[N, 4, h, w\].*VAE Encode") as info:
        atomovideo_concat(torch.zeros(1, 3, 64, 64), 16, [0])  # an IMAGE-like tensor, not a latent
    assert isinstance(info.value, AtomoError)


# ------------------------------------------------------------------------------------------------ PIA


def test_pia_presets_are_pias_range_list():
    assert len(PIA_PRESETS) == 9
    assert PIA_PRESETS["small motion"] == (1.0, 0.9, 0.85, 0.85, 0.85, 0.8)  # RANGE_LIST[0]
    assert PIA_PRESETS["moderate motion"][-1] == 0.75 and len(PIA_PRESETS["large motion"]) == 13
    assert all(len(PIA_PRESETS[f"loop ({m})"]) == 16 for m in ("small", "moderate", "large"))
    assert PIA_PRESETS["style transfer (small)"] == (0.5, 0.4, 0.4, 0.4, 0.35, 0.3)  # RANGE_LIST[-1]
    assert PIA_PRESETS["style transfer (large)"] == (0.5, 0.2)  # RANGE_LIST[-3]


def test_pia_coefficients_small_motion_cond_zero():
    assert pia_mask_coefficients(16, "small motion", 0) == [1.0, 0.9, 0.85, 0.85, 0.85] + [0.8] * 11


def test_pia_coefficients_cond_frame_eight():
    expected = [0.8, 0.8, 0.8, 0.8, 0.85, 0.85, 0.85, 0.9, 1.0, 0.9, 0.85, 0.85, 0.85, 0.8, 0.8, 0.8]
    assert pia_mask_coefficients(16, "small motion", 8) == expected


def test_pia_coefficients_other_presets():
    assert pia_mask_coefficients(16, "moderate motion") == [1.0, 0.8, 0.8, 0.8, 0.79, 0.78] + [0.75] * 10
    assert pia_mask_coefficients(16, "large motion") == [1.0, 0.8] + [0.7] * 8 + [0.6] + [0.5] * 5
    assert pia_mask_coefficients(16, "loop (large)") == list(PIA_PRESETS["loop (large)"])
    assert pia_mask_coefficients(24, "loop (small)") == list(PIA_PRESETS["loop (small)"]) + [1.0] * 8  # pads with last
    assert (
        pia_mask_coefficients(16, "style transfer (moderate)")
        == [0.5, 0.4, 0.4, 0.4, 0.35, 0.35, 0.3, 0.25] + [0.2] * 8
    )
    assert pia_mask_coefficients(16, "style transfer (large)") == [0.5] + [0.2] * 15
    assert pia_mask_coefficients(4, "large motion", 3) == [0.7, 0.7, 0.8, 1.0]  # fewer frames than the list
    assert pia_mask_coefficients(1, "small motion") == [1.0]


def test_pia_concat_layout_frame_by_frame():
    latent = _latents(1, seed=3)
    out = pia_concat(latent, 16, "loop (small)", 0)
    assert out.shape == (16, 5, h, w) and out.dtype == latent.dtype
    expected = [1.0, 0.9, 0.85, 0.85, 0.85, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.85, 0.85, 0.9, 1.0]
    for f in range(16):
        assert torch.equal(out[f, 0], torch.full((h, w), expected[f]))  # spatially constant scalar
        assert torch.equal(out[f, 1:], latent[0])  # the same latent in every frame
    at_eight = pia_concat(latent.double(), 16, "small motion", 8)
    assert at_eight.dtype == torch.float64 and at_eight[:, 0, 2, 4].tolist()[6:11] == [0.85, 0.9, 1.0, 0.9, 0.85]


@pytest.mark.parametrize(
    "frames, preset, cond_frame, message",
    [
        (16, "huge motion", 0, "unknown PIA preset 'huge motion'; choose one of: small motion"),
        (16, "small motion", 16, r"cond_frame 16 is outside 0\.\.15"),
        (16, "small motion", -1, r"cond_frame -1 is outside"),
        (0, "small motion", 0, "at least 1"),
    ],
)
def test_pia_errors(frames, preset, cond_frame, message):
    with pytest.raises(ConditioningError, match=message):
        pia_mask_coefficients(frames, preset, cond_frame)
    with pytest.raises(ConditioningError, match=message):
        pia_concat(_latents(1), frames, preset, cond_frame)


def test_pia_concat_takes_one_image():
    with pytest.raises(ConditioningError, match="one image, got 2 latents"):
        pia_concat(_latents(2), 16, "small motion")


def test_context_windows_find_the_frames_every_window_holds():
    from atomo_core.conditioning import window_anchor_frames

    latents = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(3))
    assert window_anchor_frames(atomovideo_concat(latents, 20, [0, 1], "every_frame"), "atomovideo") == [0, 1]
    assert window_anchor_frames(atomovideo_concat(latents[:1], 20, [5]), "atomovideo") == [5]
    assert window_anchor_frames(pia_concat(latents[:1], 20, "small motion", 3), "pia") == [3]
    assert window_anchor_frames(torch.zeros(20, 5, 3, 3), "pia") == []  # the "no image" condition
    assert window_anchor_frames(torch.zeros(20, 5, 3, 3), "atomovideo") == []


def test_a_pia_window_is_a_clip_of_its_own_length_with_the_condition_frame_first():
    """Window frames [0, 20..34] of a 48-frame PIA clip: strengths by window position (1, then the preset's decay),
    not the far frames' weak strengths; the latent in every frame; AtomoVideo windows are the clip's own frames."""
    from atomo_core.conditioning import pia_mask_coefficients, window_concat

    latent = torch.randn(1, 4, 3, 3, generator=torch.Generator().manual_seed(4))
    full = pia_concat(latent, 48, "large motion", 0)
    index = [0] + list(range(20, 35))
    window = window_concat(full, "pia", index, [0])
    assert window[:, 0, 0, 0].tolist() == pytest.approx(pia_mask_coefficients(16, "large motion", 0))
    assert torch.equal(window[:, 1:], full[index, 1:])
    assert window[1:, 0, 0, 0].tolist() != full[index[1:], 0, 0, 0].tolist()  # the slice would be all 0.5
    assert torch.equal(window_concat(full, "pia", index, []), full[index])  # windows without anchors: a slice
    mid = pia_concat(latent, 48, "large motion", 40)  # condition frame 40: distances read on either side
    window = window_concat(mid, "pia", [40] + list(range(0, 15)), [40])
    assert window[:, 0, 0, 0].tolist() == pytest.approx(pia_mask_coefficients(16, "large motion", 0))
    given = atomovideo_concat(latent, 48, [0], "every_frame")
    assert torch.equal(window_concat(given, "atomovideo", index, [0]), given[index])
