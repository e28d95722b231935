"""The toy's learning probe: ``atomo_core.training.probe`` on toy clips, plus where the shape goes in the probe's
one-step prediction under the caption's direction and under the opposite one.

``toy_probe`` returns, per probe timestep, the core probe's figures (``with_image``, ``without_image``,
``copy_given``, ``mean_frame``, ``image_gain``) and, at the pure-noise step only, the tracked motion of the shape in
``x0_hat`` (frames 0..F-1, the given frame included as the model sees it). Only there: at any lower step the noisy
input itself holds the true frames (at the middle step, at SNR 1), so even the untrained layers "move" correctly.

- ``along``: the tracked velocity along the caption's direction over the true speed (1: right, 0: still);
- ``direction_ok``: the share of clips whose tracked direction is the caption's (within 45 degrees, moving);
- ``opposite_along``: ``along`` (still measured along the *original* direction) when the caption says the
  opposite way: a model that reads the motion words gives a negative value here.
"""

from __future__ import annotations

import contextlib

import torch

from atomo_core.training.probe import default_timesteps, learning_probe

from . import measure, world


def probe_clips(cases: list[world.Case], frames: int) -> torch.Tensor:
    """``[B, F, 3, H, W]`` in 0..1."""
    return torch.stack([world.render(c, frames) for c in cases])


def _motion(pixels: torch.Tensor, cases, truth: torch.Tensor) -> tuple[float, float]:
    """Mean ``along`` and the share of clips moving the caption's way, tracked in ``pixels [B, F, 3, H, W]``."""
    along, ok = [], []
    for clip, case, true in zip(pixels, cases, truth, strict=True):
        figures = measure.motion_figures(measure.velocity(measure.track(clip, true[0], case)), case.velocity)
        along.append(figures["along"])
        ok.append(float(figures["direction_ok"]))
    return sum(along) / len(along), sum(ok) / len(ok)


@torch.no_grad()
def toy_probe(sampler, cases: list[world.Case], frames: int, given: int = 1, seed: int = 0,
              timesteps: tuple[int, ...] | None = None, motion: bool = True) -> dict:
    """The probe on ``cases`` (their clips rendered) for ``sampler`` (an ``evaluate.Sampler``)."""
    truth = probe_clips(cases, frames)
    latents = torch.stack([sampler.latents(clip) for clip in truth])
    base = sampler.base
    context = base.encode_text([c.video_caption() for c in cases])
    timesteps = timesteps or default_timesteps(len(sampler.ab))
    figures = learning_probe(sampler.model, sampler.ab, sampler.prediction_type, latents, context, given, timesteps,
                             seed, sampler.layout, keep_predictions=motion)
    if not motion:
        return figures
    opposite = base.encode_text([c.video_caption(world.OPPOSITE[c.direction]) for c in cases])
    against = learning_probe(sampler.model, sampler.ab, sampler.prediction_type, latents, opposite, given, timesteps,
                             seed, sampler.layout, keep_predictions=True)
    for key, entry in figures.items():
        if key != f"t{len(sampler.ab) - 1}":
            entry.pop("x0_with_image")
            continue
        pixels = torch.stack([sampler.pixels(x) for x in entry.pop("x0_with_image")])
        entry["along"], entry["direction_ok"] = _motion(pixels, cases, truth)
        pixels = torch.stack([sampler.pixels(x) for x in against[key].pop("x0_with_image")])
        entry["opposite_along"], _ = _motion(pixels, cases, truth)
    return figures


@torch.no_grad()
def site_sensitivity(base, cases: list[world.Case], frames: int, timesteps: tuple[int, ...] = (999, 500)) -> dict:
    """How much the motion words reach the features the temporal layers read: at every temporal site of the frozen
    base, the relative change ``|f(caption) - f(other)| / |f(caption)|`` of the features (the output of the module a
    temporal layer follows), averaged over sites, for the opposite direction's caption and for the empty prompt; the
    clips noised to each of ``timesteps`` (zero-terminal-SNR ``scaled_linear``)."""
    from atomo_core.training.objective import training_alphas_cumprod

    unet = base.unet
    ab = training_alphas_cumprod().float()
    clips = probe_clips(cases, frames).flatten(0, 1) * 2 - 1
    latents = base.encode_video(clips)
    generator = torch.Generator().manual_seed(0)
    prompts = {"caption": [c.video_caption() for c in cases],
               "opposite": [c.video_caption(world.OPPOSITE[c.direction]) for c in cases], "empty": [""] * len(cases)}
    out = {}
    with site_outputs(base) as seen:
        for t in timesteps:
            a = ab[t]
            x_t = a.sqrt() * latents + (1 - a).sqrt() * torch.randn(latents.shape, generator=generator)
            features = {}
            for key, captions in prompts.items():
                seen.clear()
                unet(x_t, torch.full((x_t.shape[0],), t), encoder_hidden_states=base.encode_text(captions)
                     .repeat_interleave(frames, 0))
                features[key] = dict(seen)
            out[f"t{t}"] = {other: sum(float((features["caption"][n] - features[other][n]).norm()
                                             / features["caption"][n].norm()) for n in features["caption"])
                            / len(features["caption"]) for other in ("opposite", "empty")}
    return out


@contextlib.contextmanager
def site_outputs(base, reduce=None):
    """While open, every call of ``base.unet`` fills the yielded dict ``{module name: output}`` with the output of
    the module each temporal layer follows (the features a temporal layer reads), passed through ``reduce`` when
    given; the hooks come off on exit."""
    from atomo_core import layout
    from atomo_core.training.unet import diffusers_target

    unet = base.unet
    seen: dict[str, torch.Tensor] = {}
    hooks = []
    for site in layout.sites(mid_block=True, widths=base.widths):
        name = diffusers_target(site, unet)

        def keep(_module, _inputs, output, name=name):
            value = output if isinstance(output, torch.Tensor) else output[0]
            seen[name] = value if reduce is None else reduce(value)

        hooks.append(unet.get_submodule(name).register_forward_hook(keep))
    try:
        yield seen
    finally:
        for hook in hooks:
            hook.remove()
