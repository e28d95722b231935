"""The trainer's configuration: a frozen dataclass tree read from YAML plus ``--set key=value`` overrides.

``load_config(path, overrides)`` reads the YAML file, applies the overrides (dotted keys, values parsed with YAML's
scalar rules: ``--set steps=100 --set data.stride=[2,6] --set gradient_checkpointing=true``), checks every key and
type, and returns a validated ``TrainConfig``. Unknown keys are an error that lists the known ones and suggests the
closest. Every key carries a one-line doc (``config_keys()``); ``tools/train_configs/example.yaml`` shows them all.

``config_hash(config)`` is a stable hash of the settings that change what a run computes (not ``output_dir``,
``save_every``, logging, validation...), stored in each checkpoint so a resume with a changed config can be noticed;
``diff_configs(old, new)`` says which keys changed. Relative paths are relative to the working directory.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import typing
from dataclasses import dataclass, field
from types import UnionType
from typing import Any

from ..errors import AtomoError


class ConfigError(AtomoError):
    """A training config is unreadable, has an unknown key, a value of the wrong type or out of range."""


PAPER_GIVEN = 8  # AtomoVideo's frame prediction: 8 given frames, 16 new


def _key(default: Any, doc: str) -> Any:
    """A config field with its one-line doc; a dataclass default becomes a default factory."""
    if dataclasses.is_dataclass(default) and isinstance(default, type):
        return field(default_factory=default, metadata={"doc": doc})
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class DataConfig:
    videos: str = _key("", "folder of training videos (searched recursively; mp4, webm, mov, mkv, gif)")
    captions: str = _key("", "captions: a .csv (file,caption) or .jsonl index, or a folder of <name>.txt; "
                             "empty: name.txt beside each video")
    stride: int | tuple[int, int] = _key(4, "frame stride when sampling clips: a fixed int, or [lo, hi] drawn "
                                            "uniformly per clip")
    workers: int = _key(2, "data-loader worker processes per GPU (0: load in the training process)")
    worker_timeout: float = _key(600.0, "seconds a data-loader worker may take to deliver a batch before the run "
                                        "stops with an error instead of waiting (0: wait forever)")
    cache_latents: bool = _key(False, "encode each clip with the VAE once and reuse the latents (fixed clips)")


@dataclass(frozen=True)
class InitConfig:
    motion_module: str = _key("", "motion-module file to start the temporal layers from (AnimateDiff, AtomoVideo); "
                                  "empty: fresh layers")
    pia: str = _key("", "PIA file to start from: its motion module and the image channels of conv_in")
    image_channels: str = _key("zero", "how conv_in's five image channels start: zero (the module is the identity) "
                                       "| copy (the image latent's four take the base's latent weights, mask zero)")
    temporal_out: str = _key("zero", "how the temporal layers' output projections start: zero (the identity) | "
                                     "small (random, 1e-2 of the default init: every layer has a gradient at once)")


@dataclass(frozen=True)
class ConditioningConfig:
    max_given: int | str = _key("auto", "given frames per example are drawn from 1..max_given (1 = image-to-video); "
                                        "auto: the paper's 8 for frame prediction, at most frames - 1")
    drop_text: float = _key(0.1, "probability of training with the empty prompt (text dropout)")
    drop_image: float = _key(0.1, "probability of training without the image channels (image dropout)")
    drop_both: float = _key(0.05, "probability of dropping text and image together")
    loss_on_given: bool = _key(False, "also count the given frames in the loss")
    image_layout: str = _key("every_frame", "what the frames that are not given carry in the image channels: "
                                            "every_frame (the nearest given frame's latent; the toy study's pick) | "
                                            "given_only (zeros)")


@dataclass(frozen=True)
class TrainPartsConfig:
    image_proj: bool = _key(False, "also train the IP-Adapter image projection (needs ip_adapter.file)")


@dataclass(frozen=True)
class IPAdapterConfig:
    file: str = _key("", "IP-Adapter (SD-1.5) file for image semantics; empty: none; 'tiny' with the tiny base (tests)")
    clip_vision: str = _key("", "CLIP vision ViT-H model the IP-Adapter reads (needed with ip_adapter.file)")
    scale: float = _key(1.0, "IP-Adapter attention scale")


@dataclass(frozen=True)
class ValidationConfig:
    images: tuple[str, ...] = _key((), "first-frame images to animate at each validation (list of paths)")
    prompts: tuple[str, ...] = _key((), "prompts for the images: none, one for all, or one per image")
    steps: int = _key(20, "sampling steps of a validation clip")
    cfg: float = _key(7.5, "text guidance scale of a validation clip")
    image_cfg: float = _key(1.0, "image guidance scale of a validation clip")
    probe_clips: int = _key(4, "training clips the learning probe measures at every validation (0: no probe)")


@dataclass(frozen=True)
class DistributedConfig:
    backend: str = _key("auto", "torch.distributed backend: auto (nccl on CUDA, else gloo) | nccl | gloo")
    timeout_minutes: float = _key(60.0, "collective timeout; long, because the first batches and saves are slow")


@dataclass(frozen=True)
class TrainConfig:
    base_model: str = _key("", "SD-1.5 checkpoint file, diffusers folder, 'tiny' (a tiny random base for tests) "
                               "or 'random-sd15' (full size, random weights: benchmarks)")
    output_dir: str = _key("", "run folder: checkpoints, exported motion modules, logs, validation clips")
    steps: int = _key(10000, "optimiser steps in total (the run stops there; resume continues towards it)")
    batch_size: int = _key(1, "videos per GPU per micro-batch")
    frames: int = _key(16, "frames per training clip")
    max_frames: int | str = _key("auto", "position-encoding length written into the exported module (>= frames); "
                                         "auto: 32 (AnimateDiff v2/v3's), or frames if longer")
    resolution: int = _key(512, "side of the square training clips in pixels (a multiple of 8)")
    learning_rate: float = _key(1e-4, "peak AdamW learning rate")
    weight_decay: float = _key(1e-2, "AdamW weight decay")
    adam_betas: tuple[float, float] = _key((0.9, 0.999), "AdamW betas [beta1, beta2]")
    adam_epsilon: float = _key(1e-8, "AdamW epsilon")
    warmup_steps: int = _key(0, "linear learning-rate warm-up from 0 over this many steps")
    lr_schedule: str = _key("constant", "after warm-up: constant | cosine (to 0 at steps) | linear (to 0 at steps)")
    max_grad_norm: float = _key(1.0, "clip the gradient norm to this (0: no clipping)")
    grad_accumulation: int = _key(1, "micro-batches per optimiser step")
    save_every: int = _key(500, "steps between checkpoints (a kill loses at most this many steps)")
    keep_checkpoints: int = _key(3, "how many of the newest checkpoints to keep")
    validate_every: int = _key(1000, "steps between validation clips (0: never)")
    log_every: int = _key(10, "steps between log lines")
    seed: int = _key(0, "seed of every random choice (data order, noise, dropout); 0 <= seed < 2**32")
    precision: str = _key("bf16", "compute precision of the frozen base and autocast: fp32 | fp16 | bf16 "
                                  "(trainable weights stay fp32)")
    gradient_checkpointing: bool = _key(True, "recompute UNet activations in the backward pass to save memory")
    prediction_type: str = _key("v_prediction", "what the model predicts: v_prediction | epsilon")
    beta_schedule: str = _key("scaled_linear", "noise schedule: scaled_linear (SD-1.5) | linear (AnimateDiff, PIA)")
    zero_terminal_snr: bool = _key(True, "rescale the schedule so the last step is pure noise (needs v_prediction)")
    timestep_sampling: str = _key("uniform", "training timesteps: uniform | high_noise (t = (1 - u^3) T, as "
                                             "T2I-Adapter: more of the steps where layout and motion are decided)")
    temporal_text: str = _key("film", "how the caption reaches the temporal layers: film (the temporal convolutions "
                                      "also read it, our addition: the toy study's pick) | none (only through the "
                                      "image layers' features, as the paper's layers)")
    data: DataConfig = _key(DataConfig, "the training videos")
    init: InitConfig = _key(InitConfig, "weights to start from")
    conditioning: ConditioningConfig = _key(ConditioningConfig, "given frames and condition dropout")
    train: TrainPartsConfig = _key(TrainPartsConfig, "optional extra trainable parts")
    ip_adapter: IPAdapterConfig = _key(IPAdapterConfig, "optional IP-Adapter")
    validation: ValidationConfig = _key(ValidationConfig, "validation clips")
    distributed: DistributedConfig = _key(DistributedConfig, "multi-GPU settings (torchrun)")

    def to_dict(self) -> dict:
        """A plain nested dict (lists for tuples) that YAML, JSON and ``torch.load(weights_only=True)`` accept."""
        return _plain(self)

    def validate(self, require_paths: bool = True) -> TrainConfig:
        """Raise ``ConfigError`` listing every out-of-range value (each line names the key and the fix);
        ``require_paths=False`` lets the base, data and output paths be empty (a memory estimate needs none)."""
        found = problems(self, require_paths)
        if found:
            raise ConfigError("Invalid training config:\n  " + "\n  ".join(found))
        return self

    def module_frames(self) -> int:
        """``max_frames`` as a number: ``auto`` is 32 (AnimateDiff v2/v3's encoding length), or ``frames`` if more."""
        return max(32, self.frames) if self.max_frames == "auto" else int(self.max_frames)

    def max_given(self) -> int:
        """``conditioning.max_given`` as a number: ``auto`` is ``min(PAPER_GIVEN, frames - 1)``."""
        value = self.conditioning.max_given
        return min(PAPER_GIVEN, max(1, self.frames - 1)) if value == "auto" else int(value)

    def objective_config(self):
        """The ``ObjectiveConfig`` of ``objective.py`` these settings describe."""
        from .objective import ObjectiveConfig

        c = self.conditioning
        return ObjectiveConfig(self.prediction_type, self.beta_schedule, self.zero_terminal_snr, self.max_given(),
                               c.drop_text, c.drop_image, c.drop_both, c.loss_on_given, c.image_layout,
                               self.timestep_sampling)


def _one_of(key: str, value: str, allowed: tuple[str, ...]) -> list[str]:
    return [] if value in allowed else [f"{key} must be {' | '.join(allowed)}, got {value!r}"]


def _at_least(key: str, value: float, low: float, fix: str = "") -> list[str]:
    return [] if value >= low else [f"{key} must be at least {low}, got {value}{fix}"]


def problems(c: TrainConfig, require_paths: bool = True) -> list[str]:
    """Every out-of-range value of ``c``, one message each, naming the key and the fix."""
    out = []
    for key, value, fix in (("base_model", c.base_model, "an SD-1.5 checkpoint file, a diffusers folder or 'tiny'"),
                            ("output_dir", c.output_dir, "the folder for checkpoints and exports"),
                            ("data.videos", c.data.videos, "the folder of training videos")):
        if require_paths and not value.strip():
            out.append(f"{key} is empty: set it to {fix} (in the YAML or with --set {key}=...)")
    out += _at_least("steps", c.steps, 1) + _at_least("batch_size", c.batch_size, 1)
    out += _at_least("frames", c.frames, 2, " (a video needs at least 2 frames)")
    if isinstance(c.max_frames, str) and c.max_frames != "auto":
        out.append(f"max_frames must be auto or a number, got {c.max_frames!r}")
    elif c.module_frames() < c.frames:
        out.append(f"max_frames ({c.max_frames}) must be at least frames ({c.frames}): set max_frames: auto (or "
                   f"{max(32, c.frames)}); the exported module's "
                   "position encoding has to cover the clips it was trained on")
    if c.resolution < 8 or c.resolution % 8:
        out.append(f"resolution must be a positive multiple of 8 (the VAE's factor), got {c.resolution}; "
                   f"try {max(8, round(c.resolution / 8) * 8)}")
    if c.learning_rate <= 0:
        out.append(f"learning_rate must be positive, got {c.learning_rate}")
    out += _at_least("weight_decay", c.weight_decay, 0)
    for i, beta in enumerate(c.adam_betas):
        if not 0 <= beta < 1:
            out.append(f"adam_betas[{i}] must be in [0, 1), got {beta}")
    if c.adam_epsilon <= 0:
        out.append(f"adam_epsilon must be positive, got {c.adam_epsilon}")
    out += _at_least("warmup_steps", c.warmup_steps, 0) + _one_of("lr_schedule", c.lr_schedule,
                                                                  ("constant", "cosine", "linear"))
    out += _at_least("max_grad_norm", c.max_grad_norm, 0, " (0 turns clipping off)")
    out += _at_least("grad_accumulation", c.grad_accumulation, 1)
    out += _at_least("save_every", c.save_every, 1, " (save_every must be > 0: checkpoints are how a run resumes)")
    out += _at_least("keep_checkpoints", c.keep_checkpoints, 1, " (the newest checkpoint is always kept)")
    out += _at_least("validate_every", c.validate_every, 0, " (0 turns validation off)")
    out += _at_least("log_every", c.log_every, 1)
    if not 0 <= c.seed < 2**32:
        out.append(f"seed must be in 0 .. 2**32 - 1 (NumPy's range), got {c.seed}")
    out += _one_of("precision", c.precision, ("fp32", "fp16", "bf16"))
    out += _one_of("prediction_type", c.prediction_type, ("v_prediction", "epsilon"))
    out += _one_of("beta_schedule", c.beta_schedule, ("scaled_linear", "linear"))
    out += _one_of("timestep_sampling", c.timestep_sampling, ("uniform", "high_noise"))
    out += _one_of("temporal_text", c.temporal_text, ("film", "none"))
    out += _one_of("conditioning.image_layout", c.conditioning.image_layout, ("given_only", "every_frame"))
    out += _one_of("init.image_channels", c.init.image_channels, ("zero", "copy"))
    out += _one_of("init.temporal_out", c.init.temporal_out, ("zero", "small"))
    if c.zero_terminal_snr and c.prediction_type == "epsilon":
        out.append("zero_terminal_snr: true needs prediction_type: v_prediction (at the pure-noise step an epsilon "
                   "model cannot recover the image); set zero_terminal_snr: false for epsilon")
    stride = c.data.stride if isinstance(c.data.stride, tuple) else (c.data.stride, c.data.stride)
    if not 1 <= stride[0] <= stride[1]:
        out.append(f"data.stride must be an int >= 1 or [lo, hi] with 1 <= lo <= hi, got {list(stride)}")
    out += _at_least("data.workers", c.data.workers, 0) + _at_least("data.worker_timeout", c.data.worker_timeout, 0)
    if c.init.motion_module and c.init.pia:
        out.append("init.motion_module and init.pia are both set: set one (a PIA file already holds a motion module)")
    k = c.conditioning
    if isinstance(k.max_given, str) and k.max_given != "auto":
        out.append(f"conditioning.max_given must be auto or a number, got {k.max_given!r}; auto picks "
                   f"{min(PAPER_GIVEN, max(1, c.frames - 1))} for {c.frames} frames")
    elif c.frames >= 2 and isinstance(k.max_given, int) and not 1 <= k.max_given < c.frames:
        out.append(f"conditioning.max_given must be in 1 .. frames - 1 = {c.frames - 1} (at least one frame must be "
                   f"generated), got {k.max_given}: set conditioning.max_given: auto (or {min(k.max_given, c.frames - 1) or 1})")
    rates = {"drop_text": k.drop_text, "drop_image": k.drop_image, "drop_both": k.drop_both}
    for name, rate in rates.items():
        if not 0 <= rate <= 1:
            out.append(f"conditioning.{name} is a probability: it must be in [0, 1], got {rate}")
    if sum(rates.values()) > 1 + 1e-9:
        out.append(f"conditioning.drop_text + drop_image + drop_both must be at most 1 (they are exclusive "
                   f"outcomes of one draw), got {sum(rates.values()):.4g}")
    if c.ip_adapter.file and c.ip_adapter.file != "tiny" and not c.ip_adapter.clip_vision:
        out.append("ip_adapter.clip_vision is empty but ip_adapter.file is set: give the CLIP vision ViT-H model")
    if c.train.image_proj and not c.ip_adapter.file:
        out.append("train.image_proj: true needs ip_adapter.file (the projection trained is the adapter's)")
    v = c.validation
    if len(v.prompts) > 1 and len(v.prompts) != len(v.images):
        out.append(f"validation.prompts has {len(v.prompts)} prompts for {len(v.images)} images: give none, one "
                   "for all, or one per image")
    out += _at_least("validation.steps", v.steps, 1) + _at_least("validation.probe_clips", v.probe_clips, 0)
    out += _one_of("distributed.backend", c.distributed.backend, ("auto", "nccl", "gloo"))
    if c.distributed.timeout_minutes <= 0:
        out.append(f"distributed.timeout_minutes must be positive, got {c.distributed.timeout_minutes}")
    return out


# Keys that do not change what a run computes: a resume may change them freely (``config_hash`` leaves them out).
RESUME_SAFE_KEYS = ("output_dir", "save_every", "keep_checkpoints", "validate_every", "log_every",
                    "gradient_checkpointing", "validation", "data.workers",
                    "data.worker_timeout", "distributed")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


def config_keys(cls: type = TrainConfig, prefix: str = "") -> dict[str, str]:
    """Every leaf key as a dotted path -> its one-line doc, in declaration order."""
    out = {}
    for f in dataclasses.fields(cls):
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            out.update(config_keys(hint, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = f.metadata["doc"]
    return out


def _suggest(path: str) -> str:
    """' (did you mean 'data.videos'?)' for a misspelt or misplaced key, else ''."""
    known = list(config_keys())
    leaf = path.rsplit(".", 1)[-1]
    same_leaf = [k for k in known if k.rsplit(".", 1)[-1] == leaf]
    close = same_leaf or difflib.get_close_matches(path, known, n=1, cutoff=0.6)
    if not close:
        leaves = {k.rsplit(".", 1)[-1]: k for k in known}
        close = [leaves[m] for m in difflib.get_close_matches(leaf, list(leaves), n=1, cutoff=0.7)]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _number(value: Any, kind: type, key: str) -> int | float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if kind is int:
        if float(value) != int(value):
            raise ConfigError(f"{key} must be a whole number, got {value!r}")
        return int(value)
    return float(value)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` as the field's declared type, or ``ConfigError`` naming the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (UnionType, typing.Union):
        for option in args:
            try:
                return _coerce(value, option, key)
            except ConfigError:
                pass
        kinds = [f"a list of {len(typing.get_args(a))} values" if typing.get_origin(a) is tuple else a.__name__
                 for a in args]
        raise ConfigError(f"{key} must be {' or '.join(kinds)}, got {value!r}")
    if origin is tuple:
        if value is None:
            value = []
        if isinstance(value, (str, int, float)) and args[-1] is Ellipsis:
            value = [value]  # one prompt or one image for a list key
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        if args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        return _number(value, hint, key)
    if hint is str:
        if value is None:
            return ""
        if not isinstance(value, str):
            raise ConfigError(f"{key} must be a string, got {value!r} (quote it in YAML)")
        return value
    raise TypeError(f"config field {key} has an unsupported type {hint!r}")


def _build(cls: type, data: Any, prefix: str, errors: list[str]) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        errors.append(f"{prefix.rstrip('.') or 'the config'} must be a mapping of keys, got {data!r}")
        return cls()
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in names:
            section = f" under {prefix.rstrip('.')}" if prefix else ""
            errors.append(f"unknown config key '{key}'{_suggest(key)}; known keys{section}: {', '.join(names)}")
            continue
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            values[name] = _build(hint, value, f"{key}.", errors)
            continue
        if isinstance(value, dict):
            subkeys = ", ".join(f"'{key}.{sub}'" for sub in value)
            errors.append(f"'{key}' is a value, not a section: unknown config key {subkeys}")
            continue
        try:
            values[name] = _coerce(value, hint, key)
        except ConfigError as error:
            errors.append(str(error))
    return cls(**values)


def config_from_dict(data: dict, require_paths: bool = True) -> TrainConfig:
    """A ``TrainConfig`` from a nested dict (a YAML file's content or a checkpoint's ``config``), validated."""
    errors: list[str] = []
    config = _build(TrainConfig, data, "", errors)
    if errors:
        raise ConfigError("Invalid training config:\n  " + "\n  ".join(errors))
    return config.validate(require_paths)


def _set_dotted(data: dict, key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section")
        node = child
    if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
        for sub, v in value.items():
            _set_dotted(node, f"{parts[-1]}.{sub}", v)
    else:
        node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"data.stride=[2,6]"`` -> ``("data.stride", [2, 6])`` (the value read with YAML's scalar rules)."""
    import yaml

    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set expects key=value (e.g. --set data.videos=/path/to/videos), got {text!r}")
    try:
        return key, yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {key}: cannot read the value {raw!r} as YAML ({error})") from None


def load_config(path: str | None, overrides: list[str] | tuple[str, ...] = (), require_data: bool = True) -> TrainConfig:
    """The YAML file at ``path`` (or only the defaults when ``None``) with the ``key=value`` overrides applied;
    ``require_data=False`` accepts empty base, data and output paths (for ``--estimate``)."""
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading a training config needs PyYAML: pip install pyyaml") from None
    data: Any = {}
    if path is not None:
        try:
            with open(path, encoding="utf-8") as handle:
                data = yaml.safe_load(handle) or {}
        except OSError as error:
            raise ConfigError(f"cannot read the config file '{path}': {error.strerror or error}") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"'{path}' is not valid YAML: {error}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"'{path}' must hold a mapping of config keys, got {type(data).__name__}")
    for text in overrides:
        _set_dotted(data, *parse_override(text))
    return config_from_dict(data, require_data)


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """``{"data": {"videos": v}}`` -> ``{"data.videos": v}``."""
    out = {}
    for name, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{name}."))
        else:
            out[f"{prefix}{name}"] = value
    return out


def _excluded(key: str, exclude: tuple[str, ...]) -> bool:
    return any(key == e or key.startswith(e + ".") for e in exclude)


def config_hash(config: TrainConfig | dict, exclude: tuple[str, ...] = RESUME_SAFE_KEYS) -> str:
    """16 hex digits of SHA-256 over the settings (key order does not matter; ``exclude`` keys are left out)."""
    data = config.to_dict() if isinstance(config, TrainConfig) else _plain(config)
    kept = {k: v for k, v in flatten(data).items() if not _excluded(k, exclude)}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def diff_configs(old: TrainConfig | dict, new: TrainConfig | dict,
                 exclude: tuple[str, ...] = RESUME_SAFE_KEYS) -> list[str]:
    """``["learning_rate: 0.0001 -> 0.0002", ...]`` for every key (outside ``exclude``) whose value differs."""
    a = flatten(old.to_dict() if isinstance(old, TrainConfig) else _plain(old))
    b = flatten(new.to_dict() if isinstance(new, TrainConfig) else _plain(new))
    keys = [k for k in dict.fromkeys([*a, *b]) if not _excluded(k, exclude)]
    return [f"{k}: {a.get(k, '(unset)')!r} -> {b.get(k, '(unset)')!r}" for k in keys if a.get(k) != b.get(k)]
