"""Zero-SNR V Sampler (``AtomoZeroSNRVSampler``): samples a clip with the schedule its module was trained with,
image/text guidance, CFG rescale and optional FrameInit."""

from __future__ import annotations

import comfy.samplers
from comfy_api.latest import io

from .sampling import NOISE_INITS, PREDICTIONS, ZERO_SNR, SamplingSettings, sample_video, scheduler_names


def sampling_inputs() -> list:
    """The sampling inputs shared with Predict Next Frames."""
    return [
        io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                     tooltip="The random seed of the initial noise (each later segment of Predict Next Frames adds "
                             "its index)."),
        io.Int.Input("steps", default=25, min=1, max=1000, tooltip="Sampling steps (per segment)."),
        io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Text guidance scale: classifier-free guidance between the positive and the negative "
                               "prompt, as in KSampler. ComfyUI's guidance nodes on the MODEL (RescaleCFG, PerpNeg, "
                               "APG, SAG, CFGNorm...) act on this text guidance exactly as in KSampler."),
        io.Float.Input("image_cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                       tooltip="Image guidance scale. 1.0: the image conditions every branch (two passes, PIA's own "
                               "sampling; the same result as KSampler). Equal to cfg: plain CFG against a prediction "
                               "without image and text (two passes). Other values: DreamVideo's double guidance "
                               "(three passes in one batch); ComfyUI's CFG hooks then act on the text guidance and "
                               "the image term (image_cfg - 1) x (image-only - neither) is added before post-CFG "
                               "hooks (SAG, CFGNorm)."),
        io.Float.Input("cfg_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                       tooltip="CFG rescale (Lin et al.) against over-exposure, applied with zero terminal SNR to the "
                               "whole guided prediction. Not applied when the MODEL already has a CFG function "
                               "(RescaleCFG node)."),
        io.Combo.Input("sampler_name", options=list(comfy.samplers.KSampler.SAMPLERS), default="ddim",
                       tooltip="Any ComfyUI sampler (ddim, euler, dpmpp_2m, lcm for AnimateLCM...)."),
        io.Combo.Input("scheduler", options=scheduler_names(), default="trailing",
                       tooltip="trailing: DDIM's trailing timesteps, which start at the pure-noise step of a "
                               "zero-terminal-SNR schedule (ComfyUI's simple is the same). Which schedule and "
                               "prediction type a run uses is printed in ComfyUI's log."),
        io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                       tooltip="Below 1: a video-to-video pass over the input latent (refinement)."),
    ]


def advanced_inputs() -> list:
    return [
        io.Combo.Input("prediction", options=PREDICTIONS, default=PREDICTIONS[0], optional=True,
                       tooltip="'from module': the MODEL's sampling as it arrives: the module's schedule from Load "
                               "Motion Module, or your own (its 'keep model's', or ModelSamplingDiscrete after it). "
                               "Otherwise override the prediction type."),
        io.Combo.Input("zero_terminal_snr", options=ZERO_SNR, default=ZERO_SNR[0], optional=True,
                       tooltip="'from module': the MODEL's setting as it arrives; on/off overrides it (on with "
                               "epsilon prediction is refused: it cannot start from pure noise)."),
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
                io.Model.Input("model", tooltip="The MODEL from Image Inject Conditioning (image to video) or "
                                                "Load Motion Module (text to video)."),
                io.Conditioning.Input("positive", tooltip="The positive prompt; from Image Inject Conditioning it "
                                                          "also carries the image."),
                io.Conditioning.Input("negative", tooltip="The negative prompt; from Image Inject Conditioning it "
                                                          "also carries the image."),
                io.Latent.Input("latent_image", tooltip="The clip to sample: Image Inject Conditioning's latent, an "
                                                        "Empty Latent Image whose batch size is the frame count, or "
                                                        "encoded frames to refine (denoise < 1)."),
                *sampling_inputs(),
                *advanced_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="LATENT", tooltip="The sampled frames as one latent batch; "
                                                                     "VAE Decode turns them into images.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent_image, seed, **kwargs) -> io.NodeOutput:
        settings = settings_from(kwargs)
        samples = sample_video(model, positive, negative, latent_image, seed, settings)
        out = {k: v for k, v in latent_image.items() if k not in ("samples", "noise_mask")}
        out["samples"] = samples
        return io.NodeOutput(out)
