"""The AtomoVideo motion-module file format (version 1).

A ``.safetensors`` file. Tensors, all optional except as ``parts`` says:

- temporal attention under AnimateDiff's keys (``down_blocks.0.motion_modules.0.temporal_transformer...``),
  so an AnimateDiff module's weights initialise it unchanged;
- temporal convolutions (``down_blocks.0.temporal_convs.0.norm.weight``, ``.conv.weight [C, C, 3]`` ...);
- ``conv_in.weight [320, 9, 3, 3]``: the 9-channel input convolution (channels 4..8 are used);
- IP-Adapter image-projection weights under ``image_proj.*`` and ``ip_adapter.*`` (IP-Adapter's own keys).

The ``__metadata__`` header (all values are strings):

==========================  =========================================================================
``format``                  ``atomovideo.motion_module``
``format_version``          ``1``
``prediction_type``         ``v_prediction`` or ``epsilon``
``beta_schedule``           ``scaled_linear`` (SD-1.5's) or ``linear`` (AnimateDiff's), diffusers names
``zero_terminal_snr``       ``true`` or ``false``
``max_frames``              frames per clip the temporal attention was trained with, or ``none``
``parts``                   comma list of ``temporal_attention``, ``temporal_conv``, ``conv_in``, ``image_proj``
``resnet_norm``             ``per_frame`` (default) or ``across_frames``
``heads``                   temporal attention heads (default ``8``)
``image_layout``            with ``conv_in``: ``given_only`` (default: frames that are not given carry zeros
                            in the image channels) or ``every_frame`` (they carry the nearest given frame's
                            latent, mask 0); see ``conditioning.atomovideo_concat``
``temporal_text``           ``none`` (default: the paper's layers) or ``film``: the temporal convolutions
                            also read the caption (``down_blocks.0.temporal_convs.0.text_film.weight
                            [2C, 768]``; see ``temporal_conv.py``)
==========================  =========================================================================
"""

from __future__ import annotations

import torch

from .checkpoint_io import write_safetensors
from .conditioning import IMAGE_LAYOUTS
from .errors import MotionModuleFormatError
from .layout import SD15_WIDTHS
from .motion_module import MotionModule, MotionModuleConfig

FORMAT_NAME = "atomovideo.motion_module"
FORMAT_VERSION = 1
PARTS = ("temporal_attention", "temporal_conv", "conv_in", "image_proj")
_TRUE = ("true", "1", "yes")
_FALSE = ("false", "0", "no")


def is_atomovideo(metadata: dict[str, str]) -> bool:
    return metadata.get("format") == FORMAT_NAME


def _flag(metadata: dict[str, str], key: str, name: str, default: bool) -> bool:
    value = metadata.get(key)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise MotionModuleFormatError(f"'{name}': metadata '{key}' must be true or false, got {value!r}.")


