"""The trainer's config: the example file, key names, overrides, validation messages and the resume hash."""

from __future__ import annotations

import dataclasses
import pathlib
import re

import pytest
import yaml

from atomo_core.training.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_hash,
    config_keys,
    diff_configs,
    flatten,
    load_config,
)

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "tools" / "train_configs" / "example.yaml"
MINIMAL = ["base_model=tiny", "output_dir=out", "data.videos=videos"]

REQUIRED = ["base_model", "data.videos", "data.captions", "output_dir", "steps", "batch_size", "frames",
            "resolution", "learning_rate", "save_every", "keep_checkpoints", "validate_every", "seed", "precision",
            "gradient_checkpointing", "init.motion_module", "init.pia", "distributed.backend"]
ASKED = ["data.stride", "data.workers", "data.cache_latents", "warmup_steps", "lr_schedule", "weight_decay",
         "adam_betas", "max_grad_norm", "grad_accumulation", "prediction_type", "beta_schedule", "zero_terminal_snr",
         "conditioning.max_given", "conditioning.drop_text", "conditioning.drop_image", "conditioning.drop_both",
         "conditioning.loss_on_given", "train.image_proj", "ip_adapter.file", "ip_adapter.clip_vision", "log_every",
         "validation.images", "validation.prompts", "validation.steps", "distributed.timeout_minutes", "max_frames"]


def _get(config, dotted):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def test_example_loads_validates_and_documents_every_key():
    config = load_config(str(EXAMPLE), [])
    assert config.base_model.endswith("v1-5-pruned-emaonly.safetensors") and config.data.videos == "data/videos"
    raw = yaml.safe_load(EXAMPLE.read_text())
    assert list(flatten(raw)) == list(config_keys()), "the example lists every key, in declaration order"
    lines = EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^\s*\w+:", line) and not line.rstrip().endswith(":"):  # a leaf key (not a section header)
            assert "#" in line or lines[i - 1].lstrip().startswith("#"), f"undocumented key line: {line!r}"
    # apart from the example paths, the example's values are the defaults
    defaults = flatten(TrainConfig().to_dict())
    differing = {k for k, v in flatten(config.to_dict()).items() if defaults[k] != v}
    assert differing == {"base_model", "output_dir", "data.videos"}


@pytest.mark.parametrize("key", REQUIRED + ASKED)
def test_every_issue_key_exists_at_its_dotted_path_with_a_doc(key):
    docs = config_keys()
    assert key in docs and len(docs[key]) > 10
    _get(TrainConfig(), key)


def test_tiny_base_and_defaults():
    config = load_config(None, MINIMAL)
    assert config.base_model == "tiny" and config.steps == 10000 and config.precision == "bf16"
    assert config.distributed.timeout_minutes == 60.0 and config.keep_checkpoints == 3
    assert dataclasses.is_dataclass(config) and config.objective_config().max_given == 8
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.steps = 5


