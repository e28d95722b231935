"""The metrics benchmark and run_all's table (what they write, not how fast anything is)."""

from __future__ import annotations

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
import bench_metrics  # noqa: E402
import run_all  # noqa: E402


def test_bench_metrics_writes_its_figures(tmp_path):
    out = tmp_path / "metrics.json"
    assert bench_metrics.main(["--frames", "4", "--width", "96", "--height", "64", "--size", "64", "--repeat", "1",
                               "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["benchmark"] == "metrics" and data["frames"] == 4 and data["working_size"] == 64
    assert data["seconds_median"] > 0 and len(data["seconds_all"]) == 1 and data["target_seconds"] == 5.0
    assert data["motion_mean_flow"] > 1.0  # the synthetic pan moves: 3 px/frame at 64 px tall -> 3 px


def test_run_all_table_and_readme_block(tmp_path):
    found = {
        "metrics": {"frames": 16, "width": 512, "height": 512, "working_size": 256, "seconds_median": 1.234,
                    "cpu": "x86_64", "torch": "2.13.0"},
        "motion_module": {"meta": {"device_name": "AMD EPYC", "torch": "2.13.0", "comfyui": "0.3.64",
                                   "attention": "attention_sub_quad"},
                          "results": {"bare": {"sec_per_step": 5.0, "step_time_ratio_vs_bare": 1.0},
                                      "animatediff_v2": {"sec_per_step": 6.5, "step_time_ratio_vs_bare": 1.3}}},
        "long_video": {"error": "exit status 1"},
    }
    text = run_all.table(found, "cpu", "small")
    assert "| metrics | evaluate_video, 16 x 512x512, working size 256 (target < 5 s) | 1.23 s |" in text
    assert "| motion_module | animatediff_v2: s/step (x bare) | 6.500 (1.30) |" in text
    assert "| long_video | error | exit status 1 |" in text
    assert "AMD EPYC, torch 2.13.0, ComfyUI 0.3.64, attention_sub_quad" in text
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nintro\n")
    run_all.update_readme(text, readme)
    run_all.update_readme(text.replace("1.23 s", "2.00 s"), readme)  # a second run replaces the block
    content = readme.read_text()
    assert content.count(run_all.START) == 1 and "2.00 s" in content and "1.23 s" not in content
    assert content.startswith("# Benchmarks\n\nintro\n")
    commands = run_all.commands("small", "cpu", tmp_path)
    assert set(commands) == set(run_all.BENCHMARKS)
    assert "--width" in commands["motion_module"] and "64" in commands["motion_module"]
