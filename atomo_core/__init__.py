"""ComfyUI-AtomoVideo core: temporal layers, motion-module formats and video-diffusion maths.

Pure torch + einops + safetensors. Nothing here imports ComfyUI; ``nodes/`` is the only door to the host.
"""

from .errors import AtomoError, ConditioningError, FrameLimitError, MotionModuleFormatError
from .formats import FAMILY_LABELS, build_motion_module, detect_config, load_motion_module
from .motion_module import MotionModule, MotionModuleConfig
from .temporal_attention import TemporalAttentionLayer, TemporalLayer
from .temporal_conv import TemporalConvLayer

__all__ = [
    "AtomoError",
    "ConditioningError",
    "FAMILY_LABELS",
    "FrameLimitError",
    "MotionModule",
    "MotionModuleConfig",
    "MotionModuleFormatError",
    "TemporalAttentionLayer",
    "TemporalConvLayer",
    "TemporalLayer",
    "build_motion_module",
    "detect_config",
    "load_motion_module",
]