def test_overrides_of_every_type_and_nesting(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("base_model: tiny\noutput_dir: out\ndata:\n  videos: v\n  workers: 4\nsteps: 10\n")
    config = load_config(str(path), [
        "steps=100", "learning_rate=1e-4", "max_grad_norm=0", "gradient_checkpointing=false", "data.stride=[2,6]",
        "adam_betas=[0.8, 0.95]", "validation.prompts=a bird flying", "validation.images=[a.png, b.png]",
        "conditioning.loss_on_given=yes", "init.pia=", "precision=fp16", "distributed.timeout_minutes=120",
        "data={cache_latents: true}",
    ])
    assert config.steps == 100 and isinstance(config.steps, int)
    assert config.learning_rate == 1e-4 and isinstance(config.learning_rate, float)  # YAML 1.1 reads 1e-4 as str
    assert config.max_grad_norm == 0.0 and isinstance(config.max_grad_norm, float)
    assert config.gradient_checkpointing is False and config.conditioning.loss_on_given is True
    assert config.data.stride == (2, 6) and config.adam_betas == (0.8, 0.95)
    assert config.validation.prompts == ("a bird flying",) and config.validation.images == ("a.png", "b.png")
    assert config.init.pia == "" and config.precision == "fp16" and config.distributed.timeout_minutes == 120.0
    assert config.data.workers == 4 and config.data.videos == "v" and config.data.cache_latents is True
    assert config.to_dict()["data"]["stride"] == [2, 6]
    assert load_config(str(path), ["data.stride=3"]).data.stride == 3


def test_config_round_trips_through_its_dict():
    config = load_config(str(EXAMPLE), ["data.stride=[1,8]", "validation.images=[x.png]"])
    again = config_from_dict(yaml.safe_load(yaml.safe_dump(config.to_dict())))
    assert again == config and config_hash(again) == config_hash(config)


@pytest.mark.parametrize("override, named, suggestion", [
    ("precison=fp16", "precison", "precision"),
    ("data.vidoes=x", "data.vidoes", "data.videos"),
    ("videos=x", "videos", "data.videos"),
    ("conditioning.drop_txt=0.2", "conditioning.drop_txt", "conditioning.drop_text"),
    ("ip_adapter.clipvision=x", "ip_adapter.clipvision", "ip_adapter.clip_vision"),
])
def test_unknown_key_names_it_suggests_and_lists_known(override, named, suggestion):
    with pytest.raises(ConfigError) as info:
        load_config(None, [*MINIMAL, override])
    message = str(info.value)
    assert f"unknown config key '{named}'" in message and f"did you mean '{suggestion}'?" in message
    section = named.rsplit(".", 1)[0] if "." in named else None
    known = config_keys() if section is None else {k: 1 for k in config_keys() if k.startswith(section + ".")}
    for key in list(known)[:3]:
        assert key.rsplit(".", 1)[-1] in message


@pytest.mark.parametrize("overrides, named", [
    (["precision=fp64"], "precision must be fp32 | fp16 | bf16"),
    (["frames=1"], "frames must be at least 2"),
    (["resolution=500"], "resolution must be a positive multiple of 8"),
    (["save_every=0"], "save_every must be at least 1"),
    (["keep_checkpoints=0"], "keep_checkpoints must be at least 1"),
    (["conditioning.drop_text=1.5"], "conditioning.drop_text is a probability"),
    (["conditioning.drop_image=-0.1"], "conditioning.drop_image is a probability"),
    (["conditioning.drop_text=0.5", "conditioning.drop_image=0.5"], "conditioning.drop_text + drop_image + drop_both"),
    (["conditioning.max_given=16"], "got 16: set conditioning.max_given: auto (or 15)"),
    (["conditioning.max_given=most"], "conditioning.max_given must be auto or a number, got 'most'"),
    (["frames=8", "max_frames=4"], "max_frames (4) must be at least frames (8): set max_frames: auto (or 32)"),
    (["lr_schedule=step"], "lr_schedule must be constant | cosine | linear"),
    (["prediction_type=sample"], "prediction_type must be v_prediction | epsilon"),
    (["prediction_type=epsilon"], "zero_terminal_snr: true needs prediction_type: v_prediction"),
    (["beta_schedule=cosine"], "beta_schedule must be scaled_linear | linear"),
    (["data.stride=[6,2]"], "data.stride must be an int >= 1 or [lo, hi]"),
    (["data.stride=0"], "data.stride must be an int >= 1"),
    (["learning_rate=0"], "learning_rate must be positive"),
    (["adam_betas=[0.9, 1.0]"], "adam_betas[1] must be in [0, 1)"),
    (["seed=-1"], "seed must be in 0 .. 2**32 - 1"),
    (["grad_accumulation=0"], "grad_accumulation must be at least 1"),
    (["data.worker_timeout=-1"], "data.worker_timeout must be at least 0, got -1"),
    (["distributed.backend=mpi"], "distributed.backend must be auto | nccl | gloo"),
    (["distributed.timeout_minutes=0"], "distributed.timeout_minutes must be positive"),
    (["init.motion_module=a.safetensors", "init.pia=b.ckpt"], "init.motion_module and init.pia are both set"),
    (["ip_adapter.file=ip.bin"], "ip_adapter.clip_vision is empty"),
    (["train.image_proj=true"], "train.image_proj: true needs ip_adapter.file"),
    (["validation.images=[a.png, b.png, c.png]", "validation.prompts=[x, y]"], "validation.prompts has 2 prompts"),
    (["base_model="], "base_model is empty"),
    (["data.videos="], "data.videos is empty"),
    (["steps=1.5"], "steps must be a whole number, got 1.5"),
    (["steps=many"], "steps must be a number, got 'many'"),
    (["gradient_checkpointing=maybe"], "gradient_checkpointing must be true or false"),
    (["base_model=12"], "base_model must be a string"),
    (["adam_betas=[0.9]"], "adam_betas must be a list of 2 values"),
    (["data=3"], "data must be a mapping of keys"),
    (["data.stride=abc"], "data.stride must be int or a list of 2 values, got 'abc'"),
])
def test_each_validation_error_names_the_key(overrides, named):
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(None, [*MINIMAL, *overrides])


def test_all_problems_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(None, [*MINIMAL, "frames=1", "precision=fp64", "save_every=0"])
    lines = str(info.value).splitlines()[1:]
    assert len(lines) == 3 and {ln.split()[0] for ln in lines} == {"frames", "precision", "save_every"}


@pytest.mark.parametrize("text", ["steps", "=3", "data..videos=x", "a=[1,"])
def test_malformed_override_is_refused(text):
    with pytest.raises(ConfigError, match="--set"):
        load_config(None, [*MINIMAL, text])


def test_override_into_a_value_is_refused():
    with pytest.raises(ConfigError, match="'steps' is a value, not a section"):
        load_config(None, [*MINIMAL, "steps.x=1"])


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(str(tmp_path / "missing.yaml"), [])
    broken = tmp_path / "broken.yaml"
    broken.write_text("steps: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml' is not valid YAML"):
        load_config(str(broken), [])
    listed = tmp_path / "list.yaml"
    listed.write_text("- steps\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(str(listed), [])


def test_hash_changes_with_values_not_with_key_order(tmp_path):
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("base_model: tiny\noutput_dir: o\nsteps: 50\ndata:\n  videos: v\n  stride: 2\n")
    b.write_text("data:\n  stride: 2\n  videos: v\nsteps: 50\noutput_dir: o\nbase_model: tiny\n")
    ca, cb = load_config(str(a), []), load_config(str(b), [])
    assert config_hash(ca) == config_hash(cb) == config_hash(ca.to_dict())
    assert re.fullmatch(r"[0-9a-f]{16}", config_hash(ca))
    # a reordered plain dict (as a checkpoint stores it) hashes the same
    reordered = {k: ca.to_dict()[k] for k in reversed(list(ca.to_dict()))}
    assert config_hash(reordered) == config_hash(ca)
    for change in ["learning_rate=2.0e-4", "data.stride=3", "seed=1", "conditioning.drop_text=0.2", "steps=51"]:
        changed = load_config(str(a), [change])
        assert config_hash(changed) != config_hash(ca), change
        assert diff_configs(ca, changed) and diff_configs(ca, changed)[0].startswith(change.split("=")[0] + ":")
    # settings that do not change what is computed may change on a resume
    for safe in ["save_every=10", "log_every=1", "output_dir=elsewhere", "validation.steps=4", "data.workers=0"]:
        assert config_hash(load_config(str(a), [safe])) == config_hash(ca), safe
    assert diff_configs(ca, load_config(str(a), ["learning_rate=2.0e-4"])) == ["learning_rate: 0.0001 -> 0.0002"]


@pytest.mark.parametrize("frames", range(2, 33))
def test_the_documented_defaults_fit_every_clip_length(frames):
    """Every key at its example default except the paths and frames: valid for 2..32 frames, and the defaults that
    depend on frames follow it (a user who sets only frames is never refused for a key they did not set)."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["frames"] = frames
    config = config_from_dict(raw)
    assert config.max_given() == min(8, frames - 1)  # the paper's 8 given frames, always one generated at least
    assert config.objective_config().max_given == config.max_given()
    assert config.module_frames() == 32
    longer = config_from_dict({**raw, "frames": 48})
    assert longer.module_frames() == 48 and longer.max_given() == 8  # max_frames follows a longer clip


def test_frames_8_with_every_other_key_default_trains(tmp_path):
    """The new user's case from the issue: `frames: 8`, nothing else changed, used to be refused (max_given 8)."""
    from test_trainer import _write_videos

    from atomo_core.training.distributed import World
    from atomo_core.training.trainer import train

    _write_videos(tmp_path / "videos", count=2, frames=40)
    config = load_config(None, ["base_model=tiny", f"output_dir={tmp_path / 'out'}", f"data.videos={tmp_path / 'videos'}",
                                "frames=8", "resolution=64", "steps=1", "data.workers=0", "validate_every=0"])
    import torch

    last = train(config, World(0, 1, 0, torch.device("cpu")))
    assert last["step"] == 1 and (tmp_path / "out" / "motion_module.safetensors").is_file()
