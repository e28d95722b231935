"""The study's judgements: a verdict per property (``results.json``'s ``"verdicts"``, each with its figure and
criterion, and a "holds" only where the trivial answers are beaten), and the rule that holds each ablation against
the recipe."""

from __future__ import annotations


def verdicts_list(results: dict) -> list[dict]:
    """``[{"property", "holds", "figure", "criterion"}]``: what ``results.json`` records and the report states."""
    m, t = results["models"], results["truth"]
    v_i2v, e_i2v, u_i2v = (m[k]["image_to_video"]["summary"] for k in ("v_ztsnr", "eps", "untrained"))
    probe = m["v_ztsnr"]["probe_held_out"]
    pure = max(probe, key=lambda k: int(k[1:]))
    p = probe[pure]
    out = [{
        "property": "given_frame_used", "holds": p["with_image"] <= 0.5 * p["without_image"] and
        p["with_image"] < p["copy_given"],
        "figure": f"probe at the pure-noise step, held-out clips: with the image {p['with_image']:.4f}, without "
                  f"{p['without_image']:.4f} ({p['image_gain']:.2f}x), copying the given frame {p['copy_given']:.4f}, "
                  f"the mean frame {p['mean_frame']:.4f}",
        "criterion": "with the image at most half of without it, and below copying the given frame"}]
    out.append({
        "property": "motion_direction", "holds": v_i2v["direction_accuracy"] >= 0.75 and
        0.7 <= v_i2v["median_along"] <= 1.3,
        "figure": f"sampled held-out clips, lock on: direction right in {v_i2v['direction_accuracy']:.0%} (epsilon "
                  f"{e_i2v['direction_accuracy']:.0%}, untrained {u_i2v['direction_accuracy']:.0%}, truth "
                  f"{t['direction_accuracy']:.0%}; holding the given frame still 0 %, chance 25 %: "
                  f"{100 * (v_i2v['direction_accuracy'] - 0.25):.0f} points above chance, "
                  f"{100 * (v_i2v['direction_accuracy'] - u_i2v['direction_accuracy']):.0f} above the untrained layers); "
                  f"median speed along the caption {v_i2v['median_along']:.2f} of the truth (holding still 0)",
        "criterion": "direction right in at least 75 % of clips (chance 25 %) and median speed along the caption "
                     "0.7-1.3 of the truth"})
    out.append({
        "property": "appearance_kept", "holds": v_i2v["appearance_kept"] >= 0.9,
        "figure": f"the given frame's shape found in every frame of {v_i2v['appearance_kept']:.0%} of clips (epsilon "
                  f"{e_i2v['appearance_kept']:.0%}, untrained {u_i2v['appearance_kept']:.0%}, truth 100 %)",
        "criterion": "at least 90 % of clips"})
    out.append({
        "property": "temporal_consistency", "holds": v_i2v["warp_error"] <= 2 * t["warp_error"] + 0.02,
        "figure": f"warp error {v_i2v['warp_error']:.4f} (truth {t['warp_error']:.4f}, epsilon "
                  f"{e_i2v['warp_error']:.4f}, untrained {u_i2v['warp_error']:.4f})",
        "criterion": "at most twice the truth's plus 0.02"})
    fp = m["v_ztsnr"]["frame_prediction"]["summary"]
    out.append({
        "property": "frame_prediction", "holds": fp["direction_accuracy"] >= 0.75,
        "figure": f"continuations of {results['settings']['given']} true frames keep the direction in "
                  f"{fp['direction_accuracy']:.0%} (epsilon {m['eps']['frame_prediction']['summary']['direction_accuracy']:.0%}, "
                  f"untrained {m['untrained']['frame_prediction']['summary']['direction_accuracy']:.0%}, holding the "
                  "last given frame 0 %, chance 25 %); new frames "
                  f"{fp['new_psnr']:.1f} dB against the truth, holding the last given frame {fp['hold_last_psnr']:.1f} dB",
        "criterion": "direction kept in at least 75 % of continuations"})
    tc = m["v_ztsnr"]["text_control"]
    out.append({
        "property": "text_control", "holds": tc["opposite_ways"] >= 0.5,
        "figure": f"one image, opposite captions: they move opposite ways for {tc['opposite_ways']:.0%} of images "
                  f"(epsilon {m['eps']['text_control']['opposite_ways']:.0%}, untrained "
                  f"{m['untrained']['text_control']['opposite_ways']:.0%}; holding the image still: 0 %)",
        "criterion": "at least half of the images"})
    ahead = [name for name, a, b in (("direction", v_i2v["direction_accuracy"], e_i2v["direction_accuracy"]),
                                     ("speed along the caption", v_i2v["along"], e_i2v["along"]),
                                     ("clip PSNR, lock on", v_i2v["truth_psnr"], e_i2v["truth_psnr"]),
                                     ("clip PSNR, lock off", v_i2v["truth_psnr_free"], e_i2v["truth_psnr_free"]),
                                     ("appearance kept", v_i2v["appearance_kept"], e_i2v["appearance_kept"]))
             if a > b]
    pe = m["eps"]["probe_held_out"]
    pe = pe[max(pe, key=lambda k: int(k[1:]))]
    trivial = max(v_i2v["hold_psnr"], v_i2v["flat_psnr"])  # holding the given frame still, or a flat grey clip
    out.append({
        "property": "v_prediction_zero_snr_beats_epsilon",
        "holds": len(ahead) >= 3 and v_i2v["truth_psnr"] > trivial,
        "figure": f"v-pred + ZTSNR ahead on {len(ahead)} of 5 sampled figures ({', '.join(ahead) or 'none'}); probe "
                  f"at the pure-noise step with the image {p['with_image']:.4f} against epsilon's {pe['with_image']:.4f};"
                  f" but its clip PSNR (lock on) {v_i2v['truth_psnr']:.1f} dB is {trivial - v_i2v['truth_psnr']:.1f} dB "
                  f"below the best trivial answer (the given frame held still {v_i2v['hold_psnr']:.1f} dB, a flat clip "
                  f"{v_i2v['flat_psnr']:.1f} dB)" if v_i2v["truth_psnr"] <= trivial else
                  f"v-pred + ZTSNR ahead on {len(ahead)} of 5 sampled figures ({', '.join(ahead) or 'none'}), and its "
                  f"clip PSNR {v_i2v['truth_psnr']:.1f} dB beats the best trivial answer by "
                  f"{v_i2v['truth_psnr'] - trivial:.1f} dB",
        "criterion": "ahead on at least 3 of the 5 sampled figures, and above the trivial answers (hold the given "
                     "frame, a flat clip) in clip PSNR"})
    return out


