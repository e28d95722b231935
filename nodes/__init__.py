"""ComfyUI nodes of AtomoVideo: thin V3 nodes over ``atomo_core``, plus the host adapter."""

from __future__ import annotations


def node_list() -> list:
    from .folders import register_model_folders
    from .load_motion_module import AtomoLoadMotionModule

    register_model_folders()
    return [AtomoLoadMotionModule]
