"""Image to video inside ComfyUI: PIA against the original PIA UNet, IP-Adapter attention against its
definition, the sampler's guidance passes and schedules, Cancel, and bad input."""

from __future__ import annotations

import gc

import pytest
import torch
from animatediff_oracle import build as build_oracle
from animatediff_oracle import predict
from host_models import StubClipVision, meta_family_module, random_base_adapter
from sampling import conditioning, one_step, relative_error
from weights import animatediff_state_dict

FRAMES = 16


@pytest.fixture(scope="module")
def pia(sd15, ours):
    _, base = sd15
    sd = animatediff_state_dict("pia", seed=21)
    core = ours("atomo_core")
    module = core.build_motion_module(sd, core.detect_config(sd), "pia.ckpt")
    return sd, ours("nodes.host_adapter").attach_motion_module(base, module)


pytestmark = pytest.mark.usefixtures("free_models")  # unload every model after each test


def inject(ours, model, vae, image, frames=FRAMES, size=64, **kwargs):
    node = ours("nodes.image_inject_conditioning").AtomoImageInjectConditioning
    return node.execute(model, conditioning(1), conditioning(2), vae, image, frames, size, size, "crop", **kwargs).result


def test_pia_step_matches_the_original_pia_unet(sd15, pia, ours, vae):
    unet2d, _ = sd15
    pia_sd, model = pia
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(3))
    patched, positive, negative, latent = inject(ours, model, vae, image, pia_motion="moderate motion", first_frame=0)
    sigmas = patched.get_model_object("model_sampling").sigmas
    noise = torch.randn(FRAMES, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    _, calls = one_step(patched, noise, sigmas[500], positive, negative, cfg=7.0)
    (call,) = calls
    x = call["input"]
    assert x.shape == (2 * FRAMES, 9, 8, 8)
    # PIA's layout, frame by frame, in both chunks: noisy | affinity mask | the same image latent.
    expected_mask = [1.0, 0.8, 0.8, 0.8, 0.79, 0.78] + [0.75] * 10
    for chunk in range(2):
        frames = x[chunk * FRAMES:(chunk + 1) * FRAMES]
        assert torch.allclose(frames[:, 4].mean(dim=(1, 2)), torch.tensor(expected_mask), atol=1e-6)
        assert torch.equal(frames[:, 5:], frames[:1, 5:].expand(FRAMES, -1, -1, -1))
    image_latent = vae.encode(image) * 0.18215
    assert torch.allclose(x[0, 5:], image_latent[0], atol=1e-5)

    oracle = build_oracle(unet2d, pia_sd, "pia", FRAMES)
    expected = predict(oracle, call, FRAMES)
    error = relative_error(call["output"], expected)
    print(f"PIA: max|ours - original| / rms(original) = {error:.2e}")
    assert error < 1e-4
    # Sensitivity: the same UNet with per-frame ResNet norms (what diffusers' PIA does) is far away.
    from animatediff_oracle import AcrossFramesNorm

    for module in oracle.modules():
        for name, child in list(module.named_children()):
            if isinstance(child, AcrossFramesNorm):
                setattr(module, name, child.norm)
    assert relative_error(predict(oracle, call, FRAMES), expected) > 1e-2
    del oracle
    gc.collect()


def _reference_site(q, k, v, tokens_per_chunk, to_k_ip, to_v_ip, heads, scale):
    """The decoupled attention written out per chunk, as IP-Adapter's IPAttnProcessor computes it."""
    def attention(q, k, v):
        b, n, c = q.shape
        d = c // heads
        qh = q.reshape(b, n, heads, d).permute(0, 2, 1, 3).reshape(b * heads, n, d)
        kh = k.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d)
        vh = v.reshape(b, -1, heads, d).permute(0, 2, 1, 3).reshape(b * heads, -1, d)
        probs = torch.baddbmm(torch.empty(b * heads, n, kh.shape[1]), qh, kh.transpose(1, 2), beta=0,
                              alpha=d**-0.5).softmax(-1)
        return torch.bmm(probs, vh).reshape(b, heads, n, d).permute(0, 2, 1, 3).reshape(b, n, c)

    out = []
    per = q.shape[0] // len(tokens_per_chunk)
    for i, tokens in enumerate(tokens_per_chunk):
        sl = slice(i * per, (i + 1) * per)
        ip_k = (tokens @ to_k_ip.T).expand(per, -1, -1)
        ip_v = (tokens @ to_v_ip.T).expand(per, -1, -1)
        out.append(attention(q[sl], k[sl], v[sl]) + scale * attention(q[sl], ip_k, ip_v))
    return torch.cat(out)


