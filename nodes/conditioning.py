"""Reading and writing the image channels that ride along with ComfyUI conditioning.

The 9-channel UNets get ``c_concat`` (mask | image latent, ``[F, 5, h, w]``) through the conditioning key
``noise_concat``, which ComfyUI's BaseModel passes to the UNet unchanged, batch-sliced like the noise.
"""

from __future__ import annotations

import node_helpers
import torch

CONCAT_KEY = "noise_concat"
FAMILY_KEY = "atomo_image_family"  # "atomovideo" or "pia": how the image channels are laid out (context windows)


def with_concat(conditioning, concat: torch.Tensor, family: str | None = None):
    values = {CONCAT_KEY: concat}
    if family is not None:
        values[FAMILY_KEY] = family
    return node_helpers.conditioning_set_values(conditioning, values)


def concat_of(conditioning) -> torch.Tensor | None:
    for _, options in conditioning:
        if options.get(CONCAT_KEY) is not None:
            return options[CONCAT_KEY]
    return None


def without_image(conditioning):
    """The same conditioning with the image channels zeroed (mask 0, latent 0): the "no image" condition."""
    out = []
    for embedding, options in conditioning:
        options = options.copy()
        if options.get(CONCAT_KEY) is not None:
            options[CONCAT_KEY] = torch.zeros_like(options[CONCAT_KEY])
        out.append([embedding, options])
    return out


def first_given_latent(conditioning) -> torch.Tensor | None:
    """``[4, h, w]``: the (scaled) latent of the first frame whose mask is non-zero, or ``None``."""
    concat = concat_of(conditioning)
    if concat is None:
        return None
    given = (concat[:, 0].flatten(1).abs().amax(dim=1) > 0).nonzero()
    return concat[int(given[0]), 1:] if len(given) else None
