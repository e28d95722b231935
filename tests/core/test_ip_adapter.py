"""IP-Adapter (SD-1.5): file layouts, variant detection and refusals, projections and the decoupled attention.

The key/shape tables below are written out from the released files' layouts (research notes, section A.2),
independently of ``atomo_core``; the numeric references are hand-written the way the original IP-Adapter
code computes (explicit head reshapes, ``baddbmm`` + softmax, per-head scaling of q and k).
"""

from __future__ import annotations

import math
import os
import pickle

import pytest
import torch
import torch.nn.functional as F
from ipadapter_weights import (  # noqa: E402
    EXECUTION_ORDER,
    SITES,
    flat,
    image_proj_shapes,
    ip_layer_shapes,
    meta,
    nested,
    random_weights,
    sdxl_ip_layer_shapes,
    zeros16,
)
from safetensors.torch import save_file
from tolerances import FLOAT32_REORDERED, assert_close_scaled, assert_far_off

from atomo_core.errors import AtomoError, ConditioningError
from atomo_core.ip_adapter import (
    IPAdapterFormatError,
    build_ip_adapter,
    check_clip_output,
    decoupled_attention,
    detect_ip_adapter,
    image_tokens,
    ip_key_value,
    ip_site,
    load_ip_adapter,
    read_ip_adapter,
    read_ip_adapter_file,
    site_weights,
    uncond_image_tokens,
)

# ----------------------------------------------------------------------------------------- detection

