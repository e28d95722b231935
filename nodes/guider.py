"""The video guider: text/image double guidance on ComfyUI's own CFG machinery, with every sampler hook.

DreamVideo's double-condition guidance, with it = image and text (the positive), i = image without the text
(the negative prompt with the image channels), u = neither (the negative prompt, image channels zeroed):

    x = u + s_I (i - u) + s_T (it - i)  =  [i + s_T (it - i)]  +  (s_I - 1)(i - u)

The bracket is ComfyUI's CFG between the positive and the negative with scale ``cfg``: it is exactly what
KSampler computes for the same graph. So the guider is a ``CFGGuider`` whose conditions are named
``positive`` and ``negative`` (ComfyUI's handling of the negative branch applies: ``control_apply_to_uncond``
of the old Apply ControlNet node, GLIGEN), and:

- two passes (``image_cfg = 1``: ``[it, i]``, PIA's own sampling; or ``image_cfg = cfg``: ``[it, u]``, plain CFG
  against a prediction with neither) run ComfyUI's ``sampling_function`` itself: every hook
  (``sampler_calc_cond_batch_function``, ``sampler_pre_cfg_function``, ``sampler_cfg_function``,
  ``sampler_post_cfg_function``, ``disable_cfg1_optimization``) behaves exactly as in KSampler;
- three passes (other ``image_cfg``) batch ``[it, i, u]`` in one UNet call (``u`` is a third condition,
  ``negative_no_image``, with ``prompt_type`` negative), run the pre-CFG hooks and ComfyUI's ``cfg_function``
  (with the MODEL's CFG function) on the pair ``(it, i)``, add the image term ``(s_I - 1)(i - u)``, then run the
  post-CFG hooks on the whole result, with ``cond``/``uncond`` = the pair. At ``s_I = 1`` this is KSampler.

Condition order (what ``cond_or_uncond`` indexes): 0 = positive, 1 = negative, 2 = negative without image, so
hooks that read chunk 1 as "the uncond" (SAG) see the uncond of the CFG pair, and IP-Adapter patches give the
image tokens to chunk 0 only (``ip_adapter_patch``).

CFG rescale (``cfg_rescale``, Lin et al., in v-space as ComfyUI's RescaleCFG) rescales the whole guided
prediction against the positive. With two passes it is installed as the MODEL's ``sampler_cfg_function``;
a MODEL that already has one (RescaleCFG, Mahiro...) keeps its own and ours is not applied.
"""

from __future__ import annotations

import logging

import comfy.samplers
import node_helpers

from ..atomo_core.guidance import guidance_passes, rescale_denoised, rescaled_cfg_denoised
from .conditioning import without_image

log = logging.getLogger("AtomoVideo")

POSITIVE, NEGATIVE, NO_IMAGE = "positive", "negative", "negative_no_image"


def pass_order(passes: list[str]) -> list[str]:
    """The passes in batch order: the CFG pair (positive, then the negative with or without the image) first."""
    return [name for name in ("it", "i", "u") if name in passes]


class AtomoGuider(comfy.samplers.CFGGuider):
    """CFGGuider with image/text guidance and CFG rescale."""

    def __init__(self, model_patcher, text_scale: float, image_scale: float, rescale: float, has_image: bool):
        super().__init__(model_patcher)
        self.requested = (float(text_scale), float(image_scale), float(rescale))  # before has_image and the MODEL
        self.text_scale = float(text_scale)
        self.image_scale = float(image_scale) if has_image else 1.0
        self.rescale = float(rescale)
        self.passes = pass_order(guidance_passes(self.text_scale, self.image_scale, has_image))
        self.cfg = self.text_scale
        if self.rescale > 0 and "sampler_cfg_function" in model_patcher.model_options:
            log.info("AtomoVideo: the MODEL has its own CFG function (e.g. RescaleCFG); cfg_rescale %.2f is not "
                     "applied on top of it", self.rescale)
            self.rescale = 0.0

    def set_conds(self, positive, negative):
        self.positive, self.negative = positive, negative  # as given (Predict Next Frames re-sets them per segment)
        branches = {"it": positive, "i": negative,
                    "u": node_helpers.conditioning_set_values(without_image(negative), {"prompt_type": "negative"})}
        # in batch order; with two passes the second is ComfyUI's "negative", whichever it is
        names = (POSITIVE, NEGATIVE, NO_IMAGE)
        self.inner_set_conds({names[i]: branches[p] for i, p in enumerate(self.passes)})

    def _rescaled_cfg(self, args):
        """``sampler_cfg_function``: plain CFG then our rescale, returned as ComfyUI expects (``x - denoised``)."""
        x = args["input"]
        denoised = rescaled_cfg_denoised(x, args["sigma"], args["cond_denoised"], args["uncond_denoised"],
                                         args["cond_scale"], self.rescale)
        return x - denoised

    def predict_noise(self, x, timestep, model_options={}, seed=None):  # noqa: B006 (ComfyUI's signature)
        if len(self.passes) == 2:
            options = model_options
            if self.rescale > 0:
                options = dict(model_options, sampler_cfg_function=self._rescaled_cfg)
            return comfy.samplers.sampling_function(self.inner_model, x, timestep, self.conds.get(NEGATIVE),
                                                    self.conds.get(POSITIVE), self.text_scale, options, seed)
        return self._three_passes(x, timestep, model_options)

    def _three_passes(self, x, timestep, model_options):
        model = self.inner_model
        conds = [self.conds.get(POSITIVE), self.conds.get(NEGATIVE), self.conds.get(NO_IMAGE)]
        if "sampler_calc_cond_batch_function" in model_options:
            out = model_options["sampler_calc_cond_batch_function"](
                {"conds": conds, "input": x, "sigma": timestep, "model": model, "model_options": model_options})
        else:
            out = comfy.samplers.calc_cond_batch(model, conds, x, timestep, model_options)
        pair = list(out[:2])
        for fn in model_options.get("sampler_pre_cfg_function", []):
            pair = fn({"conds": conds[:2], "conds_out": pair, "cond_scale": self.text_scale, "timestep": timestep,
                       "input": x, "sigma": timestep, "model": model, "model_options": model_options})
        without_post = {k: v for k, v in model_options.items() if k != "sampler_post_cfg_function"}
        guided = comfy.samplers.cfg_function(model, pair[0], pair[1], self.text_scale, x, timestep,
                                             model_options=without_post, cond=conds[0], uncond=conds[1])
        guided = guided + (self.image_scale - 1.0) * (pair[1] - out[2])
        if self.rescale > 0:
            guided = rescale_denoised(x, timestep, guided, pair[0], self.rescale)
        for fn in model_options.get("sampler_post_cfg_function", []):
            guided = fn({"denoised": guided, "cond": conds[0], "uncond": conds[1], "cond_scale": self.text_scale,
                         "model": model, "uncond_denoised": pair[1], "cond_denoised": pair[0], "sigma": timestep,
                         "model_options": model_options, "input": x})
        return guided
