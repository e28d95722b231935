"""Random modules built with our own package as ComfyUI loaded it (test-only)."""

from __future__ import annotations

import torch
from ipadapter_weights import flat, image_proj_shapes, ip_layer_shapes, nested, random_weights


def random_atomovideo(ours, seed: int = 0, max_frames: int = 24, name: str = "atomo.safetensors",
                      temporal_text: str = "film"):
    """An AtomoVideo module whose temporal attention, temporal convolutions (reading the caption, as the trainer
    makes them by default; ``temporal_text="none"``: the paper's layers) and extra conv_in channels are random and
    non-zero (a freshly initialised one would be the identity)."""
    module = ours("atomo_core.atomovideo_format").new_atomovideo_module(
        max_frames=max_frames, name=name, temporal_text_dim=768 if temporal_text == "film" else None)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param_name, p in module.named_parameters():
            if param_name.endswith(("proj_out.weight", "conv.weight")):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
            if param_name.endswith("text_film.weight"):
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)
        module.conv_in_weight.copy_(torch.randn(module.conv_in_weight.shape, generator=gen) * 0.05)
    return module


def injected_atomovideo(sd15, ours, vae, frames: int):
    """``(model, positive, negative, latent)``: a random AtomoVideo module (seed 5) attached to the SD-1.5 model and a
    random 64x64 image (seed 6) injected through Image Inject Conditioning, ``frames`` frames."""
    from sampling import conditioning

    _, base = sd15
    model = ours("nodes.host_adapter").attach_motion_module(base, random_atomovideo(ours, seed=5))
    node = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(6))
    return node.execute(model, conditioning(1), conditioning(2), vae, image, frames, 64, 64, "crop").result


def meta_family_module(ours, family: str, name: str):
    """A module of an AnimateDiff-layout ``family`` (``v2``, ``v3``, ``pia``...) with its weights on the ``meta``
    device: enough to attach it and meet the errors that come before any computation."""
    from weights import animatediff_state_dict

    core = ours("atomo_core")
    sd = animatediff_state_dict(family, device="meta")
    with torch.device("meta"):
        return core.build_motion_module(sd, core.detect_config(sd), name)


def random_base_adapter(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random ``ip-adapter_sd15`` (base layout: 4 image tokens from CLIP ``image_embeds [B, 1024]``) weights."""
    return flat(nested(image_proj_shapes("base"), ip_layer_shapes(), random_weights(seed)))


class StubClipVision:
    """The CLIP-vision contract our node uses: ``encode_image(IMAGE) -> Output`` with ``image_embeds`` and
    ``penultimate_hidden_states``, random but a deterministic function of the image."""

    def __init__(self, width: int = 1024):
        self.width = width

    def encode_image(self, image):
        gen = torch.Generator().manual_seed(int(image.mean() * 1000))

        class Output:
            pass

        out = Output()
        out.image_embeds = torch.randn(image.shape[0], self.width, generator=gen)
        out.penultimate_hidden_states = torch.randn(image.shape[0], 257, 1280, generator=gen)
        return out


def install_model_file(folder_name: str, directory, filename: str, state_dict: dict) -> None:
    """Write ``state_dict`` as ``directory/filename`` and put ``directory`` first in ComfyUI's ``folder_name`` list."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(state_dict, str(directory / filename))
    register_model_folder(folder_name, directory)


def register_model_folder(folder_name: str, directory) -> None:
    """Put ``directory`` first in ComfyUI's list of ``folder_name`` folders (files there become choices)."""
    import folder_paths

    paths, exts = folder_paths.folder_names_and_paths[folder_name]
    if str(directory) not in paths:
        folder_paths.folder_names_and_paths[folder_name] = ([str(directory)] + list(paths), exts)
