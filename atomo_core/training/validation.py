"""Validation during training: animate fixed images with the layers as trained so far, save the clips, measure them.

Every ``validate_every`` steps (rank 0): each ``validation.images`` image (resized and centre-cropped to the training
resolution) is the given first frame of a ``frames``-frame clip sampled with ``sample.sample_clip`` (its prompt from
``validation.prompts``: none, one for all, or one per image); the clip is written as
``validation/stepXXXXXXXX_<image>.mp4`` and measured with the weight-free metrics against its image.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

from ..metrics import evaluate_video


def load_image(path: str, resolution: int) -> torch.Tensor:
    """``[1, 3, R, R]`` in -1..1: short side resized to ``resolution`` (antialiased), centre crop."""
    from PIL import Image

    image = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)[None].float() / 255.0
    h, w = image.shape[-2:]
    scale = resolution / min(h, w)
    size = (max(resolution, round(h * scale)), max(resolution, round(w * scale)))
    image = F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)
    top, left = (size[0] - resolution) // 2, (size[1] - resolution) // 2
    return image[..., top : top + resolution, left : left + resolution] * 2 - 1


def write_mp4(frames: torch.Tensor, path: str, fps: int = 8) -> None:
    """``frames [F, H, W, 3]`` in 0..1 as an H.264 mp4 (even sizes)."""
    import av

    pixels = (frames.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    pixels = pixels[:, : pixels.shape[1] // 2 * 2, : pixels.shape[2] // 2 * 2]
    with av.open(path, "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = pixels.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for array in pixels:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(array), format="rgb24")))
        container.mux(stream.encode(None))


def _prompts(config) -> list[str]:
    images, prompts = config.validation.images, list(config.validation.prompts)
    if not prompts:
        return [""] * len(images)
    return prompts * len(images) if len(prompts) == 1 else prompts


@torch.no_grad()
def validate(run, step: int) -> dict:
    """Sample, save and measure every validation image; returns ``{"clips": [{image, path, metrics...}]}``."""
    from .sample import sample_clip

    config = run.config
    if not config.validation.images:
        return {"clips": []}
    out_dir = pathlib.Path(config.output_dir) / "validation"
    out_dir.mkdir(parents=True, exist_ok=True)
    empty = run.base.encode_text([""])
    run.model.eval()
    clips = []
    try:
        for index, (image_path, prompt) in enumerate(zip(config.validation.images, _prompts(config), strict=True)):
            image = load_image(image_path, config.resolution).to(run.world.device)
            given = run.base.encode_video(image).float()
            generator = torch.Generator().manual_seed(config.seed + index)
            latents = sample_clip(run.model, run.objective.ab, given, config.frames, run.base.encode_text([prompt]),
                                  empty, steps=config.validation.steps, cfg=config.validation.cfg,
                                  image_cfg=config.validation.image_cfg, prediction_type=config.prediction_type,
                                  generator=generator)
            frames = (run.base.decode(latents).float().clamp(-1, 1) + 1) / 2
            frames = frames.permute(0, 2, 3, 1).cpu()
            path = out_dir / f"step{step:08d}_{pathlib.Path(image_path).stem}.mp4"
            write_mp4(frames, str(path))
            reference = ((image[0].permute(1, 2, 0).cpu() + 1) / 2).clamp(0, 1)
            figures = evaluate_video(frames, reference=reference, size=min(256, config.resolution)).summary
            clips.append({"image": os.fspath(image_path), "prompt": prompt, "path": str(path), **figures})
    finally:
        run.model.train()
        run.base.unet.train()
    return {"clips": clips}
