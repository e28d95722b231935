"""Bug or budget, for the motion words: two measurements that say why the temporal layers do not move the shape the
caption's way (the ladder's rungs 2 and 3).

- ``direction_decodable``: is the caption's direction *there* at the sites the temporal layers read? A linear
  classifier (multinomial logistic regression) is fitted on the frozen base's features at each temporal site
  (averaged over the frame's pixels) for training clips noised to a timestep, and scored on other clips. If it
  reads the direction, the information reaches the temporal layers and a failure to use it is learning (budget,
  optimisation), not a wall in the architecture. The same classifier on the features under the empty prompt is the
  chance baseline (it can only read the noise and the image).
- ``budget_curve``: the recipe trained ``steps`` steps (a multiple of the study's budget), the probe at the
  pure-noise step measured along the way on fresh training-world and held-out clips: does the share of clips moving
  the caption's way rise with the budget, and does the opposite caption move the prediction the other way?
"""

from __future__ import annotations

import torch

from . import diagnose, evaluate, ladder, world


@torch.no_grad()
def site_features(base, cases: list[world.Case], frames: int, t: int, captions: list[str], seed: int) -> dict:
    """``{site: [B * F, C]}``: the frozen base's features at every temporal site, averaged over pixels, for the clips
    of ``cases`` noised to ``t`` (zero-terminal-SNR ``scaled_linear``, the noise drawn from ``seed``)."""
    from atomo_core.training.objective import training_alphas_cumprod

    a = training_alphas_cumprod().float()[t]
    clips = diagnose.probe_clips(cases, frames).flatten(0, 1) * 2 - 1
    latents = base.encode_video(clips)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    x_t = a.sqrt() * latents + (1 - a).sqrt() * noise
    context = base.encode_text(captions).repeat_interleave(frames, 0)
    out = {}
    with diagnose.site_outputs(base, reduce=lambda value: value.mean(dim=(2, 3))) as seen:
        for start in range(0, x_t.shape[0], 96):
            seen.clear()
            base.unet(x_t[start:start + 96], torch.full((min(96, x_t.shape[0] - start),), t),
                      encoder_hidden_states=context[start:start + 96])
            for name, value in seen.items():
                out.setdefault(name, []).append(value)
    return {name: torch.cat(values) for name, values in out.items()}


def _linear_accuracy(train_x, train_y, test_x, test_y, classes: int = 4, steps: int = 300) -> float:
    """Test accuracy of a multinomial logistic regression (standardised features, L2 1e-3, full-batch L-BFGS)."""
    mean, std = train_x.mean(0), train_x.std(0).clamp_min(1e-6)
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(train_x @ weight + bias, train_y) + 1e-3 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return float(((test_x @ weight + bias).argmax(1) == test_y).float().mean())


def direction_decodable(base, frames: int, seed: int, clips: int = 256, timesteps: tuple[int, ...] = (999, 500)
                        ) -> dict:
    """Per timestep: the held-out accuracy of reading the caption's direction (4 classes, chance 0.25) from each
    temporal site's pixel-averaged features (frames of a clip split with their clip), under the caption and, as the
    baseline, under the empty prompt; ``best``/``mean`` over sites."""
    cases = ladder.fixed_cases(clips, frames, seed, held_out=False)
    labels = torch.tensor([tuple(world.DIRECTIONS).index(c.direction) for c in cases]).repeat_interleave(frames)
    split = int(0.75 * clips) * frames
    out = {}
    for t in timesteps:
        entry = {}
        for prompt, captions in (("caption", [c.video_caption() for c in cases]), ("empty", [""] * len(cases))):
            features = site_features(base, cases, frames, t, captions, seed + t)
            scores = {name: _linear_accuracy(x[:split], labels[:split], x[split:], labels[split:])
                      for name, x in features.items()}
            entry[prompt] = {"best": max(scores.values()), "mean": sum(scores.values()) / len(scores),
                             "sites": scores}
        out[f"t{t}"] = entry
    return out


