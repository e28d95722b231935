"""Temporal attention and temporal convolution against independent references and their definitions."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange
from reference_animatediff import motion_module_forward
from tolerances import FLOAT32_REORDERED, assert_close_scaled, assert_far_off
from weights import animatediff_state_dict, position_encoding

from atomo_core.attention import TORCH_OPERATIONS, resolve_operations, sdpa_attention
from atomo_core.errors import FrameLimitError
from atomo_core.motion_module import MotionModule, MotionModuleConfig
from atomo_core.temporal_attention import TemporalAttentionLayer, sinusoidal_position_encoding
from atomo_core.temporal_conv import TemporalConvLayer

PREFIX = "down_blocks.1.motion_modules.0."  # a 640-channel site


@pytest.fixture(scope="module")
def site_weights():
    full = animatediff_state_dict("v2", seed=3)
    return {k: v for k, v in full.items() if k.startswith(PREFIX)}


def _layer(site_weights, max_frames=32):
    layer = TemporalAttentionLayer(640, max_frames=max_frames)
    layer.load_state_dict({k[len(PREFIX):]: v for k, v in site_weights.items() if "pos_encoder" not in k})
    return layer


def _relative(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


def test_position_encoding_matches_animatediff_buffer():
    for length, dim in ((24, 320), (32, 1280), (7, 640)):
        ours = sinusoidal_position_encoding(length, dim)
        assert torch.equal(ours, position_encoding(length, dim)[0])
    pe = sinusoidal_position_encoding(4, 8)
    assert pe[0, 1].item() == 1.0 and pe[0, 0].item() == 0.0  # position 0: sin 0, cos 0
    assert pe[3, 0].item() == pytest.approx(torch.sin(torch.tensor(3.0)).item(), abs=1e-6)


def test_temporal_attention_matches_original_module(site_weights):
    torch.manual_seed(0)
    b, f, h, w = 2, 16, 4, 5
    video = torch.randn(b, 640, f, h, w)
    expected = motion_module_forward(video, site_weights, PREFIX)
    ours = _layer(site_weights)(rearrange(video, "b c f h w -> (b f) c h w"), f)
    ours = rearrange(ours, "(b f) c h w -> b c f h w", f=f)
    # SDPA and einops against the reference's explicit matmuls: the same float32 maths in another order.
    assert_close_scaled(ours, expected, FLOAT32_REORDERED, "temporal attention vs original AnimateDiff")
    # The weights are sensitive: a one-position shift of the encoding moves the output far beyond the tolerance.
    shifted = motion_module_forward(video, site_weights, PREFIX, pe_shift=1)
    assert _relative(shifted, expected) > 1e-2
    # ... and so does the temporal part as a whole (output differs from the residual-only path).
    assert _relative(video, expected) > 1e-1


def test_wrong_softmax_scale_would_be_seen(site_weights, monkeypatch):
    torch.manual_seed(1)
    x = torch.randn(16, 640, 3, 3)
    layer = _layer(site_weights)
    good = layer(x, 16)
    import atomo_core.temporal_attention as ta

    real_sdpa = ta.F.scaled_dot_product_attention

    def sdpa_wrong_scale(q, k, v, **kwargs):
        return real_sdpa(q, k, v, scale=1.0 / q.shape[-1])

    monkeypatch.setattr(ta.F, "scaled_dot_product_attention", sdpa_wrong_scale)
    assert _relative(layer(x, 16), good) > 1e-2


def test_videos_in_a_batch_do_not_mix(site_weights):
    torch.manual_seed(2)
    layer = _layer(site_weights)
    f = 8
    a, b = torch.randn(f, 640, 2, 2), torch.randn(f, 640, 2, 2)
    both = layer(torch.cat([a, b]), f)
    # One batch of two videos against each alone: other GEMM shapes, so another summation order.
    assert_close_scaled(both[:f], layer(a, f), FLOAT32_REORDERED, "first video")
    assert_close_scaled(both[f:], layer(b, f), FLOAT32_REORDERED, "second video")
    # Had the layer mixed the videos (frames counted over the batch), the figure would be far off.
    assert_far_off(layer(torch.cat([a, b]), 2 * f)[:f], layer(a, f), FLOAT32_REORDERED, 100, "videos mixed")
    # Frames do interact within a video: changing frame 0 changes frame 5's output.
    a2 = a.clone()
    a2[0] += torch.randn(640, 2, 2)  # (a constant shift would vanish in the per-frame GroupNorm)
    assert (layer(a2, f)[5] - layer(a, f)[5]).abs().max() > 1e-3


def test_frame_limit_is_refused_with_the_limit_named(site_weights):
    layer = _layer(site_weights, max_frames=24)
    with pytest.raises(FrameLimitError, match="at most 24 frames"):
        layer(torch.randn(25, 640, 1, 1), 25)


def test_fresh_temporal_attention_is_identity():
    layer = TemporalAttentionLayer(320)
    x = torch.randn(8, 320, 2, 2)
    assert torch.equal(layer(x, 8), x)


def test_temporal_conv_is_identity_when_fresh_and_a_frame_convolution_otherwise():
    layer = TemporalConvLayer(320)
    x = torch.randn(2 * 6, 320, 3, 3)
    assert torch.equal(layer(x, 6), x)
    torch.manual_seed(3)
    torch.nn.init.normal_(layer.conv.weight, std=0.05)
    torch.nn.init.normal_(layer.conv.bias, std=0.05)
    out = layer(x, 6)
    # Definition: x + conv1d over frames of silu(groupnorm(x)), zero-padded, for each video separately.
    h = torch.nn.functional.silu(torch.nn.functional.group_norm(x, 32, layer.norm.weight, layer.norm.bias, 1e-6))
    video = h.reshape(2, 6, 320, 3, 3)
    expected = torch.empty_like(video)
    for v in range(2):
        padded = torch.nn.functional.pad(video[v], (0, 0, 0, 0, 0, 0, 1, 1))  # pad the frame axis
        for t in range(6):
            window = padded[t : t + 3]  # [3, c, h, w]
            expected[v, t] = torch.einsum("oik,kihw->ohw", layer.conv.weight, window) + layer.conv.bias[:, None, None]
    expected = expected.reshape(12, 320, 3, 3) + x
    # conv1d against an einsum per window: the same 960-term sums in another order.
    assert_close_scaled(out, expected, FLOAT32_REORDERED, "temporal conv vs its definition")
    assert_far_off(out, expected - layer.conv.bias[:, None, None], FLOAT32_REORDERED, 100, "bias dropped")


def test_temporal_conv_rejects_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        TemporalConvLayer(320, kernel_size=4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_layers_keep_their_dtype_and_track_fp32(site_weights, dtype):
    torch.manual_seed(4)
    x = torch.randn(16, 640, 2, 2)
    full = _layer(site_weights)(x, 16)
    half = _layer(site_weights).to(dtype)(x.to(dtype), 16)
    assert half.dtype == dtype and torch.isfinite(half).all()
    tolerance = 3e-2 if dtype == torch.bfloat16 else 5e-3
    assert _relative(half.float(), full) < tolerance
    conv = TemporalConvLayer(640)
    torch.nn.init.normal_(conv.conv.weight, std=0.02)
    conv_half = TemporalConvLayer(640).to(dtype)
    conv_half.load_state_dict({k: v.to(dtype) for k, v in conv.state_dict().items()})
    out = conv_half(x.to(dtype), 16)
    assert out.dtype == dtype and _relative(out.float(), conv(x, 16)) < tolerance


class _RecordingOps:
    """An operations namespace whose layers are torch's, recording what was built with them."""

    def __init__(self):
        self.built = []
        for name in ("Linear", "Conv1d", "GroupNorm", "LayerNorm"):
            base = getattr(torch.nn, name)
            setattr(self, name, type(name, (base,), {"__init__": self._init(base)}))

    def _init(self, base):
        built = self.built

        def __init__(layer, *args, **kwargs):
            base.__init__(layer, *args, **kwargs)
            built.append(base.__name__)

        return __init__


