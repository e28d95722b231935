"""The GPU smoke script (benchmarks/gpu_smoke.py) in its reduced CPU mode: every check runs and passes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import comfy_host


def test_gpu_smoke_script_runs_reduced_on_the_cpu(tmp_path):
    root = comfy_host.require_comfyui()
    out = tmp_path / "smoke.json"
    script = comfy_host.REPO / "benchmarks" / "gpu_smoke.py"
    env = dict(os.environ, COMFYUI_PATH=str(root))
    proc = subprocess.run([sys.executable, str(script), "--reduced", "--device", "cpu", "--comfyui", str(root),
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["check"], r["layout"]) for r in rows] == [
        ("full", "animatediff_v2"), ("partial", "animatediff_v2"), ("full", "pia"), ("partial", "pia"),
        ("full", "atomovideo"), ("partial", "atomovideo"), ("split", "atomovideo")]
    for row in rows:
        assert row["ok"], row
    for row in rows[1:6:2]:
        assert row["module_partially_loaded"] and row["rms_difference_to_full"] < 1e-4
    split = rows[-1]
    assert split["largest_sdpa_batch"] <= split["sdp_batch_limit"] < split["temporal_batch"]
    assert "| split | atomovideo |" in proc.stdout