def budget_curve(base, config, s, sampling, cases: dict[str, list[world.Case]], log=print) -> tuple[dict, dict]:
    """Train the recipe for ``config.steps`` with the probe at the pure-noise step on each set of ``cases`` along the
    way; returns ``(state, {"points": [[step, {set: figures}]], "losses": ...})``."""
    from . import stage2

    pure = len(stage2_alphas(config)) - 1

    def probe(model, step):
        sampler = evaluate.Sampler(base, model, stage2_alphas(config), config.prediction_type, sampling,
                                   config.conditioning.image_layout, config.zero_terminal_snr)
        figures = {name: diagnose.toy_probe(sampler, group, s.frames, seed=s.seed + 21, timesteps=(pure,))
                   [f"t{pure}"] for name, group in cases.items()}
        log(f"budget probe at step {step}: " + "; ".join(
            f"{name} direction {f['direction_ok']:.2f}, along {f['along']:.2f} (opposite {f['opposite_along']:.2f}),"
            f" with image {f['with_image']:.4f} / without {f['without_image']:.4f}" for name, f in figures.items()))
        return figures

    state, losses = stage2.train_temporal(base, config, log=log, probe=probe, probes=8)
    return state, {"points": losses.pop("probe"), "losses": losses}


def stage2_alphas(config) -> torch.Tensor:
    from atomo_core.training.objective import training_alphas_cumprod

    return training_alphas_cumprod(config.beta_schedule, config.zero_terminal_snr).float()


def given_frames_probe(sampler, cases: list[world.Case], frames: int, seed: int, givens=(1, 2, 3)) -> dict:
    """The probe at the pure-noise step with 1, 2 and 3 true frames given: with two or more the motion is in the given
    frames themselves (no caption needed), so a model that can move the shape but not read the caption gets the
    direction right there and not with one; the tracked direction includes the given frames (as the model outputs
    them), so the share also rises a little from the given frames alone."""
    pure = len(sampler.ab) - 1
    out = {}
    for given in givens:
        figures = diagnose.toy_probe(sampler, cases, frames, given=given, seed=seed, timesteps=(pure,))[f"t{pure}"]
        out[str(given)] = {k: v for k, v in figures.items() if isinstance(v, float)}
    return out


@torch.no_grad()
def input_gain(base, cases: list[world.Case], frames: int, seed: int, timesteps=(999, 750, 500, 250)) -> dict:
    """How much the frozen base's prediction follows its input at each timestep: ``|f(x_t + d) - f(x_t)| / |d|`` for
    ``d`` half the clip's clean latent (the image channels of ``conv_in`` enter the base the same way, as a change of
    its first features), averaged over the clips' frames. A base that learned that the pure-noise input holds no
    signal damps ``d`` there: what the image channels bring must then be carried by the temporal layers alone."""
    from atomo_core.training.objective import training_alphas_cumprod

    ab = training_alphas_cumprod().float()
    clips = diagnose.probe_clips(cases, frames).flatten(0, 1) * 2 - 1
    latents = base.encode_video(clips)
    context = base.encode_text([c.video_caption() for c in cases]).repeat_interleave(frames, 0)
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for t in timesteps:
        a = ab[t]
        x_t = a.sqrt() * latents + (1 - a).sqrt() * noise
        step = torch.full((x_t.shape[0],), t)
        d = 0.5 * latents
        before = base.unet(x_t, step, encoder_hidden_states=context).sample
        after = base.unet(x_t + d, step, encoder_hidden_states=context).sample
        out[f"t{t}"] = float((after - before).flatten(1).norm(dim=1).mean() / d.flatten(1).norm(dim=1).mean())
    return out


