"""Float tolerances for the test suite: the rules, in one place, each justified against round-off.

Why tolerances are relative. Round-off in an element is a multiple of the unit roundoff times the magnitude
of the *terms* the element was computed from, not of the element itself (a sum can cancel to ~0). So a
bound must scale with the output's magnitude, and an absolute ``atol`` is only right for one scale.

The scale is ``max|expected|`` (the largest magnitude of the expected output) unless a test passes another
one. The measured figure is ``max|actual - expected|``, a maximum over all elements; over n elements of
Gaussian-like data both it and ``max|expected|`` grow like ``sqrt(2 ln n)``, so their ratio does not depend
on the tensor's size (against the RMS it would creep up with n). Where the expected value is not
representative of the terms (a mean near zero, one frequency of a spectrum, a linear combination with large
coefficients), the test passes ``scale=`` the magnitude of what was summed, and says so.

Why float32 results differ between machines. Machine epsilon is ``2**-23 = 1.19e-7``; every rounding costs
up to half of it, relative. A reduction of n terms accumulates an error of order ``sqrt(n)·eps`` (random
signs) to ``n·eps`` (worst case) relative to the magnitude of the terms. Equivalent computations with
different batch shapes or kernels (GEMM blocking, MKL/oneDNN code paths chosen per instruction set: Intel
AVX-512 vs AMD AVX2, thread counts, SDPA vs explicit matmuls, FFT algorithms, fused multiply-adds) sum in
a different order, so their float32 results differ by ~1e-6 relative. Example: on an AVX-512 Xeon the
IP-Adapter per-chunk test measured 3.3e-6 on outputs up to 4.8 (6.9e-7 relative), failing an
``atol=1e-6`` that had passed on AMD.

What stays exact. Copies, indexing, concatenation, casts that the loader does not redo, adding an exact
zero, and the same ops run on the same inputs with the same shapes give bit-identical results on whatever
machine runs both sides of the comparison; their tests use ``torch.equal`` / ``==`` and must keep doing so.
So do sums and products of small integers, which float32 represents exactly.

Bug checks. A tolerance is only useful if a realistic bug (wrong scale, wrong axis, a missing term) lands far
outside it; ``assert_far_off`` asserts that the same comparison fails a deliberately broken variant by a wide
factor, and each test's comment gives the measured factor.
"""

from __future__ import annotations

import pytest
import torch

FLOAT32_EPS = torch.finfo(torch.float32).eps  # 2**-23 = 1.19e-7
FLOAT64_EPS = torch.finfo(torch.float64).eps  # 2**-52 = 2.22e-16
FLOAT16_EPS = torch.finfo(torch.float16).eps  # 2**-10 = 9.77e-4

FLOAT32_ROUNDING = FLOAT32_EPS
"""One rounding to float32 of (nearly) the same real number: two float32 values rounded from float64 results
that agree to a few float64 ulps differ by at most one float32 ulp, and ``ulp(x) <= eps·|x|``. The tightest
float32 bound there is: a float32 table built from a float64 formula against a float64 definition."""

FLOAT32_FEW_OPS = 1e-6
"""Element-wise float32 maths, a handful of ops and no long reductions (blends, affine maps, short means).
Each rounding costs at most ``eps/2`` of the largest term; ``1e-6 = 8.4 eps`` covers ~16 of them, and a fused
multiply-add on one CPU against a separate multiply and add on another (a one-rounding difference)."""

FLOAT32_REORDERED = 1e-5
"""The same float32 maths computed in a different order: another kernel (SDPA vs ``baddbmm`` + softmax),
another batch shape (GEMM blocking), another CPU or thread count, an FFT and its inverse, a reduction over
many elements. For dot products of n = 320..3072 terms ``sqrt(n)·eps`` is 2e-6..7e-6 of the terms' magnitude;
the differences measured in this suite stay below 2e-6 of the output's scale (most below 7e-7; the deepest,
the 4-layer IP-Adapter Resampler against its reference, 1.1e-6..1.8e-6; 6.9e-7 on the AVX-512 machine above)
with 1 or 2 threads and with ATen's and MKL's vector code paths switched down
(``ATEN_CPU_CAPABILITY=default``, ``MKL_ENABLE_INSTRUCTIONS=SSE4_2``, ``MKL_CBWR=COMPATIBLE``). ``1e-5``
leaves a 5x margin over the worst of those and 14x over the AVX-512 failure; ``1e-6`` does not survive
AVX-512. The bug checks of the tests sit at 1e-2 or more: 1000x above."""

FLOAT64_FEW_OPS = 1e-14
"""Element-wise float64 maths, a handful of ops: ``1e-14 = 45 eps64``."""

FLOAT64_REORDERED = 1e-12
"""The same float64 maths in a different order or by another formula: ``1e-12 = 4500 eps64`` covers
cumulative products over 1000 timesteps (``n·eps64 = 2.2e-13``), per-item standard deviations, and
cancellation in differences such as ``s_t - s_T`` (which amplifies round-off ~170x near the end of SD-1.5's
schedule)."""

