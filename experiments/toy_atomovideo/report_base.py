"""The report's tables and its sections on the stage-1 base (its gates under other settings, the gates judged again,
another base), apart from ``report.py`` so each stays short."""

from __future__ import annotations

import math
import re

from . import gates, world


def _f(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        if math.isinf(value):
            return "inf"
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(v) if not isinstance(v, str) else v for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _rejudged_lines(base: dict) -> list[str]:
    """What the gates said of these samples before they were judged again (``--rejudge-gates``)."""
    before, truth = base["samples"].get("judged_before"), base["truth"]
    if not before:
        return []
    line = ("These samples were judged again (`--rejudge-gates`, the same pictures) when the gates changed: the "
            "figure's weight map became a projection onto the line from the background's colour to the figure's (the "
            "shapes' darker stripes had fallen into holes of a distance map), which moves the trail figure too, and "
            "the shape gate a correlation with each shape's pixel coverage instead of an IoU. The truth now passes "
            f"the shape gate in {truth['shape_drawn']:.0%}")
    if truth.get("judged_before"):
        line += f" (before: {truth['judged_before']['shape_drawn']:.0%})"
    if "other_shape_drawn" in truth:
        line += f"; the same frames drawn with another shape pass it in {truth['other_shape_drawn']:.1%}"
    line += (f". The old gates gave these samples shape drawn {before['shape_drawn']:.0%} and trail behind "
             f"{before['trail_behind']:.0%}.")
    return [line, ""]


def _gate_sweep_lines(results: dict) -> list[str]:
    """The gates at several guidance scales (``--base-gates``), if measured: is the captions' weak hold a setting?"""
    sweep = results.get("base_gates_cfg")
    if not sweep:
        return []
    names = [name for name, _, _ in gates.GATES]
    rows = [[f"cfg {cfg}", *[row[n] for n in names], row["passes"]] for cfg, row in sweep["by_cfg"].items()]
    best = {n: max(row[n] for row in sweep["by_cfg"].values()) for n in names if n not in ("noise_like", "saturation_gap")}
    short = [n for n, op, threshold in gates.GATES if n in best and best[n] < threshold]
    lines = ["The same gates at other guidance scales (`python -m experiments.toy_atomovideo --base-gates 1,3,6,9`, "
             f"{sweep['samples']} samples each):", "",
             _table(["guidance", *names, "passes"], rows), "",
             "Guidance is not the lever: at its best scale " + ", ".join(
                 f"{n.replace('_', ' ')} {best[n]:.0%}" for n in short) + " stay below their criteria." if short else
             "At its best scale every drawing gate holds.", ""]
    if "seen" in sweep:
        seen = sweep["seen"]
        lines += ["Where the drawing is lost: the same figures for the base's one-step clean prediction from the true "
                  "frame noised to step t (it sees the picture; no sampler, no guidance), and for the true frames "
                  "slightly blurred:", "",
                  _table(["frames", *next(iter(seen.values()))], [[k, *row.values()] for k, row in seen.items()]), "",
                  "A denoiser that draws the shape and trail when it sees them keeps the truth's figures at small t; "
                  "one that loses them there rounds what it sees, as a blur of about a pixel does.", ""]
    for steps, other in sorted(results.get("base_gates_steps", {}).items(), key=lambda item: int(item[0])):
        for cfg, row in other["by_cfg"].items():
            out_row = ", ".join(f"{n.replace('_', ' ')} {row[n]:.0%}" for n in names if n != "saturation_gap")
            lines.append(f"A base trained {steps} steps instead of {results['settings']['stage1_steps']} "
                         f"(`--base-gates {cfg} --stage1-steps {steps}`, {other['samples']} samples at cfg {cfg}): "
                         f"{out_row}; {'passes' if row['passes'] else 'does not pass'} the gates.")
    return lines + ([""] if results.get("base_gates_steps") else [])


def _world_try_lines(results: dict) -> list[str]:
    """``world_try.json``: the same base trained in a world of elongated shapes and a stronger trail."""
    tried = results.get("world_try")
    if not tried:
        return []
    g, truth = tried["samples"], tried["truth"]
    figures = ", ".join(f"{n.replace('_', ' ')} {g[n]:.0%}" + (f" (truth {truth[n]:.0%})" if n in truth else "")
                        for n in ("noise_like", "colour_drawn", "shape_drawn", "trail_behind"))
    minutes = f"; {tried['stage1_seconds'] / 60:.0f} min of training" if tried.get("stage1_seconds") else ""
    apart = ", ".join(f"{pair} {pixels:.1f}" for pair, pixels in tried.get("pixels_apart", {}).items())
    threshold = dict((name, t) for name, _, t in gates.GATES)["shape_drawn"]
    verdict = ("So the blob is not the world's shapes being too alike: the base draws a blob in the caption's "
               "colour whatever the shape word, here as in the study's world." if g["shape_drawn"] < threshold else
               "Here the base draws the caption's shape: the study's world's shapes were too alike to learn apart.")
    return [f"Another world, to ask whether the shapes are too alike to learn apart (`{tried['made_by']}`, the same "
            f"stage-1 settings and seed{minutes}): training shapes {', '.join(tried['shapes'])}, trails at opacity "
            f"{tried['trail_opacity']:g}" + (f"; pixels that differ between two shapes at the same place: {apart}"
                                            if apart else "") + f". Its base, {g['count']} samples at cfg 3: "
            f"{figures}; {'passes' if g['passes'] else 'does not pass'} the gates. " + verdict, ""]


def _base_try_lines(results: dict) -> list[str]:
    """``base_tries.json``: the base trained with one or two things changed (``base_try.py``), judged alike."""
    tries = results.get("base_tries")
    if not tries:
        return []
    names = [name for name, _, _ in gates.GATES]
    rows = []
    for label, t in tries.items():
        words = t["shape_words"]["drawn_as"]
        drawn = ", ".join(f"{w} {max(words[w], key=words[w].get)} {max(words[w].values()):.0%}" for w in words)
        # the study's base: the committed study's own stage-1 minutes (a cached copy may have trained beside other work)
        seconds = results["seconds"]["stage1"] if t.get("study") and "seconds" in results else t["seconds"]
        rows.append([label, f"{seconds / 60:.0f}", *[t["gates"][n] for n in names], t["gates"]["passes"], drawn,
                     t["shape_words"]["shape_word_change"], t["shape_words"]["colour_word_change"],
                     t["seen"]["t=100"]["shape_drawn"]])
    lines = ["Stage-1 tries (`python -m experiments.toy_atomovideo.base_try`, the study's stage-1 settings and seed with "
             "the change named; the same 64 samples at cfg 3; *drawn as*: each training shape word's 24 samples (the "
             "same captions and noise for every word) classed by the shape that fits best, the most frequent class "
             "and its share; *shape word* and *colour word*: the mean absolute pixel change of the samples when only "
             "that word of the caption changes (same noise); *one-step t=100*: the shape gate on the denoiser's clean "
             "prediction from the true frame noised to t=100, which it can see):", "",
             _table(["try", "min", *names, "passes", "shape word drawn as", "shape word", "colour word",
                     "one-step t=100 shape"], rows), ""]
    passing = [label for label, t in tries.items() if t["gates"]["passes"]]
    reads = [label for label, t in tries.items() if len(t["shape_words"]["drawn_as"]) > 1  # one word: nothing to read
             and all(max(d, key=d.get) == w for w, d in t["shape_words"]["drawn_as"].items())]
    lines.append(("Passing the gates: " + "; ".join(passing) + "." if passing else "No try passes the gates.")
                 + (" Drawing each shape word's own shape: " + "; ".join(reads) + "." if reads else
                    " In none does each shape word draw its own shape most often."))
    floor = dict((name, value) for name, _, value in gates.GATES)["shape_drawn"]
    for t in tries.values():
        alone = t["settings"].get("shapes")
        if not alone:
            continue
        drawn = t["gates"]["shape_drawn"]
        lines[-1] += (f" Trained on {' and '.join(alone)} alone (its samples' captions name only that), the base draws "
                      f"the caption's shape in {drawn:.0%} of its samples (the shape gate, among all five shapes): "
                      + ("so the UNet can draw a shape at this budget; what the study's base lacks is reading which "
                         "shape the caption names." if drawn >= floor else
                         "so at this budget the UNet does not draw even a shape it is shown alone: drawing fails before "
                         "reading does."))
    for t in tries.values():
        radius = t["settings"].get("radius")
        if not radius:
            continue
        g, truth = t["gates"], t.get("truth", {})
        seen = f" (rendered frames at that radius: {truth['shape_drawn']:.0%})" if "shape_drawn" in truth else ""
        lines[-1] += (f" With every shape {radius:g} pixels in radius (the world's {world.RADIUS:g}), the base draws the "
                      f"caption's shape in {g['shape_drawn']:.0%}{seen} and the trail in {g['trail_behind']:.0%}: "
                      + ("larger shapes are drawn at this budget." if g["shape_drawn"] >= floor else
                         "larger shapes are not the lever at this budget either."))
    lines.append("")
    for label, t in tries.items():
        if t.get("trained_by"):
            lines.append(f"- {label}: trained by {t['trained_by']}; judged by this module from the weights it saved "
                         "(`--unet`).")
    return lines + [""] if lines[-1].startswith("- ") else lines


def _direction(verdict: dict | None) -> str:
    """"88 %" from a motion verdict's figure ("... direction right in 88% ..."), "?" without one."""
    found = re.search(r"direction right in (\d+)%", verdict["figure"]) if verdict else None
    return f"{found.group(1)} %" if found else "?"


def _other_base_lines(results: dict) -> list[str]:
    """The whole study on a base normalised in groups of four channels (``base_norm_groups_8.json``), if run."""
    other = results.get("base_norm_groups_8")
    if not other:
        return []
    mine, theirs = results["base"]["samples"], other["base"]["samples"]
    held = {v["property"]: v for v in results.get("verdicts", [])}
    theirs_by = {v["property"]: v for v in other["verdicts"]}
    rows = [[v["property"], held[v["property"]]["holds"] if v["property"] in held else None, v["holds"],
             v["figure"][:140] + ("..." if len(v["figure"]) > 140 else "")] for v in other["verdicts"]]
    return ["## Another base: GroupNorm in groups of four channels", "",
            f"SD-1.5 normalises 320-1280 channels in 32 groups (10-40 channels each); at the toy's width 32 its 32 "
            f"groups are one channel each, a per-channel instance norm. The whole study again with the base's GroupNorm "
            f"in {other['settings']['stage1_norm_groups']} groups ({other['made_by']}; "
            f"{other['seconds']['total'] / 60:.1f} min on {other['machine']['cpu']}, seed {other['settings']['seed']}, "
            "every other setting the same):", "",
            _table(["gate", "this study's base", "groups of four", "criterion"],
                   [[n, mine[n], theirs[n], f"{op} {t:g}"] for n, op, t in gates.GATES]), "",
            f"The base is better by its own measures (final stage-1 loss {other['base']['final_loss']:.3f}, this "
            f"study's {sum(results['losses']['stage1'][-20:]) / 20:.3f}; stage-2 held-out loss "
            f"{other['stage2_held_out_loss']['v_ztsnr']:.4f} against {results['losses']['v_ztsnr']['held_out'][-1][1]:.4f}"
            ") and still fails " + ", ".join(n for n, ok in theirs["gates"].items() if not ok) + "; the video verdicts "
            "at the same budget:", "",
            _table(["property", "holds (this study)", "holds (groups of four)", "figure (groups of four)"], rows), "",
            "Its ladder: " + "; ".join(f"{r['rung']} {'holds' if r['holds'] else 'fails'} ({r['figures']})"
                                       for r in other["ladder"]) + ".", "",
            f"{sum(v['holds'] for v in held.values())} of {len(held)} verdicts hold on this study's base, "
            f"{sum(v['holds'] for v in other['verdicts'])} on the other; motion in the caption's direction "
            f"{_direction(held.get('motion_direction'))} against {_direction(theirs_by.get('motion_direction'))} of "
            "held-out clips. So the study keeps SD-1.5's 32 groups, though the better-fitting base memorises one batch "
            "better (rung 1). That the motion verdicts move this much with the base says they are not yet robust: one "
            "seed per base, one budget.", ""]


def _other_seed_lines(results: dict) -> list[str]:
    """The whole study again with another seed (``seed_N.json``, every random draw different), if run."""
    lines = []
    for _, other in sorted(results.get("other_seeds", {}).items(), key=lambda item: int(item[0])):
        held = {v["property"]: v for v in results.get("verdicts", [])}
        rows = [[v["property"], held[v["property"]]["holds"] if v["property"] in held else None, v["holds"],
                 v["figure"][:150] + ("..." if len(v["figure"]) > 150 else "")] for v in other["verdicts"]]
        seed = other["settings"]["seed"]
        mine, theirs = results["base"]["samples"], other["base"]["samples"]
        lines += [f"## Another seed: {seed}", "",
                  f"The same study with `--seed {seed}`, which changes every random draw (the base's weights and data, "
                  f"the clips, the noise, the test cases) and nothing else ({other['made_by']}; "
                  f"{other['seconds']['total'] / 60:.1f} min on {other['machine']['cpu']}):", "",
                  _table(["property", f"holds (seed {results['settings']['seed']})", f"holds (seed {seed})",
                          f"figure (seed {seed})"], rows), "",
                  f"{sum(v['holds'] for v in held.values())} of {len(held)} verdicts hold with seed "
                  f"{results['settings']['seed']}, {sum(v['holds'] for v in other['verdicts'])} with seed {seed}; "
                  f"motion in the caption's direction {_direction(held.get('motion_direction'))} against "
                  f"{_direction({v['property']: v for v in other['verdicts']}.get('motion_direction'))} of held-out "
                  "clips.", "",
                  "Its base: " + ", ".join(f"{n.replace('_', ' ')} {theirs[n]:.2f} (seed {results['settings']['seed']}: "
                                           f"{mine[n]:.2f})" for n, _, _ in gates.GATES) + f"; final stage-1 loss "
                  f"{other['base']['final_loss']:.3f}; stage-2 held-out loss "
                  f"{other['stage2_held_out_loss']['v_ztsnr']:.4f}.", "",
                  "Its ladder: " + "; ".join(f"{r['rung']} {'holds' if r['holds'] else 'fails'} ({r['figures']})"
                                             for r in other["ladder"]) + ".", ""]
    return lines
