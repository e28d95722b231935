"""Segment planning and video extension: frame counts, ordering, exact given frames, anchoring, seams."""

from __future__ import annotations

import itertools

import pytest
import torch

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
    assert torch.allclose(full.mean(dims), reference.mean(dims), atol=1e-4)
    assert torch.allclose(full.std(dims), reference.std(dims), atol=1e-4)
    assert torch.equal(anchor_statistics(drifted, reference, 0.0), drifted)
    half = anchor_statistics(drifted, reference, 0.5)
    assert torch.allclose(half, 0.5 * (drifted + full), atol=1e-5)


def test_extend_video_applies_anchoring_to_new_frames_only():
    video = torch.randn(8, 4, 2, 3)

    def sample(segment, context):
        return torch.cat([context, torch.randn(segment.new, 4, 2, 3) * 5 + 3])

    out = extend_video(video, plan_segments(8, 4, 8, 24), sample, anchor_strength=1.0)
    assert torch.equal(out[:8], video)
    for start in (8, 16):
        assert torch.allclose(out[start : start + 8].mean((0, 2, 3)), video.mean((0, 2, 3)), atol=1e-4)


def test_seam_report():
    frames = torch.zeros(12, 1, 1, 1)
    for i in range(12):
        frames[i] = 0.1 * i  # smooth motion: difference 0.1 everywhere ...
    frames[8:] += 1.0  # ... except a jump at the seam before frame 8
    report = seam_report(frames, [8])
    assert report["seam"] == pytest.approx(1.1) and report["inside"] == pytest.approx(0.1)
    assert report["ratio"] == pytest.approx(11.0)
