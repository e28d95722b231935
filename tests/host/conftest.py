"""Host-test fixtures: ComfyUI booted on CPU with this pack loaded, and random real-size SD-1.5 models."""

from __future__ import annotations

import gc
import importlib

import comfy_host
import pytest


@pytest.fixture(scope="session")
def pack():
    comfy_host.require_comfyui()
    return comfy_host.boot()


@pytest.fixture(scope="session")
def ours(pack):
    """Our modules as ComfyUI loaded them: ``ours("nodes.host_adapter")``."""

    def get(name: str):
        return importlib.import_module(f"{pack.__name__}.{name}")

    return get


@pytest.fixture(scope="session")
def sd15(pack):
    """``(diffusers_unet, comfy_model)``: one random real-size SD-1.5 UNet, in both frameworks."""
    import sd15_models

    unet = sd15_models.diffusers_sd15_unet(seed=0)
    model = sd15_models.comfy_model_from_diffusers(unet)
    yield unet, model
    del unet, model
    gc.collect()


@pytest.fixture
def free_models(pack):
    """Unload every model ComfyUI holds after the test (a test file opts in with ``pytestmark``): real-size
    UNets left loaded by one test would add up past this machine's memory."""
    yield
    import comfy.model_management

    comfy.model_management.unload_all_models()
    gc.collect()


@pytest.fixture(scope="module")
def vae(pack):
    """A random SD-1.5 VAE as ComfyUI loads one."""
    from sd15_models import random_vae

    return random_vae()


@pytest.fixture(scope="module")
def rw(pack):
    """The headless runner as the tools import it (``tools/`` on sys.path); it finds the ComfyUI comfy_host booted."""
    import sys

    tools = str(comfy_host.REPO / "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    module = importlib.import_module("run_workflow")
    module.boot()
    yield module
    module.release()
