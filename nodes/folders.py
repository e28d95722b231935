"""Model folders: ``models/motion_modules`` (ours) and ``models/ipadapter`` (shared with IPAdapter_plus).

Paths a user set in ``extra_model_paths.yaml`` are kept: we only add our default folder to an existing entry.
Files in AnimateDiff-Evolved's ``models/animatediff_models`` are listed too, so its users find theirs.
"""

from __future__ import annotations

import os

import folder_paths

from ..atomo_core.checkpoint_io import SUPPORTED_EXTENSIONS

MOTION_MODULES = "motion_modules"
IPADAPTER = "ipadapter"
NO_MOTION_MODULES = "(no motion module found: put one in models/motion_modules)"


def _register(name: str, default_dirs: list[str]) -> None:
    extensions = set(SUPPORTED_EXTENSIONS)
    if name in folder_paths.folder_names_and_paths:
        paths, existing = folder_paths.folder_names_and_paths[name]
        for directory in default_dirs:
            if directory not in paths:
                paths.append(directory)
        folder_paths.folder_names_and_paths[name] = (paths, set(existing) | extensions)
    else:
        folder_paths.folder_names_and_paths[name] = (list(default_dirs), extensions)


def register_model_folders() -> None:
    models_dir = folder_paths.models_dir
    motion_dirs = [os.path.join(models_dir, MOTION_MODULES)]
    legacy = os.path.join(models_dir, "animatediff_models")
    if os.path.isdir(legacy):
        motion_dirs.append(legacy)
    _register(MOTION_MODULES, motion_dirs)
    _register(IPADAPTER, [os.path.join(models_dir, IPADAPTER)])


def motion_module_names() -> list[str]:
    return folder_paths.get_filename_list(MOTION_MODULES)


def motion_module_path(name: str) -> str:
    if name == NO_MOTION_MODULES:
        raise FileNotFoundError(
            "No motion module is installed. Download one (e.g. mm_sd_v15_v2.ckpt for text to video, pia.ckpt for "
            f"image to video) into {', '.join(folder_paths.get_folder_paths(MOTION_MODULES))}, press R to refresh "
            "the node lists and pick it here."
        )
    path = folder_paths.get_full_path(MOTION_MODULES, name)
    if path is None:
        raise FileNotFoundError(
            f"Motion module '{name}' is not in any motion_modules folder ({', '.join(folder_paths.get_folder_paths(MOTION_MODULES))}). "
            "Put the file there and press R to refresh the node lists."
        )
    return path