def test_ip_adapter_patch_matches_the_decoupled_attention(ours):
    patch_mod = ours("nodes.ip_adapter_patch")
    state = random_base_adapter()
    gen = torch.Generator().manual_seed(1)
    tokens, uncond = torch.randn(1, 4, 768, generator=gen), torch.randn(1, 4, 768, generator=gen)
    k_w, v_w = state["ip_adapter.5.to_k_ip.weight"], state["ip_adapter.5.to_v_ip.weight"]  # ("input", 4), 640
    patch = patch_mod.IPAttentionPatch(("input", 4), k_w, v_w, tokens, uncond, 0.8)
    q = torch.randn(2 * 3, 20, 640, generator=gen)
    k, v = torch.randn(6, 77, 640, generator=gen), torch.randn(6, 77, 640, generator=gen)
    extra = {"n_heads": 8, "cond_or_uncond": [1, 0]}  # ComfyUI's order: the uncond chunk first
    out = patch(q, k, v, extra)
    expected = _reference_site(q, k, v, [uncond, tokens], k_w, v_w, 8, 0.8)
    assert relative_error(out, expected) < 1e-5
    # Sensitivity: swapping which chunk gets the image, or another scale, is far off.
    swapped = _reference_site(q, k, v, [tokens, uncond], k_w, v_w, 8, 0.8)
    assert relative_error(swapped, expected) > 1e-2
    assert relative_error(_reference_site(q, k, v, [uncond, tokens], k_w, v_w, 8, 1.0), expected) > 1e-2
    # One rule for every guider: only the positive (index 0) gets the image tokens; with our three passes
    # [positive, negative, negative without image] both negatives get the unconditional tokens.
    q3, k3, v3 = (torch.cat([t, t[:3]]) for t in (q, k, v))
    out3 = patch(q3, k3, v3, {"n_heads": 8, "cond_or_uncond": [0, 1, 2]})
    assert relative_error(out3, _reference_site(q3, k3, v3, [tokens, uncond, uncond], k_w, v_w, 8, 0.8)) < 1e-5
    assert relative_error(_reference_site(q3, k3, v3, [tokens, uncond, tokens], k_w, v_w, 8, 0.8), out3) > 1e-2


def test_ip_adapter_composes_with_another_pack_before_and_after(ours):
    patch_mod = ours("nodes.ip_adapter_patch")
    state = random_base_adapter(seed=2)
    gen = torch.Generator().manual_seed(3)
    tokens, uncond = torch.randn(1, 4, 768, generator=gen), torch.randn(1, 4, 768, generator=gen)
    q, k, v = torch.randn(2, 10, 320, generator=gen), torch.randn(2, 77, 320, generator=gen), torch.randn(2, 77, 320, generator=gen)
    extra = {"n_heads": 8, "cond_or_uncond": [1, 0], "sigmas": torch.tensor([5.0])}
    ours_alone = patch_mod.IPAttentionPatch(("input", 1), state["ip_adapter.1.to_k_ip.weight"],
                                            state["ip_adapter.1.to_v_ip.weight"], tokens, uncond, 1.0)
    base = ours_alone(q, k, v, extra)

    def theirs(q, k, v, extra_options):  # another pack's attn2 replace (text part + its own image part)
        return torch.nn.functional.scaled_dot_product_attention(
            *(t.reshape(t.shape[0], t.shape[1], 8, -1).transpose(1, 2) for t in (q, k, v))
        ).transpose(1, 2).reshape(q.shape) + 0.5
    before = patch_mod.IPAttentionPatch(("input", 1), state["ip_adapter.1.to_k_ip.weight"],
                                        state["ip_adapter.1.to_v_ip.weight"], tokens, uncond, 1.0, previous=theirs)
    assert torch.allclose(before(q, k, v, extra), base + 0.5, atol=1e-5)
    # A pack that stacks a callback onto our patch (ComfyUI_IPAdapter_plus's .add protocol), with a sigma range.
    ours_alone.add(lambda out, q, k, v, extra_options, **kw: torch.full_like(out, kw["weight"]),
                   weight=0.25, sigma_start=10.0, sigma_end=1.0)
    assert torch.allclose(ours_alone(q, k, v, extra), base + 0.25, atol=1e-5)
    outside = dict(extra, sigmas=torch.tensor([20.0]))
    assert torch.allclose(ours_alone(q, k, v, outside), base, atol=1e-5)


