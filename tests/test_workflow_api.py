"""The headless runner's reading of a workflow's outputs (no ComfyUI needed): which IMAGE batch is the video when
the output node is Save Video fed by Create Video, and which files the output nodes wrote."""

from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tools"))
import run_workflow  # noqa: E402
import workflow_api  # noqa: E402


def test_save_video_frames_are_create_videos_images():
    prompt = {
        "6": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["1", 2]}},
        "7": {"class_type": "CreateVideo", "inputs": {"images": ["6", 0], "fps": 8.0}},
        "8": {"class_type": "SaveVideo", "inputs": {"video": ["7", 0], "filename_prefix": "x", "format": "mp4",
                                                    "codec": "h264"}},
        "9": {"class_type": "SaveAnimatedWEBP", "inputs": {"images": ["6", 0], "filename_prefix": "y"}},
    }
    assert workflow_api.image_sources(prompt) == {"8": ("6", 0), "9": ("6", 0)}
    prompt["7"]["class_type"] = "LoadVideo"  # a video that is not made from an IMAGE batch: nothing to read
    assert workflow_api.image_sources(prompt) == {"9": ("6", 0)}


def test_saved_files_come_from_the_output_nodes_ui_results(tmp_path):
    outputs = {
        "12": {"images": [{"filename": "b_00001_.png", "subfolder": "", "type": "output"}]},
        "8": {"images": [{"filename": "clip_00001_.mp4", "subfolder": "AtomoVideo", "type": "output"}],
              "animated": [True]},
        "3": {"images": [{"filename": "preview.png", "subfolder": "", "type": "temp"}]},
    }
    assert run_workflow.saved_files(outputs, str(tmp_path)) == [tmp_path / "AtomoVideo" / "clip_00001_.mp4",
                                                                tmp_path / "b_00001_.png"]


class _Classic:
    CLASSIC = "classic"


def _execution(newest: bool):
    """A stand-in ``execution`` module with the PromptExecutor contract of ComfyUI 0.3.64 or of current ComfyUI, whose
    constructor reads ``cache_args["ram"]`` (a None default raised TypeError in ``execute_async``)."""
    import types as _types

    if newest:
        class PromptExecutor:
            def __init__(self, server, cache_type=False, cache_args=None, asset_manager=None):
                self.headroom = int(cache_args["ram"] * 1024**3), int(cache_args["ram_inactive"] * 1024**3)
                self.cache_type = cache_type
    else:
        class PromptExecutor:
            def __init__(self, server, cache_type=False):
                self.cache_type = cache_type
    return _types.SimpleNamespace(PromptExecutor=PromptExecutor, CacheType=_Classic)


def test_the_runner_builds_an_executor_on_either_contract():
    old, new = run_workflow.new_executor(_execution(False)), run_workflow.new_executor(_execution(True))
    assert old.cache_type == new.cache_type == "classic" and new.headroom == (0, 0)


def test_the_runner_reads_either_output_cache():
    from typing import NamedTuple

    class CacheEntry(NamedTuple):  # current ComfyUI: async get, sync get_local, entries of (ui, outputs)
        ui: dict
        outputs: list

    class NewCache:
        def __init__(self, data):
            self.data = data

        async def get(self, node_id):
            return self.data.get(node_id)

        def get_local(self, node_id):
            return self.data.get(node_id)

    class OldCache(dict):  # 0.3.64: a sync get returning the output lists
        pass

    class Executor:
        def __init__(self, cache):
            self.caches = type("Caches", (), {"outputs": cache})()

    values = [["frames"], ["other"]]
    assert run_workflow.cached_outputs(Executor(OldCache({"5": values})), "5") == values
    assert run_workflow.cached_outputs(Executor(NewCache({"5": CacheEntry({}, values)})), "5") == values
    assert run_workflow.cached_outputs(Executor(NewCache({})), "6") is None


def test_progress_comes_from_the_server_messages_where_there_is_no_global_hook(monkeypatch):
    """The installable fork has no ``comfy.utils.PROGRESS_BAR_HOOK``: its progress bars only send the server a
    "progress" message, so the runner's stub server passes those on; upstream ComfyUI calls the hook (which the
    runner sets), so there the message is ignored and the callback is not called twice."""
    import types

    seen = []
    fake_comfy = types.ModuleType("comfy")
    fake_utils = types.ModuleType("comfy.utils")
    fake_comfy.utils = fake_utils
    monkeypatch.setitem(sys.modules, "comfy", fake_comfy)
    monkeypatch.setitem(sys.modules, "comfy.utils", fake_utils)
    monkeypatch.setitem(run_workflow._STATE, "progress", lambda *args: seen.append(args))
    server = run_workflow._stub_server()
    assert server.receive_all_progress_notifications is True
    server.send_sync("progress", {"value": 3, "max": 10, "node": "5", "prompt_id": "p"})
    server.send_sync("executing", {"node": "5"})
    assert seen == [("5", 3, 10)]
    fake_utils.PROGRESS_BAR_HOOK = None  # upstream: the hook serves progress
    server.send_sync("progress", {"value": 4, "max": 10, "node": "5"})
    assert seen == [("5", 3, 10)]
