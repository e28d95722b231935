"""Image Inject Conditioning (``AtomoImageInjectConditioning``): one image (or several given frames) in,
MODEL + conditioning + LATENT out, ready for the Zero-SNR V Sampler (or ComfyUI's KSampler)."""

from __future__ import annotations

import folder_paths
import torch
from comfy_api.latest import io

from ..atomo_core.conditioning import PIA_PRESETS
from ..atomo_core.errors import ConditioningError
from ..atomo_core.image_fit import FIT_MODES, check_video_size, fit_images
from ..atomo_core.ip_adapter import load_ip_adapter
from . import folders
from .conditioning import with_concat
from .conv_in import patch_conv_in
from .injection import adapter_from_module, apply_image_prompt, check_vae, encode, image_attachment, image_concat

NO_IPADAPTER = "none"
FROM_MODULE = "from motion module"


def _ipadapter_choices() -> list[str]:
    return [NO_IPADAPTER, FROM_MODULE] + folder_paths.get_filename_list(folders.IPADAPTER)


class AtomoImageInjectConditioning(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AtomoImageInjectConditioning",
            display_name="Image Inject Conditioning",
            category="AtomoVideo",
            description=(
                "Injects an image into a video model: its VAE latent through the 9-channel input (fine detail) "
                "and, optionally, its CLIP-vision semantics through IP-Adapter attention. Needs a PIA or AtomoVideo "
                "motion module on the MODEL."
            ),
            inputs=[
                io.Model.Input("model", tooltip="The MODEL from Load Motion Module (PIA or AtomoVideo module)."),
                io.Conditioning.Input("positive", tooltip="Your positive prompt (CLIP Text Encode)."),
                io.Conditioning.Input("negative", tooltip="Your negative prompt (CLIP Text Encode)."),
                io.Vae.Input("vae", tooltip="The SD-1.5 VAE (the checkpoint's)."),
                io.Image.Input("image", tooltip="The image to animate, or a batch of given frames (AtomoVideo)."),
                io.Int.Input("frames", default=16, min=1, max=4096, tooltip="Frames in the clip."),
                io.Int.Input("width", default=512, min=64, max=4096, step=8, tooltip="Video width (multiple of 8)."),
                io.Int.Input("height", default=512, min=64, max=4096, step=8, tooltip="Video height (multiple of 8)."),
                io.Combo.Input("fit", options=list(FIT_MODES), default="crop",
                               tooltip="crop: fill the frame and trim the overflow; pad: fit inside with grey "
                                       "borders; stretch: resize as is (distorts other aspect ratios)."),
                io.Int.Input("first_frame", default=0, min=0, max=4095, optional=True,
                             tooltip="The frame the image goes to (several images: the first of them). PIA: its "
                                     "condition frame."),
                io.Combo.Input("pia_motion", options=list(PIA_PRESETS), default="small motion", optional=True,
                               tooltip="PIA only: the motion preset (per-frame affinity to the image)."),
                io.Boolean.Input("lock_given_frames", default=True, optional=True,
                                 tooltip="AtomoVideo only: keep the given frames exactly (a denoise mask)."),
                io.ClipVision.Input("clip_vision", optional=True,
                                    tooltip="CLIP vision (ViT-H) for the IP-Adapter's image semantics."),
                io.Combo.Input("ipadapter", options=_ipadapter_choices(), default=NO_IPADAPTER, optional=True,
                               tooltip="An SD-1.5 IP-Adapter from models/ipadapter, or the one inside an AtomoVideo "
                                       "file. Needs clip_vision."),
                io.Float.Input("ipadapter_weight", default=1.0, min=-1.0, max=3.0, step=0.05, optional=True,
                               tooltip="Strength of the image semantics."),
            ],
            outputs=[
                io.Model.Output(display_name="MODEL", tooltip="The MODEL with the 9-channel input (and IP-Adapter "
                                                              "attention): connect it to the sampler."),
                io.Conditioning.Output(display_name="positive", tooltip="The positive prompt carrying the image's "
                                                                        "latent and frame mask."),
                io.Conditioning.Output(display_name="negative", tooltip="The negative prompt carrying the image's "
                                                                        "latent and frame mask."),
                io.Latent.Output(display_name="latent", tooltip="The clip's latent (frames x size) to sample, with the "
                                                                "given frames locked where asked."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, vae, image, frames, width, height, fit, first_frame=0,
                pia_motion="small motion", lock_given_frames=True, clip_vision=None, ipadapter=NO_IPADAPTER,
                ipadapter_weight=1.0) -> io.NodeOutput:
        attachment = image_attachment(model)
        module = attachment.module
        # a clip longer than the module's limit is checked at sampling time, where Context Windows (video frames)
        # may split it (every window held to the given frames)
        if image.shape[0] > frames:
            raise ConditioningError(
                f"The image batch has {image.shape[0]} images but the clip has only {frames} frames. Use at least "
                f"{image.shape[0]} frames or pass fewer images."
            )
        check_video_size(width, height)
        check_vae(vae)
        pixels = fit_images(image, width, height, fit)
        raw, latents = encode(vae, model, pixels)
        concat = image_concat(module, latents, frames, first_frame, pia_motion)

        patched = model.clone()
        patch_conv_in(patched, module)
        if ipadapter != NO_IPADAPTER:
            if clip_vision is None:
                raise ConditioningError(
                    f"The IP-Adapter '{ipadapter}' needs a CLIP vision model: connect Load CLIP Vision (ViT-H)."
                )
            adapter = adapter_from_module(module) if ipadapter == FROM_MODULE else load_ip_adapter(
                folder_paths.get_full_path_or_raise(folders.IPADAPTER, ipadapter))
            apply_image_prompt(patched, adapter, clip_vision, pixels, ipadapter_weight)

        samples = torch.zeros(frames, 4, height // 8, width // 8)
        latent = {"samples": samples}
        if module.config.image_conditioning == "atomovideo" and lock_given_frames:
            given = list(range(first_frame, first_frame + raw.shape[0]))
            samples[given] = raw.to(samples)
            mask = torch.ones(frames, 1, height // 8, width // 8)
            mask[given] = 0.0
            latent["noise_mask"] = mask
        family = module.config.image_conditioning
        return io.NodeOutput(patched, with_concat(positive, concat, family), with_concat(negative, concat, family),
                             latent)