def test_ip_adapter_through_the_node_changes_the_cond_chunk_only(sd15, pia, ours, vae, tmp_path):
    import folder_paths
    from safetensors.torch import save_file

    _, model = pia
    folder = tmp_path / "ipadapter"
    folder.mkdir()
    save_file(random_base_adapter(seed=5), str(folder / "ip-adapter_sd15.safetensors"))
    paths, exts = folder_paths.folder_names_and_paths["ipadapter"]
    folder_paths.folder_names_and_paths["ipadapter"] = ([str(folder)] + list(paths), exts)
    image = torch.rand(1, 64, 64, 3, generator=torch.Generator().manual_seed(8))
    plain, positive, negative, _ = inject(ours, model, vae, image, frames=4)
    with_ip, *_ = inject(ours, model, vae, image, frames=4, clip_vision=StubClipVision(1024),
                         ipadapter="ip-adapter_sd15.safetensors", ipadapter_weight=1.0)
    sigmas = plain.get_model_object("model_sampling").sigmas
    noise = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    _, a = one_step(plain, noise, sigmas[500], positive, negative)
    _, b = one_step(with_ip, noise, sigmas[500], positive, negative)
    assert relative_error(b[0]["output"], a[0]["output"]) > 1e-3
    with pytest.raises(Exception, match="CLIP vision .*image_embeds \\[B, 1024\\].*ViT-H"):
        inject(ours, model, vae, image, frames=4, clip_vision=StubClipVision(768),
               ipadapter="ip-adapter_sd15.safetensors")
    with pytest.raises(Exception, match="needs a CLIP vision model"):
        inject(ours, model, vae, image, frames=4, ipadapter="ip-adapter_sd15.safetensors")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(image=torch.rand(5, 64, 64, 3), frames=4), "5 images but the clip has only 4 frames"),
        (dict(size=60), "not a multiple of 8"),
        (dict(image=torch.full((1, 64, 64, 3), float("nan"))), "NaN"),
        (dict(image=torch.rand(2, 64, 64, 3)), "PIA conditions on one image"),
    ],
    ids=["batch>frames", "size", "nan", "pia-two-images"],
)
def test_bad_input_is_a_clear_error(pia, ours, vae, kwargs, message):
    _, model = pia
    args = dict(image=torch.rand(1, 64, 64, 3), frames=FRAMES, size=64)
    args.update(kwargs)
    with pytest.raises(ours("atomo_core").AtomoError, match=message):
        inject(ours, model, vae, args.pop("image"), **args)


