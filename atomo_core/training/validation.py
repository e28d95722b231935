"""Validation during training: the learning probe on fixed training clips, and fixed images animated with the
layers as trained so far, saved and measured.

Every ``validate_every`` steps, and once before the first step (rank 0):

- the learning probe (``probe.learning_probe``) on ``validation.probe_clips`` fixed clips of the training data (the
  first clip of evenly spaced videos, their captions): the one-step clean prediction of the generated frames at the
  pure-noise and the middle timestep, with and without the image, against copying the given frame and the mean
  frame. It needs no sampling, so it is cheap, and it shows whether the image is being used long before clips look
  right (``with_image`` below ``without_image``, then below ``copy_given``);
- each ``validation.images`` image (resized and centre-cropped to the training resolution) is the given first frame
  of a ``frames``-frame clip sampled with ``sample.sample_clip`` as the nodes sample (its prompt from
  ``validation.prompts``: none, one for all, or one per image; CFG rescale 0.7 with zero terminal SNR); the clip is
  written as ``validation/stepXXXXXXXX_<image>.mp4`` and measured with the weight-free metrics against its image.
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


def probe_batch(run) -> dict | None:
    """The probe's fixed clips: the epoch-0 clip of ``validation.probe_clips`` evenly spaced videos (None: off)."""
    count = min(run.config.validation.probe_clips, len(run.dataset))
    if count < 1 or not run.model.image_conditioning or run.config.frames < 2:
        return None
    picks = [run.dataset[(k * len(run.dataset) // count, 0, -1)] for k in range(count)]
    return {"pixels": torch.stack([p["pixels"] for p in picks]), "caption": [p["caption"] for p in picks]}


@torch.no_grad()
def run_probe(run, batch: dict | None) -> dict:
    """The learning probe's figures on ``batch`` (``probe_batch``), with the model in eval mode; ``{}`` if None."""
    from .probe import learning_probe

    if batch is None:
        return {}
    device = run.world.device
    pixels = batch["pixels"].to(device)
    latents = run.base.encode_video(pixels.flatten(0, 1)).float()
    latents = latents.reshape(*pixels.shape[:2], *latents.shape[1:])
    context = run.base.encode_text(list(batch["caption"]))
    first = pixels[:, 0] if run.model.ip is not None else None
    run.model.eval()
    try:
        return learning_probe(run.model, run.objective.ab.to(device), run.config.prediction_type, latents, context,
                              given=1, seed=run.config.seed, image_layout=run.config.conditioning.image_layout,
                              first_frames=first)
    finally:
        run.model.train()
        run.base.unet.train()


@torch.no_grad()
def validate(run, step: int, probe: dict | None = None) -> dict:
    """Sample, save and measure every validation image; returns ``{"clips": [{image, path, metrics...}]}`` and, with
    a ``probe`` batch (``probe_batch``), ``"probe"``: the learning probe's figures."""
    from .sample import sample_clip

    config = run.config
    figures = {"probe": run_probe(run, probe)} if probe is not None else {}
    if not config.validation.images:
        return {"clips": [], **figures}
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
                                  generator=generator, rescale=0.7 if config.zero_terminal_snr else 0.0,
                                  image_layout=config.conditioning.image_layout)
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
    return {"clips": clips, **figures}
