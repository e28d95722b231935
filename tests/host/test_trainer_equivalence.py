"""What the trainer trains is what the nodes sample: the trainer's model (diffusers UNet + our temporal layers +
9-channel input) and ComfyUI with the exported file through Load Motion Module give the same prediction.

Random real-size SD-1.5 weights shared by both sides, a random AtomoVideo module (temporal attention, temporal
convolutions, image channels of conv_in), 16 frames, v-prediction on zero terminal SNR. Tolerance: the two sides
compute the same maths with different kernels (ComfyUI's sub-quadratic attention on a CPU, diffusers' SDPA),
``tolerances.UNET_OTHER_KERNEL``.
"""

from __future__ import annotations

import gc

import pytest
import torch
from host_models import register_model_folder
from sampling import one_step, relative_error
from tolerances import UNET_OTHER_KERNEL

FRAMES = 16


@pytest.fixture(autouse=True)
def _free():
    yield
    import comfy.model_management

    comfy.model_management.unload_all_models()
    gc.collect()


def _random_module(seed: int):
    from atomo_core.atomovideo_format import new_atomovideo_module

    module = new_atomovideo_module(max_frames=24, name="trained.safetensors")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if name.endswith(("proj_out.weight", "conv.weight")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    return module


def test_trainer_model_and_nodes_agree(sd15, ours, tmp_path):
    from safetensors.torch import load_file

    from atomo_core.atomovideo_format import save_atomovideo
    from atomo_core.training.unet import TemporalUNet

    unet2d, base = sd15
    module = _random_module(seed=3)
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
        register_model_folder("motion_modules", path.parent)

        loader = ours("nodes.load_motion_module").AtomoLoadMotionModule
        model = loader.execute(base, "trained.safetensors").result[0]
        attachment = model.get_attachment("atomo_video")
        assert attachment.config.prediction_type == "v_prediction" and attachment.config.zero_terminal_snr
        model = model.clone()
        ours("nodes.conv_in").patch_conv_in(model, attachment.module)

        gen = torch.Generator().manual_seed(5)
        image_latent = torch.randn(1, 4, 8, 8, generator=gen)
        concat = ours("atomo_core.conditioning").atomovideo_concat(image_latent, FRAMES, [0])
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
