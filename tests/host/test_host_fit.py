"""The temporal layers as ComfyUI's own weights: partial (low-VRAM) loading, weight storage dtype, ComfyUI's
attention backends and its SDPA batch split.

One UNet call of 4 frames at 8x8 latents, cond and uncond batched (``sampling.one_step``), with an AnimateDiff-v2
module (sensitive random weights) attached by the host adapter. Outputs are compared with the fully loaded,
default-attention run.
"""

from __future__ import annotations

import gc

import pytest
import tolerances
import torch
from host_models import install_model_file
from sampling import conditioning, one_step, relative_error
from tolerances import UNET_OTHER_KERNEL, UNET_SAME_OPS
from weights import animatediff_state_dict

FRAMES = 6  # not 4, 16 or 64: no spatial attention at 8x8 latents has a sequence of this length


@pytest.fixture(scope="module")
def v2_state():
    return animatediff_state_dict("v2", seed=11)


@pytest.fixture(scope="module")
def v2(ours, v2_state):
    core = ours("atomo_core")
    return core.build_motion_module(v2_state, core.detect_config(v2_state), "v2.safetensors")


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def _step(model):
    sigmas = model.get_model_object("model_sampling").sigmas
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    _, calls = one_step(model, noise, sigmas[600], conditioning(1), conditioning(2))
    assert len(calls) == 1
    return calls[0]["output"]


def _param_modules(module):
    return [(n, m) for n, m in module.named_modules() if any(True for _ in m.parameters(recurse=False))]


def test_every_temporal_weight_is_a_comfyui_cast_operation(sd15, ours, v2):
    _, base = sd15
    model = ours("nodes.host_adapter").attach_motion_module(base, v2)
    layers = _param_modules(model.get_attachment("atomo_video").module)
    assert len(layers) == 21 * 16  # per site: norm, proj_in/out, 2 x (q, k, v, out), 2 norms, ff (2), ff_norm
    assert all(hasattr(m, "comfy_cast_weights") for _, m in layers)


def test_forced_partial_load_casts_per_call_and_gives_the_same_output(sd15, ours, v2, monkeypatch):
    import comfy.model_management

    _, base = sd15
    model = ours("nodes.host_adapter").attach_motion_module(base, v2)
    module = model.get_attachment("atomo_video").module
    full = _step(model)
    comfy.model_management.unload_all_models()

    budget = 4 * 2**20  # 4 MiB for a 1.7 GiB module: almost every layer must stay offloaded and cast per call
    real_load = comfy.model_management.LoadedModel.model_load

    def model_load(self, lowvram_model_memory=0, force_patch_weights=False):
        if self.model.model is module:
            lowvram_model_memory = budget
        return real_load(self, lowvram_model_memory, force_patch_weights)

    monkeypatch.setattr(comfy.model_management.LoadedModel, "model_load", model_load)
    partial = _step(model)
    layers = _param_modules(module)
    cast = [n for n, m in layers if m.comfy_cast_weights]
    loaded = [n for n, m in layers if getattr(m, "comfy_patched_weights", False) and not m.comfy_cast_weights]
    sizes = {n: sum(p.numel() * p.element_size() for p in m.parameters(recurse=False)) for n, m in layers}
    assert module.model_lowvram and sum(sizes[n] for n in cast) > 0.9 * sum(sizes.values())
    assert sorted(cast + loaded) == sorted(n for n, _ in layers)  # every weight either loaded or cast per call
    # Casting a float32 weight to float32 on the same device is the identity, so the output is the same.
    assert relative_error(partial, full) < UNET_SAME_OPS
    assert relative_error(full, _step(base)) > 1e-2  # and the temporal layers matter to it