def markdown_lines(results: dict) -> list[str]:
    """The report's "Bug or budget" section from ``budget.json`` and ``mechanism.json`` (when measured)."""
    b, m = results.get("budget"), results.get("mechanism")
    if not b and not m:
        return []
    out = ["## Bug or budget: why the motion words do not move the shape", ""]
    if b:
        d = b["decodable"]
        out += [f"**Is the direction there?** A linear classifier reads the caption's direction (4 classes, chance "
                "25 %) from the frozen base's pixel-averaged features at the temporal sites, fitted on "
                f"{int(0.75 * 256)} training clips and scored on 64 others "
                f"(`python -m experiments.toy_atomovideo --budget {b['steps']}`):", "",
                "| step | caption: best site | caption: mean over sites | empty prompt: best | empty prompt: mean |",
                "|---|---|---|---|---|"]
        out += [f"| {t} | {e['caption']['best']:.2f} | {e['caption']['mean']:.2f} | {e['empty']['best']:.2f} | "
                f"{e['empty']['mean']:.2f} |" for t, e in d.items()]
        out += ["", "So the direction reaches the layers that must use it: a failure to use it is learning, not a wall "
                "in the frozen base.", "",
                f"**Does budget buy it?** The paper's layers (the recipe until then) trained {b['steps']} steps "
                f"({b['steps'] / b['study_steps']:g}x the first study's), the probe at the pure-noise step on 16 training-world and 16 held-out clips along the "
                "way (one given frame):", "",
                "| step | world: with image | copy given | direction right | along (opposite caption) | held out: "
                "with image | copy given | direction right | along (opposite caption) |", "|---|---|---|---|---|---|---|---|---|"]
        for step, figures in b["curve"]:
            row = [str(step)]
            for part in ("world", "held_out"):
                f = figures[part]
                row += [f"{f['with_image']:.4f}", f"{f['copy_given']:.4f}", f"{f['direction_ok']:.2f}",
                        f"{f['along']:.2f} ({f['opposite_along']:.2f})"]
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    if m:
        g = m["given_frames"]
        out += ["**Can it move the shape at all?** The first study's model (the paper's layers, its budget), probed with 1, 2 and 3 true frames given (with "
                "two or more the motion is in the given frames, no caption needed; `--mechanism`):", "",
                "| given frames | with image | copy the last given | direction right | along (opposite caption) |",
                "|---|---|---|---|---|"]
        out += [f"| {k} | {v['with_image']:.4f} | {v['copy_given']:.4f} | {v['direction_ok']:.2f} | "
                f"{v['along']:.2f} ({v['opposite_along']:.2f}) |" for k, v in g.items()]
        gain = m["input_gain"]
        out += ["", "How much the frozen base's prediction follows its input (`|f(x_t + d) - f(x_t)| / |d|`, d half "
                "the clean latent): " + ", ".join(f"{t} {v:.2f}" for t, v in gain.items()) + ".", ""]
        if "noise_leak" in m:
            names = {"model_with_image": "the study's model, with the image", "model_without_image": "the same, "
                     "without the image", "base_alone": "the frozen base alone"}
            out += ["**Where the error at the pure-noise step comes from**: over 4 noise draws for the same 16 clips, "
                    "the one-step prediction's error splits into the error of its mean over draws (bias) and what "
                    "changes with the noise (variance), which an ideal prediction would not have, since the noisy "
                    "input holds nothing of the clip there:", "",
                    "| model | error | bias | variance (noise passed through) | share of the error |",
                    "|---|---|---|---|---|"]
            out += [f"| {names[k]} | {v['error']:.4f} | {v['bias']:.4f} | {v['variance']:.4f} | {v['leak']:.2f} |"
                    for k, v in m["noise_leak"].items()]
            out.append("")
        if "spatial_reach" in m:
            r = m["spatial_reach"]
            out += ["**Is moving the shape the wall?** AtomoVideo's temporal layers act on each pixel alone, so a shape "
                    "moves only if the frozen image layers between them carry it. The same recipe and budget with "
                    "temporal convolutions that also reach 3x3 pixels (`stage2.SpatioTemporalConvLayer`, a "
                    "diagnostic, not the product's layer; "
                    f"{r['seconds'] / 60:.1f} min of training):", "",
                    "| probe at the pure-noise step | with image | copy given | direction right | along (opposite "
                    "caption) |", "|---|---|---|---|---|"]
            out += _probe_rows(r)
            out += [_probe_row(f"training world, {k} given", v) for k, v in r["given_frames"].items()]
            out += ["", _sampled_line("Sampled held-out clips (lock on, the study's 16)", "along the caption",
                                      r["sampled"]), ""]
        if "one_motion" in m:
            o = m["one_motion"]
            out += [f"**Can it displace a shape when no cue has to be read?** The recipe at the study's budget on clips "
                    f"that all move one way ({o['motion']}; `budget.one_motion_batches`, "
                    f"{o['seconds'] / 60:.1f} min of training), probed and sampled on clips of that motion:", "",
                    "| probe at the pure-noise step | with image | copy given | direction right | along |",
                    "|---|---|---|---|---|"]
            out += _probe_rows(o, opposite=False)
            out += ["", _sampled_line("Sampled held-out clips of that motion (lock on, 16)", "along it", o["sampled"]),
                    ""]
        if "text_film" in m:
            t = m["text_film"]
            out += ["**Does a direct path for the caption change it?** The same recipe and budget with the caption as "
                    "an input of the temporal convolutions themselves (`temporal_text: film`, `atomo_core`'s "
                    "`TemporalConvLayer` with `text_dim`: per-channel scale and shift from the caption's mean token "
                    "feature, zero-initialised; our addition, not AtomoVideo's layer; measured first as a diagnostic "
                    "layer, which gives bit-identical figures from the same weights; "
                    f"{t['seconds'] / 60:.1f} min of training):", "",
                    "| probe at the pure-noise step | with image | copy given | direction right | along (opposite "
                    "caption) |", "|---|---|---|---|---|"]
            out += _probe_rows(t)
            out += ["", _sampled_line("Sampled held-out clips (lock on, the study's 16)", "along the caption",
                                      t["sampled"]), ""]
    out += _text_film_budget_lines(results.get("budget_text_film"))
    if b and m:
        out += _conclusion(b, m, results.get("budget_text_film"))
    return out