def test_every_layer_comes_from_the_operations_namespace():
    ops = _RecordingOps()
    with torch.device("meta"):
        module = MotionModule(MotionModuleConfig(family="atomovideo", temporal_conv=True, mid_block=False), "m", ops)
    leaves = [m for m in module.modules() if any(True for _ in m.parameters(recurse=False))]
    assert leaves and all(type(m).__name__ in {"Linear", "Conv1d", "GroupNorm", "LayerNorm"} for m in leaves)
    assert all(type(m) in {ops.Linear, ops.Conv1d, ops.GroupNorm, ops.LayerNorm} for m in leaves)
    assert len(ops.built) == len(leaves)
    assert resolve_operations(None) is TORCH_OPERATIONS
    with pytest.raises(TypeError, match="lacks Conv1d, GroupNorm, LayerNorm"):
        resolve_operations(type("Partial", (), {"Linear": torch.nn.Linear}))


def test_with_operations_shares_the_tensors_and_gives_the_same_output(site_weights):
    config = MotionModuleConfig(family="animatediff_v2")
    module = MotionModule(config, "v2")
    full = animatediff_state_dict("v2", seed=3)
    module.load_state_dict({k: v for k, v in full.items() if "pos_encoder" not in k})
    ops = _RecordingOps()
    rebuilt = module.with_operations(ops)
    before = dict(module.named_parameters())
    assert all(p.data_ptr() == before[n].data_ptr() for n, p in rebuilt.named_parameters())
    assert not any(p.requires_grad for p in rebuilt.parameters()) and not rebuilt.training
    x = torch.randn(8, 640, 2, 2, generator=torch.Generator().manual_seed(5))
    (site, layer), (_, layer2) = module.placements()[2], rebuilt.placements()[2]
    assert site.channels == 640 and isinstance(layer2.temporal_transformer.proj_in, ops.Linear)
    assert torch.equal(layer(x, 8), layer2(x, 8))  # same ops, same tensors
    half = module.with_operations(None, dtype=torch.float16)
    assert {p.dtype for p in half.parameters()} == {torch.float16}
    assert {p.dtype for p in module.parameters()} == {torch.float32}  # the original is untouched