FLOAT16_STORAGE = 2 * FLOAT16_EPS
"""A float32 computation whose inputs and output are stored in float16 (``1.95e-3`` of the scale): each storage
rounds by up to ``eps16/2`` of the stored value; through maps of element-wise gain <= 1 (blends, a low-pass
whose kernel is non-negative) two inputs and the output add up to at most ``1.5 eps16`` of the scale. The
float32 round-off in between is 1000x smaller."""


def _as_float(x) -> torch.Tensor:
    """``x`` as a float64 (or complex128) tensor, so the check itself adds no round-off."""
    if not isinstance(x, torch.Tensor):  # a Python number or list: float64 from the start, not float32
        x = torch.as_tensor(x, dtype=torch.complex128 if isinstance(x, complex) else torch.float64)
    t = x.detach()
    return t.to(torch.complex128) if t.is_complex() else t.to(torch.float64)


def scale_of(x) -> float:
    """``max|x|`` in float64 (the modulus for complex tensors): the default scale of every bound here."""
    t = _as_float(x)
    return t.abs().max().item() if t.numel() else 0.0


def _difference(actual, expected) -> float:
    a, e = _as_float(actual), _as_float(expected)
    if e.ndim == 0:
        e = e.expand_as(a)
    if a.shape != e.shape:
        raise AssertionError(f"shapes differ: actual {tuple(a.shape)}, expected {tuple(e.shape)}")
    return (a - e).abs().max().item() if a.numel() else 0.0


def relative_error(actual, expected, scale: float | None = None) -> float:
    """``max|actual - expected| / scale`` with ``scale = max|expected|`` unless given."""
    s = scale_of(expected) if scale is None else float(scale)
    return _difference(actual, expected) / s


def assert_close_scaled(actual, expected, rel: float, what: str = "", scale: float | None = None) -> float:
    """Assert ``max|actual - expected| <= rel * scale``; ``scale = max|expected|`` unless given.

    ``actual``/``expected`` are tensors or numbers (a number or 0-d ``expected`` is compared with every element).
    Returns the measured relative figure. The failure message gives the measured difference, the bound and
    the scale, so a failure on another machine says by how much it missed.
    """
    s = scale_of(expected) if scale is None else float(scale)
    diff = _difference(actual, expected)
    bound = rel * s
    if not diff <= bound:  # also fails on NaN
        raise AssertionError(
            f"{what or 'values'}: max|actual - expected| = {diff:.3g} exceeds the bound {bound:.3g} "
            f"= rel {rel:.3g} x scale {s:.3g} ({'max|expected|' if scale is None else 'given scale'}); "
            f"measured relative {diff / s if s else float('inf'):.3g}"
        )
    return diff / s if s else 0.0


def assert_far_off(actual, expected, rel: float, factor: float, what: str = "", scale: float | None = None) -> float:
    """The bug check: the comparison ``assert_close_scaled(actual, expected, rel)`` fails by ``factor`` or more.

    ``actual`` is a deliberately broken variant. Returns the measured factor ``relative error / rel``.
    """
    measured = relative_error(actual, expected, scale) / rel
    if not measured >= factor:
        raise AssertionError(
            f"{what or 'broken variant'}: only {measured:.3g}x the bound rel {rel:.3g}; a bug check needs "
            f"{factor:g}x, so this comparison would not tell the bug from round-off"
        )
    return measured


def quoted(text: str):
    """``pytest.approx`` for a constant quoted to its printed digits: within half a unit of the last digit.

    ``quoted("4518.76")`` accepts 4518.755..4518.765. This is no round-off bound: it is the precision of the
    number as published (ComfyUI's sigma range, SD-1.5's terminal sqrt(alpha-bar)).
    """
    decimals = len(text.split(".")[1]) if "." in text else 0
    return pytest.approx(float(text), rel=0, abs=0.5 * 10.0**-decimals)


# ------------------------------------------------------------------------ host tests: a whole UNet call
# Host tests compare whole real-size UNet outputs with ``sampling.relative_error``: max|actual - expected| over
# the RMS of the expected output (the UNet output is noise-like, so its RMS is its natural scale).

UNET_SAME_OPS = 1e-5
"""Two runs that do the same float32 operations on the same weights (a partial load that casts float32 weights to
float32 per call, an fp16 file cast per call vs converted once, KSampler vs our sampler at image_cfg = 1, one
SDPA call vs the same call split into batch chunks): observed 0 to 2e-6; 1e-5 leaves a margin for kernels that
block a smaller batch differently. The bug checks beside them land at 1e-2 or more."""

UNET_OTHER_KERNEL = 1e-4
"""A whole UNet call with another attention kernel or another reference implementation: ours with ComfyUI's
sub-quadratic CPU attention against diffusers' UNetMotionModel with SDPA (observed 1.6e-5 to 3.2e-5 for
AnimateDiff v1/v2/v3/AnimateLCM, 1.2e-5 for PIA), ComfyUI's split attention against SDPA (1.2e-5). 16 frames
of 21 temporal sites and 16 spatial ones compound the per-kernel round-off; 1e-4 leaves 3x over the worst. A
missing temporal layer moves the figure past 1e-2 and diffusers' motion-module GroupNorm convention past 1e-3."""
