"""Prompt Travel (``AtomoPromptTravel``): a schedule of prompts by frame -> per-frame CONDITIONING.

The conditioning's text embedding has one row per frame (``[frames, 77k, 768]``): ComfyUI's samplers pass a
condition whose batch equals the latent's as it is (one prompt per frame), Context Windows (video frames) give each
window its frames' rows, and the Zero-SNR V Sampler and Video Guider take it like any prompt. The maths is
``atomo_core.prompt_schedule``; Predict Next Frames' ``segment_prompts`` is the coarser tool (one prompt per
segment of a continued video, no interpolation).
"""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..atomo_core.errors import AtomoError
from ..atomo_core.prompt_schedule import INTERPOLATIONS, parse_schedule, travel

log = logging.getLogger("AtomoVideo")


def encode_schedule(clip, text: str, frames: int, interpolation: str = "linear"):
    """The CONDITIONING ``[[embeddings [frames, T, 768], {"pooled_output": the first keyframe's}]]``."""
    if clip is None:
        raise AtomoError("Prompt Travel needs a CLIP: connect the checkpoint's CLIP output.")
    schedule = parse_schedule(text, frames)
    cache: dict[str, tuple] = {}
    for _, prompt in schedule:
        if prompt not in cache:
            cond, pooled = clip.encode_from_tokens(clip.tokenize(prompt), return_pooled=True)
            cache[prompt] = (cond, pooled)
    embeddings = [cache[prompt][0] for _, prompt in schedule]
    per_frame = travel(embeddings, [frame for frame, _ in schedule], frames, interpolation)
    log.info("AtomoVideo prompt travel: %d keyframe(s) over %d frames (%s)", len(schedule), frames, interpolation)
    return [[per_frame, {"pooled_output": cache[schedule[0][1]][1]}]]


class AtomoPromptTravel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoPromptTravel",
            display_name="Prompt Travel",
            category="AtomoVideo/conditioning",
            description="A prompt per frame range ('0: a bud', '16: a flower opening'), blended smoothly between "
                        "keyframes: a positive CONDITIONING with one prompt per frame, for KSampler, the Zero-SNR V "
                        "Sampler and Context Windows (each window sees its frames' prompts).",
            inputs=[
                io.Clip.Input("clip", tooltip="The checkpoint's CLIP."),
                io.String.Input("schedule", multiline=True,
                                default="0: a flower bud, closed\n16: a flower opening\n32: a flower in full bloom",
                                tooltip="One keyframe per line: 'frame: prompt' (frames count from 0). Frames "
                                        "between keyframes blend the two prompts; before the first and after the "
                                        "last they hold it."),
                io.Int.Input("frames", default=48, min=1, max=4096,
                             tooltip="Frames in the video: the same number as the latent batch."),
                io.Combo.Input("interpolation", options=list(INTERPOLATIONS), default="linear",
                               tooltip="linear: blend the text embeddings between keyframes; none: hold each prompt "
                                       "until the next keyframe."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive",
                                            tooltip="One prompt per frame: the sampler's positive.")],
        )

    @classmethod
    def execute(cls, clip, schedule, frames, interpolation="linear") -> io.NodeOutput:
        return io.NodeOutput(encode_schedule(clip, schedule, frames, interpolation))
