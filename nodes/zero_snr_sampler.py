"""Zero-SNR V Sampler (``AtomoZeroSNRVSampler``): samples a clip with the schedule its module was trained with,
image/text guidance, CFG rescale and optional FrameInit."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from .sampling import NOISE_INITS, PREDICTIONS, ZERO_SNR, SamplingSettings, sample_video, scheduler_names


def sampling_inputs() -> list:
    """The sampling inputs shared with Predict Next Frames."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True),
        io.Int.Input("steps", default=25, min=1, max=1000),
        io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Text guidance scale."),
        io.Float.Input("image_cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Image guidance scale. 1.0: the image conditions every branch (two passes, PIA's own "
                               "sampling). Equal to cfg: plain CFG against a prediction without image and text (two "
                               "passes). Other values: DreamVideo's double guidance (three passes)."),
        io.Float.Input("cfg_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                       tooltip="CFG rescale (Lin et al.) against over-exposure; applied with zero terminal SNR."),
        io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="ddim"),
        io.Combo.Input("scheduler", options=scheduler_names(), default="trailing",
                       tooltip="trailing: DDIM's trailing timesteps, which start at the pure-noise step of a "
                               "zero-terminal-SNR schedule."),
        io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                       tooltip="Below 1: a video-to-video pass over the input latent (refinement)."),
    ]


def advanced_inputs() -> list:
    return [
        io.Combo.Input("prediction", options=PREDICTIONS, default=PREDICTIONS[0], optional=True,
                       tooltip="Override the module's prediction type."),
        io.Combo.Input("zero_terminal_snr", options=ZERO_SNR, default=ZERO_SNR[0], optional=True,
                       tooltip="Override the module's zero-terminal-SNR setting (refused with epsilon)."),
        io.Combo.Input("noise_init", options=NOISE_INITS, default="none", optional=True,
                       tooltip="FrameInit (ConsistI2V): start from noise that carries the first frame's layout."),
        io.Int.Input("frameinit_tau", default=850, min=0, max=999, optional=True,
                     tooltip="FrameInit: the timestep the first frame is noised to before mixing."),
        io.Float.Input("frameinit_cutoff", default=0.25, min=0.0, max=1.0, step=0.01, optional=True,
                       tooltip="FrameInit: low-pass cut-off (spatial and temporal)."),
    ]


def settings_from(kwargs: dict) -> SamplingSettings:
    names = SamplingSettings.__dataclass_fields__
    return SamplingSettings(**{k: v for k, v in kwargs.items() if k in names})


class AtomoZeroSNRVSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoZeroSNRVSampler",
            display_name="Zero-SNR V Sampler",
            category="AtomoVideo",
            description=(
                "Samples a video clip. The prediction type and zero-terminal-SNR schedule come from the motion "
                "module (AtomoVideo: v-prediction + zero SNR; AnimateDiff/PIA: epsilon), with separate image and "
                "text guidance."
            ),
            inputs=[
                io.Model.Input("model"),
                io.Conditioning.Input("positive"),
                io.Conditioning.Input("negative"),
                io.Latent.Input("latent_image"),
                *sampling_inputs(),
                *advanced_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="LATENT")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, **kwargs) -> io.NodeOutput:
        settings = settings_from(kwargs)
        samples = sample_video(model, positive, negative, latent_image, seed, settings)
        out = {k: v for k, v in latent_image.items() if k not in ("samples", "noise_mask")}
        out["samples"] = samples
        return io.NodeOutput(out)
