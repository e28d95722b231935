"""Test subprocesses only: make a CUDA-only torchvision wheel importable beside CPU torch (see _torchvision_shim).
The training tests put this folder on PYTHONPATH of the trainer processes they start; it does nothing where
torchvision is absent (CI) or fine."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
try:
    import _torchvision_shim

    _torchvision_shim.install()
except Exception:  # noqa: BLE001 - never stop the interpreter from starting
    pass
