"""ComfyUI nodes of AtomoVideo: thin V3 nodes over ``atomo_core``, plus the host adapter."""

from __future__ import annotations


def node_list() -> list:
    from .folders import register_model_folders

    register_model_folders()
    from .context_windows import AtomoContextWindows
    from .custom_sampling import AtomoFrameInitNoise, AtomoTrailingSigmas, AtomoVideoGuider
    from .image_inject_conditioning import AtomoImageInjectConditioning
    from .load_motion_module import AtomoLoadMotionModule
    from .motion_lora import AtomoLoadMotionLoRA
    from .predict_next_frames import AtomoPredictNextFrames
    from .video_metrics import AtomoVideoMetrics
    from .zero_snr_sampler import AtomoZeroSNRVSampler

    return [AtomoLoadMotionModule, AtomoLoadMotionLoRA, AtomoImageInjectConditioning, AtomoZeroSNRVSampler,
            AtomoPredictNextFrames, AtomoVideoMetrics, AtomoVideoGuider, AtomoTrailingSigmas, AtomoFrameInitNoise,
            AtomoContextWindows]
