"""The reference: diffusers' ``UNetMotionModel`` made to behave like the ORIGINAL AnimateDiff (test-only).

diffusers normalises each motion module's GroupNorm over all frames together; the original normalises each
frame separately. We swap that norm for a per-frame one. For AnimateDiff v1 and PIA the original computes
ResNet GroupNorm statistics (and the UNet's output norm) over all frames of a video, which diffusers does per
frame; we swap those norms for across-frame ones. Nothing else of diffusers is changed.
"""

from __future__ import annotations

import torch
from weights import position_encoding, to_diffusers_motion_adapter

ADAPTER_CONFIG = {
    "v1": dict(motion_max_seq_length=24, use_motion_mid_block=False),
    "v2": dict(motion_max_seq_length=32, use_motion_mid_block=True),
    "v3": dict(motion_max_seq_length=32, use_motion_mid_block=False),
    "animatelcm": dict(motion_max_seq_length=32, use_motion_mid_block=True),
    "pia": dict(motion_max_seq_length=32, use_motion_mid_block=False, conv_in_channels=9),
}
ACROSS_FRAMES = ("v1", "pia")


class PerFrameNorm(torch.nn.Module):
    """Takes ``[b, c, f, h, w]`` and normalises each frame on its own (the original motion-module norm)."""

    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x):
        b, c, f, h, w = x.shape
        y = self.norm(x.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w))
        return y.reshape(b, f, c, h, w).permute(0, 2, 1, 3, 4)


class AcrossFramesNorm(torch.nn.Module):
    """Takes ``[(b f), c, h, w]`` and normalises over all ``f`` frames of each video (v1/PIA ResNets)."""

    def __init__(self, norm, frames: int):
        super().__init__()
        self.norm = norm
        self.frames = frames

    def forward(self, x):
        bf, c, h, w = x.shape
        b = bf // self.frames
        y = self.norm(x.reshape(b, self.frames, c, h, w).permute(0, 2, 1, 3, 4))
        return y.permute(0, 2, 1, 3, 4).reshape(bf, c, h, w)


def build(unet2d, motion_state_dict: dict, family: str, frames: int, fix_motion_norm: bool = True):
    """The oracle, built on the meta device and given the tensors of ``unet2d`` and ``motion_state_dict``
    themselves (no copies: a real-size oracle costs almost no memory)."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNetMotionModel

    config = dict(block_out_channels=(320, 640, 1280, 1280), motion_layers_per_block=2, motion_num_attention_heads=8,
                  motion_norm_num_groups=32, **ADAPTER_CONFIG[family])
    with torch.device("meta"):
        adapter = MotionAdapter(**config)
        unet_meta = UNet2DConditionModel(**unet2d.config)  # from_unet2d reads the config and moves to its device
        model = UNetMotionModel.from_unet2d(unet_meta, motion_adapter=adapter, load_weights=False)
    state = dict(unet2d.state_dict())
    adapter_sd = to_diffusers_motion_adapter(motion_state_dict)
    expected = model.state_dict()
    for key, value in expected.items():
        if key.endswith("pos_embed.pe") and key not in adapter_sd:  # AnimateLCM files have none: regenerate
            length, dim = value.shape[1:]
            adapter_sd[key] = position_encoding(length, dim)
    state.update(adapter_sd)
    if family == "pia":  # PIA: base channels 0..3 and the bias from the image model, 4..8 from the file
        conv_in = motion_state_dict["conv_in.weight"].clone()
        conv_in[:, :4] = unet2d.conv_in.weight
        state["conv_in.weight"] = conv_in
        state["conv_in.bias"] = unet2d.conv_in.bias
    missing = set(expected) - set(state)
    unexpected = set(state) - set(expected)
    assert not missing and not unexpected, (sorted(missing)[:3], sorted(unexpected)[:3])
    model.load_state_dict(state, strict=True, assign=True)
    if fix_motion_norm:
        for name, module in model.named_modules():
            if name.endswith(tuple(f"motion_modules.{i}" for i in range(3))):
                module.norm = PerFrameNorm(module.norm)
    if family in ACROSS_FRAMES:
        for module in model.modules():
            if type(module).__name__ == "ResnetBlock2D":
                module.norm1 = AcrossFramesNorm(module.norm1, frames)
                module.norm2 = AcrossFramesNorm(module.norm2, frames)
        model.conv_norm_out = AcrossFramesNorm(model.conv_norm_out, frames)
    return model.eval().requires_grad_(False)


def predict(oracle, call: dict, frames: int) -> torch.Tensor:
    """Run the oracle on exactly what ComfyUI's UNet got in ``call``; return it in ComfyUI's layout."""
    x, context = call["input"], call["context"]
    chunks = len(call["cond_or_uncond"])
    video = x.reshape(chunks, frames, *x.shape[1:]).permute(0, 2, 1, 3, 4)
    with torch.no_grad():  # diffusers' UNetMotionModel takes the text per frame, ``[(b f), tokens, dim]``
        out = oracle(video, call["timestep"][0], encoder_hidden_states=context).sample
    return out.permute(0, 2, 1, 3, 4).reshape(chunks * frames, out.shape[1], *x.shape[2:])