def _text_film_budget_lines(tb: dict | None) -> list[str]:
    """The text-FiLM diagnostic along a longer run (``--budget STEPS --text-film``): the probe along the way and
    held-out clips sampled at the end."""
    if not tb:
        return []
    out = [f"**Does budget buy it with the direct path?** The same with `temporal_text: film` trained {tb['steps']} steps "
           f"({tb['steps'] / tb['study_steps']:g}x the study's; `--budget {tb['steps']} --text-film`, "
           f"{tb['seconds']['curve'] / 60:.0f} min with the probes), the probe at the pure-noise step along the way "
           "(16 training-world and 16 held-out clips, one given frame):", "",
           "| step | world: with image | direction right | along (opposite caption) | held out: with image | "
           "copy given | direction right | along (opposite caption) |", "|---|---|---|---|---|---|---|---|"]
    for step, figures in tb["curve"]:
        w, h = figures["world"], figures["held_out"]
        out.append(f"| {step} | {w['with_image']:.4f} | {w['direction_ok']:.2f} | {w['along']:.2f} "
                   f"({w['opposite_along']:.2f}) | {h['with_image']:.4f} | {h['copy_given']:.4f} | "
                   f"{h['direction_ok']:.2f} | {h['along']:.2f} ({h['opposite_along']:.2f}) |")
    out += ["", _sampled_line(f"Sampled held-out clips at {tb['steps']} steps (lock on, the study's 16)",
                              "along the caption", tb["final"]["sampled"]), ""]
    return out


