"""FrameInit (ConsistI2V) against its definition: the filter, the frequency mix and the frame layout."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange

from atomo_core.noise_init import frame_init, freq_mix_3d, gaussian_low_pass_filter, noise_static_video

F, C, H, W = 6, 4, 8, 10  # frames != channels, so a swapped layout cannot pass


def _filter_by_definition(frames, height, width, d_s, d_t):
    """ConsistI2V's mask, element by element: exp(-d^2 / (2 d_s^2)), d^2 over normalised coordinates."""
    mask = torch.zeros(frames, height, width)
    for t in range(frames):
        for h in range(height):
            for w in range(width):
                d2 = ((d_s / d_t) * (2 * t / frames - 1)) ** 2 + (2 * h / height - 1) ** 2 + (2 * w / width - 1) ** 2
                mask[t, h, w] = math.exp(-1 / (2 * d_s**2) * d2)
    return mask


def _spectrum(x_fchw):
    """Centred 3-D spectrum over (frames, height, width), as ``[C, F, H, W]``."""
    x = rearrange(x_fchw.double(), "f c h w -> c f h w")
    return torch.fft.fftshift(torch.fft.fftn(x, dim=(-3, -2, -1)), dim=(-3, -2, -1))


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(F, C, H, W, generator=g)
    first = 2.0 * torch.randn(C, H, W, generator=g) + torch.arange(C).view(C, 1, 1).float()
    return noise, first


def test_gaussian_filter_matches_its_definition():
    for shape, d_s, d_t in (((16, 8, 8), 0.25, 0.25), ((5, 7, 9), 0.25, 0.5), ((6, 8, 10), 0.4, 0.1)):
        ours = gaussian_low_pass_filter(*shape, d_s=d_s, d_t=d_t)
        assert ours.dtype == torch.float32 and ours.shape == shape
        assert (ours - _filter_by_definition(*shape, d_s, d_t)).abs().max().item() < 1e-7
    mask = gaussian_low_pass_filter(16, 8, 8)
    assert mask[8, 4, 4].item() == 1.0  # the zero frequency of an even axis sits at n // 2 after fftshift
    assert mask[0, 4, 4].item() == pytest.approx(math.exp(-8.0), rel=1e-6)  # d^2 = 1, 1 / (2 * 0.25^2) = 8
    assert mask[8, 6, 4].item() == pytest.approx(math.exp(-2.0), rel=1e-6)  # (2*6/8 - 1)^2 = 0.25
    stretched = gaussian_low_pass_filter(16, 8, 8, d_s=0.25, d_t=0.5)
    assert stretched[0, 4, 4].item() == pytest.approx(math.exp(-2.0), rel=1e-6)  # wider temporal pass band
    assert torch.equal(gaussian_low_pass_filter(4, 4, 4, d_s=0.0), torch.zeros(4, 4, 4))
    assert torch.equal(gaussian_low_pass_filter(4, 4, 4, d_t=0.0), torch.zeros(4, 4, 4))


def test_freq_mix_3d_takes_low_from_x_and_high_from_noise():
    g = torch.Generator().manual_seed(1)
    x, noise = torch.randn(C, F, H, W, generator=g), torch.randn(C, F, H, W, generator=g)
    assert torch.allclose(freq_mix_3d(x, noise, torch.ones(F, H, W)), x, atol=1e-5)
    assert torch.allclose(freq_mix_3d(x, noise, torch.zeros(F, H, W)), noise, atol=1e-5)
    half = freq_mix_3d(x, noise, torch.full((F, H, W), 0.5))  # a constant mask is a plain blend
    assert torch.allclose(half, 0.5 * (x + noise), atol=1e-5)


def test_static_video_is_noised_with_the_same_noise(inputs):
    noise, first = inputs
    z = noise_static_video(noise, first, 0.36)
    for f in (0, F - 1):
        assert torch.allclose(z[f], 0.6 * first + 0.8 * noise[f], atol=1e-6)


def test_frame_init_all_stop_and_all_pass(inputs):
    noise, first = inputs
    assert torch.allclose(frame_init(noise, first, 0.3, d_s=0.0, d_t=0.25), noise, atol=1e-5)
    all_pass = frame_init(noise, first, 0.3, d_s=1e4, d_t=1e4)  # mask = exp(-d^2 / 2e8) ~ 1
    assert torch.allclose(all_pass, noise_static_video(noise, first, 0.3), atol=1e-5)
    assert (all_pass - noise).abs().max().item() > 1.0  # the two limits are far apart


def test_frame_init_spectrum_is_the_documented_mix(inputs):
    noise, first = inputs
    ab_tau = 0.08  # about ab[850] of SD-1.5's schedule
    out = frame_init(noise, first, ab_tau)
    assert out.shape == (F, C, H, W) and out.dtype == noise.dtype
    z = noise_static_video(noise, first, ab_tau)
    low = gaussian_low_pass_filter(F, H, W).double()
    expected = low * _spectrum(z) + (1 - low) * _spectrum(noise)
    assert (_spectrum(out) - expected).abs().max().item() < 1e-3  # spectra here are of order 10..100
    centre = (F // 2, H // 2, W // 2)
    assert torch.allclose(_spectrum(out)[(slice(None), *centre)], _spectrum(z)[(slice(None), *centre)], atol=1e-3)
    corner = (0, 0, 0)  # the highest frequency: mask exp(-24) ~ 4e-11, so pure noise
    assert torch.allclose(_spectrum(out)[(slice(None), *corner)], _spectrum(noise)[(slice(None), *corner)], atol=1e-3)


def test_frame_init_keeps_each_channels_mean_from_the_noised_first_frame(inputs):
    noise, first = inputs
    ab_tau = 0.08
    out = frame_init(noise, first, ab_tau)
    expected = math.sqrt(ab_tau) * first.mean(dim=(1, 2)) + math.sqrt(1 - ab_tau) * noise.mean(dim=(0, 2, 3))
    assert torch.allclose(out.mean(dim=(0, 2, 3)), expected, atol=1e-5)
    # the channel offsets 0, 1, 2, 3 of the first frame show through; plain noise has none of them
    assert out.mean(dim=(0, 2, 3))[3].item() - out.mean(dim=(0, 2, 3))[0].item() == pytest.approx(
        expected[3].item() - expected[0].item(), abs=1e-5
    )
    assert abs(expected[3].item() - expected[0].item()) > 0.5


def test_frame_init_dtype_and_errors(inputs):
    noise, first = inputs
    half = frame_init(noise.half(), first.half(), 0.08)
    assert half.dtype == torch.float16
    assert (half.float() - frame_init(noise, first, 0.08)).abs().max().item() < 1e-2
    with pytest.raises(ValueError, match="same C, H, W"):
        frame_init(noise, first[:, :4], 0.08)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        frame_init(noise, first, 1.5)
