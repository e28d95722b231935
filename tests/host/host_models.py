"""Random modules built with our own package as ComfyUI loaded it (test-only)."""

from __future__ import annotations

import torch


def random_atomovideo(ours, seed: int = 0, max_frames: int = 24, name: str = "atomo.safetensors"):
    """An AtomoVideo module whose temporal attention, temporal convolutions and extra conv_in channels are
    random and non-zero (a freshly initialised one would be the identity)."""
    module = ours("atomo_core.atomovideo_format").new_atomovideo_module(max_frames=max_frames, name=name)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, p in module.named_parameters():
            if param_name.endswith(("proj_out.weight", "conv.weight")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        module.conv_in_weight.copy_(torch.randn(module.conv_in_weight.shape, generator=gen) * 0.05)
    return module


def meta_family_module(ours, family: str, name: str):
    """A module of an AnimateDiff-layout ``family`` (``v2``, ``v3``, ``pia``...) with its weights on the ``meta``
    device: enough to attach it and meet the errors that come before any computation."""
    from weights import animatediff_state_dict

    core = ours("atomo_core")
    sd = animatediff_state_dict(family, device="meta")
    with torch.device("meta"):
        return core.build_motion_module(sd, core.detect_config(sd), name)
