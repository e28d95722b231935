"""What the trainer trains is what the nodes sample: the trainer's model (diffusers UNet + our temporal layers +
9-channel input) and ComfyUI with the exported file through Load Motion Module give the same prediction.

Random real-size SD-1.5 weights shared by both sides, a random AtomoVideo module (temporal attention, temporal
convolutions with or without the caption's FiLM, image channels of conv_in), 16 frames, v-prediction on zero terminal SNR. Tolerance: the two sides
compute the same maths with different kernels (ComfyUI's sub-quadratic attention on a CPU, diffusers' SDPA),
``tolerances.UNET_OTHER_KERNEL``.
"""

from __future__ import annotations

import pytest
import torch
from host_models import register_model_folder
from sampling import one_step, relative_error
from tolerances import UNET_OTHER_KERNEL

FRAMES = 16


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _random_module(seed: int, image_layout: str = "every_frame", temporal_text: str = "film"):
    from atomo_core.atomovideo_format import new_atomovideo_module

    module = new_atomovideo_module(max_frames=24, name="trained.safetensors", image_layout=image_layout,
                                   temporal_text_dim=768 if temporal_text == "film" else None)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("proj_out.weight", "conv.weight")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            if name.endswith("text_film.weight"):  # a scale of about +-0.1 from the random captions
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
    return module


@pytest.mark.parametrize(("image_layout", "temporal_text"), [("every_frame", "film"), ("given_only", "none")])
def test_trainer_model_and_nodes_agree(sd15, ours, tmp_path, image_layout, temporal_text):
    """The trainer's defaults (image layout ``every_frame``, temporal convolutions that read the caption) and a file
    as the first trainer wrote them (``given_only``, the paper's layers, neither in the header): the nodes build
    the trainer's conditioning and layers from the file's header, and the two sides predict the same."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from atomo_core.atomovideo_format import save_atomovideo
    from atomo_core.training.unet import TemporalUNet

    unet2d, base = sd15
    module = _random_module(seed=3, image_layout=image_layout, temporal_text=temporal_text)
    trainer = TemporalUNet(unet2d, module)
    try:
        with torch.no_grad():
            trainer.unet.conv_in.image_weight.copy_(torch.randn(320, 5, 3, 3, generator=torch.Generator()
                                                                .manual_seed(4)) * 0.05)
        exported = trainer.export_module()
        path = tmp_path / "motion_modules" / "trained.safetensors"
        path.parent.mkdir()
        save_atomovideo(exported, str(path), extra_metadata={"training_step": "123"})
        assert load_file(str(path))["conv_in.weight"].shape == (320, 9, 3, 3)
        if image_layout == "given_only":  # a file from before the field existed: it must load as given_only
            _drop_metadata(path, "image_layout")
        with safe_open(str(path), "pt") as f:  # temporal_text is written only for film, so old files lack it
            assert f.metadata().get("temporal_text") == ("film" if temporal_text == "film" else None)
        register_model_folder("motion_modules", path.parent)

        loader = ours("nodes.load_motion_module").AtomoLoadMotionModule
        model = loader.execute(base, "trained.safetensors").result[0]
        attachment = model.get_attachment("atomo_video")
        assert attachment.config.prediction_type == "v_prediction" and attachment.config.zero_terminal_snr
        assert attachment.config.image_layout == image_layout  # read back from the file's header
        assert attachment.config.temporal_text_dim == (768 if temporal_text == "film" else None)
        model = model.clone()
        ours("nodes.conv_in").patch_conv_in(model, attachment.module)

        gen = torch.Generator().manual_seed(5)
        image_latent = torch.randn(1, 4, 8, 8, generator=gen)
        # what Image Inject Conditioning builds from the loaded file, against what the trainer's objective builds
        concat = ours("nodes.injection").image_concat(attachment.module, image_latent, FRAMES, 0, "")
        assert _trainer_concat(image_latent, image_layout).equal(concat)
        if image_layout == "every_frame":
            assert concat[1:, 1:].equal(image_latent.expand(FRAMES - 1, -1, -1, -1))  # the image in every frame
        else:
            assert not concat[1:].any()
        context = torch.randn(1, 77, 768, generator=gen)
        positive = [[context, {"noise_concat": concat}]]
        negative = [[torch.randn(1, 77, 768, generator=gen), {"noise_concat": concat}]]
        sigmas = model.get_model_object("model_sampling").sigmas
        noise = torch.randn(FRAMES, 4, 8, 8, generator=gen)
        _, calls = one_step(model, noise, sigmas[700], positive, negative, cfg=5.0)
        (call,) = calls
        assert call["input"].shape == (2 * FRAMES, 9, 8, 8)
        with torch.no_grad():
            ours_trainer = trainer(call["input"], call["timestep"], call["context"], FRAMES)
        error = relative_error(ours_trainer, call["output"])
        print(f"trainer vs nodes: max|diff| / rms = {error:.2e}")
        assert error < UNET_OTHER_KERNEL
        if temporal_text == "film":  # the figure sees the caption's FiLM: without it the trainer is far off
            films = [p for name, p in trainer.motion.named_parameters() if "text_film" in name]
            saved = [p.detach().clone() for p in films]
            with torch.no_grad():
                for p in films:
                    p.zero_()
                no_film = trainer(call["input"], call["timestep"], call["context"], FRAMES)
                for p, kept in zip(films, saved, strict=True):
                    p.copy_(kept)
            assert relative_error(no_film, call["output"]) > 100 * UNET_OTHER_KERNEL
        # The figure sees the temporal layers and the image channels: without them it is far off.
        trainer.remove()
        with torch.no_grad():
            plain = unet2d(call["input"][:, :4], call["timestep"], encoder_hidden_states=call["context"]).sample
        assert relative_error(plain, call["output"]) > 100 * UNET_OTHER_KERNEL

        # And the exported file samples through the node's sampler.
        node = ours("nodes.zero_snr_sampler").AtomoZeroSNRVSampler
        latent = {"samples": torch.zeros(FRAMES, 4, 8, 8)}
        out = node.execute(model, positive, negative, latent, 0, steps=2, cfg=5.0, image_cfg=2.0, cfg_rescale=0.7,
                           sampler_name="euler", scheduler="trailing", denoise=1.0).result[0]["samples"]
        assert out.shape == (FRAMES, 4, 8, 8) and torch.isfinite(out).all()
    finally:
        trainer.remove()


def _drop_metadata(path, key: str) -> None:
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(path), "pt") as f:
        metadata = dict(f.metadata())
    assert metadata.pop(key)
    save_file(load_file(str(path)), str(path), metadata=metadata)


def _trainer_concat(image_latent: torch.Tensor, image_layout: str) -> torch.Tensor:
    """The image channels the trainer's objective builds for one clip with frame 0 given."""
    from atomo_core.training.objective import Draws, Objective, ObjectiveConfig

    objective = Objective(ObjectiveConfig(image_layout=image_layout))
    latents = image_latent.unsqueeze(1).expand(1, FRAMES, -1, -1, -1)  # frame 0 is the given one
    draws = Draws(torch.tensor([999]), torch.zeros(FRAMES, *image_latent.shape[1:]), [True], [True], [1])
    return objective.build(latents, draws).model_input[:, 4:]


