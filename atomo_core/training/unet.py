"""The model the trainer trains: a frozen diffusers SD-1.5 UNet with the motion module's temporal layers and the
9-channel input, the same layers at the same sites as the host inserts them into ComfyUI's UNet.

Sites (``layout.py`` names them after the diffusers blocks): a temporal convolution follows every ResNet
(``down_blocks.i.resnets.j`` -> ``down_blocks.i.temporal_convs.j``), a temporal attention follows every spatial
attention (``attentions.j`` -> ``motion_modules.j``), or the ResNet where a level has none (the deepest down level,
the first up level), before any down/up-sampler. Each is a forward hook on the diffusers module, so the UNet's own
code (and its gradient checkpointing) runs unchanged. The input convolution becomes ``conv(x[:, :4], W_base, b_base)
+ conv(x[:, 4:], W_image)``: the base's four latent channels stay frozen, the five image channels (mask, image
latent) are the trainable ``image_conv_in`` weight ``[C, 5, 3, 3]``, exported as channels 4..8 of ``conv_in``.

Frames are the batch dimension ``[(b f), ...]`` as in ComfyUI; ``forward`` takes the frame count.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import layout
from ..motion_module import MotionModule

IMAGE_CHANNELS = 5  # frame mask (1) + image latent (4)


def diffusers_target(site: layout.Site, unet) -> str:
    """The diffusers module a site's layer follows, e.g. ``down_blocks.0.attentions.1``."""
    parts = site.name.split(".")
    block = ".".join(parts[:-2])  # down_blocks.0 | mid_block | up_blocks.2
    j = int(parts[-1])
    owner = unet.get_submodule(block)
    if site.kind == layout.TEMPORAL_CONV:  # (the mid block's temporal_convs.0 / .1 follow its two ResNets)
        return f"{block}.resnets.{j}"
    attentions = getattr(owner, "attentions", None)
    return f"{block}.attentions.{j}" if attentions is not None and len(attentions) > j else f"{block}.resnets.{j}"


