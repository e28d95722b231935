"""Model folders: ``models/motion_modules`` and ``models/motion_lora`` (ours) and ``models/ipadapter`` (shared
with IPAdapter_plus).

Paths a user set in ``extra_model_paths.yaml`` are kept: we only add our default folder to an existing entry.
Files in AnimateDiff-Evolved's ``models/animatediff_models`` and ``models/animatediff_motion_lora`` (and any folder
it registered under ``animatediff_motion_lora``) are listed too, so its users find theirs.
"""

from __future__ import annotations

import os

import folder_paths

from ..atomo_core.checkpoint_io import SUPPORTED_EXTENSIONS

MOTION_MODULES = "motion_modules"
MOTION_LORA = "motion_lora"
EVOLVED_MOTION_LORA = "animatediff_motion_lora"  # AnimateDiff-Evolved's folder name
IPADAPTER = "ipadapter"
NO_MOTION_MODULES = "(no motion module found: put one in models/motion_modules)"
NO_MOTION_LORAS = "(no motion LoRA found: put one in models/motion_lora)"


def _register(name: str, default_dirs: list[str]) -> None:
    extensions = set(SUPPORTED_EXTENSIONS)
    if name in folder_paths.folder_names_and_paths:
        paths, existing = folder_paths.folder_names_and_paths[name]
        # copies: some ComfyUI builds (the pip-installable fork) hand out live views that assignment below empties,
        # so a second registration (custom nodes imported twice) would otherwise lose every folder
        paths, existing = list(paths), set(existing)
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
    lora_dirs = [os.path.join(models_dir, MOTION_LORA)]
    evolved = os.path.join(models_dir, EVOLVED_MOTION_LORA)
    if os.path.isdir(evolved):
        lora_dirs.append(evolved)
    _register(MOTION_LORA, lora_dirs)
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


def _lora_keys() -> list[str]:
    return [k for k in (MOTION_LORA, EVOLVED_MOTION_LORA) if k in folder_paths.folder_names_and_paths]


def motion_lora_names() -> list[str]:
    names: list[str] = []
    for key in _lora_keys():
        names += [n for n in folder_paths.get_filename_list(key) if n not in names]
    return names


def motion_lora_path(name: str) -> str:
    folders = [d for key in _lora_keys() for d in folder_paths.get_folder_paths(key)]
    if name == NO_MOTION_LORAS:
        raise FileNotFoundError(
            "No motion LoRA is installed. Download one (e.g. v2_lora_ZoomIn.ckpt or v2_lora_PanLeft.ckpt, for "
            f"AnimateDiff v2) into {', '.join(folders)}, press R to refresh the node lists and pick it here."
        )
    for key in _lora_keys():
        path = folder_paths.get_full_path(key, name)
        if path is not None:
            return path
    raise FileNotFoundError(
        f"Motion LoRA '{name}' is not in any motion LoRA folder ({', '.join(folders)}). Put the file there and "
        "press R to refresh the node lists."
    )