def test_a_clip_longer_than_the_module_is_refused_when_sampled_with_the_way_out(pia, ours, vae):
    """40 frames of PIA (trained on at most 32): the conditioning is made (Context Windows after it can split the
    clip), and sampling it without windows is refused naming the limit, Predict Next Frames and the windows."""
    _, model = pia
    patched, positive, negative, latent = inject(ours, model, vae, torch.rand(1, 64, 64, 3), frames=40)
    assert latent["samples"].shape[0] == 40 and positive[0][1]["noise_concat"].shape[0] == 40
    noise = torch.randn(40, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    sigma = patched.get_model_object("model_sampling").sigmas[500]
    with pytest.raises(ours("atomo_core.errors").FrameLimitError,
                       match="at most 32 frames.*Predict Next Frames.*Context Windows"):
        one_step(patched, noise, sigma, positive, negative)


def test_non_sd15_vae_and_text_only_modules_are_refused(sd15, pia, ours, vae):
    _, model = pia

    class FluxLikeVae:
        latent_channels, downscale_ratio, latent_dim = 16, 8, 2

    errors = ours("atomo_core").AtomoError
    with pytest.raises(errors, match="16-channel latents.*SD-1.5 needs its own 4-channel"):
        inject(ours, model, FluxLikeVae(), torch.rand(1, 64, 64, 3))
    _, base = sd15
    t2v = ours("nodes.host_adapter").attach_motion_module(base, meta_family_module(ours, "v2", "mm_sd_v15_v2.ckpt"))
    with pytest.raises(errors, match="AnimateDiff v2.*text only.*PIA \\(pia.ckpt\\) or an AtomoVideo"):
        inject(ours, t2v, vae, torch.rand(1, 64, 64, 3))


def test_attaching_another_module_takes_the_image_patches_off(pia, ours, vae, tmp_path):
    """Re-attaching a module to an injected MODEL leaves no 9-channel conv_in or IP-Adapter patch behind, and
    keeps patches that are not ours (a LoRA's on the same weight)."""
    from host_models import install_model_file

    conv_in = ours("nodes.conv_in")
    patch_mod = ours("nodes.ip_adapter_patch")
    host = ours("nodes.host_adapter")
    _, model = pia
    install_model_file("ipadapter", tmp_path / "ipadapter", "ip-adapter_sd15.safetensors", random_base_adapter(seed=5))
    lora = model.clone()
    lora.add_patches({conv_in.CONV_IN_KEY: ("diff", (torch.full((320, 4, 3, 3), 0.01),))}, 1.0, 1.0)
    injected, *_ = inject(ours, lora, vae, torch.rand(1, 64, 64, 3), frames=4, clip_vision=StubClipVision(1024),
                          ipadapter="ip-adapter_sd15.safetensors")

    def ours_on(m):
        attn2 = m.model_options["transformer_options"].get("patches_replace", {}).get("attn2", {})
        ip = sum(isinstance(p, patch_mod.IPAttentionPatch) for p in attn2.values())
        padded = sum(1 for entry in m.patches.get(conv_in.CONV_IN_KEY, []) if entry[1][1][0].shape[1] == 9)
        return ip, padded, len(m.patches.get(conv_in.CONV_IN_KEY, []))

    assert ours_on(injected) == (16, 1, 2)
    uuid_before = injected.patches_uuid
    v2 = host.attach_motion_module(injected, meta_family_module(ours, "v2", "mm_sd_v15_v2.ckpt"))
    assert ours_on(v2) == (0, 0, 1)  # the LoRA's patch stays
    assert v2.patches_uuid != uuid_before  # ComfyUI re-patches the weights
    assert injected.get_attachment(conv_in.CONV_IN_ATTACHMENT) is not None  # the input MODEL is untouched
    assert ours_on(injected) == (16, 1, 2)
    # Injecting again after going back to PIA adds one conv_in patch, never two summed.
    again = host.attach_motion_module(v2, pia[1].get_attachment("atomo_video").module)
    twice, *_ = inject(ours, again, vae, torch.rand(1, 64, 64, 3), frames=4)
    assert ours_on(twice) == (0, 1, 2)


def test_inpainting_checkpoint_is_refused_for_image_injection(ours, vae):
    """A 9-channel SD-1.5 inpainting UNet cannot take the module's own image channels: a clear refusal, while a
    text-only module still attaches to it."""
    import comfy.model_detection
    import comfy.model_patcher

    inpaint = {"image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
               "adm_in_channels": None, "in_channels": 9, "model_channels": 320, "num_res_blocks": [2, 2, 2, 2],
               "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
               "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768,
               "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
               "use_temporal_attention": False, "use_temporal_resblock": False}
    config = comfy.model_detection.model_config_from_unet_config(inpaint)
    base = comfy.model_patcher.ModelPatcher(config.get_model({}, device="meta"), torch.device("cpu"),
                                            torch.device("cpu"))
    host = ours("nodes.host_adapter")
    pia = host.attach_motion_module(base, meta_family_module(ours, "pia", "pia.ckpt"))
    errors = ours("atomo_core").AtomoError
    with pytest.raises(errors, match=r"takes 9 input channels: it is an SD-1.5 inpainting checkpoint.*'pia.ckpt' "
                                     r"\(PIA\).*Load the regular SD-1.5 checkpoint"):
        inject(ours, pia, vae, torch.rand(1, 64, 64, 3), frames=4)
    node = ours("nodes.predict_next_frames").AtomoPredictNextFrames
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise

    guider = comfy.samplers.CFGGuider(pia)
    with pytest.raises(errors, match="inpainting checkpoint"):
        node.execute(guider, comfy.samplers.sampler_object("euler"), torch.tensor([1.0, 0.0]), Noise_RandomNoise(0),
                     0, 8, 16, latent={"samples": torch.zeros(4, 4, 8, 8)})
    assert host.get_attachment(host.attach_motion_module(base, meta_family_module(ours, "v2", "v2.ckpt")))


def test_fp8_unet_keeps_the_ip_adapter_in_the_compute_dtype(sd15, ours, vae, tmp_path):
    """--fp8_e4m3fn-unet: ComfyUI stores the UNet in fp8 and computes in another dtype (fp32 on this CPU); before
    sampling it calls .to(fp8) on every patch. The IP-Adapter's tokens and weights stay in float32 and the step runs."""
    import comfy.model_management
    from host_models import install_model_file
    from sd15_models import comfy_model_from_diffusers

    unet2d, _ = sd15
    fp8 = comfy_model_from_diffusers(unet2d, dtype=torch.float8_e4m3fn)
    assert fp8.model.get_dtype() == torch.float8_e4m3fn and fp8.model.manual_cast_dtype is not None
    sd = animatediff_state_dict("pia", seed=21)
    core = ours("atomo_core")
    model = ours("nodes.host_adapter").attach_motion_module(fp8, core.build_motion_module(sd, core.detect_config(sd),
                                                                                        "pia.ckpt"))
    install_model_file("ipadapter", tmp_path / "ipadapter", "ip-adapter_sd15.safetensors", random_base_adapter(seed=5))
    injected, positive, negative, _ = inject(ours, model, vae, torch.rand(1, 64, 64, 3), frames=4,
                                             clip_vision=StubClipVision(1024), ipadapter="ip-adapter_sd15.safetensors")
    patches = list(injected.model_options["transformer_options"]["patches_replace"]["attn2"].values())
    sigmas = injected.get_model_object("model_sampling").sigmas
    with torch.inference_mode():  # as ComfyUI runs every node (its fp8 weight patching needs it)
        _, calls = one_step(injected, torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2)),
                            sigmas[500], positive, negative)
    assert torch.isfinite(calls[0]["output"]).all()
    compute = fp8.model.manual_cast_dtype
    assert calls[0]["input"].dtype == compute
    for patch in patches:
        assert {t.dtype for t in (patch.tokens, patch.uncond_tokens, patch.to_k_ip, patch.to_v_ip)} == {torch.float32}
    del fp8, model, injected
    comfy.model_management.unload_all_models()


