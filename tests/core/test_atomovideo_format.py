"""The AtomoVideo file format: header, parts, round trip, initialisation from AnimateDiff weights."""

from __future__ import annotations

import pytest
import torch
from weights import animatediff_state_dict

from atomo_core import atomovideo_format as fmt
from atomo_core.errors import MotionModuleFormatError
from atomo_core.formats import build_motion_module, detect_config, load_motion_module


def _meta_module(**kwargs):
    with torch.device("meta"):
        return fmt.new_atomovideo_module(**kwargs)


def _file_tensors(module):
    tensors = dict(module.state_dict())
    tensors.update(module.extra_tensors())
    return tensors


def test_header_round_trip_all_parts():
    module = _meta_module(max_frames=24)
    module.ip_adapter_weights = {"image_proj.proj.weight": torch.empty(3072, 1024, device="meta"),
                                 "ip_adapter.1.to_k_ip.weight": torch.empty(320, 768, device="meta")}
    meta = fmt.metadata_for(module)
    assert meta["format"] == "atomovideo.motion_module" and meta["format_version"] == "1"
    assert meta["parts"] == "temporal_attention,temporal_conv,conv_in,image_proj"
    assert (meta["prediction_type"], meta["beta_schedule"], meta["zero_terminal_snr"], meta["max_frames"]) == (
        "v_prediction", "scaled_linear", "true", "24")
    config = detect_config(_file_tensors(module), meta, "atomo.safetensors")
    assert config.family == "atomovideo" and config.temporal_conv and config.temporal_attention and config.mid_block
    assert config.image_conditioning == "atomovideo" and config.max_frames == 24 and config.zero_terminal_snr
    rebuilt = build_motion_module(_file_tensors(module), config, "atomo.safetensors")
    assert len(rebuilt.placements()) == 21 + 22
    assert set(rebuilt.ip_adapter_weights) == set(module.ip_adapter_weights)
    assert rebuilt.accepts_images


def test_file_round_trip_values_and_dtype(tmp_path):
    module = fmt.new_atomovideo_module(temporal_attention=False, temporal_conv=True, conv_in=True, max_frames=None,
                                       prediction_type="epsilon", zero_terminal_snr=False)
    torch.manual_seed(0)
    for p in module.parameters():
        p.data.normal_()
    module.conv_in_weight.normal_()
    path = tmp_path / "atomo.safetensors"
    fmt.save_atomovideo(module, str(path), dtype=torch.bfloat16)
    loaded = load_motion_module(str(path), dtype=None)
    assert loaded.config.family == "atomovideo" and loaded.config.max_frames is None
    assert loaded.config.prediction_type == "epsilon" and not loaded.config.zero_terminal_snr
    assert not loaded.config.temporal_attention and loaded.max_frames is None
    for key, value in module.state_dict().items():  # exact: the file holds the bfloat16 bits, loaded as they are
        assert torch.equal(loaded.state_dict()[key], value.to(torch.bfloat16)), key
    assert torch.equal(loaded.conv_in_weight, module.conv_in_weight.to(torch.bfloat16))
    as_fp32 = load_motion_module(str(path))
    assert all(p.dtype == torch.float32 for p in as_fp32.parameters())


def test_fresh_module_is_the_identity_everywhere():
    module = fmt.new_atomovideo_module(temporal_attention=False, temporal_conv=True, conv_in=True)
    for site, layer in module.placements():
        x = torch.randn(2 * 3, site.channels, 2, 2)
        assert torch.equal(layer(x, 3), x), site.name  # exact: the zero-initialised output adds an exact 0
    assert torch.count_nonzero(module.conv_in_weight) == 0


def test_init_from_animatediff_copies_temporal_attention():
    sd = animatediff_state_dict("v3", device="meta")
    source = build_motion_module(sd, detect_config(sd), "v3.ckpt")
    module = _meta_module(init_from=source)
    assert not module.config.mid_block  # follows the source layout
    assert len([s for s, _ in module.placements() if s.kind == "temporal_attention"]) == 20


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format_version": "2"}, "version 2.*Update ComfyUI-AtomoVideo"),
        ({"format_version": "x"}, "not a number"),
        ({"parts": "temporal_attention,temporal_conv,conv_in,image_proj"}, "lists 'image_proj' but the file has no"),
        ({"parts": "temporal_attention,conv_in"}, "does not list 'temporal_conv'"),
        ({"parts": "motion"}, "'parts' must list"),
        ({"zero_terminal_snr": "maybe"}, "true or false"),
        ({"beta_schedule": "cosine"}, "beta_schedule must be"),
        ({"prediction_type": "sample"}, "prediction_type must be"),
        ({"max_frames": "many"}, "not a number"),
    ],
)
def test_bad_headers_are_explained(change, message):
    module = _meta_module()
    meta = {**fmt.metadata_for(module), **change}
    with pytest.raises(MotionModuleFormatError, match=message):
        detect_config(_file_tensors(module), meta, "atomo.safetensors")


