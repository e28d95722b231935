"""Segment planning and video extension: frame counts, ordering, exact given frames, anchoring, seams."""

from __future__ import annotations

import itertools

import pytest
import torch
from tolerances import FLOAT32_FEW_OPS, FLOAT32_REORDERED, assert_close_scaled, assert_far_off, scale_of

from atomo_core.errors import ConditioningError
from atomo_core.frame_prediction import anchor_statistics, extend_video, plan_segments, seam_report


def _index_sampler(calls):
    """A stand-in sampler: frame k of a segment gets the value (global frame index) so order is visible."""

    def sample(segment, context):
        calls.append((segment, context.clone()))
        out = torch.empty(segment.length, 4, 2, 3)
        out[: segment.context] = context  # a model would reproduce the given frames (approximately)
        start = segment.context_start + segment.context
        for k in range(segment.new):
            out[segment.context + k] = float(start + k)
        return out

    return sample


@pytest.mark.parametrize(
    ("existing", "context", "new", "total"),
    [c for c in itertools.product((1, 8, 16, 17), (1, 4, 8), (1, 7, 16), (16, 33, 64, 65)) if c[0] <= c[3]],
)
def test_counts_order_and_exact_given_frames(existing, context, new, total):
    video = torch.arange(existing, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 4, 2, 3).clone()
    video[0, 0, 0, 0] = 0.123456789  # a value a round trip would not keep exactly
    segments = plan_segments(existing, context, new, total)
    calls = []
    out = extend_video(video, segments, _index_sampler(calls))
    assert out.shape[0] == total
    assert torch.equal(out[:existing], video)  # given frames bit-exact
    expected = torch.arange(total, dtype=torch.float32)
    got = out[:, 1, 0, 0]
    assert torch.equal(got[existing:], expected[existing:])  # no duplicated or dropped frames at seams
    assert sum(s.new for s in segments) == total - existing
    for segment, given in calls:
        assert segment.context == min(context, segment.context_start + segment.context)
        assert torch.equal(given, out[segment.context_start : segment.context_start + segment.context])
        assert segment.new <= new and segment.context <= context


def test_last_segment_is_shorter_when_lengths_do_not_divide():
    segments = plan_segments(16, 8, 16, 60)
    assert [(s.context_start, s.context, s.new) for s in segments] == [(8, 8, 16), (24, 8, 16), (40, 8, 12)]


def test_single_frame_continuation_like_dreamvideo_and_pia():
    segments = plan_segments(16, 1, 15, 64)
    assert all(s.context == 1 for s in segments)
    assert [s.context_start for s in segments] == [15, 30, 45, 60]
    assert segments[-1].new == 3  # 16 + 3 x 15 = 61, then 3 more


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 8, 16, 64), "at least one existing frame"),
        ((16, 0, 16, 64), "must both be at least 1"),
        ((16, 8, 16, 10), "shorter than the 16 frames"),
        ((16, 8, 20, 64, 24), "exceeds the module's 24 frames.*16 or fewer"),
    ],
)
def test_bad_plans_are_explained(args, message):
    with pytest.raises(ConditioningError, match=message):
        plan_segments(*args)


def test_total_equal_to_existing_returns_the_video_unchanged():
    video = torch.randn(5, 4, 2, 2)
    assert plan_segments(5, 4, 4, 5) == []
    assert torch.equal(extend_video(video, [], _index_sampler([])), video)


