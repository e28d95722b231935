"""The frozen base the trainer builds on: diffusers' UNet and VAE, transformers' CLIP text encoder, offline.

``load_base(spec)`` takes what a user has:

- a single-file SD-1.5 checkpoint (``.safetensors``/``.ckpt``, the file ComfyUI loads): converted with diffusers'
  own single-file conversion functions against the SD-1.5 configs written out below (no hub, no yaml download);
- a diffusers folder (``unet/``, ``vae/``, ``text_encoder/``, optional ``tokenizer/``), read with
  ``local_files_only``;
- ``"tiny"``: a tiny random model of SD-1.5's layout (four levels, two ResNets and attentions per level, the same
  block types) for tests and smoke runs, with a word-hash tokenizer;
- ``"random-sd15"``: SD-1.5 at full size with random weights, for benchmarks.

The tokenizer of real bases is CLIP's BPE vocabulary, shipped in ``sd15_tokenizer/``. Text embeddings are CLIP's
last hidden state ``[B, 77, 768]``, what SD-1.5 and ComfyUI's CLIPTextEncode condition on.
"""

from __future__ import annotations

import os
import pathlib
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..checkpoint_io import read_weights
from ..errors import AtomoError
from ..layout import SD15_WIDTHS

TOKENIZER_DIR = pathlib.Path(__file__).resolve().parent / "sd15_tokenizer"
CONTEXT_LENGTH = 77

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=SD15_WIDTHS,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
    scaling_factor=0.18215,
)
SD15_TEXT = dict(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                 num_attention_heads=12, max_position_embeddings=CONTEXT_LENGTH, hidden_act="quick_gelu",
                 bos_token_id=49406, eos_token_id=49407, pad_token_id=49407)

TINY_WIDTHS = (32, 64, 64, 64)
TINY_UNET = dict(SD15_UNET, sample_size=8, block_out_channels=TINY_WIDTHS, cross_attention_dim=32)
TINY_VAE = dict(SD15_VAE, layers_per_block=1, block_out_channels=(32, 32, 64, 64), sample_size=64)
TINY_TEXT = dict(vocab_size=1000, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                 max_position_embeddings=CONTEXT_LENGTH, hidden_act="quick_gelu", bos_token_id=0, eos_token_id=1,
                 pad_token_id=1)


