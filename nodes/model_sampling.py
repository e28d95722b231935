"""Give a MODEL the noise schedule and prediction type its motion module was trained with.

AnimateDiff, PIA and AnimateLCM were trained on diffusers' ``linear`` betas (ComfyUI ``sqrt_linear``) with
epsilon prediction; SD-1.5 itself uses ``scaled_linear`` (ComfyUI ``linear``). AtomoVideo files say theirs in
the metadata, typically v-prediction on a zero-terminal-SNR schedule. This is an object patch on
``model_sampling``, exactly what ComfyUI's own ModelSamplingDiscrete node does.
"""

from __future__ import annotations

import comfy.model_sampling

from ..atomo_core.motion_module import MotionModuleConfig

# diffusers name -> ComfyUI name
COMFY_BETA_SCHEDULES = {"linear": "sqrt_linear", "scaled_linear": "linear"}


def make_model_sampling(model, beta_schedule: str, prediction_type: str, zero_terminal_snr: bool):
    """A ``ModelSamplingDiscrete`` for ``model`` with the given (diffusers-named) schedule."""
    prediction = comfy.model_sampling.V_PREDICTION if prediction_type == "v_prediction" else comfy.model_sampling.EPS

    class AtomoModelSampling(comfy.model_sampling.ModelSamplingDiscrete, prediction):
        pass

    sampling = AtomoModelSampling(model.model.model_config, zsnr=zero_terminal_snr)
    settings = model.model.model_config.sampling_settings
    sampling._register_schedule(
        given_betas=None,
        beta_schedule=COMFY_BETA_SCHEDULES[beta_schedule],
        timesteps=settings.get("timesteps", 1000),
        linear_start=settings.get("linear_start", 0.00085),
        linear_end=settings.get("linear_end", 0.012),
        zsnr=zero_terminal_snr,
    )
    return sampling


def patch_model_sampling(model, config: MotionModuleConfig):
    """Object-patch ``model_sampling`` of a ModelPatcher (already a clone) in place; returns the new object."""
    sampling = make_model_sampling(model, config.beta_schedule, config.prediction_type, config.zero_terminal_snr)
    model.add_object_patch("model_sampling", sampling)
    return sampling
