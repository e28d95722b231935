"""ComfyUI nodes of AtomoVideo: thin V3 nodes over ``atomo_core``, plus the host adapter."""

from __future__ import annotations

import logging


def comfyui_version() -> str:
    try:
        import comfyui_version

        return str(comfyui_version.__version__)
    except (ImportError, AttributeError):
        return "unknown"


def startup_line() -> str:
    """One log line: the running ComfyUI and what the pack had to do itself because that ComfyUI lacks it (each
    chosen by feature detection next to the code it adapts; see the README's compatibility section)."""
    from . import context_windows

    ours = []
    if not context_windows.CORE_FREENOISE:
        ours.append("FreeNoise (its context windows have none)")
    if "causal_window_fix" in context_windows.HANDLER_OPTIONS:
        ours.append("AnimateDiff windows without the causal anchor frame")
    ours.append("ControlNet hints per context window")
    return f"AtomoVideo: ComfyUI {comfyui_version()}; the pack's own: {', '.join(ours)}"


def node_list() -> list:
    from .folders import register_model_folders

    register_model_folders()
    logging.getLogger("AtomoVideo").info(startup_line())
    from .context_windows import AtomoContextWindows
    from .custom_sampling import AtomoFrameInitNoise, AtomoTrailingSigmas, AtomoVideoGuider
    from .image_inject_conditioning import AtomoImageInjectConditioning
    from .load_motion_module import AtomoLoadMotionModule
    from .motion_lora import AtomoLoadMotionLoRA
    from .motion_strength import AtomoMotionStrength
    from .predict_next_frames import AtomoPredictNextFrames
    from .prompt_travel import AtomoPromptTravel
    from .video_metrics import AtomoVideoMetrics
    from .zero_snr_sampler import AtomoZeroSNRVSampler

    return [AtomoLoadMotionModule, AtomoLoadMotionLoRA, AtomoImageInjectConditioning, AtomoZeroSNRVSampler,
            AtomoPredictNextFrames, AtomoVideoMetrics, AtomoVideoGuider, AtomoTrailingSigmas, AtomoFrameInitNoise,
            AtomoContextWindows, AtomoMotionStrength, AtomoPromptTravel]