def _probe_row(name: str, p: dict, opposite: bool = True) -> str:
    along = f"{p['along']:.2f}" + (f" ({p['opposite_along']:.2f})" if opposite else "")
    return f"| {name} | {p['with_image']:.4f} | {p['copy_given']:.4f} | {p['direction_ok']:.2f} | {along} |"


def _probe_rows(run: dict, opposite: bool = True) -> list[str]:
    """A diagnostic run's probe rows (training world, held out) of the report's tables."""
    return [_probe_row(name, run[key], opposite) for name, key in (("training world", "probe_world"),
                                                                   ("held out", "probe_held_out"))]


def _sampled_line(what: str, along: str, q: dict) -> str:
    return (f"{what}: direction right {q['direction_accuracy']:.0%}, median speed {along} {q['median_along']:.2f}, "
            f"appearance kept {q['appearance_kept']:.0%}, warp error {q['warp_error']:.4f}, clip PSNR "
            f"{q['truth_psnr']:.1f} dB (the given frame held still {q['hold_psnr']:.1f} dB).")


def _conclusion(b: dict, m: dict, tb: dict | None = None) -> list[str]:
    """What the measurements above say together, from their figures (``tb``: the recipe's longer run,
    ``--budget STEPS --text-film``, when measured)."""
    first = {step: f for step, f in b["curve"]}
    study = first.get(b["study_steps"], b["curve"][0][1])["world"]
    last = b["curve"][-1][1]["world"]
    directions = [f[part]["direction_ok"] for _, f in b["curve"][1:] for part in ("world", "held_out")]
    reach = m.get("spatial_reach", {}).get("probe_world")
    lines = [f"**What this says.** The caption's direction is readable where the temporal layers sit (best site "
             f"{max(e['caption']['best'] for e in b['decodable'].values()):.2f}), yet at no budget point does the "
             f"one-step prediction move the caption's way more often than chance (direction right "
             f"{min(directions):.2f}-{max(directions):.2f}, the opposite caption moving it the same way)"]
    if reach:
        lines[0] += (f", nor with temporal convolutions that can shift features by a pixel themselves "
                     f"({reach['direction_ok']:.2f})")
    lines[0] += (f". What budget does buy is the appearance: the error with the image falls from "
                 f"{study['with_image']:.4f} at the study's {b['study_steps']} steps to {last['with_image']:.4f} at "
                 f"{b['steps']}, still above holding the given frame still ({last['copy_given']:.4f}).")
    g, o = m.get("given_frames", {}), m.get("one_motion")
    if "3" in g:
        lines[0] += (" Nor do given frames that show the motion make it continue: with three true frames given the "
                     f"prediction moves along the caption's direction by {g['3']['along']:.2f} of the true speed and "
                     f"by {g['3']['opposite_along']:.2f} under the opposite caption, most of it the given frames "
                     "themselves.")
    if o:
        lines[0] += (f" Yet the same recipe at the same budget on clips that all move one way ({o['motion']}) "
                     f"learns to displace the shape: the probe moves it that way in "
                     f"{o['probe_held_out']['direction_ok']:.0%} of held-out clips at {o['probe_held_out']['along']:.2f}"
                     f" of the true speed, and sampled held-out clips move right in "
                     f"{o['sampled']['direction_accuracy']:.0%} at a median {o['sampled']['median_along']:.2f}. So the "
                     "temporal layers can move things, the words reach them, and what they do not learn at these "
                     "budgets is to make the motion depend on a cue (the caption's words, or the motion of given "
                     "frames). That is the mechanism that fails, measured.")
    t = m.get("text_film")
    if t and tb:
        q, last = tb["final"]["sampled"], tb["curve"][-1][1]
        lines[0] += (" With the caption as the temporal convolutions' own input (`temporal_text: film`) the same "
                     f"budget gives a first sign (sampled held-out clips the caption's way in "
                     f"{t['sampled']['direction_accuracy']:.0%} at a median {t['sampled']['median_along']:.2f} of the "
                     f"true speed), and {tb['steps']} steps give the motion: the probe moves the shape the caption's "
                     f"way in {last['world']['direction_ok']:.0%} of training-world and "
                     f"{last['held_out']['direction_ok']:.0%} of held-out clips, the opposite caption the opposite way "
                     f"({last['held_out']['opposite_along']:.2f}), and sampled held-out clips move the caption's way "
                     f"in {q['direction_accuracy']:.0%} at a median {q['median_along']:.2f} of the true speed, where "
                     f"the paper's layers' probe at the same {tb['steps']} steps stayed at chance. So the recipe now gives "
                     "the temporal convolutions the caption (the trainer's default `temporal_text: film`), and the "
                     "study below is trained with it.")
    return lines + [""]