VARIANTS = {  # test variant -> (spec.variant, clip_output, clip_width, tokens)
    "base": ("base", "image_embeds", 1024, 4),
    "plus": ("plus", "penultimate_hidden_states", 1280, 16),
    "full-face": ("full-face", "penultimate_hidden_states", 1280, 257),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_every_variant_is_detected_at_full_size(variant, layout):
    tree = nested(image_proj_shapes(variant), ip_layer_shapes(), meta)
    spec = detect_ip_adapter(read_ip_adapter(tree if layout == "nested" else flat(tree)), "x")
    assert (spec.variant, spec.clip_output, spec.clip_width, spec.num_tokens) == VARIANTS[variant]
    assert spec.clip_model == "CLIP-ViT-H-14-laion2B-s32B-b79K"
    assert spec.uncond == ("zero_embeds" if variant == "base" else "zero_pixels")
    if variant == "plus":
        assert (spec.depth, spec.heads) == (4, 12)


def test_vit_g_base_needs_bigg_image_embeds():
    spec = detect_ip_adapter(read_ip_adapter(nested(image_proj_shapes("vit-G"), ip_layer_shapes(), meta)))
    assert (spec.variant, spec.clip_output, spec.clip_width) == ("base", "image_embeds", 1280)
    assert "bigG" in spec.clip_model


def test_training_checkpoint_names_and_wrappers_are_normalised():
    tree = nested(image_proj_shapes("base"), ip_layer_shapes(), meta)
    renamed = {"state_dict": {"image_proj_model": tree["image_proj"], "adapter_modules": tree["ip_adapter"]}}
    assert sorted(read_ip_adapter(renamed)) == sorted(flat(tree))
    # An AtomoVideo file carries its IP-Adapter under the flat keys next to temporal layers, which are dropped.
    mixed = {**flat(tree), "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight": torch.zeros(1)}
    assert sorted(read_ip_adapter(mixed)) == sorted(flat(tree))


@pytest.fixture(scope="module")
def adapter_files(tmp_path_factory):
    """Full-size files of every variant in both on-disk layouts (fp16 zeros keep them quick to write)."""
    folder = tmp_path_factory.mktemp("ipadapter")
    paths = {}
    for variant in VARIANTS:
        tree = nested(image_proj_shapes(variant), ip_layer_shapes(), zeros16)
        paths[variant, "bin"] = str(folder / f"ip-adapter-{variant}_sd15.bin")
        torch.save(tree, paths[variant, "bin"])
        paths[variant, "safetensors"] = str(folder / f"ip-adapter-{variant}_sd15.safetensors")
        save_file(flat(tree), paths[variant, "safetensors"])
    return paths


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("ext", ["bin", "safetensors"])
def test_files_are_read_detected_and_loaded(adapter_files, variant, ext):
    path = adapter_files[variant, ext]
    state = read_ip_adapter_file(path)
    assert len([k for k in state if k.startswith("ip_adapter.")]) == 32
    adapter = load_ip_adapter(path)
    assert adapter.name == os.path.basename(path)
    assert (adapter.spec.variant, adapter.spec.num_tokens) == VARIANTS[variant][::3]
    assert next(adapter.image_proj.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in adapter.image_proj.parameters())
    clip = torch.randn(2, 1024) if variant == "base" else torch.randn(2, 257, 1280)
    assert image_tokens(adapter, clip).shape == (2, VARIANTS[variant][3], 768)
    assert site_weights(adapter.ip_weights, ("middle", 0))[0].shape == (1280, 768)


# ------------------------------------------------------------------------------------------ refusals


def _refusal(state, name="f.bin") -> str:
    with pytest.raises(IPAdapterFormatError) as info:
        detect_ip_adapter(read_ip_adapter(state, name), name)
    assert isinstance(info.value, AtomoError) and name in str(info.value)
    return str(info.value)


@pytest.mark.parametrize("layout", ["nested", "flat"])
@pytest.mark.parametrize("proj", ["sdxl", "plus"])
def test_sdxl_adapters_are_refused_with_what_to_use(layout, proj):
    tree = nested(image_proj_shapes(proj), sdxl_ip_layer_shapes(), meta)
    message = _refusal(tree if layout == "nested" else flat(tree), "ip-adapter_sdxl.bin")
    assert "SDXL" in message and "2048" in message and "ip-adapter_sd15" in message and "ViT-H" in message


def test_sdxl_files_on_disk_are_refused(tmp_path):
    for ext, write in (("bin", torch.save), ("safetensors", save_file)):
        path = str(tmp_path / f"ip-adapter-plus_sdxl_vit-h.{ext}")
        tree = nested({"latents": (1, 16, 1280)}, {"1.to_k_ip.weight": (640, 2048)}, lambda k, s: torch.zeros(s))
        write(tree if ext == "bin" else flat(tree), path)
        with pytest.raises(IPAdapterFormatError, match=r"ip-adapter-plus_sdxl_vit-h.* is an SDXL IP-Adapter"):
            load_ip_adapter(path)


@pytest.mark.parametrize("faceid", ["faceid", "faceid-plus"])
def test_faceid_adapters_are_refused(faceid):
    proj = image_proj_shapes("faceid")
    if faceid == "faceid-plus":
        proj = {**proj, "perceiver_resampler.proj_in.weight": (768, 1280)}
    layers = {**ip_layer_shapes(), "0.to_q_lora.down.weight": (128, 320)}
    message = _refusal(nested(proj, layers, meta), "ip-adapter-faceid_sd15.bin")
    assert "FaceID" in message and "InsightFace" in message and "plus-face_sd15" in message


def test_other_base_models_incomplete_and_misshapen_files_are_refused():
    sd2 = nested(image_proj_shapes("base"), ip_layer_shapes(1024), meta)
    assert "another base model" in _refusal(sd2) and "1024" in _refusal(sd2)
    incomplete = nested(image_proj_shapes("plus"), ip_layer_shapes(), meta)
    del incomplete["ip_adapter"]["17.to_v_ip.weight"]
    assert "incomplete" in _refusal(incomplete) and "17.to_v_ip" in _refusal(incomplete)
    misshapen = nested(image_proj_shapes("plus"), ip_layer_shapes(), meta)
    misshapen["ip_adapter"]["5.to_k_ip.weight"] = torch.empty(320, 768, device="meta")
    assert "'ip_adapter.5.to_k_ip.weight' has shape [320, 768], expected [640, 768]" in _refusal(misshapen)
    extra = nested({**image_proj_shapes("plus"), "pos_emb.weight": (257, 1280)}, ip_layer_shapes(), meta)
    assert "image_proj.pos_emb.weight" in _refusal(extra)
    unknown = nested({"mystery.weight": (4, 4)}, ip_layer_shapes(), meta)
    assert "does not know" in _refusal(unknown)


@pytest.mark.parametrize(
    ("keys", "says"),
    [
        (["model.diffusion_model.input_blocks.0.0.weight"], "Stable Diffusion checkpoint"),
        (["vision_model.embeddings.patch_embedding.weight"], "CLIP vision model"),
        (["down_blocks.0.motion_modules.0.temporal_transformer.norm.weight"], "motion module"),
        (["lora_unet_down_blocks_0.alpha"], "LoRA"),
        (["something.else"], "holds 1 tensors such as 'something.else'"),
    ],
)
def test_junk_files_are_refused_saying_what_they_are(tmp_path, keys, says):
    path = str(tmp_path / "junk.safetensors")
    save_file({k: torch.zeros(2) for k in keys}, path)
    with pytest.raises(IPAdapterFormatError, match="'junk.safetensors'") as info:
        load_ip_adapter(path)
    assert says in str(info.value) and "not an IP-Adapter" in str(info.value) and "ip-adapter_sd15" in str(info.value)


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_broken_unsafe_and_misnamed_files_are_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.bin"
    torch.save({"image_proj": {"proj.weight": _Exploit(marker)}}, str(evil))
    with pytest.raises(IPAdapterFormatError, match="Refused to load 'evil.bin'"):
        read_ip_adapter_file(str(evil))
    assert not marker.exists()
    good = tmp_path / "good.safetensors"
    save_file({"ip_adapter.1.to_k_ip.weight": torch.zeros(320, 768)}, str(good))
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(IPAdapterFormatError, match="truncated or corrupt"):
        read_ip_adapter_file(str(truncated))
    cut_bin = tmp_path / "cut.bin"
    torch.save({"ip_adapter": {"1.to_k_ip.weight": torch.zeros(320, 768)}}, str(cut_bin))
    cut_bin.write_bytes(cut_bin.read_bytes()[:3000])
    with pytest.raises(IPAdapterFormatError, match="truncated or corrupt"):
        read_ip_adapter_file(str(cut_bin))
    listing = tmp_path / "list.bin"
    with open(listing, "wb") as f:
        pickle.dump([1, 2], f, protocol=2)
    with pytest.raises(IPAdapterFormatError):
        read_ip_adapter_file(str(listing))
    torch.save([torch.zeros(1)], str(listing))
    with pytest.raises(IPAdapterFormatError, match="holds a list"):
        read_ip_adapter_file(str(listing))
    with pytest.raises(IPAdapterFormatError, match="does not exist"):
        read_ip_adapter_file(str(tmp_path / "missing.bin"))
    (tmp_path / "x.onnx").write_bytes(b"x")
    with pytest.raises(IPAdapterFormatError, match="extension '.onnx'"):
        read_ip_adapter_file(str(tmp_path / "x.onnx"))


# --------------------------------------------------------------------------------------------- sites


def test_site_table_matches_the_sd15_layout():
    for n, (width, block) in SITES.items():
        site = ip_site(block)
        assert (site.key, site.channels, site.block) == (n, width, block)
        assert site.transformer_index == EXECUTION_ORDER.index(block)
    assert ip_site(("input", 4, 0)).key == 5
    with pytest.raises(KeyError, match=r"\('middle', 0\)"):
        ip_site(("middle", 1))
    with pytest.raises(KeyError):
        ip_site(("input", 3))  # a downsampler, no attention


def test_site_weights_pick_each_sites_own_tensors():
    tree = nested(image_proj_shapes("base"), ip_layer_shapes(), lambda k, s: torch.zeros(s))
    for n, _ in SITES.items():
        tree["ip_adapter"][f"{n}.to_k_ip.weight"] += n
        tree["ip_adapter"][f"{n}.to_v_ip.weight"] -= n
    for state in (read_ip_adapter(tree), tree["ip_adapter"]):
        for n, (width, block) in SITES.items():
            k, v = site_weights(state, block)
            assert k.shape == v.shape == (width, 768)
            assert (k == n).all() and (v == -n).all()


# ------------------------------------------------------------------------------------ the attention


def head_to_batch_dim(x, heads):
    b, n, c = x.shape
    return x.reshape(b, n, heads, c // heads).permute(0, 2, 1, 3).reshape(b * heads, n, c // heads)


def batch_to_head_dim(x, heads):
    bh, n, d = x.shape
    return x.reshape(bh // heads, heads, n, d).permute(0, 2, 1, 3).reshape(bh // heads, n, heads * d)


def attention_scores(q, k, scale):
    scores = torch.baddbmm(
        torch.empty(q.shape[0], q.shape[1], k.shape[1], dtype=q.dtype), q, k.transpose(-1, -2), beta=0, alpha=scale
    )
    return scores.softmax(dim=-1)


def reference_ip_attn_processor(hidden, context, to_q, to_k, to_v, to_k_ip, to_v_ip, heads, num_tokens, scale):
    """IPAttnProcessor.__call__ up to (not including) to_out: image tokens are the last ``num_tokens`` of context."""
    end = context.shape[1] - num_tokens
    text, ip = context[:, :end], context[:, end:]
    query = head_to_batch_dim(hidden @ to_q.T, heads)
    key, value = head_to_batch_dim(text @ to_k.T, heads), head_to_batch_dim(text @ to_v.T, heads)
    d_scale = (hidden.shape[-1] // heads) ** -0.5
    out = batch_to_head_dim(torch.bmm(attention_scores(query, key, d_scale), value), heads)
    ip_key, ip_value = head_to_batch_dim(ip @ to_k_ip.T, heads), head_to_batch_dim(ip @ to_v_ip.T, heads)
    ip_out = batch_to_head_dim(torch.bmm(attention_scores(query, ip_key, d_scale), ip_value), heads)
    return out + scale * ip_out


@pytest.fixture(scope="module")
def random_ip_state():
    return read_ip_adapter(nested(image_proj_shapes("base"), ip_layer_shapes(), random_weights(7)))


def _site_case(block, seed=0, batch=2, pixels=64, tokens=4):
    width = SITES[[n for n, (_, b) in SITES.items() if b == block][0]][0]
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, pixels, width, generator=gen)
    text = torch.randn(batch, 77, 768, generator=gen)
    ip = F.layer_norm(torch.randn(batch, tokens, 768, generator=gen), (768,))
    attn = [torch.randn(width, n_in, generator=gen) / math.sqrt(n_in) for n_in in (width, 768, 768)]
    return hidden, text, ip, attn


def _ours(state, block, hidden, text, ip, attn, scale, heads=8, swap=False):
    to_q, to_k, to_v = attn
    k_ip, v_ip = ip_key_value(ip, *site_weights(state, block))
    if swap:
        k_ip, v_ip = v_ip, k_ip
    return decoupled_attention(hidden @ to_q.T, text @ to_k.T, text @ to_v.T, k_ip, v_ip, heads, scale)


@pytest.mark.parametrize("block", [("input", 1), ("output", 6), ("middle", 0)])
def test_decoupled_attention_matches_the_original_processor(random_ip_state, block):
    hidden, text, ip, attn = _site_case(block)
    k_w, v_w = site_weights(random_ip_state, block)
    expected = reference_ip_attn_processor(hidden, torch.cat([text, ip], 1), *attn, k_w, v_w, 8, 4, 0.7)
    ours = _ours(random_ip_state, block, hidden, text, ip, attn, 0.7)
    # SDPA against baddbmm + softmax + bmm: the same maths summed in another order (measured 1.9e-7..6.3e-7
    # of the scale across thread counts and MKL/ATen code paths).
    assert_close_scaled(ours, expected, FLOAT32_REORDERED, "decoupled attention vs IPAttnProcessor")
    # The test sees bugs: a wrong scale, swapped k/v, another site's weights, a wrong head count
    # (measured 4.1e4..1.5e5 times the bound) ...

    def broken(what, **changes):
        args = dict(state=random_ip_state, block=block, hidden=hidden, text=text, ip=ip, attn=attn, scale=0.7)
        assert_far_off(_ours(**{**args, **changes}), expected, FLOAT32_REORDERED, 1e3, what)

    broken("scale 1.0 instead of 0.7", scale=1.0)
    broken("k and v swapped", swap=True)
    other = next(b for n, (w, b) in SITES.items() if b != block and w == hidden.shape[-1])
    broken("another site's weights", block=other)
    broken("one head instead of 8", heads=1)
    # ... and the image branch matters at all: without it the output is far from the reference (9.7e4..1.0e5x).
    broken("no image branch", scale=0.0)


def test_per_chunk_tokens_and_per_row_scale(random_ip_state):
    block, frames = ("input", 4), 3
    hidden, text, _, attn = _site_case(block, seed=1, batch=2 * frames)
    gen = torch.Generator().manual_seed(2)
    chunk_tokens = F.layer_norm(torch.randn(2, 4, 768, generator=gen), (768,))  # [cond, uncond]: one per chunk
    together = _ours(random_ip_state, block, hidden, text, chunk_tokens, attn, 0.8)
    per_frame = chunk_tokens.repeat_interleave(frames, dim=0)  # chunk 0 covers rows 0..f-1
    # The k_ip/v_ip projections run on 2 rows here and on 6 there: other GEMM shapes, so another summation
    # order (3.3e-6 on values up to 4.8 on an AVX-512 Xeon, where the old atol=1e-6 failed).
    assert_close_scaled(
        together,
        _ours(random_ip_state, block, hidden, text, per_frame, attn, 0.8),
        FLOAT32_REORDERED,
        "per-chunk tokens vs the same tokens repeated per frame",
    )
    # Tiling the chunks (cond, uncond, cond, ...) instead of repeating each over its frames: 1.2e5x the bound.
    tiled = _ours(random_ip_state, block, hidden, text, chunk_tokens.repeat(frames, 1, 1), attn, 0.8)
    assert_far_off(tiled, together, FLOAT32_REORDERED, 1e3, "chunk tokens tiled instead of repeated")
    # A per-row scale of 0 gives the text-only attention on those rows. Exact: the same ops on the same inputs
    # and shapes, a float32 0.8 whether it comes from a tensor or a number, and text + 0 * ip == text.
    scale = torch.tensor([0.8] * frames + [0.0] * frames).view(-1, 1, 1)
    mixed = _ours(random_ip_state, block, hidden, text, chunk_tokens, attn, scale)
    text_only = _ours(random_ip_state, block, hidden, text, chunk_tokens, attn, 0.0)
    assert torch.equal(mixed[:frames], together[:frames])
    assert torch.equal(mixed[frames:], text_only[frames:])
    # The per-row scale on the wrong rows (flipped) is far from the text-only rows: 3.4e5x the bound.
    flipped = _ours(random_ip_state, block, hidden, text, chunk_tokens, attn, scale.flip(0))
    assert_far_off(flipped[frames:], text_only[frames:], FLOAT32_REORDERED, 1e3, "per-row scale on the wrong rows")
    with pytest.raises(ConditioningError):
        _ours(random_ip_state, block, hidden, text, torch.randn(4, 4, 768), attn, 0.8)


# ------------------------------------------------------------------------------- projection models


def reference_resampler(x, sd, heads=12, depth=4):
    """The Perceiver resampler with explicit matmuls: q and k each scaled by d^-1/4, softmax in float32."""

    def ln(t, prefix):
        return F.layer_norm(t, t.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], 1e-5)

    def split(t):
        b, n, c = t.shape
        return t.view(b, n, heads, c // heads).transpose(1, 2)

    latents = sd["latents"].repeat(x.shape[0], 1, 1)
    x = x @ sd["proj_in.weight"].T + sd["proj_in.bias"]
    for i in range(depth):
        p = f"layers.{i}."
        xn, lat = ln(x, p + "0.norm1"), ln(latents, p + "0.norm2")
        q = lat @ sd[p + "0.to_q.weight"].T
        kv = torch.cat([xn, lat], dim=1) @ sd[p + "0.to_kv.weight"].T
        k, v = kv[..., : kv.shape[-1] // 2], kv[..., kv.shape[-1] // 2 :]
        q, k, v = split(q), split(k), split(v)
        s = 1 / math.sqrt(math.sqrt(q.shape[-1]))
        weight = torch.softmax(((q * s) @ (k * s).transpose(-2, -1)).float(), dim=-1)
        out = (weight @ v).permute(0, 2, 1, 3).reshape(lat.shape[0], lat.shape[1], -1)
        latents = out @ sd[p + "0.to_out.weight"].T + latents
        h = F.gelu(ln(latents, p + "1.0") @ sd[p + "1.1.weight"].T)
        latents = h @ sd[p + "1.3.weight"].T + latents
    out = latents @ sd["proj_out.weight"].T + sd["proj_out.bias"]
    return ln(out, "norm_out")


def reference_projection(variant, x, sd):
    if variant == "base":
        tokens = (x @ sd["proj.weight"].T + sd["proj.bias"]).reshape(x.shape[0], -1, 768)
        return F.layer_norm(tokens, (768,), sd["norm.weight"], sd["norm.bias"], 1e-5)
    if variant == "full-face":
        h = F.gelu(x @ sd["proj.0.weight"].T + sd["proj.0.bias"])
        h = h @ sd["proj.2.weight"].T + sd["proj.2.bias"]
        return F.layer_norm(h, (768,), sd["proj.3.weight"], sd["proj.3.bias"], 1e-5)
    return reference_resampler(x, sd)


@pytest.mark.parametrize("variant", VARIANTS)
def test_projection_models_match_references(variant):
    tree = nested(image_proj_shapes(variant), ip_layer_shapes(), random_weights(11))
    adapter = build_ip_adapter(read_ip_adapter(tree), "random")
    gen = torch.Generator().manual_seed(3)  # a fixed input, so the measured figures below are reproducible
    clip = torch.randn(2, 1024, generator=gen) if variant == "base" else torch.randn(2, 257, 1280, generator=gen)
    expected = reference_projection(variant, clip, tree["image_proj"])
    ours = image_tokens(adapter, clip)
    assert ours.shape == (2, VARIANTS[variant][3], 768)
    # Module layers and SDPA against explicit matmuls: reordered float32 sums (measured: base 0,
    # full-face 2.3e-7, plus 1.1e-6..1.3e-6: four Resampler layers; 1.8e-6 at most over 20 random inputs).
    assert_close_scaled(ours, expected, FLOAT32_REORDERED, f"{variant} projection vs reference")
    # The comparison sees a missing term: the first layer's bias dropped in the reference (1.1e4..4.7e4x).
    first_bias = {"base": "proj.bias", "plus": "proj_in.bias", "full-face": "proj.0.bias"}[variant]
    no_bias = {**tree["image_proj"], first_bias: torch.zeros_like(tree["image_proj"][first_bias])}
    assert_far_off(ours, reference_projection(variant, clip, no_bias), FLOAT32_REORDERED, 1e3, "no first bias")
    # The two images of the batch get different tokens (nothing is shared across the batch): 9.1e4..1.5e5x.
    assert_far_off(ours[0], ours[1], FLOAT32_REORDERED, 1e4, "the two images' tokens")


def test_resampler_reference_sees_bugs():
    sd = nested(image_proj_shapes("plus"), {}, random_weights(12))["image_proj"]
    x = torch.randn(1, 257, 1280)
    good = reference_resampler(x, sd)
    swapped = dict(sd)
    for i in range(4):
        w = sd[f"layers.{i}.0.to_kv.weight"]
        swapped[f"layers.{i}.0.to_kv.weight"] = torch.cat([w[768:], w[:768]])  # values first, keys second
    assert_far_off(reference_resampler(x, swapped), good, FLOAT32_REORDERED, 1e3, "to_kv halves swapped")
    assert_far_off(reference_resampler(x, sd, heads=6), good, FLOAT32_REORDERED, 1e3, "6 heads instead of 12")


# ------------------------------------------------------------------------------- uncond and clip check


def test_uncond_tokens_follow_the_original(random_ip_state):
    adapter = build_ip_adapter(random_ip_state, "base")
    sd = {k[len("image_proj.") :]: v for k, v in random_ip_state.items() if k.startswith("image_proj.")}
    uncond = uncond_image_tokens(adapter)
    expected = F.layer_norm(sd["proj.bias"].reshape(1, 4, 768), (768,), sd["norm.weight"], sd["norm.bias"], 1e-5)
    assert uncond.shape == (1, 4, 768)
    assert_close_scaled(uncond, expected, FLOAT32_REORDERED, "uncond tokens")  # measured 0: the same LayerNorm
    # Forgetting the LayerNorm (the raw bias as tokens) is far off: 8.7e4x the bound.
    assert_far_off(sd["proj.bias"].reshape(1, 4, 768), expected, FLOAT32_REORDERED, 1e3, "uncond without LayerNorm")
    assert uncond.abs().max() > 0.1  # not zero tokens

    plus = build_ip_adapter(read_ip_adapter(nested(image_proj_shapes("plus"), ip_layer_shapes(), meta)), "plus")
    with pytest.raises(ConditioningError, match="zero"):
        uncond_image_tokens(plus)


def test_clip_output_mismatch_is_explained():
    base = detect_ip_adapter(read_ip_adapter(nested(image_proj_shapes("base"), ip_layer_shapes(), meta)))
    plus = detect_ip_adapter(read_ip_adapter(nested(image_proj_shapes("plus"), ip_layer_shapes(), meta)))
    check_clip_output(base, torch.zeros(2, 1024))
    check_clip_output(plus, torch.zeros(2, 257, 1280))
    with pytest.raises(ConditioningError, match=r"image_embeds \[B, 1024\].*\[2, 257, 1280\]"):
        check_clip_output(base, torch.zeros(2, 257, 1280))
    with pytest.raises(ConditioningError, match=r"penultimate_hidden_states .*\[1, 1280\].*ViT-H"):
        check_clip_output(plus, torch.zeros(1, 1280))
    with pytest.raises(ConditioningError, match="CLIP-ViT-H-14-laion2B-s32B-b79K"):
        check_clip_output(plus, torch.zeros(1, 257, 1664))  # a ViT-bigG model
