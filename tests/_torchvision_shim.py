"""Make a CUDA-only torchvision wheel importable on CPU torch (test environments only).

PyPI's torchvision registers fake kernels for ``torchvision::nms``/``qnms`` at import, which fails when its
compiled ops do not match the installed torch. Declaring the two schemas first lets ``import torchvision``
succeed; nothing in SD-1.5 or our tests calls those kernels. Does nothing if torchvision is absent or fine.
"""

from __future__ import annotations

import importlib.util

_LIB = None


def install() -> None:
    global _LIB
    if _LIB is not None or importlib.util.find_spec("torchvision") is None:
        return
    import torch

    try:
        torch._C._dispatch_find_schema_or_throw("torchvision::nms", "")
        return
    except RuntimeError:
        pass
    _LIB = torch.library.Library("torchvision", "DEF")
    _LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
