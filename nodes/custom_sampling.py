"""Our sampling as core custom-sampling pieces, for ``SamplerCustomAdvanced`` with any SAMPLER and NOISE:

- **Video Guider** (``AtomoVideoGuider``, GUIDER): image/text guidance with CFG rescale, the guider the Zero-SNR V
  Sampler itself runs (``guider.AtomoGuider``; why not core's DualCFGGuider: see the README, "Custom sampling").
- **Trailing Sigmas** (``AtomoTrailingSigmas``, SIGMAS): diffusers' trailing timesteps on the MODEL's schedule,
  starting at its pure-noise step under zero terminal SNR. Core's ``simple`` scheduler floors where trailing rounds,
  one timestep off at some steps for most step counts (89 of 1..100); this is the exact schedule the trainer's
  validation and Lin et al. use.
- **FrameInit Noise** (``AtomoFrameInitNoise``, NOISE): ConsistI2V's initial noise carrying the first given frame's
  low frequencies.

The one-node sampler is built from the same functions (``sampling.video_guider``, ``compute_sigmas``,
``initial_noise``), so the two ways sample identically (tested).
"""

from __future__ import annotations

from comfy_api.latest import io

from .sampling import TRAILING, SamplingSettings, compute_sigmas, initial_noise, video_guider


class AtomoVideoGuider(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoVideoGuider",
            display_name="Video Guider (image/text)",
            category="AtomoVideo/sampling",
            description="Image and text guidance (DreamVideo) with CFG rescale, as a GUIDER for core "
                        "SamplerCustomAdvanced. The Zero-SNR V Sampler runs this same guider.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from Image Inject Conditioning or Load Motion Module; its "
                                                "sampling (the module's schedule, or yours) is used as it arrives."),
                io.Conditioning.Input("positive", tooltip="The positive prompt (with the image, from Image Inject "
                                                          "Conditioning)."),
                io.Conditioning.Input("negative", tooltip="The negative prompt (with the image)."),
                io.Float.Input("cfg", default=7.5, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Text guidance scale, as KSampler's cfg."),
                io.Float.Input("image_cfg", default=1.0, min=0.0, max=30.0, step=0.1, round=0.01,
                               tooltip="Image guidance scale. 1.0: two passes, exactly KSampler; equal to cfg: plain "
                                       "CFG against neither; otherwise three passes in one batch."),
                io.Float.Input("cfg_rescale", default=0.7, min=0.0, max=1.0, step=0.01,
                               tooltip="CFG rescale (Lin et al.), applied with zero terminal SNR only."),
            ],
            outputs=[io.Guider.Output(display_name="GUIDER", tooltip="For SamplerCustomAdvanced (or Predict Next "
                                                                     "Frames' sampling input).")],
        )

    @classmethod
    def execute(cls, model, positive, negative, cfg, image_cfg, cfg_rescale) -> io.NodeOutput:
        settings = SamplingSettings(cfg=cfg, image_cfg=image_cfg, cfg_rescale=cfg_rescale)
        guider, _ = video_guider(model, positive, negative, settings)
        return io.NodeOutput(guider)


class AtomoTrailingSigmas(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoTrailingSigmas",
            display_name="Trailing Sigmas (zero SNR)",
            category="AtomoVideo/sampling",
            description="Diffusers' trailing timesteps on the MODEL's schedule: the first step is the pure-noise "
                        "step of a zero-terminal-SNR schedule. The Zero-SNR V Sampler's 'trailing' scheduler.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL whose schedule the sigmas are taken from."),
                io.Int.Input("steps", default=25, min=1, max=1000, tooltip="Sampling steps."),
                io.Float.Input("denoise", default=1.0, min=0.01, max=1.0, step=0.01,
                               tooltip="Below 1: the last steps of steps / denoise (video-to-video refinement)."),
            ],
            outputs=[io.Sigmas.Output(display_name="SIGMAS", tooltip="steps + 1 sigmas, the last one 0.")],
        )

    @classmethod
    def execute(cls, model, steps, denoise) -> io.NodeOutput:
        return io.NodeOutput(compute_sigmas(model.get_model_object("model_sampling"), TRAILING, steps, denoise))


class FrameInitNoise:
    """A NOISE (``seed``, ``generate_noise(input_latent)``): seeded noise, FrameInit-mixed with the first given
    frame of ``positive``."""

    def __init__(self, seed: int, positive, model_sampling, tau: int, cutoff: float):
        self.seed, self.positive, self.model_sampling = seed, positive, model_sampling
        self.settings = SamplingSettings(noise_init="FrameInit", frameinit_tau=tau, frameinit_cutoff=cutoff)

    def generate_noise(self, input_latent):
        return initial_noise(input_latent["samples"], self.seed, self.positive, self.model_sampling, self.settings)


class AtomoFrameInitNoise(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoFrameInitNoise",
            display_name="FrameInit Noise",
            category="AtomoVideo/sampling",
            description="ConsistI2V's FrameInit as a NOISE: seeded noise whose low frequencies come from the first "
                        "given frame, so the clip keeps the image's layout.",
            inputs=[
                io.Model.Input("model", tooltip="The MODEL (its schedule gives the noise level frameinit_tau)."),
                io.Conditioning.Input("positive", tooltip="The positive conditioning from Image Inject Conditioning "
                                                          "(it carries the given frame)."),
                io.Int.Input("noise_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="The random seed."),
                io.Int.Input("frameinit_tau", default=850, min=0, max=999,
                             tooltip="The timestep the first frame is noised to before mixing."),
                io.Float.Input("frameinit_cutoff", default=0.25, min=0.0, max=1.0, step=0.01,
                               tooltip="Low-pass cut-off (spatial and temporal)."),
            ],
            outputs=[io.Noise.Output(display_name="NOISE", tooltip="For SamplerCustomAdvanced.")],
        )

    @classmethod
    def execute(cls, model, positive, noise_seed, frameinit_tau, frameinit_cutoff) -> io.NodeOutput:
        return io.NodeOutput(FrameInitNoise(noise_seed, positive, model.get_model_object("model_sampling"),
                                            frameinit_tau, frameinit_cutoff))