def config_from_metadata(metadata: dict[str, str], state_dict: dict[str, torch.Tensor], name: str) -> MotionModuleConfig:
    """Read and check an AtomoVideo header against the tensors it describes."""
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError as exc:
        raise MotionModuleFormatError(f"'{name}': format_version {metadata['format_version']!r} is not a number.") from exc
    if version > FORMAT_VERSION:
        raise MotionModuleFormatError(
            f"'{name}' is AtomoVideo format version {version}; this ComfyUI-AtomoVideo reads up to version "
            f"{FORMAT_VERSION}. Update ComfyUI-AtomoVideo."
        )
    if version < 1:
        raise MotionModuleFormatError(f"'{name}': AtomoVideo metadata has no valid format_version.")
    parts = {p.strip() for p in metadata.get("parts", "").split(",") if p.strip()}
    unknown = parts - set(PARTS)
    if unknown or not parts:
        raise MotionModuleFormatError(
            f"'{name}': metadata 'parts' must list some of {', '.join(PARTS)}; got {metadata.get('parts')!r}."
        )
    present = {
        "temporal_attention": any(".motion_modules." in k for k in state_dict),
        "temporal_conv": any(".temporal_convs." in k for k in state_dict),
        "conv_in": "conv_in.weight" in state_dict,
        "image_proj": any(k.startswith(("image_proj.", "ip_adapter.")) for k in state_dict),
    }
    for part in PARTS:
        if (part in parts) != present[part]:
            said = "lists" if part in parts else "does not list"
            has = "has" if present[part] else "has no"
            raise MotionModuleFormatError(
                f"'{name}': the metadata {said} '{part}' but the file {has} such tensors. The file was edited or "
                "written incompletely; export it again from the trainer."
            )
    max_frames_text = metadata.get("max_frames", "none").lower()
    try:
        max_frames = None if max_frames_text in ("none", "") else int(max_frames_text)
    except ValueError as exc:
        raise MotionModuleFormatError(f"'{name}': max_frames {max_frames_text!r} is not a number.") from exc
    resnet_norm = metadata.get("resnet_norm", "per_frame")
    if resnet_norm not in ("per_frame", "across_frames"):
        raise MotionModuleFormatError(f"'{name}': resnet_norm must be per_frame or across_frames, got {resnet_norm!r}.")
    image_layout = metadata.get("image_layout", "given_only")
    if image_layout not in IMAGE_LAYOUTS:
        raise MotionModuleFormatError(
            f"'{name}': image_layout must be one of {', '.join(IMAGE_LAYOUTS)}, got {image_layout!r}. A newer trainer "
            "may have written it: update ComfyUI-AtomoVideo.")
    temporal_text_dim = _temporal_text_dim(metadata, state_dict, name)
    try:
        return MotionModuleConfig(
            family="atomovideo",
            temporal_attention="temporal_attention" in parts,
            temporal_conv="temporal_conv" in parts,
            mid_block=any(k.startswith("mid_block.motion_modules.") for k in state_dict),
            position_encoding=True,
            max_frames=max_frames,
            heads=int(metadata.get("heads", "8")),
            resnet_norm_across_frames=resnet_norm == "across_frames",
            beta_schedule=metadata.get("beta_schedule", "scaled_linear"),
            prediction_type=metadata.get("prediction_type", "v_prediction"),
            zero_terminal_snr=_flag(metadata, "zero_terminal_snr", name, True),
            image_conditioning="atomovideo" if "conv_in" in parts else None,
            image_layout=image_layout,
            temporal_text_dim=temporal_text_dim,
            widths=widths_of(metadata, name),
        )
    except ValueError as exc:
        raise MotionModuleFormatError(f"'{name}': {exc}") from exc


TEMPORAL_TEXT = ("none", "film")


def _temporal_text_dim(metadata: dict[str, str], state_dict: dict[str, torch.Tensor], name: str) -> int | None:
    """The caption width the temporal convolutions' FiLM reads (``None``: they read none), checked against the
    tensors."""
    said = metadata.get("temporal_text", "none")
    if said not in TEMPORAL_TEXT:
        raise MotionModuleFormatError(
            f"'{name}': temporal_text must be one of {', '.join(TEMPORAL_TEXT)}, got {said!r}. A newer trainer may "
            "have written it: update ComfyUI-AtomoVideo.")
    film = [v for k, v in state_dict.items() if ".temporal_convs." in k and k.endswith(".text_film.weight")]
    if (said == "film") != bool(film):
        raise MotionModuleFormatError(
            f"'{name}': the metadata says temporal_text {said!r} but the file has "
            f"{'' if film else 'no '}text_film tensors. The file was edited or written incompletely; export it again "
            "from the trainer.")
    return int(film[0].shape[1]) if film else None