@torch.no_grad()
def noise_leak(model, alphas_cumprod, prediction_type: str, latents: torch.Tensor, context: torch.Tensor, seed: int,
               image_layout: str, given: int = 1, with_image: bool = True, draws: int = 4) -> dict:
    """At the pure-noise step the noisy input *is* the noise and holds nothing of the clip, so an ideal ``x0_hat``
    does not depend on which noise it is. Over ``draws`` noises for the same clips the one-step prediction's error on
    the generated frames (mean square) splits into ``bias`` (of the mean prediction over draws; with one draw's
    noise-variance corrected away) and ``variance`` (what changes with the noise): ``leak = variance / error``."""
    from atomo_core.training.probe import one_step_x0

    pure = len(alphas_cumprod) - 1
    generator = torch.Generator().manual_seed(seed)
    preds = torch.stack([one_step_x0(model, alphas_cumprod, prediction_type, latents, context, pure,
                                     torch.randn(latents.shape, generator=generator), given, with_image,
                                     image_layout)[:, given:] for _ in range(draws)])
    truth = latents[:, given:]
    error = float((preds - truth).pow(2).mean())
    variance = float(preds.var(dim=0, unbiased=True).mean())
    return {"error": error, "variance": variance, "bias": error - variance, "leak": variance / error}


def base_noise_leak(base, cases: list[world.Case], frames: int, seed: int) -> dict:
    """``noise_leak`` of the frozen base alone (no temporal layers, no image): its clean prediction at the pure-noise
    step, which should be the caption's mean image whatever the noise."""
    from atomo_core.training.objective import training_alphas_cumprod

    clips = diagnose.probe_clips(cases, frames) * 2 - 1
    latents = torch.stack([base.encode_video(c) for c in clips])
    context = base.encode_text([c.video_caption() for c in cases])

    def bare(x, t, ctx, f):  # the probe's call signature, the base's 4 channels
        return base.unet(x[:, :4], t, encoder_hidden_states=ctx).sample

    bare.parameters = base.unet.parameters
    return noise_leak(bare, training_alphas_cumprod().float(), "v_prediction", latents, context, seed, "given_only")


ONE_MOTION = ("right", "fast")  # the one motion of ``one_motion_batches``


def one_motion_batches(config, direction: str = ONE_MOTION[0], speed: str = ONE_MOTION[1]):
    """Trainer batches of training-world clips that all move ``direction`` at ``speed``: no cue is needed to know the
    motion (it is always the same), so a model trained on them that still does not move its shapes cannot displace
    them at all, whatever it reads."""
    gen = torch.Generator().manual_seed(config.seed + 7919)
    while True:
        cases = [world.random_case(gen, config.frames, direction=direction, speed=speed)
                 for _ in range(config.batch_size)]
        pixels = torch.stack([world.render(c, config.frames) for c in cases]) * 2 - 1
        yield {"pixels": pixels, "caption": [c.video_caption() for c in cases]}


def one_motion_cases(count: int, frames: int, seed: int, held_out: bool) -> list[world.Case]:
    gen = torch.Generator().manual_seed(seed)
    return [world.random_case(gen, frames, held_out=held_out, direction=ONE_MOTION[0], speed=ONE_MOTION[1])
            for _ in range(count)]
