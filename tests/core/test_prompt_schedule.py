"""Prompt travel's schedule: reading it, and the per-frame embeddings it makes."""

from __future__ import annotations

import pytest
import torch

from atomo_core.prompt_schedule import PromptScheduleError, frame_weights, parse_schedule, travel


def test_schedules_are_read_in_both_forms():
    text = "0: a bud\n\n# the flower opens\n16: a flower opening\n32: a full bloom"
    assert parse_schedule(text, 48) == [(0, "a bud"), (16, "a flower opening"), (32, "a full bloom")]
    pasted = '{\n"16": "a flower opening",\n"0": "a bud, closed",\n}'
    assert parse_schedule(pasted, 17) == [(0, "a bud, closed"), (16, "a flower opening")]


@pytest.mark.parametrize("text, frames, message", [
    ("a bud", 16, "line 1 .* is not 'frame: prompt'"),
    ("0: a\n20: b", 16, "keyframe 20 is outside the video's frames 0..15"),
    ("0: a\n0: b", 16, "frame 0 has two prompts"),
    ("\n# nothing\n", 16, "the prompt schedule is empty"),
])
def test_bad_schedules_say_what_is_wrong(text, frames, message):
    with pytest.raises(PromptScheduleError, match=message):
        parse_schedule(text, frames)


def test_frames_blend_between_keyframes_and_hold_outside():
    assert frame_weights([2, 6], 8) == [(0, 0, 0.0), (0, 0, 0.0), (0, 1, 0.0), (0, 1, 0.25), (0, 1, 0.5),
                                        (0, 1, 0.75), (1, 1, 0.0), (1, 1, 0.0)]
    assert [t for _, _, t in frame_weights([0, 4], 6, "none")] == [0.0] * 6
    assert [k for k, _, _ in frame_weights([0, 4], 6, "none")] == [0, 0, 0, 0, 1, 1]


def test_travel_makes_the_scheduled_embedding_of_every_frame():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 77, 8, generator=gen), torch.randn(1, 77, 8, generator=gen)
    out = travel([a, b], [0, 4], 6)
    assert out.shape == (6, 77, 8)
    for i, t in enumerate([0, 0.25, 0.5, 0.75, 1, 1]):
        assert torch.allclose(out[i], (1 - t) * a[0] + t * b[0], atol=1e-6)
    held = travel([a, a, b], [0, 3, 4], 6)
    assert all(torch.equal(held[i], a[0]) for i in range(4))  # a held prompt stays exact between its keyframes
    long = torch.randn(1, 154, 8, generator=gen)  # a prompt over 77 tokens: the others are tiled to match
    mixed = travel([a, long], [0, 2], 3)
    assert mixed.shape == (3, 154, 8) and torch.equal(mixed[0], torch.cat([a[0], a[0]]))
