"""The weight-free video metrics on synthetic videos whose answers are known, and SSIM against scikit-image."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tolerances import FLOAT32_REORDERED

from atomo_core.metrics import COLUMNS, evaluate_video, format_table, plot_metrics, ssim, working_frames
from atomo_core.metrics.motion import dis_flow, warp


def texture(height: int, width: int, seed: int = 0, blur: int = 6) -> torch.Tensor:
    """A smooth random colour texture ``[H, W, 3]`` in 0..1: noise low-passed so optical flow can follow it."""
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // blur + 2, width // blur + 2, generator=gen)
    fine = F.interpolate(coarse, size=(height + 2 * blur, width + 2 * blur), mode="bicubic", align_corners=False)
    return fine[0, :, blur:-blur, blur:-blur].permute(1, 2, 0).clamp(0, 1)


def pan(frames: int, height: int, width: int, dx: float = 0.0, dy: float = 0.0, seed: int = 0) -> torch.Tensor:
    """``frames`` crops of a larger texture moving by (dx, dy) pixels per frame (content moves left/up)."""
    margin = int(math.ceil(max(abs(dx), abs(dy)) * frames)) + 2
    big = texture(height + margin, width + margin, seed)
    out = []
    for i in range(frames):
        x0, y0 = int(round(abs(dx) * i)), int(round(abs(dy) * i))
        out.append(big[y0 : y0 + height, x0 : x0 + width])
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------ SSIM


@pytest.mark.parametrize(("shape", "noise", "seed"), [((64, 80), 20.0, 0), ((31, 47), 5.0, 1), ((256, 256), 60.0, 2)])
def test_ssim_is_scikit_images(shape, noise, seed):
    """AIGCBench's SSIM: scikit-image's, uniform 7x7 window, sample covariance, colour, 8-bit data range."""
    from skimage.metrics import structural_similarity

    gen = torch.Generator().manual_seed(seed)
    a = (texture(*shape, seed=seed) * 255).round()
    b = (a + torch.randn(a.shape, generator=gen) * noise).clamp(0, 255).round()
    reference = structural_similarity(a.numpy().astype(np.uint8), b.numpy().astype(np.uint8), win_size=7,
                                      channel_axis=-1, data_range=255)
    ours = float(ssim(a, b))
    assert abs(ours - reference) < 1e-6  # float64 on both sides (3e-8 seen): far inside the 1e-3
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=FLOAT32_REORDERED)
    # A Gaussian-window SSIM (kornia's) is another figure: it would miss the 1e-3 agreement.
    import kornia

    x, y = (t.permute(2, 0, 1)[None] / 255.0 for t in (a, b))
    gaussian = float(kornia.metrics.ssim(x, y, 7).mean())
    assert abs(gaussian - reference) > 1e-3


def test_batched_ssim_equals_one_pair_at_a_time():
    a = (torch.stack([texture(40, 40, seed=s) for s in range(3)]) * 255).round()
    b = a.flip(0)
    together = ssim(a, b)
    assert together.shape == (3,)
    for i in range(3):
        assert float(together[i]) == pytest.approx(float(ssim(a[i], b[i])), abs=1e-6)


# --------------------------------------------------------------------------------------------- motion


@pytest.mark.parametrize(("dx", "dy"), [(1.0, 0.0), (3.0, 0.0), (0.0, 2.0), (0.0, 5.0), (2.0, 2.0)])
def test_a_pan_of_k_pixels_per_frame_measures_k(dx, dy):
    video = pan(8, 256, 320, dx, dy)  # short side 256: the working size, no resize
    metrics = evaluate_video(video)
    k = math.hypot(dx, dy)
    assert metrics.summary["motion_mean_flow"] == pytest.approx(k, rel=0.05)
    assert metrics.summary["motion_flow_sq"] == pytest.approx(k * k, rel=0.10)
    # The direction too: each frame is the texture shifted by (dx, dy), so the content moves left/up and the flow
    # (x, y) from a frame to the next is (-dx, -dy): frame0(p) = frame1(p - (dx, dy)).
    gray = (working_frames(video) @ torch.tensor([0.299, 0.587, 0.114])).round().to(torch.uint8).numpy()
    flow = dis_flow(gray[0], gray[1]).reshape(-1, 2).mean(axis=0)
    assert flow == pytest.approx([-dx, -dy], abs=0.05 * k + 0.05)


def test_motion_is_normalised_to_the_working_size():
    small = evaluate_video(pan(8, 256, 256, 2.0, 0.0, seed=3)).summary["motion_mean_flow"]
    large = evaluate_video(pan(8, 512, 512, 4.0, 0.0, seed=3)).summary["motion_mean_flow"]
    assert large == pytest.approx(small, rel=0.05)
    assert small == pytest.approx(2.0, rel=0.05)


def test_a_still_video_has_no_motion_no_flicker_and_no_warp_error():
    still = texture(256, 256).expand(8, -1, -1, -1).contiguous()
    m = evaluate_video(still, reference=still[0]).summary
    assert m["motion_mean_flow"] < 1e-3 and m["motion_flow_sq"] < 1e-5
    assert m["flicker"] == 1.0 and m["dynamic_degree"] == 0.0 and m["warp_error"] == 0.0
    assert m["adjacent_ssim"] == pytest.approx(1.0, abs=1e-6) and m["smoothness"] == 1.0
    assert m["first_frame_psnr"] == math.inf and m["first_frame_ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["first_frame_mse"] == 0.0 and m["retention_ssim_mean"] == pytest.approx(1.0, abs=1e-6)


def test_brightness_flicker_lowers_flicker_and_raises_warp_error_monotonically():
    video = pan(8, 256, 256, 1.0, 0.0, seed=4)
    flicker, warp_error = [], []
    for amplitude in (0.0, 0.02, 0.05, 0.1):
        offsets = torch.tensor([amplitude * (-1) ** i for i in range(8)]).view(8, 1, 1, 1)
        m = evaluate_video((video * 0.8 + 0.1 + offsets).clamp(0, 1)).summary
        flicker.append(m["flicker"])
        warp_error.append(m["warp_error"])
    assert flicker == sorted(flicker, reverse=True) and flicker[0] - flicker[-1] > 0.05
    assert warp_error == sorted(warp_error) and warp_error[-1] - warp_error[0] > 0.1


def test_dynamic_degree_follows_vbench_thresholds():
    slow = evaluate_video(pan(16, 256, 256, 2.0, 0.0, seed=5))
    fast = evaluate_video(pan(16, 256, 256, 9.0, 0.0, seed=5))
    assert slow.summary["dynamic_degree"] == 0.0 and slow.extra["dynamic"]["threshold"] == 6.0
    assert fast.summary["dynamic_degree"] == 1.0 and fast.extra["dynamic"]["needed_pairs"] == 4  # round(4 * 16 / 16)
    assert fast.extra["dynamic"]["dynamic_fraction"] == 1.0


def test_a_dropped_frame_lowers_smoothness():
    video = pan(9, 256, 256, 2.0, 0.0, seed=6)
    smooth = evaluate_video(video).summary["smoothness"]
    dropped = torch.cat([video[:3], video[4:], video[-1:]])  # frame 3 missing: one jump of two steps
    assert evaluate_video(dropped).summary["smoothness"] < smooth - 0.005
    assert smooth > 0.98


def test_warp_follows_the_flow_convention():
    a = (texture(64, 64, seed=7) * 255).numpy().astype(np.float32)
    flow = np.zeros((64, 64, 2), np.float32)
    flow[..., 0] = 3.0
    shifted = warp(a, flow)
    assert np.allclose(shifted[:, :-3], a[:, 3:])  # output(p) = input(p + flow)


# ------------------------------------------------------------------------------------ report and plot


def test_fidelity_resizes_the_video_to_the_reference_and_reports_the_ceiling():
    image = texture(256, 384, seed=8)
    video = F.interpolate(image.permute(2, 0, 1)[None], size=(512, 768), mode="bilinear").permute(0, 2, 3, 1)
    video = video.expand(4, -1, -1, -1)
    noisy = (image + 0.1 * torch.randn(image.shape, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    m = evaluate_video(video, reference=image, ceiling=noisy[None])
    assert m.summary["first_frame_psnr"] > 40 and m.summary["first_frame_ssim"] > 0.97  # the same picture
    assert m.extra["ceiling"]["first_frame_psnr"] < 25
    assert len(m.curves["retention_ssim"]) == 4
    row = m.row("clip.mp4")
    assert list(row) == list(COLUMNS) and row["video"] == "clip.mp4" and row["frames"] == 4
    assert (row["width"], row["height"]) == (768, 512)
    no_reference = evaluate_video(video).row("x")
    assert no_reference["first_frame_ssim"] is None and no_reference["flicker"] == 1.0


def test_seams_table_and_plot():
    video = pan(12, 256, 256, 2.0, 0.0, seed=10)
    m = evaluate_video(video, reference=video[0], seams=[8])
    assert m.extra["seams"]["ratio"] == pytest.approx(1.0, abs=0.2)
    table = format_table(m)
    assert "seams at" in table and "first_frame_psnr" in table and "inf" in table
    picture = plot_metrics(m, width=640)
    assert picture.dtype == np.uint8 and picture.shape[1] == 640 and picture.shape[2] == 3
    assert picture.shape[0] > 400 and picture.std() > 10  # something is drawn


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="at least 2 frames"):
        evaluate_video(torch.rand(1, 64, 64, 3))
    with pytest.raises(ValueError, match=r"Expected frames \[F, H, W, 3\]"):
        evaluate_video(torch.rand(4, 3, 64, 64))
    with pytest.raises(ValueError, match="NaN"):
        evaluate_video(torch.full((2, 64, 64, 3), float("nan")))
