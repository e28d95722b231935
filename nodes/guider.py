"""The video guider: text/image double guidance and CFG rescale on top of ComfyUI's batched condition calls.

DreamVideo's double-condition guidance, with u = no image and no text, i = image only, it = image and text:

    x = u + s_I (i - u) + s_T (it - i) = (1 - s_I) u + (s_I - s_T) i + s_T it

so ``u`` is computed only when ``s_I != 1`` and ``i`` only when ``s_I != s_T``: two passes when ``image_cfg`` is
1 (the image conditions every branch, PIA's own sampling) or equals ``cfg`` (plain CFG against an image-free,
text-free prediction), three otherwise. All passes of a step go to the UNet as one batch.

Condition order (what ``cond_or_uncond`` indexes): ``[it, u, i]`` (``[it, u]`` or ``[it, i]`` with two
passes), so that IP-Adapter patches that assume "0 = cond, 1 = uncond, 2 = cond" (ComfyUI_IPAdapter_plus)
see the right chunks; ours reads the exact indices from ``transformer_options[IMAGE_CONDS]``.
"""

from __future__ import annotations

import comfy.samplers

from ..atomo_core.guidance import combine_guidance, guidance_passes, rescale_denoised
from .conditioning import without_image
from .ip_adapter_patch import IMAGE_CONDS


class AtomoGuider(comfy.samplers.CFGGuider):
    """CFGGuider with image/text guidance and CFG rescale (in v-space, as ComfyUI's RescaleCFG)."""

    def __init__(self, model_patcher, text_scale: float, image_scale: float, rescale: float, has_image: bool):
        super().__init__(model_patcher)
        self.text_scale = float(text_scale)
        self.image_scale = float(image_scale) if has_image else 1.0
        self.rescale = float(rescale)
        self.passes = guidance_passes(self.text_scale, self.image_scale, has_image)
        self.cfg = self.text_scale

    def set_conds(self, positive, negative):
        conds = {"it": positive, "u": without_image(negative), "i": negative}
        self.inner_set_conds({name: conds[name] for name in self.passes})

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        options = dict(model_options)
        transformer_options = dict(options.get("transformer_options", {}))
        transformer_options[IMAGE_CONDS] = tuple(i for i, name in enumerate(self.passes) if name in ("it", "i"))
        options["transformer_options"] = transformer_options
        conds = [self.conds.get(name) for name in self.passes]
        outputs = comfy.samplers.calc_cond_batch(self.inner_model, conds, x, timestep, options)
        preds = dict(zip(self.passes, outputs, strict=True))
        guided = combine_guidance(preds, self.text_scale, self.image_scale)
        if self.rescale > 0:
            guided = rescale_denoised(x, timestep, guided, preds["it"], self.rescale)
        uncond = preds.get("u", preds.get("i"))
        for fn in options.get("sampler_post_cfg_function", []):
            guided = fn({"denoised": guided, "cond": self.conds.get("it"), "uncond": None, "model": self.inner_model,
                         "uncond_denoised": uncond, "cond_denoised": preds["it"], "sigma": timestep,
                         "model_options": options, "input": x})
        return guided

