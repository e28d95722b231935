"""Where temporal layers go in the SD-1.5 UNet, in ComfyUI's (ldm) block layout.

SD-1.5 has four resolution levels of widths 320, 640, 1280, 1280. ComfyUI names its blocks
``("input", i)``, ``("middle", 0)`` and ``("output", i)``; each block is a list of layers:

- input block ``3*level + 1 + j`` (j = 0, 1) is ``[ResBlock, SpatialTransformer]`` (no transformer at the
  deepest level); input blocks 0, 3, 6, 9 are the stem convolution and the downsamplers;
- the middle block is ``[ResBlock, SpatialTransformer, ResBlock]``;
- output block ``3*level + j`` (j = 0, 1, 2; level 0 is the deepest) is ``[ResBlock, SpatialTransformer,
  Upsample]`` with the transformer absent at the deepest level and the upsampler only in j = 2 of the
  first three levels.

A motion module's file names its layers after the diffusers blocks (``down_blocks.1.motion_modules.0``);
``SITES`` maps each such name to the ComfyUI block and to the index of the layer it follows. The temporal
attention follows the spatial attention (or the ResBlock where a block has none) and comes before any
upsampler; AtomoVideo's temporal convolution follows every ResBlock.
"""

from __future__ import annotations

from dataclasses import dataclass

SD15_WIDTHS = (320, 640, 1280, 1280)
SD15_CONTEXT_DIM = 768
TEMPORAL_ATTENTION = "temporal_attention"
TEMPORAL_CONV = "temporal_conv"


@dataclass(frozen=True)
class Site:
    """One insertion point.

    ``name`` is the layer's key prefix in a module file, ``block`` the ComfyUI block, ``after`` the index
    (in the block's own layer list) of the layer it follows, ``channels`` the activation width.
    """

    name: str
    kind: str
    block: tuple[str, int]
    after: int
    channels: int


def _down_sites(widths: tuple[int, ...]) -> list[Site]:
    sites = []
    for level, width in enumerate(widths):
        has_attention = level < 3
        for j in range(2):
            block = ("input", 3 * level + 1 + j)
            sites.append(Site(f"down_blocks.{level}.temporal_convs.{j}", TEMPORAL_CONV, block, 0, width))
            sites.append(
                Site(f"down_blocks.{level}.motion_modules.{j}", TEMPORAL_ATTENTION, block, int(has_attention), width)
            )
    return sites


def _mid_sites(widths: tuple[int, ...]) -> list[Site]:
    width = widths[-1]
    block = ("middle", 0)
    return [
        Site("mid_block.temporal_convs.0", TEMPORAL_CONV, block, 0, width),
        Site("mid_block.motion_modules.0", TEMPORAL_ATTENTION, block, 1, width),
        Site("mid_block.temporal_convs.1", TEMPORAL_CONV, block, 2, width),
    ]


def _up_sites(widths: tuple[int, ...]) -> list[Site]:
    sites = []
    for level, width in enumerate(reversed(widths)):
        has_attention = level > 0
        for j in range(3):
            block = ("output", 3 * level + j)
            sites.append(Site(f"up_blocks.{level}.temporal_convs.{j}", TEMPORAL_CONV, block, 0, width))
            sites.append(
                Site(f"up_blocks.{level}.motion_modules.{j}", TEMPORAL_ATTENTION, block, int(has_attention), width)
            )
    return sites


def _all_sites(widths: tuple[int, ...]) -> tuple[Site, ...]:
    if len(widths) != 4:
        raise ValueError(f"the SD-1.5 layout has 4 resolution levels; got widths {widths}")
    return tuple(_down_sites(widths) + _mid_sites(widths) + _up_sites(widths))


SITES: tuple[Site, ...] = _all_sites(SD15_WIDTHS)


def sites(kind: str | None = None, mid_block: bool = True, widths: tuple[int, ...] = SD15_WIDTHS) -> list[Site]:
    """The insertion points of one kind (or all), in UNet execution order within each block.

    ``mid_block=False`` drops the middle block's temporal attention (AnimateDiff v1 and PIA have none);
    the middle block's temporal convolutions are always part of the layout. ``widths``: the four levels'
    channels, SD-1.5's unless a smaller model of the same layout (the trainer's tiny test base) is meant.
    """
    out = []
    for site in SITES if tuple(widths) == SD15_WIDTHS else _all_sites(tuple(widths)):
        if kind is not None and site.kind != kind:
            continue
        if not mid_block and site.block[0] == "middle" and site.kind == TEMPORAL_ATTENTION:
            continue
        out.append(site)
    return out
