"""FrameInit (ConsistI2V) against its definition: the filter, the frequency mix and the frame layout."""

from __future__ import annotations

import math

import pytest
import torch
from einops import rearrange
from tolerances import (
    FLOAT16_STORAGE,
    FLOAT32_FEW_OPS,
    FLOAT32_REORDERED,
    FLOAT32_ROUNDING,
    assert_close_scaled,
    assert_far_off,
    scale_of,
)

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
        # Both are float32 roundings of float64 values (torch's and math's exp): at most one float32 ulp apart
        # (measured exact).
        definition = _filter_by_definition(*shape, d_s, d_t)
        assert_close_scaled(ours, definition, FLOAT32_ROUNDING, f"filter {shape}")
        if d_s != d_t:  # the cut-offs swapped (spatial for temporal) are far off: 3.8e6x and 6.5e6x the bound
            swapped = gaussian_low_pass_filter(*shape, d_s=d_t, d_t=d_s)
            assert_far_off(swapped, definition, FLOAT32_ROUNDING, 1e3, f"cut-offs swapped {shape}")
    mask = gaussian_low_pass_filter(16, 8, 8)
    assert mask[8, 4, 4].item() == 1.0  # the zero frequency of an even axis sits at n // 2 after fftshift
    # single float32 roundings of exp(-8) and exp(-2): half an ulp, within eps relative (measured 1.1e-8, 1.3e-8)
    assert_close_scaled(mask[0, 4, 4], math.exp(-8.0), FLOAT32_ROUNDING, "mask")  # d^2 = 1, 1 / (2 * 0.25^2) = 8
    assert_close_scaled(mask[8, 6, 4], math.exp(-2.0), FLOAT32_ROUNDING, "mask")  # (2*6/8 - 1)^2 = 0.25
    stretched = gaussian_low_pass_filter(16, 8, 8, d_s=0.25, d_t=0.5)
    assert_close_scaled(stretched[0, 4, 4], math.exp(-2.0), FLOAT32_ROUNDING, "mask")  # wider temporal pass band
    assert torch.equal(gaussian_low_pass_filter(4, 4, 4, d_s=0.0), torch.zeros(4, 4, 4))
    assert torch.equal(gaussian_low_pass_filter(4, 4, 4, d_t=0.0), torch.zeros(4, 4, 4))


def test_freq_mix_3d_takes_low_from_x_and_high_from_noise():
    g = torch.Generator().manual_seed(1)
    x, noise = torch.randn(C, F, H, W, generator=g), torch.randn(C, F, H, W, generator=g)
    # A float32 3-D FFT and its inverse over 480 points: O(log2(480) eps) of the scale (measured <= 2.0e-7).
    all_low = freq_mix_3d(x, noise, torch.ones(F, H, W))
    assert_close_scaled(all_low, x, FLOAT32_REORDERED, "all-low mask")
    assert_close_scaled(freq_mix_3d(x, noise, torch.zeros(F, H, W)), noise, FLOAT32_REORDERED, "all-high mask")
    half = freq_mix_3d(x, noise, torch.full((F, H, W), 0.5))  # a constant mask is a plain blend
    assert_close_scaled(half, 0.5 * (x + noise), FLOAT32_REORDERED, "constant mask")
    # x and noise in each other's roles: 1.5e5x the bound
    assert_far_off(freq_mix_3d(noise, x, torch.ones(F, H, W)), x, FLOAT32_REORDERED, 1e3, "x and noise swapped")


def test_static_video_is_noised_with_the_same_noise(inputs):
    noise, first = inputs
    z = noise_static_video(noise, first, 0.36)
    for f in (0, F - 1):
        # element-wise: sqrt(0.36) and sqrt(0.64) as float32 factors, a multiply and an add (measured exact)
        assert_close_scaled(z[f], 0.6 * first + 0.8 * noise[f], FLOAT32_FEW_OPS, f"z_tau frame {f}")
        # sqrt(ab) and sqrt(1 - ab) swapped: 2.5e5x the bound
        assert_far_off(z[f], 0.8 * first + 0.6 * noise[f], FLOAT32_FEW_OPS, 1e3, "coefficients swapped")


def test_frame_init_all_stop_and_all_pass(inputs):
    noise, first = inputs
    # FFT round trips in float32 (measured <= 1.7e-7 of the scale)
    assert_close_scaled(frame_init(noise, first, 0.3, d_s=0.0, d_t=0.25), noise, FLOAT32_REORDERED, "all stop")
    all_pass = frame_init(noise, first, 0.3, d_s=1e4, d_t=1e4)  # mask = exp(-d^2 / 2e8) ~ 1
    assert_close_scaled(all_pass, noise_static_video(noise, first, 0.3), FLOAT32_REORDERED, "all pass")
    assert_far_off(all_pass, noise, FLOAT32_REORDERED, 1e3, "the two limits")  # far apart: 1.3e5x the bound