def test_temporal_convs_without_header_are_refused():
    module = _meta_module(temporal_attention=False, conv_in=False)
    with pytest.raises(MotionModuleFormatError, match="no AtomoVideo metadata header"):
        detect_config(_file_tensors(module), {}, "convs.safetensors")


def test_a_module_for_a_smaller_base_of_the_same_layout_round_trips(tmp_path):
    """The trainer's tiny test base has SD-1.5's layout with other widths; its files say so in the header."""
    from atomo_core.atomovideo_format import new_atomovideo_module, save_atomovideo
    from atomo_core.formats import load_motion_module

    widths = (32, 64, 64, 64)
    module = new_atomovideo_module(max_frames=16, widths=widths)
    convs = [layer for site, layer in module.placements() if site.kind == "temporal_conv"]
    assert [c.conv.in_channels for c in convs[:2]] == [32, 32] and module.conv_in_weight.shape == (32, 9, 3, 3)
    path = tmp_path / "tiny.safetensors"
    save_atomovideo(module, str(path), extra_metadata={"training_step": "7"})
    loaded = load_motion_module(str(path))
    assert loaded.config.widths == widths
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values(),
                                                 strict=True))
    sd15 = new_atomovideo_module(max_frames=16)
    save_atomovideo(sd15, str(tmp_path / "sd15.safetensors"))
    from safetensors import safe_open

    with safe_open(str(tmp_path / "sd15.safetensors"), "pt") as f:
        assert "widths" not in f.metadata()  # SD-1.5 files stay as they were
    with pytest.raises(ValueError, match="may not replace"):
        save_atomovideo(module, str(path), extra_metadata={"format": "x"})


def test_image_layout_is_recorded_and_files_without_it_load_as_given_only(tmp_path):
    module = fmt.new_atomovideo_module(max_frames=8, image_layout="every_frame", widths=(32, 32, 32, 32))
    meta = fmt.metadata_for(module)
    assert meta["image_layout"] == "every_frame"
    path = tmp_path / "every.safetensors"
    fmt.save_atomovideo(module, str(path))
    assert load_motion_module(str(path)).config.image_layout == "every_frame"
    old = {k: v for k, v in meta.items() if k != "image_layout"}  # a file from before the field existed
    assert detect_config(_file_tensors(module), old, "old.safetensors").image_layout == "given_only"
    with pytest.raises(MotionModuleFormatError, match="image_layout must be one of given_only, every_frame"):
        detect_config(_file_tensors(module), {**meta, "image_layout": "sideways"}, "new.safetensors")
    no_conv_in = fmt.new_atomovideo_module(max_frames=8, conv_in=False, widths=(32, 32, 32, 32))
    assert "image_layout" not in fmt.metadata_for(no_conv_in)  # a text-only module has no image channels


def test_temporal_text_is_recorded_and_files_without_it_load_as_the_papers_layers(tmp_path):
    module = fmt.new_atomovideo_module(max_frames=8, widths=(32, 32, 32, 32), temporal_text_dim=24)
    meta = fmt.metadata_for(module)
    assert meta["temporal_text"] == "film"
    torch.manual_seed(0)
    for _site, layer in module.placements():
        if getattr(layer, "reads_text", False):
            torch.nn.init.normal_(layer.text_film.weight)
    path = tmp_path / "film.safetensors"
    fmt.save_atomovideo(module, str(path))
    loaded = load_motion_module(str(path))
    assert loaded.config.temporal_text_dim == 24  # read from the tensors' shape
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), module.state_dict().values(),
                                                 strict=True))
    plain = fmt.new_atomovideo_module(max_frames=8, widths=(32, 32, 32, 32))
    assert "temporal_text" not in fmt.metadata_for(plain)  # files of the paper's layers stay as they were
    assert detect_config(_file_tensors(plain), fmt.metadata_for(plain), "old.safetensors").temporal_text_dim is None
    with pytest.raises(MotionModuleFormatError, match="says temporal_text 'none' but the file has text_film"):
        detect_config(_file_tensors(module), {k: v for k, v in meta.items() if k != "temporal_text"}, "x.safetensors")
    with pytest.raises(MotionModuleFormatError, match="says temporal_text 'film' but the file has no text_film"):
        detect_config(_file_tensors(plain), {**fmt.metadata_for(plain), "temporal_text": "film"}, "y.safetensors")
    with pytest.raises(MotionModuleFormatError, match="temporal_text must be one of none, film.*update"):
        detect_config(_file_tensors(module), {**meta, "temporal_text": "cross_attention"}, "z.safetensors")
