"""atomo_core is self-contained: it imports nothing of ComfyUI, and imports cleanly without it."""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
HOST_MODULES = {"comfy", "comfy_api", "comfy_extras", "comfy_execution", "folder_paths", "nodes", "node_helpers",
                "latent_preview", "server", "execution"}


def _imports(path: pathlib.Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_atomo_core_sources_import_no_host_module():
    files = sorted((ROOT / "atomo_core").rglob("*.py"))
    assert len(files) >= 8
    offenders = {str(f.relative_to(ROOT)): sorted(_imports(f) & HOST_MODULES) for f in files}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_atomo_core_imports_with_host_modules_blocked():
    blocked = sorted(HOST_MODULES)
    code = (
        "import sys, importlib.abc\n"
        f"BLOCKED = {blocked!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in BLOCKED: raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import atomo_core, pkgutil, importlib\n"
        "for m in pkgutil.walk_packages(atomo_core.__path__, 'atomo_core.'): importlib.import_module(m.name)\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_layering_test_catches_a_host_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import folder_paths\nfrom comfy.model_patcher import ModelPatcher\n")
    assert _imports(bad) & HOST_MODULES == {"folder_paths", "comfy"}