def test_anchoring_matches_reference_statistics():
    gen = torch.Generator().manual_seed(0)
    reference = torch.randn(16, 4, 8, 8, generator=gen) * torch.tensor([1.0, 2.0, 0.5, 1.5]).view(1, 4, 1, 1)
    drifted = torch.randn(16, 4, 8, 8, generator=gen) * 3.0 + 2.0
    full = anchor_statistics(drifted, reference, 1.0)
    dims = (0, 2, 3)
    # float32 means and stds over 1024 elements, on both sides: round-off relative to the elements summed
    # (max|reference| = 8.2), not to the statistics (the means are near 0). Measured 1.4e-8 and exact.
    scale = scale_of(reference)
    assert_close_scaled(full.mean(dims), reference.mean(dims), FLOAT32_REORDERED, "anchored means", scale)
    assert_close_scaled(full.std(dims), reference.std(dims), FLOAT32_REORDERED, "anchored stds", scale)
    # Statistics over the wrong axes (one mean and std pooled over all channels): the stds are 1.1e4x off.
    pooled = (drifted - drifted.mean()) / drifted.std() * reference.std() + reference.mean()
    assert_far_off(pooled.std(dims), reference.std(dims), FLOAT32_REORDERED, 1e3, "pooled over channels", scale)
    assert torch.equal(anchor_statistics(drifted, reference, 0.0), drifted)  # strength 0 returns the input itself
    half = anchor_statistics(drifted, reference, 0.5)
    # element-wise: x + 0.5 (m - x) against 0.5 (x + m), a few roundings of terms up to 13 (measured exact)
    assert_close_scaled(half, 0.5 * (drifted + full), FLOAT32_FEW_OPS, "half-strength blend")
    assert_far_off(half, 0.5 * full, FLOAT32_FEW_OPS, 1e3, "blend without the input term")  # 1.8e6x the bound


def test_extend_video_applies_anchoring_to_new_frames_only():
    gen = torch.Generator().manual_seed(0)  # the video and the stand-in sampler's frames: reproducible figures
    video = torch.randn(8, 4, 2, 3, generator=gen)

    def sample(segment, context):
        return torch.cat([context, torch.randn(segment.new, 4, 2, 3, generator=gen) * 5 + 3])

    out = extend_video(video, plan_segments(8, 4, 8, 24), sample, anchor_strength=1.0)
    assert torch.equal(out[:8], video)
    # float32 means of 192 elements, relative to the elements summed (the means are near 0): measured <= 2.1e-8
    scale = scale_of(out)
    for start in (8, 16):
        means = out[start : start + 8].mean((0, 2, 3))
        assert_close_scaled(means, video.mean((0, 2, 3)), FLOAT32_REORDERED, f"anchored means at {start}", scale)
    # without anchoring the new frames keep their own offset of 3: 1.0e5x the bound
    unanchored = extend_video(video, plan_segments(8, 4, 8, 24), sample, anchor_strength=0.0)
    assert_far_off(unanchored[8:16].mean((0, 2, 3)), video.mean((0, 2, 3)), FLOAT32_REORDERED, 1e3, "no anchor", scale)


def test_seam_report():
    frames = torch.zeros(12, 1, 1, 1)
    for i in range(12):
        frames[i] = 0.1 * i  # smooth motion: difference 0.1 everywhere ...
    frames[8:] += 1.0  # ... except a jump at the seam before frame 8
    report = seam_report(frames, [8])
    # float32 frames up to 2.1: each difference and mean is good to a few roundings of 2.1, which is 2e-5 of
    # 0.1 (the old default rel=1e-6 of 0.1 was under one float32 ulp of the frames). Measured 4.5e-8 and 2.8e-9
    # of 2.1.
    scale = scale_of(frames)
    assert_close_scaled(report["seam"], 1.1, FLOAT32_FEW_OPS, "seam difference", scale)
    assert_close_scaled(report["inside"], 0.1, FLOAT32_FEW_OPS, "inside difference", scale)
    # the ratio's relative error is the sum of its two terms' relative errors
    ratio_rel = FLOAT32_FEW_OPS * scale * (1 / 1.1 + 1 / 0.1)
    assert_close_scaled(report["ratio"], 11.0, ratio_rel, "seam ratio")
    # the seam put one frame late (index 9) is far off: 4.8e5x the bound
    assert_far_off(seam_report(frames, [9])["seam"], 1.1, FLOAT32_FEW_OPS, 1e3, "seam one frame late", scale)