class ImageConvIn(nn.Module):
    """``conv_in`` over 9 channels: the frozen base convolution on the latent, a trainable one on mask + image."""

    def __init__(self, base: nn.Conv2d, image_weight: torch.Tensor | None = None):
        super().__init__()
        self.base = base
        weight = torch.zeros(base.out_channels, IMAGE_CHANNELS, *base.kernel_size, dtype=torch.float32)
        if image_weight is not None:
            weight.copy_(image_weight)
        self.image_weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [N, 9, h, w] -> [N, C, h, w]``."""
        latent, image = x[:, :4], x[:, 4:]
        image_part = F.conv2d(image, self.image_weight.to(image.dtype), None, self.base.stride, self.base.padding)
        return self.base(latent) + image_part

    def full_weight(self) -> torch.Tensor:
        """``[C, 9, 3, 3]``: the base's four channels and the trained five (the AtomoVideo file's ``conv_in``)."""
        return torch.cat([self.base.weight.detach().float(), self.image_weight.detach().float()], dim=1)


class TemporalUNet(nn.Module):
    """``unet`` (diffusers ``UNet2DConditionModel``, frozen) + ``module``'s temporal layers (+ 9-channel input when
    the module conditions on images). Only the temporal layers and ``conv_in.image_weight`` are trainable."""

    def __init__(self, unet: nn.Module, module: MotionModule, ip: nn.Module | None = None):
        super().__init__()
        self.unet = unet
        self.motion = module
        self.ip = ip  # an ``ip_conditioning.IPConditioner`` (its processors are already on the UNet), or None
        self.frames: int | None = None
        self.context: torch.Tensor | None = None  # this call's caption features, for layers that read them
        self.checkpoint_layers = False  # gradient checkpointing of the temporal layers (``enable_checkpointing``)
        unet.requires_grad_(False)
        module.requires_grad_(True)
        self.image_conditioning = module.config.image_conditioning is not None
        if self.image_conditioning:
            extra = module.conv_in_weight[:, 4:] if module.conv_in_weight is not None else None
            unet.conv_in = ImageConvIn(unet.conv_in, extra)
        self._hooks = []
        for site, layer in module.placements():
            target = unet.get_submodule(diffusers_target(site, unet))
            self._hooks.append(target.register_forward_hook(self._hook(layer)))

    def _hook(self, layer):
        reads_text = getattr(layer, "reads_text", False)  # a temporal convolution with the caption's FiLM

        def run(x: torch.Tensor) -> torch.Tensor:
            extra = {"context": self.context} if reads_text else {}
            if self.checkpoint_layers and torch.is_grad_enabled() and self.training:
                # diffusers checkpoints its blocks' insides; a hook on a whole attention block runs outside that
                # checkpoint, so the temporal layer is recomputed in the backward pass on its own
                return torch.utils.checkpoint.checkpoint(layer, x, self.frames, use_reentrant=False, **extra)
            return layer(x, self.frames, **extra)

        def hook(_module, _inputs, output):
            if self.frames is None:
                raise RuntimeError("TemporalUNet layers ran outside TemporalUNet.forward (no frame count)")
            if isinstance(output, torch.Tensor):
                return run(output)
            first = run(output[0])
            return (first, *output[1:]) if isinstance(output, tuple) else type(output)(first, *output[1:])

        return hook

    def enable_checkpointing(self) -> None:
        """Gradient checkpointing for the base's blocks (diffusers') and for every temporal layer (ours)."""
        self.unet.enable_gradient_checkpointing()
        self.checkpoint_layers = True

    def remove(self) -> nn.Module:
        """Take the hooks and the 9-channel input off the diffusers UNet again; returns it as it was."""
        for handle in self._hooks:
            handle.remove()
        self._hooks.clear()
        if isinstance(self.unet.conv_in, ImageConvIn):
            self.unet.conv_in = self.unet.conv_in.base
        return self.unet

    def trainable_parameters(self) -> list[nn.Parameter]:
        params = list(self.motion.parameters())
        if self.image_conditioning:
            params.append(self.unet.conv_in.image_weight)
        if self.ip is not None:
            params += self.ip.trainable_parameters()
        return params

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights only, under stable names (``motion.*``, ``conv_in.image_weight``, ``image_proj.*``)."""
        state = {f"motion.{k}": v for k, v in self.motion.state_dict().items()}
        if self.image_conditioning:
            state["conv_in.image_weight"] = self.unet.conv_in.image_weight.detach()
        if self.ip is not None and self.ip.train_projection:
            state.update({f"image_proj.{k}": v.detach() for k, v in self.ip.image_proj.state_dict().items()})
        return state

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        motion = {k[len("motion."):]: v for k, v in state.items() if k.startswith("motion.")}
        self.motion.load_state_dict(motion, strict=True)
        if self.image_conditioning:
            with torch.no_grad():
                self.unet.conv_in.image_weight.copy_(state["conv_in.image_weight"])
        if self.ip is not None and self.ip.train_projection:
            self.ip.image_proj.load_state_dict({k[len("image_proj."):]: v for k, v in state.items()
                                                if k.startswith("image_proj.")})

    def export_module(self) -> MotionModule:
        """The motion module with its trained ``conv_in`` (channels 0..3 the base's) and, when training used one,
        the IP-Adapter (``image_proj.*`` and ``ip_adapter.*``, what "from motion module" loads), ready to save."""
        if self.image_conditioning:
            self.motion.conv_in_weight = self.unet.conv_in.full_weight()
        if self.ip is not None:
            weights = {f"image_proj.{k}": v.detach().float().cpu() for k, v in self.ip.image_proj.state_dict().items()}
            weights.update({k: v.detach().float().cpu() for k, v in self.ip.adapter.ip_weights.items()})
            self.motion.ip_adapter_weights = weights
        return self.motion

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor, frames: int,
                first_frames: torch.Tensor | None = None, with_image: torch.Tensor | None = None) -> torch.Tensor:
        """``x [(b f), 4 or 9, h, w]``, ``timesteps [(b f)]``, ``context [(b f), 77, 768]`` -> ``[(b f), 4, h, w]``.

        With an IP-Adapter: ``first_frames [b, 3, H, W]`` (-1..1) and ``with_image [b]`` (bool) give its tokens."""
        if x.shape[0] % frames:
            raise ValueError(f"a batch of {x.shape[0]} latents is not a whole number of {frames}-frame videos")
        if self.ip is not None:
            if first_frames is None or with_image is None:
                raise ValueError("this model has an IP-Adapter: pass first_frames and with_image")
            self.ip.set_tokens(first_frames, with_image, frames)
        self.frames = frames  # kept after the call: gradient checkpointing re-runs the layers in backward
        self.context = context
        return self.unet(x, timesteps, encoder_hidden_states=context, return_dict=False)[0]