def test_trainer_reads_the_checkpoint_file_comfyui_reads(pack, ours):
    """base_model = the single-file checkpoint Load Checkpoint reads: the same UNet prediction, text embedding and
    image latent in the trainer (diffusers' conversion, our configs and tokenizer files) and in ComfyUI."""
    import comfy.sd
    import random_checkpoint

    from atomo_core.training.base import load_base

    path = random_checkpoint.sd15_checkpoint(seed=0)
    base = load_base(str(path))
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=True, output_clip=True)
    prompt = "a red fox runs through deep snow, cinematic light"
    tokens = clip.tokenize(prompt)
    comfy_text = clip.encode_from_tokens(tokens)
    ours_text = base.encode_text([prompt])
    assert ours_text.shape == comfy_text.shape == (1, 77, 768)
    # Two implementations of the same fp32 maths (observed: text 2.4e-6, latent 1.7e-5, UNet 1.1e-5).
    text_error = relative_error(ours_text.float(), comfy_text.float())
    assert text_error < UNET_OTHER_KERNEL, text_error
    other = base.encode_text(["a blue car on a wet road"])
    assert relative_error(other.float(), comfy_text.float()) > 100 * UNET_OTHER_KERNEL  # the tokens matter
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(1))
    comfy_latent = model.model.latent_format.process_in(vae.encode(image))
    ours_latent = base.encode_video(image.permute(0, 3, 1, 2) * 2 - 1)
    assert relative_error(ours_latent.float(), comfy_latent.float()) < UNET_OTHER_KERNEL
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 8, 8, generator=gen)
    ctx = torch.randn(2, 77, 768, generator=gen)
    t = torch.tensor([500.0, 500.0])
    with torch.no_grad():
        ours_out = base.unet(x, t, encoder_hidden_states=ctx).sample
        comfy_out = model.model.diffusion_model(x.to(model.model.get_dtype()), t, context=ctx.to(
            model.model.get_dtype())).float()
    assert relative_error(ours_out, comfy_out) < UNET_OTHER_KERNEL
    del base, model, clip, vae


def test_training_ip_tokens_are_the_nodes(sd15, ours, tmp_path):
    """The IP-Adapter tokens the trainer conditions on are those Image Inject Conditioning computes, from the same
    SD-1.5 IP-Adapter file and ViT-H CLIP vision file (ComfyUI's CLIPVisionLoader on the node side)."""
    import comfy.clip_vision
    import random_checkpoint
    from host_models import random_base_adapter
    from safetensors.torch import save_file

    from atomo_core.training.ip_conditioning import build_ip_conditioner

    unet2d, _ = sd15
    adapter_path = tmp_path / "ip-adapter_sd15.safetensors"
    save_file(random_base_adapter(seed=5), str(adapter_path))
    clip_path = random_checkpoint.clip_vision_h(seed=0)
    processors = dict(unet2d.attn_processors)
    try:
        ip = build_ip_conditioner(str(adapter_path), str(clip_path), unet2d, (320, 640, 1280, 1280), 1.0, False)
        image = torch.rand(1, 96, 80, 3, generator=torch.Generator().manual_seed(6))
        ip.set_tokens(image.permute(0, 3, 1, 2) * 2 - 1, torch.tensor([True]), frames=1)
        clip_vision = comfy.clip_vision.load(str(clip_path))
        adapter = ours("atomo_core.ip_adapter").load_ip_adapter(str(adapter_path))
        node_tokens, node_uncond = ours("nodes.injection").clip_tokens(adapter, clip_vision, image)
        error = relative_error(ip.current.float(), node_tokens.float())
        print(f"IP tokens trainer vs node: {error:.2e}")
        assert error < UNET_OTHER_KERNEL
        ip.set_tokens(image.permute(0, 3, 1, 2) * 2 - 1, torch.tensor([False]), frames=1)
        assert relative_error(ip.current.float(), node_uncond.float()) < UNET_OTHER_KERNEL
    finally:
        unet2d.set_attn_processor(processors)