def test_fp16_file_on_an_fp32_unet_both_storage_choices(sd15, ours, v2_state, tmp_path):
    """Kept in fp16 and cast per call, or converted once: the same output (fp16 -> fp32 is exact), and parity
    with the original AnimateDiff on the fp16-rounded weights."""
    import comfy.model_management
    from animatediff_oracle import build as build_oracle
    from animatediff_oracle import predict

    unet2d, base = sd15
    half = {k: v.half() for k, v in v2_state.items()}
    install_model_file("motion_modules", tmp_path / "motion_modules", "v2_fp16.safetensors", half)
    node = ours("nodes.load_motion_module").AtomoLoadMotionModule
    host = ours("nodes.host_adapter")
    model = node.execute(base, "v2_fp16.safetensors").result[0]
    default_dtype = {"compute": torch.float32, "file": torch.float16, "smaller": torch.float16}[host.DEFAULT_STORAGE]
    assert {p.dtype for p in model.get_attachment("atomo_video").module.parameters()} == {default_dtype}
    del model

    core = ours("atomo_core")
    loaded = core.load_motion_module(str(tmp_path / "motion_modules" / "v2_fp16.safetensors"), dtype=None)
    assert {p.dtype for p in loaded.parameters()} == {torch.float16}
    outputs = {}
    assert host.storage_dtype(loaded, torch.float16, "smaller") == torch.float16
    assert host.storage_dtype(loaded.with_operations(None, dtype=torch.float32), torch.float16) == torch.float16
    assert host.storage_dtype(loaded.with_operations(None, dtype=torch.bfloat16), torch.float16) == torch.float16
    for storage in ("file", "compute"):
        patched = host.attach_motion_module(base, loaded, storage=storage)
        kept = patched.get_attachment("atomo_video").module
        want = torch.float16 if storage == "file" else torch.float32
        assert {p.dtype for p in kept.parameters()} == {want}
        sigmas = patched.get_model_object("model_sampling").sigmas
        noise = torch.randn(16, 4, 8, 8, generator=torch.Generator().manual_seed(5))
        _, calls = one_step(patched, noise, sigmas[600], conditioning(1), conditioning(2), cfg=7.0)
        outputs[storage] = calls[0]
        assert {p.dtype for p in kept.parameters()} == {want}  # sampling did not convert them
        del patched, kept
        comfy.model_management.unload_all_models()
        gc.collect()
    assert relative_error(outputs["file"]["output"], outputs["compute"]["output"]) < UNET_SAME_OPS
    del loaded
    # The oracle gets the fp16-rounded weights, but the exact position encoding: we regenerate it in float32
    # rather than read the file's rounded buffer (fp16 rounding of the encoding alone moves the output 2.3e-3).
    rounded = {k: v if k.endswith("pos_encoder.pe") else half[k].float() for k, v in v2_state.items()}
    del half
    oracle = build_oracle(unet2d, rounded, "v2", 16)
    error = relative_error(outputs["file"]["output"], predict(oracle, outputs["file"], 16))
    assert error < UNET_OTHER_KERNEL, error  # test_motion_equivalence's parity tolerance
    del oracle, rounded


def _spy_sdpa(monkeypatch):
    import comfy.ops

    batches = []
    real = comfy.ops.scaled_dot_product_attention

    def spy(q, k, v, *args, **kwargs):
        batches.append((q.shape[0], q.shape[2]))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(comfy.ops, "scaled_dot_product_attention", spy)
    return batches


def test_sdpa_batch_limit_splits_the_temporal_attention(sd15, ours, v2, monkeypatch):
    import comfy.ldm.modules.attention as attention

    _, base = sd15
    model = ours("nodes.host_adapter").attach_motion_module(base, v2)
    monkeypatch.setattr(attention, "optimized_attention", attention.attention_pytorch)
    batches = _spy_sdpa(monkeypatch)
    unsplit = _step(model)
    temporal = [b for b, length in batches if length == FRAMES]
    assert len(temporal) == 42 and max(temporal) == 2 * 8 * 8  # 21 sites x 2 attentions; (cond, uncond) x h x w
    batches.clear()
    limit = 40  # below the temporal batch of the 8x8-latent sites (128); the 4x4 ones (32) fit
    monkeypatch.setattr(attention, "SDP_BATCH_LIMIT", limit)
    split = _step(model)
    assert batches and max(b for b, _ in batches) <= limit
    assert sum(1 for b, length in batches if length == FRAMES) > 42  # the temporal calls really were split
    assert relative_error(split, unsplit) < UNET_SAME_OPS