def test_frame_init_spectrum_is_the_documented_mix(inputs):
    noise, first = inputs
    ab_tau = 0.08  # about ab[850] of SD-1.5's schedule
    out = frame_init(noise, first, ab_tau)
    assert out.shape == (F, C, H, W) and out.dtype == noise.dtype
    z = noise_static_video(noise, first, ab_tau)
    low = gaussian_low_pass_filter(F, H, W).double()
    expected = low * _spectrum(z) + (1 - low) * _spectrum(noise)
    # frame_init's float32 FFTs against float64 spectra of its own inputs: float32 round-off of the 480-point
    # transforms, relative to the largest spectral magnitude (measured 6.9e-8 of 406)
    spectrum, scale = _spectrum(out), scale_of(expected)
    assert_close_scaled(spectrum, expected, FLOAT32_REORDERED, "spectrum of FrameInit")
    # the mask applied without fftshift (to the unshifted spectrum) is far off: 6.4e5x the bound
    unshifted = torch.fft.ifftshift(low)
    wrong = unshifted * _spectrum(z) + (1 - unshifted) * _spectrum(noise)
    assert_far_off(spectrum, wrong, FLOAT32_REORDERED, 1e3, "mask not fftshifted")
    # single frequencies: their round-off is that of the whole transform, so the scale is the spectrum's
    # (measured 6.9e-8 and 1.3e-8)
    centre = (F // 2, H // 2, W // 2)
    centre_z = _spectrum(z)[(slice(None), *centre)]
    assert_close_scaled(spectrum[(slice(None), *centre)], centre_z, FLOAT32_REORDERED, "zero frequency", scale)
    corner = (0, 0, 0)  # the highest frequency: mask exp(-24) ~ 4e-11, so pure noise
    corner_noise = _spectrum(noise)[(slice(None), *corner)]
    assert_close_scaled(spectrum[(slice(None), *corner)], corner_noise, FLOAT32_REORDERED, "highest frequency", scale)


def test_frame_init_keeps_each_channels_mean_from_the_noised_first_frame(inputs):
    noise, first = inputs
    ab_tau = 0.08
    out = frame_init(noise, first, ab_tau)
    expected = math.sqrt(ab_tau) * first.mean(dim=(1, 2)) + math.sqrt(1 - ab_tau) * noise.mean(dim=(0, 2, 3))
    # float32 FFTs and means over 480 elements: the round-off is relative to the elements summed, not to the
    # means (which can be near 0), so the scale is max|out| (measured 5.3e-9 of 4.2)
    means, scale = out.mean(dim=(0, 2, 3)), scale_of(out)
    assert_close_scaled(means, expected, FLOAT32_REORDERED, "channel means", scale)
    # the channel offsets 0, 1, 2, 3 of the first frame show through; plain noise has none of them
    assert_close_scaled(means[3] - means[0], expected[3] - expected[0], FLOAT32_REORDERED, "offset 3 - 0", scale)
    assert abs(expected[3].item() - expected[0].item()) > 0.5
    # plain noise's means are far off: 2.0e4x the bound
    assert_far_off(noise.mean(dim=(0, 2, 3)), expected, FLOAT32_REORDERED, 1e3, "noise means", scale)


def test_frame_init_dtype_and_errors(inputs):
    noise, first = inputs
    half = frame_init(noise.half(), first.half(), 0.08)
    assert half.dtype == torch.float16
    # float16 inputs and output around a float32 computation (measured 5.5e-4 of the scale 4.2)
    full = frame_init(noise, first, 0.08)
    assert_close_scaled(half.float(), full, FLOAT16_STORAGE, "float16 FrameInit")
    assert_far_off(noise, full, FLOAT16_STORAGE, 30, "FrameInit skipped")  # a half path without FrameInit: 136x
    with pytest.raises(ValueError, match="same C, H, W"):
        frame_init(noise, first[:, :4], 0.08)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        frame_init(noise, first, 1.5)


def test_freenoise_reuses_the_first_windows_noise_shuffled_per_block():
    from atomo_core.noise_init import freenoise

    noise = torch.randn(40, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    out = freenoise(noise, context_length=16, context_overlap=4, seed=7)
    assert out[:16].equal(noise[:16])  # the first window keeps its drawn noise
    # every later block of 12 frames is a permutation of the block 16 frames before it (in the output)
    for start in (16, 28):
        count = min(12, 40 - start)
        block, source = out[start : start + count], out[start - 16 : start - 16 + count]
        matches = [[bool(b.equal(s)) for s in source] for b in block]
        assert all(sum(row) == 1 for row in matches)  # each frame is exactly one source frame
        assert sorted(row.index(True) for row in matches) == list(range(count))  # and each source once
        assert not block.equal(source)  # shuffled, not copied in order
    # every frame's noise is one of the first window's frames: one look over the whole video
    assert all(any(f.equal(g) for g in noise[:16]) for f in out)
    assert torch.equal(out, freenoise(noise, 16, 4, seed=7))  # seeded: a run repeats exactly
    assert not torch.equal(out, freenoise(noise, 16, 4, seed=8))
    assert torch.equal(freenoise(noise[:16], 16, 4, seed=7), noise[:16])  # one window: unchanged
    with pytest.raises(ValueError, match="context_overlap .* must be smaller than context_length"):
        freenoise(noise, 16, 16, seed=0)