def test_attention_is_the_callers(site_weights):
    layer = _layer(site_weights)
    x = torch.randn(16, 640, 3, 3, generator=torch.Generator().manual_seed(6))
    seen = []

    def recording(q, k, v, heads):
        seen.append((tuple(q.shape), heads))
        return sdpa_attention(q, k, v, heads)

    default = layer(x, 16)
    assert torch.equal(layer(x, 16, attention=recording), default)  # SDPA is the default
    assert seen == [((9, 16, 640), 8)] * 2  # 3x3 pixels: 9 sequences of 16 frames, 8 heads, two attentions

    def one_head(q, k, v, heads):
        return sdpa_attention(q, k, v, 1)

    assert_far_off(layer(x, 16, attention=one_head), default, FLOAT32_REORDERED, 100, "attention with 1 head")
    conv = TemporalConvLayer(640)
    assert torch.equal(conv(x, 16, attention=one_head), x)  # a layer without attention ignores it


def test_the_frame_limit_advice_points_each_kind_of_module_the_right_way():
    from atomo_core.errors import frame_limit_advice

    text_only = frame_limit_advice(32, image_module=False)
    assert "Context Windows (video frames)" in text_only and "32 or fewer" in text_only
    assert "Predict Next Frames needs an image module" in text_only  # never sent to a node that cannot serve it
    image = frame_limit_advice(16, image_module=True)
    assert image.index("Predict Next Frames") < image.index("Context Windows (video frames)")
    assert "16 or fewer" in image


def test_temporal_conv_reading_the_caption_starts_as_the_identity_and_then_follows_it():
    """``text_dim``: FiLM of the caption's mean token feature on the normalised input (``temporal_text: film``)."""
    layer = TemporalConvLayer(64, text_dim=48)
    assert layer.reads_text and not TemporalConvLayer(64).reads_text
    torch.manual_seed(5)
    x = torch.randn(2 * 4, 64, 3, 3)
    left, right = torch.randn(2 * 4, 7, 48), torch.randn(2 * 4, 7, 48)
    assert torch.equal(layer(x, 4, context=left), x)  # zero-initialised: a fresh module changes nothing
    torch.nn.init.normal_(layer.conv.weight, std=0.05)
    torch.nn.init.normal_(layer.text_film.weight, std=0.05)
    torch.nn.init.normal_(layer.text_film.bias, std=0.05)
    out = layer(x, 4, context=left)
    # Definition: x + conv1d over frames of (silu(groupnorm(x)) * (1 + scale) + shift), (scale, shift) a linear map
    # of the mean over the caption's tokens, one pair per frame row.
    scale, shift = layer.text_film(left.mean(dim=1)).chunk(2, dim=-1)
    h = torch.nn.functional.silu(torch.nn.functional.group_norm(x, 32, layer.norm.weight, layer.norm.bias, 1e-6))
    h = h * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
    h = rearrange(h, "(b f) c y x -> (b y x) c f", f=4)
    expected = rearrange(torch.nn.functional.conv1d(h, layer.conv.weight, layer.conv.bias, padding=1),
                         "(b y x) c f -> (b f) c y x", y=3, x=3) + x
    # the same float32 operations in the same order but for the conv's blocking: far below a real difference
    assert_close_scaled(out, expected, FLOAT32_REORDERED, "caption FiLM vs its definition")
    # another caption changes the output; ignoring the caption (a deliberate bug) would be far off
    assert_far_off(layer(x, 4, context=right), out, FLOAT32_REORDERED, 100, "another caption")
    plain = TemporalConvLayer(64)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items() if "text_film" not in k})
    assert_far_off(plain(x, 4), out, FLOAT32_REORDERED, 100, "the caption ignored")
    with pytest.raises(ValueError, match="reads the caption.*pass the UNet's cross-attention context"):
        layer(x, 4)
    with pytest.raises(ValueError, match="caption features for 2 frames, activations for 8"):
        layer(x, 4, context=left[:2])


def test_only_modules_with_temporal_convs_can_read_the_caption():
    config = MotionModuleConfig(family="atomovideo", temporal_conv=True, temporal_text_dim=32,
                                widths=(32, 32, 32, 32))
    module = MotionModule(config)
    convs = [layer for site, layer in module.placements() if site.kind == "temporal_conv"]
    assert convs and all(c.reads_text and c.text_film.in_features == 32 for c in convs)
    assert not any(getattr(layer, "reads_text", False) for site, layer in module.placements()
                   if site.kind != "temporal_conv")
    with pytest.raises(ValueError, match="temporal_text_dim needs temporal_conv layers"):
        MotionModuleConfig(family="atomovideo", temporal_conv=False, temporal_text_dim=768)