def test_another_attention_backend_runs_the_temporal_layers(sd15, ours, v2, monkeypatch):
    """ComfyUI's --use-split-cross-attention backend (attention_split) serves the temporal attention too."""
    import comfy.ldm.modules.attention as attention

    _, base = sd15
    model = ours("nodes.host_adapter").attach_motion_module(base, v2)
    monkeypatch.setattr(attention, "optimized_attention", attention.attention_pytorch)
    reference = _step(model)
    lengths = []

    def split(q, k, v, heads, *args, **kwargs):
        lengths.append(q.shape[1])
        return attention.attention_split(q, k, v, heads, *args, **kwargs)

    monkeypatch.setattr(attention, "optimized_attention", split)
    out = _step(model)
    assert lengths.count(FRAMES) == 42  # every temporal attention went through the user's backend
    assert relative_error(out, reference) < UNET_OTHER_KERNEL


def _ip_patch(ours, seed: int):
    """Our IP-Adapter attn2 patch at ("input", 1) with random base-layout weights and tokens; and its generator."""
    from host_models import random_base_adapter

    state = random_base_adapter(seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    tokens, uncond = torch.randn(1, 4, 768, generator=gen), torch.randn(1, 4, 768, generator=gen)
    patch = ours("nodes.ip_adapter_patch").IPAttentionPatch(
        ("input", 1), state["ip_adapter.1.to_k_ip.weight"], state["ip_adapter.1.to_v_ip.weight"], tokens, uncond, 1.0)
    return patch, gen


def test_ip_adapter_attention_runs_on_comfyuis_backend(ours, monkeypatch):
    import comfy.ldm.modules.attention as attention

    patch, gen = _ip_patch(ours, seed=1)
    q, k, v = (torch.randn(4, 64, 320, generator=gen) for _ in range(3))
    extra = {"n_heads": 8, "cond_or_uncond": [0, 1]}
    reference = patch(q, k, v, extra)
    seen = []

    def backend(q, k, v, heads, *args, **kwargs):
        seen.append((k.shape[1], kwargs.get("transformer_options") is extra))
        return attention.attention_basic(q, k, v, heads)

    monkeypatch.setattr(attention, "optimized_attention", backend)
    out = patch(q, k, v, extra)
    assert seen == [(64, True), (4, True)]  # the text attention and the image-token attention, with the options
    tolerances.assert_close_scaled(out, reference, tolerances.FLOAT32_REORDERED, "attention_basic vs default")


def test_ip_adapter_stays_in_the_compute_dtype_when_comfyui_casts_patches_to_fp8(ours):
    """--fp8_e4m3fn-unet: ComfyUI calls .to(float8) on every patch before sampling; ours ignores dtypes, computes in
    the query's dtype, and still follows devices."""
    patch, gen = _ip_patch(ours, seed=3)
    q, k, v = (torch.randn(2, 16, 320, generator=gen) for _ in range(3))
    extra = {"n_heads": 8, "cond_or_uncond": [0, 1]}
    before = patch(q, k, v, extra)
    assert patch.to(torch.float8_e4m3fn) is patch and patch.to(torch.device("cpu")) is patch
    assert {t.dtype for t in (patch.tokens, patch.uncond_tokens, patch.to_k_ip, patch.to_v_ip)} == {torch.float32}
    assert torch.equal(patch(q, k, v, extra), before)
    assert patch(q.half(), k.half(), v.half(), extra).dtype == torch.float16
