"""Motion strength: the list and mask rules, and the strength applied to a real temporal layer's residual."""

from __future__ import annotations

import pytest
import torch

from atomo_core.motion_strength import (
    MotionStrength,
    MotionStrengthError,
    apply_strength,
    parse_strength_list,
    stretch,
)
from atomo_core.temporal_attention import TemporalAttentionLayer


def test_strength_lists_are_read_and_stretched():
    assert parse_strength_list("1, 0.5\n0 ; 2") == (1.0, 0.5, 0.0, 2.0)
    assert parse_strength_list("  ") == ()
    with pytest.raises(MotionStrengthError, match="'fast' is not a number"):
        parse_strength_list("1, fast")
    with pytest.raises(MotionStrengthError, match="not a finite number"):
        parse_strength_list("1, nan")
    assert stretch((0.0, 1.0), 5) == [0.0, 0.25, 0.5, 0.75, 1.0]  # a fade-in over the video
    assert stretch((0.0, 1.0, 0.0), 5) == [0.0, 0.5, 1.0, 0.5, 0.0]
    assert stretch((0.3,), 4) == [0.3] * 4
    assert stretch((1.0, 2.0, 3.0), 2) == [1.0, 2.0]  # longer than the video: its first values


def test_frame_values_follow_the_frames_of_the_call():
    ramp = MotionStrength(2.0, (0.0, 1.0))
    # frames 12..15 of a 16-frame video (a context window): the stretched list's values there, times the scale
    assert ramp.frame_values([12, 13, 14, 15], 16) == pytest.approx([2 * 12 / 15, 2 * 13 / 15, 2 * 14 / 15, 2.0])
    assert MotionStrength(0.5).frame_values([3, 4], 8) == [0.5, 0.5]
    assert MotionStrength(0.0).all_zero([0, 1], 2)
    assert MotionStrength(1.0, (0.0, 0.0, 1.0)).all_zero([0, 1], 5) and \
        not MotionStrength(1.0, (0.0, 0.0, 1.0)).all_zero([0, 4], 5)
    with pytest.raises(MotionStrengthError, match="either as a list or as a mask"):
        MotionStrength(1.0, (1.0,), torch.ones(1, 4, 4))
    with pytest.raises(MotionStrengthError, match=r"MASK batch \[frames, height, width\]"):
        MotionStrength(1.0, (), torch.ones(4, 4))


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    layer = TemporalAttentionLayer(32, heads=4, max_frames=16)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if "proj_out" in name:
                p.normal_(0, 0.2)  # a trained-like layer: the real zero-initialised one would be the identity
    return layer.eval()


def _factor(strength, frames, x):
    return strength.factor(list(range(frames)), frames, x.shape[0] // frames, tuple(x.shape[-2:]), x)


def test_a_per_frame_strength_gives_each_frame_its_constant_runs_frame(layer):
    """Within one layer the residual is computed before the strength: frame i of a ramp is exactly frame i of the run
    at the constant strength s_i (the same float ops on the same numbers)."""
    frames = 6
    x = torch.randn(2 * frames, 32, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = layer(x, frames)
    values = (0.0, 0.4, 1.0, 1.5, 0.2, 1.0)
    ramp = apply_strength(x, y, _factor(MotionStrength(1.0, values), frames, x))
    for i, value in enumerate(values):
        constant = apply_strength(x, y, _factor(MotionStrength(value), frames, x))
        for video in range(2):
            assert torch.equal(ramp[video * frames + i], constant[video * frames + i])
    assert torch.equal(ramp[0], x[0])  # strength 0: the frame as it came in
    assert torch.equal(apply_strength(x, y, _factor(MotionStrength(1.0), frames, x)), y)  # 1: the layer as trained
    assert not torch.allclose(ramp[3], y[3])  # 1.5 amplifies (a bug that ignored the list would fail here)


def test_a_mask_sets_the_strength_per_pixel(layer):
    frames = 4
    x = torch.randn(frames, 32, 4, 4, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y = layer(x, frames)
    mask = torch.zeros(2, 8, 8)
    mask[:, :, 4:] = 1.0  # right half moves; a 2-frame batch for 4 frames repeats its last mask
    out = apply_strength(x, y, _factor(MotionStrength(1.0, (), mask), frames, x))
    assert torch.equal(out[..., :2], x[..., :2])  # resized to the 4x4 feature map: columns 0-1 still
    assert torch.allclose(out[..., 2:], y[..., 2:], atol=1e-6)
    assert not torch.allclose(out[..., 2:], x[..., 2:])
