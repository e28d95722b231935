"""Composition with ComfyUI_IPAdapter_plus, run beside ours (set IPADAPTER_PLUS_PATH to its folder).

A user may apply cubiq's IPAdapter instead of our built-in one, or both, in either order, and sample with our
sampler's two- or three-pass guidance. Nothing may break, and each IP-Adapter must still act.
"""

from __future__ import annotations

import pytest
import torch
from ipadapter_weights import flat, image_proj_shapes, ip_layer_shapes, nested, random_weights
from sampling import conditioning

FRAMES = 4


@pytest.fixture(scope="module")
def plus(pack):
    import comfy_host

    import nodes

    comfy_host.load_other_pack("IPADAPTER_PLUS_PATH", "IPAdapterAdvanced")
    return nodes.NODE_CLASS_MAPPINGS


@pytest.fixture(scope="module")
def setup(plus, sd15, ours, tmp_path_factory):
    import comfy.clip_vision
    import folder_paths
    import random_checkpoint
    from safetensors.torch import save_file
    from sd15_models import random_vae
    from weights import animatediff_state_dict

    folder = tmp_path_factory.mktemp("ipadapter")
    save_file(flat(nested(image_proj_shapes("base"), ip_layer_shapes(), random_weights(4))),
              str(folder / "ip-adapter_sd15.safetensors"))
    paths, exts = folder_paths.folder_names_and_paths["ipadapter"]
    folder_paths.folder_names_and_paths["ipadapter"] = ([str(folder)] + list(paths), exts)
    clip_vision = comfy.clip_vision.load(str(random_checkpoint.clip_vision_h()))
    _, base = sd15
    core = ours("atomo_core")
    sd = animatediff_state_dict("pia", seed=8)
    module = core.build_motion_module(sd, core.detect_config(sd), "pia.ckpt")
    model = ours("nodes.host_adapter").attach_motion_module(base, module)
    ipadapter = plus["IPAdapterModelLoader"]().load_ipadapter_model("ip-adapter_sd15.safetensors")[0]
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    # Their encoder once, then their IPAdapterEmbeds per test (a common graph of theirs): on this CPU setup each of
    # their CLIP-vision encodes keeps a ~3 GiB fp32 copy of the vision weights alive, with or without our module.
    embeds = plus["IPAdapterEncoder"]().encode(ipadapter, image, 1.0, clip_vision=clip_vision)
    return dict(model=model, vae=random_vae(), clip_vision=clip_vision, ipadapter=ipadapter, image=image,
                embeds=embeds)


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _cubiq(plus, s, model, weight=1.0):
    pos_embed, neg_embed = s["embeds"]
    return plus["IPAdapterEmbeds"]().apply_ipadapter(
        model, s["ipadapter"], pos_embed, weight, "linear", 0.0, 1.0, neg_embed=neg_embed, embeds_scaling="V only")[0]


def _ours(ours, s, model, with_ip):
    node = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    extra = dict(clip_vision=s["clip_vision"], ipadapter="ip-adapter_sd15.safetensors") if with_ip else {}
    return node.execute(model, conditioning(1), conditioning(2), s["vae"], s["image"], FRAMES, 64, 64, "crop",
                        **extra).result


def _sample(ours, model, positive, negative, latent, image_cfg):
    node = ours("nodes.zero_snr_sampler").AtomoZeroSNRVSampler
    return node.execute(model, positive, negative, latent, 5, steps=1, cfg=5.0, image_cfg=image_cfg,
                        cfg_rescale=0.0, sampler_name="euler", scheduler="trailing", denoise=1.0).result[0]["samples"]


@pytest.mark.parametrize("image_cfg", [1.0, 5.0, 2.5], ids=["2-pass-image", "2-pass-plain", "3-pass"])
def test_cubiq_instead_of_ours_under_our_guidance(plus, setup, ours, image_cfg):
    model, positive, negative, latent = _ours(ours, setup, setup["model"], with_ip=False)
    plain = _sample(ours, model, positive, negative, latent, image_cfg)
    theirs = _sample(ours, _cubiq(plus, setup, model), positive, negative, latent, image_cfg)
    assert torch.isfinite(theirs).all()
    assert not torch.allclose(theirs[1:], plain[1:], atol=1e-4)  # their IP-Adapter acts through our sampler


def test_both_in_either_order(plus, setup, ours):
    model, positive, negative, latent = _ours(ours, setup, setup["model"], with_ip=True)
    ours_only = _sample(ours, model, positive, negative, latent, 2.5)
    ours_then_theirs = _sample(ours, _cubiq(plus, setup, model), positive, negative, latent, 2.5)
    theirs_first = _cubiq(plus, setup, setup["model"])
    model2, positive2, negative2, latent2 = _ours(ours, setup, theirs_first, with_ip=True)
    theirs_then_ours = _sample(ours, model2, positive2, negative2, latent2, 2.5)
    for out in (ours_then_theirs, theirs_then_ours):
        assert torch.isfinite(out).all()
        assert not torch.allclose(out[1:], ours_only[1:], atol=1e-4)
    # Our patch with theirs stacked on it (.add) and theirs wrapped by ours compute the same sum.
    assert torch.allclose(ours_then_theirs, theirs_then_ours, rtol=1e-3, atol=1e-3)