def metadata_for(module: MotionModule) -> dict[str, str]:
    config = module.config
    parts = [p for p, on in (
        ("temporal_attention", config.temporal_attention),
        ("temporal_conv", config.temporal_conv),
        ("conv_in", module.conv_in_weight is not None),
        ("image_proj", bool(module.ip_adapter_weights)),
    ) if on]
    return {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "prediction_type": config.prediction_type,
        "beta_schedule": config.beta_schedule,
        "zero_terminal_snr": "true" if config.zero_terminal_snr else "false",
        "max_frames": "none" if config.max_frames is None else str(config.max_frames),
        "parts": ",".join(parts),
        "resnet_norm": "across_frames" if config.resnet_norm_across_frames else "per_frame",
        "heads": str(config.heads),
        **({"image_layout": config.image_layout} if module.conv_in_weight is not None else {}),
        **({"temporal_text": "film"} if config.temporal_text_dim is not None else {}),
        **({} if tuple(config.widths) == SD15_WIDTHS else {"widths": ",".join(map(str, config.widths))}),
    }


def widths_of(metadata: dict[str, str], name: str) -> tuple[int, ...]:
    """The UNet level widths a file declares (SD-1.5's when it says nothing)."""
    text = metadata.get("widths")
    if not text:
        return SD15_WIDTHS
    try:
        widths = tuple(int(w) for w in text.split(","))
    except ValueError as exc:
        raise MotionModuleFormatError(f"'{name}': widths {text!r} is not a list of 4 numbers.") from exc
    if len(widths) != 4:
        raise MotionModuleFormatError(f"'{name}': widths {text!r} is not a list of 4 numbers.")
    return widths


def save_atomovideo(module: MotionModule, path: str, dtype: torch.dtype | None = None,
                    extra_metadata: dict[str, str] | None = None) -> None:
    """Write ``module`` (layers, ``conv_in``, IP-Adapter weights) as an AtomoVideo ``.safetensors`` file;
    ``extra_metadata`` (e.g. the trainer's config and step) joins the header under its own keys."""
    tensors = dict(module.state_dict())
    tensors.update(module.extra_tensors())
    if dtype is not None:
        tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    metadata = metadata_for(module)
    clash = sorted(set(extra_metadata or {}) & set(metadata))
    if clash:
        raise ValueError(f"extra_metadata may not replace the format's own keys {clash}")
    write_safetensors(path, tensors, {**metadata, **(extra_metadata or {})})


def new_atomovideo_module(
    max_frames: int | None = 24,
    temporal_attention: bool = True,
    temporal_conv: bool = True,
    mid_block: bool = True,
    conv_in: bool = True,
    prediction_type: str = "v_prediction",
    beta_schedule: str = "scaled_linear",
    zero_terminal_snr: bool = True,
    init_from: MotionModule | None = None,
    name: str = "new AtomoVideo module",
    widths: tuple[int, ...] = SD15_WIDTHS,
    image_layout: str = "given_only",
    temporal_text_dim: int | None = None,
) -> MotionModule:
    """A freshly initialised AtomoVideo module: it leaves the image model's output unchanged.

    Temporal attention ``proj_out`` is zero, temporal convolutions are zero residuals and the extra
    ``conv_in`` channels are zero. ``init_from`` copies the temporal attention of an AnimateDiff-family
    module (same key names), so training can start from a public motion prior.
    """
    if init_from is not None:
        mid_block = init_from.config.mid_block
    config = MotionModuleConfig(
        family="atomovideo",
        temporal_attention=temporal_attention,
        temporal_conv=temporal_conv,
        mid_block=mid_block,
        max_frames=max_frames,
        beta_schedule=beta_schedule,
        prediction_type=prediction_type,
        zero_terminal_snr=zero_terminal_snr,
        image_conditioning="atomovideo" if conv_in else None,
        image_layout=image_layout,
        temporal_text_dim=temporal_text_dim,
        widths=tuple(widths),
    )
    module = MotionModule(config, name)
    if init_from is not None and temporal_attention:
        source = {k: v for k, v in init_from.state_dict().items() if ".motion_modules." in k}
        missing, _ = module.load_state_dict(source, strict=False)
        missing = [k for k in missing if ".motion_modules." in k]
        if missing:
            raise MotionModuleFormatError(
                f"'{init_from.name}' lacks {len(missing)} temporal-attention weights (e.g. {missing[0]})."
            )
    if conv_in:
        module.conv_in_weight = torch.zeros(widths[0], 9, 3, 3)
    return module
