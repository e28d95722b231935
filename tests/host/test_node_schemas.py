"""What a new user sees of our nodes in ComfyUI: every input and output explained, sensible defaults."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def schemas(pack):
    from comfy_api.latest import io  # noqa: F401  (ComfyUI is booted by the pack fixture)

    return {cls.GET_SCHEMA().node_id: cls.GET_SCHEMA() for cls in pack.nodes.node_list()}


def test_every_node_is_registered(schemas):
    assert set(schemas) == {"AtomoLoadMotionModule", "AtomoLoadMotionLoRA", "AtomoImageInjectConditioning",
                            "AtomoZeroSNRVSampler", "AtomoPredictNextFrames", "AtomoVideoMetrics", "AtomoVideoGuider",
                            "AtomoTrailingSigmas", "AtomoFrameInitNoise", "AtomoContextWindows", "AtomoMotionStrength",
                            "AtomoPromptTravel"}


def test_every_input_and_output_has_a_tooltip(schemas):
    missing = [f"{node}.{inp.id}" for node, schema in schemas.items() for inp in schema.inputs
               if not (inp.tooltip or "").strip()]
    missing += [f"{node} output {out.display_name or out.id}" for node, schema in schemas.items()
                for out in schema.outputs if not (out.tooltip or "").strip()]
    assert missing == []


def test_every_node_has_a_description(schemas):
    assert all(len(schema.description or "") > 40 for schema in schemas.values())


def test_combos_have_a_default_from_their_options(schemas):
    from comfy_api.latest import io

    combos = [(node, inp) for node, schema in schemas.items() for inp in schema.inputs
              if isinstance(inp, io.Combo.Input)]
    assert len(combos) >= 10
    for node, inp in combos:
        assert inp.default is not None and inp.default in inp.options, f"{node}.{inp.id}: {inp.default!r}"


def test_no_motion_module_installed_explains_what_to_do(pack, ours, monkeypatch):
    folders = ours("nodes.folders")
    monkeypatch.setattr(folders, "motion_module_names", lambda: [])
    node = ours("nodes.load_motion_module").AtomoLoadMotionModule
    schema = node.define_schema()
    (name,) = [inp for inp in schema.inputs if inp.id == "motion_module_name"]
    assert name.options == [folders.NO_MOTION_MODULES] and name.default == folders.NO_MOTION_MODULES
    with pytest.raises(FileNotFoundError, match="No motion module is installed.*press R"):
        node.execute(None, folders.NO_MOTION_MODULES)


def test_predict_next_frames_picks_context_frames_for_the_family(ours):
    import torch
    from host_models import meta_family_module

    pnf = ours("nodes.predict_next_frames")
    pia = meta_family_module(ours, "pia", "pia.ckpt")
    with torch.device("meta"):
        atomo = ours("atomo_core.atomovideo_format").new_atomovideo_module(max_frames=24)
    assert (pnf.auto_context_frames(pia), pnf.auto_context_frames(atomo)) == (1, 8)
    (context,) = [inp for inp in pnf.AtomoPredictNextFrames.GET_SCHEMA().inputs if inp.id == "context_frames"]
    assert context.default == pnf.AUTO == 0


class _LiveViews(dict):
    """``folder_names_and_paths`` as the pip-installable fork has it: an entry's list and set are kept and handed
    out live, and assigning an entry clears them and fills them from the new value, so assigning back the lists that
    were handed out empties them."""

    def __setitem__(self, key, value):
        if key not in self:
            dict.__setitem__(self, key, (list(value[0]), set(value[1])))
            return
        paths, extensions = dict.__getitem__(self, key)
        paths.clear()
        paths.extend(value[0])
        extensions.clear()
        extensions.update(value[1])


def test_registering_twice_keeps_the_folders_on_a_live_view_mapping(ours, monkeypatch, tmp_path):
    """That fork imports custom nodes twice; the second registration must not empty the folders it re-reads
    ("Motion module 'v3_sd15_mm.ckpt' is not in any motion_modules folder ()" before the fix)."""
    import folder_paths

    folders = ours("nodes.folders")
    live = _LiveViews()
    live["motion_modules"] = ([str(tmp_path / "mine")], {".ckpt"})  # the user's extra_model_paths.yaml
    monkeypatch.setattr(folder_paths, "folder_names_and_paths", live)
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path / "models"))
    folders.register_model_folders()
    folders.register_model_folders()
    paths, extensions = live["motion_modules"]
    assert paths == [str(tmp_path / "mine"), str(tmp_path / "models" / "motion_modules")]
    assert {".ckpt", ".safetensors"} <= extensions
    assert live["ipadapter"][0] == [str(tmp_path / "models" / "ipadapter")]


def test_the_startup_line_names_the_comfyui_and_the_fallbacks(pack, ours):
    import pathlib
    import re

    from comfy_host import comfyui_path

    nodes = ours("nodes")
    line = nodes.startup_line()
    root = pathlib.Path(comfyui_path())
    if (root / "comfyui_version.py").is_file():
        version = re.search(r'__version__ = "([^"]+)"', (root / "comfyui_version.py").read_text())
    else:  # the installable fork: its package version
        version = re.search(r'^version = "([^"]+)"', (root / "pyproject.toml").read_text(), re.M)
    assert line.startswith(f"AtomoVideo: ComfyUI {version.group(1)};")
    # ComfyUI 0.3.64's context windows have no FreeNoise and no causal anchor: ours serves the first, nothing to undo
    has_freenoise = ours("nodes.context_windows").CORE_FREENOISE
    assert ("FreeNoise" in line) == (not has_freenoise)
    assert ("causal anchor" in line) == ("causal_window_fix" in ours("nodes.context_windows").HANDLER_OPTIONS)