def _share_like_current_comfyui(value):
    """Current ComfyUI's ``ModelPatcher.clone()`` copies ``model_options`` with ``deepcopy_list_dict``: new dicts and
    lists, every other object shared between the clones."""
    if isinstance(value, dict):
        return {k: _share_like_current_comfyui(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_share_like_current_comfyui(v) for v in value]
    return value


def test_ip_patches_are_never_shared_between_clones(ours, monkeypatch):
    """Clones share patch objects on purpose here (as current ComfyUI's clone may): another pack stacking onto a
    downstream clone's patch, or ComfyUI moving a clone's patches, must not reach the upstream MODEL."""
    import types

    import comfy.model_patcher

    patch_mod = ours("nodes.ip_adapter_patch")
    monkeypatch.setattr(comfy.model_patcher, "copy", types.SimpleNamespace(
        deepcopy=lambda value, memo=None: _share_like_current_comfyui(value), copy=__import__("copy").copy))
    upstream = comfy.model_patcher.ModelPatcher(torch.nn.Linear(1, 1), torch.device("cpu"), torch.device("cpu"))
    marker = object()
    upstream.model_options["transformer_options"]["marker"] = marker
    gen = torch.Generator().manual_seed(4)
    tokens, uncond = torch.randn(1, 4, 768, generator=gen), torch.randn(1, 4, 768, generator=gen)
    patch_mod.apply_ip_adapter(upstream, random_base_adapter(seed=6), tokens, uncond, 0.7)
    downstream = upstream.clone()
    assert downstream.model_options["transformer_options"]["marker"] is marker  # the clone does share objects
    up = upstream.model_options["transformer_options"]["patches_replace"]["attn2"]
    down = downstream.model_options["transformer_options"]["patches_replace"]["attn2"]
    assert len(up) == len(down) == 16 and all(down[k] is not up[k] for k in up)  # but ours are the clone's own
    key = next(iter(down))
    down[key].add(lambda out, q, k, v, extra, **kw: out, weight=1.0)  # IPAdapter_plus's way of stacking onto a patch
    assert len(down[key].stacked) == 1 and up[key].stacked == []
    downstream.model_patches_to(torch.device("meta"))  # ComfyUI moving the downstream clone's patches
    assert down[key].tokens.is_meta and up[key].tokens.device.type == "cpu"
    again = downstream.clone()  # a clone of a clone owns its copies too
    assert again.model_options["transformer_options"]["patches_replace"]["attn2"][key] is not down[key]