@dataclass
class BaseModel:
    """The frozen parts: ``unet`` (``UNet2DConditionModel``), ``vae`` (``AutoencoderKL``), ``text_encoder``
    (``CLIPTextModel``), ``tokenize(captions) -> LongTensor [B, 77]``; ``widths`` the UNet's level widths."""

    unet: nn.Module
    vae: nn.Module
    text_encoder: nn.Module
    tokenize: Callable[[list[str]], torch.Tensor]
    widths: tuple[int, ...]
    name: str

    @property
    def scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    def freeze(self, dtype: torch.dtype | None = None) -> BaseModel:
        for part in (self.unet, self.vae, self.text_encoder):
            part.requires_grad_(False).eval()
            if dtype is not None:
                part.to(dtype)
        return self

    @torch.no_grad()
    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """``[B, 77, C]``: CLIP's last hidden state, what SD-1.5 conditions on."""
        ids = self.tokenize(captions).to(next(self.text_encoder.parameters()).device)
        return self.text_encoder(input_ids=ids).last_hidden_state

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels [N, 3, H, W]`` in -1..1 -> scaled latents ``[N, 4, H/8, W/8]`` (the VAE posterior's mean)."""
        param = next(self.vae.parameters())
        posterior = self.vae.encode(pixels.to(param)).latent_dist
        return posterior.mean * self.scaling_factor

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> pixels in -1..1."""
        param = next(self.vae.parameters())
        return self.vae.decode(latents.to(param) / self.scaling_factor).sample


def _hash_tokenizer(vocab_size: int, bos: int, eos: int,
                    length: int = CONTEXT_LENGTH) -> Callable[[list[str]], torch.Tensor]:
    """Words to ids by CRC32 (deterministic across runs and machines), CLIP's framing: bos, words, eos, padding to
    ``length`` tokens (CLIP's 77 unless a caller's captions are known to be shorter)."""

    def tokenize(captions: list[str]) -> torch.Tensor:
        out = torch.full((len(captions), length), eos, dtype=torch.long)
        for row, caption in enumerate(captions):
            words = [2 + zlib.crc32(w.encode()) % (vocab_size - 2) for w in caption.lower().split()]
            ids = [bos, *words[: length - 2], eos]
            out[row, : len(ids)] = torch.tensor(ids)
        return out

    return tokenize


def _clip_tokenizer(folder: pathlib.Path) -> Callable[[list[str]], torch.Tensor]:
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))

    def tokenize(captions: list[str]) -> torch.Tensor:
        return tokenizer(list(captions), padding="max_length", max_length=CONTEXT_LENGTH, truncation=True,
                         return_tensors="pt").input_ids

    return tokenize


def tiny_base(seed: int = 0) -> BaseModel:
    """A tiny random base of SD-1.5's layout: UNet widths ``TINY_WIDTHS``, an 8x VAE, a 2-layer text encoder."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**TINY_UNET)
    vae = AutoencoderKL(**TINY_VAE)
    text = CLIPTextModel(CLIPTextConfig(**TINY_TEXT))
    tokenize = _hash_tokenizer(TINY_TEXT["vocab_size"], TINY_TEXT["bos_token_id"], TINY_TEXT["eos_token_id"])
    return BaseModel(unet, vae, text, tokenize, TINY_WIDTHS, "tiny")


def random_sd15(seed: int = 0) -> BaseModel:
    """SD-1.5 at full size with random weights (benchmarks: the real shapes and costs without a checkpoint file)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**SD15_UNET)
    vae = AutoencoderKL(**SD15_VAE)
    text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    return BaseModel(unet, vae, text, _clip_tokenizer(TOKENIZER_DIR), SD15_WIDTHS, "random-sd15")


def _from_single_file(path: str) -> BaseModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    name = os.path.basename(path)
    state, _ = read_weights(path)
    if not any(k.startswith("model.diffusion_model.") for k in state):
        raise AtomoError(
            f"'{name}' is not a single-file SD-1.5 checkpoint (no model.diffusion_model.* weights). Give base_model "
            "the checkpoint file ComfyUI's Load Checkpoint reads, or a diffusers folder."
        )
    unet_sd = convert_ldm_unet_checkpoint(state, dict(SD15_UNET))
    unet = UNet2DConditionModel(**SD15_UNET)
    _load(unet, unet_sd, name, "UNet")
    vae_sd = convert_ldm_vae_checkpoint(state, dict(SD15_VAE))
    vae = AutoencoderKL(**SD15_VAE)
    _load(vae, vae_sd, name, "VAE")
    text_sd = convert_ldm_clip_checkpoint(state)
    text = CLIPTextModel(CLIPTextConfig(**SD15_TEXT))
    text_sd = {k: v for k, v in text_sd.items() if not k.endswith("position_ids")}
    if not any(k.startswith("text_model.") for k in text.state_dict()):  # transformers 5 names them without it
        text_sd = {k.removeprefix("text_model."): v for k, v in text_sd.items()}
    _load(text, text_sd, name, "text encoder")
    return BaseModel(unet, vae, text, _clip_tokenizer(TOKENIZER_DIR), SD15_WIDTHS, name)


def _load(model: nn.Module, state: dict, name: str, part: str) -> None:
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing:
        raise AtomoError(
            f"'{name}': the {part} lacks {len(missing)} SD-1.5 weights (e.g. {missing[0]}). Is it an SD-1.5 checkpoint "
            "(not SDXL, SD 2.x or an inpainting model)?"
        )


def _from_diffusers_folder(folder: str) -> BaseModel:
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel

    unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    text = CLIPTextModel.from_pretrained(folder, subfolder="text_encoder", local_files_only=True)
    tokenizer_dir = pathlib.Path(folder) / "tokenizer"
    tokenize = _clip_tokenizer(tokenizer_dir if (tokenizer_dir / "vocab.json").is_file() else TOKENIZER_DIR)
    widths = tuple(unet.config.block_out_channels)
    return BaseModel(unet, vae, text, tokenize, widths, os.path.basename(os.path.normpath(folder)))


def load_base(spec: str, seed: int = 0) -> BaseModel:
    """``"tiny"``, a single-file checkpoint path or a diffusers folder; see the module docstring."""
    if spec == "tiny":
        return tiny_base(seed)
    if spec == "random-sd15":
        return random_sd15(seed)
    if os.path.isdir(spec):
        if not os.path.isdir(os.path.join(spec, "unet")):
            raise AtomoError(f"base_model '{spec}' is a folder without unet/: not a diffusers model folder.")
        return _from_diffusers_folder(spec)
    if os.path.isfile(spec):
        return _from_single_file(spec)
    raise AtomoError(
        f"base_model '{spec}' does not exist. Give the SD-1.5 checkpoint file (e.g. "
        "ComfyUI/models/checkpoints/v1-5-pruned-emaonly.safetensors), a diffusers folder, or 'tiny' for a test run."
    )
