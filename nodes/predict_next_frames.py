"""Predict Next Frames (``AtomoPredictNextFrames``): make a video longer, segment by segment, each segment
conditioned on the last frames of the video so far (AtomoVideo's video frame prediction)."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import latent_preview
import torch
from comfy_api.latest import io

from ..atomo_core.conditioning import PIA_PRESETS, atomovideo_concat, pia_concat
from ..atomo_core.errors import ConditioningError
from ..atomo_core.formats import FAMILY_LABELS
from ..atomo_core.frame_prediction import extend_video, plan_segments
from ..atomo_core.image_fit import check_video_size
from .conv_in import check_plain_input, patch_conv_in
from .host_adapter import VIDEO_FRAMES_KEY, get_attachment
from .injection import check_vae
from .sampling import sample_segment_with, segment_guider, segment_noise

HANDOVERS = ["latent", "pixels"]
AUTO = 0


def auto_context_frames(module) -> int:
    """Given frames per segment when the user leaves it to us: PIA's one condition frame; AtomoVideo's 8."""
    return 1 if module.config.image_conditioning == "pia" else 8


def _module(model):
    attachment = get_attachment(model)
    if attachment is None:
        raise ConditioningError("This MODEL has no motion module: connect Load Motion Module (PIA or AtomoVideo).")
    module = attachment.module
    if not module.accepts_images:
        raise ConditioningError(
            f"'{module.name}' ({FAMILY_LABELS[module.config.family]}) is a text-to-video module and cannot take "
            "given frames, so it cannot continue a video. Use an AtomoVideo module (several given frames) or PIA "
            "(continues from the last frame, context_frames = 1)."
        )
    check_plain_input(model, module)
    return module


def _segment_prompts(clip, text: str):
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return []
    if clip is None:
        raise ConditioningError("segment_prompts needs the CLIP input connected to encode them.")
    out = []
    for line in lines:
        tokens = clip.tokenize(line)
        out.append(clip.encode_from_tokens_scheduled(tokens))
    return out


class AtomoPredictNextFrames(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoPredictNextFrames",
            display_name="Predict Next Frames",
            category="AtomoVideo",
            description=(
                "Extends a clip to total_frames, segment by segment: each segment is given the last context_frames "
                "frames and predicts new_frames after them. The given frames are kept exactly; memory stays that "
                "of one segment."
            ),
            inputs=[
                io.Guider.Input("guider", tooltip="How every segment is guided: Video Guider (image/text guidance) or "
                                                  "any GUIDER, built on the MODEL with a PIA or AtomoVideo module. Its "
                                                  "MODEL and prompts are used for every segment; the image channels "
                                                  "are set per segment from the frames so far."),
                io.Sampler.Input("sampler", tooltip="The sampler of every segment (KSamplerSelect: ddim, euler, ...)."),
                io.Sigmas.Input("sigmas", tooltip="The sigmas of every segment: Trailing Sigmas (zero SNR), or "
                                                  "BasicScheduler & co."),
                io.Noise.Input("noise", tooltip="The noise of every segment: RandomNoise or FrameInit Noise; "
                                                "segment i uses seed + i."),
                io.Int.Input("context_frames", default=AUTO, min=AUTO, max=64,
                             tooltip="Given frames per segment: the last frames of the video so far. 0 = automatic "
                                     "for the module: AtomoVideo 8 (the paper's setting), PIA 1 (its one "
                                     "condition frame, the only value PIA accepts)."),
                io.Int.Input("new_frames", default=16, min=1, max=64, tooltip="New frames per segment."),
                io.Int.Input("total_frames", default=64, min=1, max=100000, tooltip="Length of the finished video."),
                io.Latent.Input("latent", optional=True, tooltip="The frames to continue (LATENT), or use images."),
                io.Image.Input("images", optional=True, tooltip="The frames to continue (IMAGE); needs the VAE."),
                io.Vae.Input("vae", optional=True, tooltip="Needed for IMAGE frames or the 'pixels' hand-over."),
                io.Combo.Input("handover", options=HANDOVERS, default="latent", optional=True,
                               tooltip="latent: pass the last frames on as latents (exact, no VAE round trip); "
                                       "pixels: decode and re-encode them between segments."),
                io.Float.Input("anchor_strength", default=0.0, min=0.0, max=1.0, step=0.05, optional=True,
                               tooltip="Pull each new segment's latent colour statistics towards the first clip's "
                                       "(against drift). 0 = off."),
                io.String.Input("segment_prompts", multiline=True, default="", optional=True,
                                tooltip="One prompt per line for successive segments (multi-plot); the last line "
                                        "repeats. Empty: the positive conditioning for every segment."),
                io.Clip.Input("clip", optional=True, tooltip="Encodes segment_prompts."),
                io.Combo.Input("pia_motion", options=list(PIA_PRESETS), default="small motion", optional=True,
                               tooltip="PIA only: the motion preset of every segment."),
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The whole video, the input frames first, "
                                                                     "as one latent batch of total_frames.")],
        )

    @classmethod
    def execute(cls, guider, sampler, sigmas, noise, context_frames, new_frames, total_frames, latent=None,
                images=None, vae=None, handover="latent", anchor_strength=0.0, segment_prompts="", clip=None,
                pia_motion="small motion") -> io.NodeOutput:
        model = getattr(guider, "model_patcher", None)
        if model is None:
            raise ConditioningError("The guider input is not a GUIDER with a MODEL: connect Video Guider (or "
                                    "another guider node).")
        module = _module(model)
        pia = module.config.image_conditioning == "pia"
        context_frames = context_frames or auto_context_frames(module)
        if pia and context_frames != 1:
            raise ConditioningError(
                f"PIA continues from one frame (its condition frame): set context_frames to 1 (got {context_frames})."
            )
        if (latent is None) == (images is None):
            raise ConditioningError("Connect exactly one of 'latent' or 'images' (the frames to continue).")
        if images is not None or handover == "pixels":
            if vae is None:
                raise ConditioningError("Connect the SD-1.5 VAE: it is needed for IMAGE frames and pixel hand-over.")
            check_vae(vae)
        if images is not None:
            check_video_size(images.shape[2], images.shape[1])
        video = latent["samples"] if latent is not None else vae.encode(images[..., :3])
        video = video.to(comfy.model_management.intermediate_device()).float()
        segments = plan_segments(video.shape[0], context_frames, new_frames, total_frames, module.max_frames)
        prompts = _segment_prompts(clip, segment_prompts)
        patched = model.clone()
        patch_conv_in(patched, module)
        latent_format = patched.model.latent_format
        progress = _Progress(patched, (len(sigmas) - 1) * len(segments))

        def sample_segment(segment, context):
            if handover == "pixels" and segment.index > 0:
                context = vae.encode(vae.decode(context)[..., :3]).to(context)
            given = latent_format.process_in(context)
            if pia:
                concat = pia_concat(given[-1:], segment.length, pia_motion, 0)
            else:
                concat = atomovideo_concat(given, segment.length, list(range(segment.context)),
                                           module.config.image_layout)
            prompt = prompts[min(segment.index, len(prompts) - 1)] if prompts else None
            samples = torch.zeros(segment.length, *context.shape[1:])
            samples[: segment.context] = context
            mask = torch.ones(segment.length, 1, *context.shape[2:])
            mask[: segment.context] = 0.0
            # which frames of the whole video this segment is (per-frame motion strength)
            at_frames = patched.clone()
            at_frames.model_options["transformer_options"][VIDEO_FRAMES_KEY] = (segment.context_start, total_frames)
            return sample_segment_with(segment_guider(guider, at_frames, concat, prompt), sampler, sigmas,
                                       segment_noise(noise, segment.index, concat), samples, mask,
                                       progress.callback(segment))

        def between(segment):
            comfy.model_management.throw_exception_if_processing_interrupted()

        out = extend_video(video, segments, sample_segment, anchor_strength, between_segments=between)
        return io.NodeOutput({"samples": out})


class _Progress:
    """One progress bar (with latent previews) over the steps of all segments."""

    def __init__(self, model, total_steps: int):
        self.steps_done = 0
        self.total = max(1, total_steps)
        self.bar = comfy.utils.ProgressBar(self.total)
        self.previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(self, segment):
        start = self.steps_done

        def callback(step, x0, x, total_steps):
            preview = self.previewer.decode_latent_to_preview_image("JPEG", x0) if self.previewer else None
            self.steps_done = start + step + 1
            self.bar.update_absolute(self.steps_done, self.total, preview)

        return callback
