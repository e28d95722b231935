"""IP-Adapter's decoupled cross-attention as ComfyUI attn2 replace patches at the 16 SD-1.5 sites.

Which chunk of the batch gets the image tokens, one rule for every sampler: the image prompt goes with the
positive prompt, and every other branch gets the unconditional image tokens, as the original IP-Adapter does
under CFG. ComfyUI batches conditions chunk by chunk and says which condition each chunk is in
``transformer_options["cond_or_uncond"]`` (indices into the guider's list); the positive is index 0 in
ComfyUI's KSampler, SamplerCustom (CFGGuider) and our Zero-SNR V Sampler, whose other branches (negative text
with the image latent, and with neither) get the unconditional tokens. So at ``image_cfg = 1`` our sampler
and KSampler give the IP-Adapter the same guidance.

Attention runs on ComfyUI's backend (``attention.comfy_attention``). Dtypes: the weights and tokens are kept
in float32 and cast to the query's dtype (the UNet's compute dtype) at each call; ComfyUI's ``.to(dtype)``
on patches, which passes the UNet's *storage* dtype (fp8 with ``--fp8_e4m3fn-unet``), only moves them.

Composition: a patch already registered at a site (e.g. ComfyUI_IPAdapter_plus applied before us) is
called for the text part and ours is added to it. A pack that stacks itself onto an existing patch with
``.add(callback, **kwargs)`` (ComfyUI_IPAdapter_plus applied after us) is supported: its callbacks are run
after ours, within their ``sigma_start``/``sigma_end`` range, as that pack's own patch would.
"""

from __future__ import annotations

import copy

import torch

from ..atomo_core.ip_adapter import IP_SITES, decoupled_attention, ip_key_value, repeat_per_chunk
from .attention import comfy_attention

POSITIVE = 0  # the guider's index of the positive condition (KSampler, SamplerCustom, our sampler)


def image_chunks(extra_options: dict) -> list[bool]:
    """For each chunk of this call, whether it gets the image tokens (only the positive does)."""
    return [c == POSITIVE for c in extra_options.get("cond_or_uncond") or [POSITIVE]]


class IPAttentionPatch:
    """attn2 replace at one site: ``previous or attention(q, k, v) + weight * attention(q, k_ip, v_ip)``."""

    def __init__(self, block, to_k_ip, to_v_ip, tokens, uncond_tokens, weight, previous=None):
        self.block = block
        self.to_k_ip, self.to_v_ip = to_k_ip, to_v_ip
        self.tokens, self.uncond_tokens = tokens, uncond_tokens  # [1, T, 768] each
        self.weight = float(weight)
        self.previous = previous
        self.stacked: list[tuple] = []  # (callback, kwargs) added by other packs

    def __call__(self, q, k, v, extra_options):
        heads = extra_options["n_heads"]
        attention = comfy_attention(extra_options)
        with_image = image_chunks(extra_options)
        tokens = torch.cat([self.tokens if img else self.uncond_tokens for img in with_image]).to(q)
        k_ip, v_ip = ip_key_value(tokens, self.to_k_ip, self.to_v_ip)
        if self.previous is None:
            out = decoupled_attention(q, k, v, k_ip, v_ip, heads, self.weight, attention)
        else:  # another pack's patch makes the text part (and its own image part)
            k_ip, v_ip = repeat_per_chunk(k_ip, q.shape[0]), repeat_per_chunk(v_ip, q.shape[0])
            out = self.previous(q, k, v, extra_options) + self.weight * attention(q, k_ip, v_ip, heads)
        if self.stacked:
            sigmas = extra_options.get("sigmas")
            sigma = sigmas.detach().cpu()[0].item() if sigmas is not None else float("inf")
            for callback, kwargs in self.stacked:
                if kwargs.get("sigma_end", 0.0) <= sigma <= kwargs.get("sigma_start", float("inf")):
                    out = out + callback(out, q, k, v, extra_options, **kwargs)
        return out.to(q.dtype)

    def add(self, callback, **kwargs):
        """How ComfyUI_IPAdapter_plus stacks onto a patch it finds (in place, as its own patches do). Safe on a
        clone: every clone owns copies of our patches (``_own_patches``)."""
        self.stacked.append((callback, kwargs))

    def to(self, device_or_dtype):
        """A copy on the device (copy-on-write: a patch object may be shared between clones, so it is never changed
        after it is attached; ComfyUI stores what this returns). Dtypes are ignored (they would be the UNet's
        storage dtype, e.g. fp8: see above)."""
        if isinstance(device_or_dtype, torch.dtype):
            return self
        new = copy.copy(self)
        for name in ("to_k_ip", "to_v_ip", "tokens", "uncond_tokens"):
            setattr(new, name, getattr(self, name).to(device_or_dtype))
        return new

    def __deepcopy__(self, memo):
        new = copy.copy(self)  # tensors are shared, never written in place
        new.stacked = list(self.stacked)
        new.previous = copy.deepcopy(self.previous, memo)
        return new


CLONE_KEY = "AtomoVideo_ip_adapter"


def _own_patches(original, clone) -> None:
    """``ON_CLONE`` callback: the clone gets its own copies of our patches. ComfyUI 0.3.64 deep-copies
    ``model_options`` on every clone; current ComfyUI copies only its dicts and lists (``deepcopy_list_dict``) and
    shares the objects in them, so another pack's ``.add()`` on a downstream clone's patch would reach upstream."""
    attn2 = clone.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    source = original.model_options.get("transformer_options", {}).get("patches_replace", {}).get("attn2", {})
    for key, patch in list(attn2.items()):
        if isinstance(patch, IPAttentionPatch) and patch is source.get(key):
            attn2[key] = copy.deepcopy(patch)


def remove_ip_adapter(model) -> int:
    """Take our patches off ``model`` (a clone), putting back the patch each one wrapped; returns how many."""
    attn2 = model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    removed = 0
    for key, patch in list(attn2.items()):
        if isinstance(patch, IPAttentionPatch):
            removed += 1
            if patch.previous is None:
                del attn2[key]
            else:
                attn2[key] = patch.previous
    return removed


def apply_ip_adapter(model, ip_weights: dict, tokens: torch.Tensor, uncond_tokens: torch.Tensor, weight: float):
    """Register the 16 site patches on ``model`` (a clone), wrapping any patch already at a site."""
    attn2 = model.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
    for site in IP_SITES:
        key_w = f"ip_adapter.{site.key}.to_k_ip.weight"
        key_v = f"ip_adapter.{site.key}.to_v_ip.weight"
        previous = attn2.get((*site.block, 0), attn2.get(site.block))
        patch = IPAttentionPatch(site.block, ip_weights[key_w], ip_weights[key_v], tokens, uncond_tokens, weight,
                                 previous)
        if (*site.block, 0) in attn2:
            model.set_model_attn2_replace(patch, site.block[0], site.block[1], 0)
        else:
            model.set_model_attn2_replace(patch, site.block[0], site.block[1])
    from comfy.patcher_extension import CallbacksMP

    if CLONE_KEY not in model.callbacks.get(CallbacksMP.ON_CLONE, {}):
        model.add_callback_with_key(CallbacksMP.ON_CLONE, CLONE_KEY, _own_patches)
    return model