def ablation_decisions(ablations: dict) -> list[dict]:
    """For every ablation row, whether its change should replace the recipe's choice. The rule: the change must lower the probe's clean-frame error with the image (at the pure-noise step, held-out
    clips) by more than a tenth AND lose nothing sampled (direction right, appearance kept: each clip is a step of
    1/clips there), else the recipe keeps its choice (the simpler or the paper's, where they tie)."""
    table = ablations["table"]
    recipe = table["the recipe"]
    clips = ablations["settings"]["ablation_cases"]
    out = []
    for label, row in table.items():
        if label == "the recipe":
            continue
        probe_gain = 1 - row["probe"]["with_image"] / recipe["probe"]["with_image"]
        losses = [name for name in ("direction_accuracy", "appearance_kept")
                  if row["sampled"][name] < recipe["sampled"][name] - 1e-9]
        replace = probe_gain > 0.1 and not losses
        lost = ", ".join(f"{n.replace('_', ' ')} {row['sampled'][n]:.0%} vs {recipe['sampled'][n]:.0%}"
                         for n in losses)
        why = (f"probe {'lower' if probe_gain > 0 else 'higher'} by {abs(probe_gain):.0%}"
               + (f", loses {lost}" if losses else ", loses nothing sampled"))
        out.append({"variant": label, "replace": replace, "why": why, "clips": clips})
    return out
