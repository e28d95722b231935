"""The motion-module container: every temporal layer of one SD-1.5 UNet, and what it was trained with.

``MotionModule`` holds ``TemporalAttentionLayer``s under AnimateDiff's key names
(``down_blocks.0.motion_modules.0...``) and AtomoVideo's ``TemporalConvLayer``s beside them
(``down_blocks.0.temporal_convs.0...``). ``placements()`` says where each layer goes in ComfyUI's block
layout (see ``layout.py``). Weights that are not temporal layers travel with it as plain tensors: the
9-channel ``conv_in`` of image-conditioned families and IP-Adapter image-projection weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn

from . import layout
from .attention import resolve_operations
from .temporal_attention import TemporalAttentionLayer
from .temporal_conv import TemporalConvLayer

FAMILIES = ("animatediff_v1", "animatediff_v2", "animatediff_v3", "animatelcm", "pia", "atomovideo")
IMAGE_FAMILIES = ("pia", "atomovideo")


@dataclass(frozen=True)
class MotionModuleConfig:
    """What a motion module is and what it was trained with.

    ``beta_schedule`` uses diffusers' names: ``"linear"`` (AnimateDiff, PIA, ConsistI2V; ComfyUI calls it
    ``sqrt_linear``) or ``"scaled_linear"`` (SD-1.5 itself; ComfyUI's ``linear``).
    ``resnet_norm_across_frames``: the UNet's ResBlock GroupNorms (and its output norm) take statistics over
    all frames of a video together (AnimateDiff v1, PIA) instead of per frame.
    ``image_conditioning``: ``None``, ``"pia"`` (latent in every frame + affinity mask) or ``"atomovideo"``
    (latent and mask 1 on given frames only); such modules carry a 9-channel ``conv_in``.
    ``image_layout``: for ``"atomovideo"``, what the frames that are not given carry in the image channels:
    ``"given_only"`` (zeros) or ``"every_frame"`` (the nearest given frame's latent); see ``conditioning.py``.
    ``temporal_text_dim``: the temporal convolutions also read the caption (FiLM of its mean token feature, our
    addition; see ``temporal_conv.py``) from cross-attention features this wide (768 for SD-1.5); ``None``: the
    paper's layers, which see the caption only through the image layers' features.
    ``widths``: the channels of the UNet's four levels, SD-1.5's ``(320, 640, 1280, 1280)`` for every real module
    (another value only for the trainer's tiny test base of the same layout).
    """

    family: str
    temporal_attention: bool = True
    temporal_conv: bool = False
    mid_block: bool = True
    position_encoding: bool = True
    max_frames: int | None = 32
    heads: int = 8
    resnet_norm_across_frames: bool = False
    beta_schedule: str = "linear"
    prediction_type: str = "epsilon"
    zero_terminal_snr: bool = False
    image_conditioning: str | None = None
    image_layout: str = "given_only"
    temporal_text_dim: int | None = None
    widths: tuple[int, ...] = layout.SD15_WIDTHS
    extras: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"unknown motion-module family {self.family!r}; known: {', '.join(FAMILIES)}")
        if self.prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {self.prediction_type!r}")
        if self.beta_schedule not in ("linear", "scaled_linear"):
            raise ValueError(f"beta_schedule must be 'linear' or 'scaled_linear', got {self.beta_schedule!r}")
        if self.image_layout not in ("given_only", "every_frame"):
            raise ValueError(f"image_layout must be 'given_only' or 'every_frame', got {self.image_layout!r}")
        if self.temporal_text_dim is not None and not (self.temporal_conv and self.temporal_text_dim > 0):
            raise ValueError("temporal_text_dim needs temporal_conv layers (the caption reaches them) and a positive "
                             f"width, got temporal_conv={self.temporal_conv}, temporal_text_dim={self.temporal_text_dim}")

    def with_(self, **changes) -> MotionModuleConfig:
        return replace(self, **changes)

    def as_dict(self) -> dict:
        return asdict(self)


class _BlockLayers(nn.Module):
    """The temporal layers of one diffusers-named block (``motion_modules`` and ``temporal_convs``)."""

    def __init__(self):
        super().__init__()
        self.motion_modules = nn.ModuleList()
        self.temporal_convs = nn.ModuleList()


class MotionModule(nn.Module):
    """All temporal layers for one SD-1.5 UNet.

    Attributes besides the layers: ``config`` (a ``MotionModuleConfig``), ``name`` (the file it came from,
    for messages), ``conv_in_weight`` (``[320, 9, 3, 3]`` or ``None``: channels 4..8 are the mask and image
    latent; channels 0..3 and the bias stay the base model's) and ``ip_adapter_weights`` (IP-Adapter tensors
    under their ``image_proj.*``/``ip_adapter.*`` keys, possibly empty).
    """

    def __init__(self, config: MotionModuleConfig, name: str = "motion module", operations=None):
        super().__init__()
        self.config = config
        self.name = name
        self.operations = resolve_operations(operations)
        self.conv_in_weight: torch.Tensor | None = None
        self.ip_adapter_weights: dict[str, torch.Tensor] = {}
        self.down_blocks = nn.ModuleList([_BlockLayers() for _ in range(4)])
        self.mid_block = _BlockLayers()
        self.up_blocks = nn.ModuleList([_BlockLayers() for _ in range(4)])
        for site in layout.sites(mid_block=config.mid_block, widths=config.widths):
            if site.kind == layout.TEMPORAL_ATTENTION and config.temporal_attention:
                layer = TemporalAttentionLayer(
                    site.channels,
                    heads=config.heads,
                    position_encoding=config.position_encoding,
                    max_frames=config.max_frames,
                    operations=operations,
                )
            elif site.kind == layout.TEMPORAL_CONV and config.temporal_conv:
                layer = TemporalConvLayer(site.channels, operations=operations, text_dim=config.temporal_text_dim)
            else:
                continue
            self._layer_list(site).append(layer)

    def _layer_list(self, site: layout.Site) -> nn.ModuleList:
        parts = site.name.split(".")
        block = self.mid_block if parts[0] == "mid_block" else getattr(self, parts[0])[int(parts[1])]
        return getattr(block, parts[-2])

    def placements(self) -> list[tuple[layout.Site, nn.Module]]:
        """Every present layer with its site, in the order ``layout.SITES`` lists them."""
        out = []
        for site in layout.sites(mid_block=self.config.mid_block, widths=self.config.widths):
            layers = self._layer_list(site)
            index = int(site.name.split(".")[-1])
            if index < len(layers):
                out.append((site, layers[index]))
        return out

    @property
    def max_frames(self) -> int | None:
        return self.config.max_frames if self.config.temporal_attention else None

    @property
    def accepts_images(self) -> bool:
        return self.config.image_conditioning is not None and self.conv_in_weight is not None

    def with_operations(self, operations, dtype: torch.dtype | None = None) -> MotionModule:
        """The same module built from other layer ``operations`` (e.g. ComfyUI's cast ops), sharing this one's
        tensors (no copy) unless ``dtype`` asks for a cast of the floating-point ones. Not trainable (no grad,
        eval mode): this is how the host runs a module, not how the trainer holds one."""
        with torch.device("meta"):
            rebuilt = MotionModule(self.config, self.name, operations)

        def cast(t: torch.Tensor) -> torch.Tensor:
            return t.to(dtype) if dtype is not None and t.is_floating_point() else t

        rebuilt.load_state_dict({k: cast(v.detach()) for k, v in self.state_dict().items()}, strict=True, assign=True)
        rebuilt.requires_grad_(False).eval()
        rebuilt.conv_in_weight = None if self.conv_in_weight is None else cast(self.conv_in_weight)
        rebuilt.ip_adapter_weights = {k: cast(v) for k, v in self.ip_adapter_weights.items()}
        return rebuilt

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """The weights that are not temporal layers, under their file keys."""
        out = dict(self.ip_adapter_weights)
        if self.conv_in_weight is not None:
            out["conv_in.weight"] = self.conv_in_weight
        return out
