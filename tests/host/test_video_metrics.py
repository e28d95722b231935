"""The Video Metrics node in a workflow run headless by ComfyUI's executor: table, plot image and UI outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _texture_png(path, seed=0):
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 10, 12, generator=gen)
    image = torch.nn.functional.interpolate(coarse, size=(80, 96), mode="bicubic").clamp(0, 1)[0].permute(1, 2, 0)
    Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(path)


def test_metrics_node_in_a_workflow(rw, pack):
    import folder_paths

    _texture_png(f"{folder_paths.get_input_directory()}/metrics_texture.png")
    prompt = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "metrics_texture.png"}},
        "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": 6}},
        "3": {"class_type": "AtomoVideoMetrics", "inputs": {"images": ["2", 0], "reference": ["1", 0], "size": 64,
                                                            "seams": "3"}},
        "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 1]}},
    }
    result = rw.run_workflow(prompt, output_node="4")
    plot = result["frames"]
    assert plot.shape[0] == 1 and plot.shape[2] == 768 and plot.shape[3] == 3 and plot.shape[1] > 400
    assert plot.std() > 0.05  # curves and text are drawn
    ui = result["outputs"]["3"]
    assert len(ui["images"]) == 1
    (table,) = ui["text"]
    lines = dict(line.split(None, 1) for line in table.splitlines() if line.split(None, 1)[0] in (
        "first_frame_psnr", "flicker", "frames", "dynamic_degree"))
    assert lines == {"first_frame_psnr": "inf", "flicker": "1.0000", "frames": "6", "dynamic_degree": "0.0000"}
    assert "seams at" in table


def test_a_single_image_is_refused_with_the_reason(ours):
    node = ours("nodes.video_metrics").AtomoVideoMetrics
    with pytest.raises(ours("atomo_core").AtomoError, match="at least 2 frames.*has 1"):
        node.execute(torch.rand(1, 64, 64, 3))
    with pytest.raises(ours("atomo_core").AtomoError, match="seams: 'x' is not a frame index between 1 and 3"):
        node.execute(torch.rand(4, 64, 64, 3), seams="2, x")


def test_the_vae_ceiling_is_reported(ours):
    """With the VAE connected the table has the reference's own round trip, which bounds what any model can reach."""
    from sd15_models import random_vae

    node = ours("nodes.video_metrics").AtomoVideoMetrics
    gen = torch.Generator().manual_seed(3)
    coarse = torch.rand(1, 3, 8, 8, generator=gen)
    image = torch.nn.functional.interpolate(coarse, size=(64, 64), mode="bicubic").clamp(0, 1).permute(0, 2, 3, 1)
    table, plot = node.execute(image.expand(3, -1, -1, -1).contiguous(), reference=image, vae=random_vae(),
                               size=64).result
    ceiling = {line.split()[2]: line.split()[-1] for line in table.splitlines() if line.startswith("VAE ceiling")}
    assert set(ceiling) == {"first_frame_mse", "first_frame_psnr", "first_frame_ssim"}
    assert float(ceiling["first_frame_psnr"]) < 40  # a random VAE does not reproduce the image
    assert plot.ndim == 4 and plot.shape[-1] == 3
