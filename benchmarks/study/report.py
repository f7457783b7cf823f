"""Turns the study's results file into `REPORT.md` plus PNG figures.

The results file is the dict the study runner writes (`meta`, `arms`, `task_properties`, `runs`); every number in
the report is computed here from it, with the statistics of [`study.stats`]. Arms that are absent are skipped, and
a metric that is missing (`None`/NaN, e.g. GRPO has no meta predictions) renders as "—".

```bash
python benchmarks/study/report.py results.json --out outputs/study
```
"""

import argparse
import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np


if __package__ in (None, ""):  # run as a script: make `study` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from study import stats


TITLE = "MASA at laptop scale: GRPO, MASA and MASA-efficient with seeds, ablations and cost"
MISSING = "—"
BASELINE = "grpo"
COST_AXES = (("step", "step"), ("prompts_seen", "prompts seen"), ("solution_tokens", "solution tokens"),
             ("generated_tokens", "generated tokens (meta included)"), ("flops", "FLOPs (generation + training)"),
             ("wall_seconds", "wall time (s)"))  # fmt: skip
MAIN_ORDER = ("grpo", "masa", "masa_bc", "masa_efficient", "dapo", "masa_dapo")
HEADLINE_ARMS = ("masa", "masa_bc", "masa_efficient")
ABLATION_PARENTS = {"masa_length_only": "masa", "masa_difficulty_only": "masa", "masa_notion_only": "masa",
                    "efficient_no_hint": "masa_efficient", "gating_only": "masa_efficient",
                    "cutoff_only": "masa_efficient"}  # fmt: skip
# Metrics of the final-results table after accuracy and pass@k: (point key, column header).
FINAL_COLUMNS = (("pearson", "Pearson"), ("mae", "MAE"), ("length_mae", "length MAE"), ("gated_share", "gated"),
                 ("gating_precision", "gating P"), ("gating_recall", "gating R"), ("gating_f1", "gating F1"),
                 ("cutoff_share", "cut"), ("cutoff_precision", "cutoff P"),
                 ("train_cutoff_precision", "cutoff P (training)"), ("accuracy_hinted", "hinted accuracy"),
                 ("hint_gain", "hint gain"))  # fmt: skip
HINT_KEYS = ("accuracy", "accuracy_hinted", "hint_gain", "hinted_share")
CUTOFF_CAPTION = (
    "Cutoff precision vs step (fig. 3c style): held-out samples the cap would stop, and training "
    "rollouts it stopped, finished off the training path"
)
HINTS_CAPTION = (
    "Held-out accuracy vs step with plain and with hinted solution prompts: MASA-efficient (trained on hinted prompts "
    "from step k), beside MASA + BC and MASA-efficient without hints"
)
# The arms whose policy acts on its predictions: the gating and cutoff figures show these (every arm's held-out
# evaluation measures what the gate would decide, GRPO's included, as a control in the tables).
EFFICIENT_ARMS = ("masa_efficient", "efficient_no_hint", "gating_only", "cutoff_only")
PAPER_SPEEDUP = 1 / 1.28
PAPER_TRAIN_TIME_CHANGE = -0.345
PAPER_GATED_SHARE = 0.37
MARKERS = "osD^vPX*"
DPI = 110


# ----------------------------------------------------------------------------------------------- numbers and text
def _num(value: Any) -> float:
    """`value` as a float, NaN for `None` or anything that is not a number."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _mean(values: list[float]) -> float:
    """Mean of the finite values, NaN (without a warning) when there are none."""
    finite = [v for v in map(_num, values) if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def fmt(value: Any, digits: int = 3) -> str:
    """Formats a number, "—" when missing; large magnitudes in scientific notation."""
    value = _num(value)
    if math.isnan(value):
        return MISSING
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"


def fmt_pm(values: list[float], digits: int = 3) -> str:
    """`mean ± std` over the finite values; std "—" with fewer than two of them."""
    finite = [v for v in map(_num, values) if math.isfinite(v)]
    if not finite:
        return MISSING
    if len(finite) == 1:
        return f"{fmt(finite[0], digits)} ± {MISSING}"
    mean, std = stats.mean_std(finite)
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def fmt_ci(ci: Any, digits: int = 3) -> str:
    lo, hi = (math.nan, math.nan) if ci is None else ci
    return MISSING if math.isnan(_num(lo)) or math.isnan(_num(hi)) else f"[{fmt(lo, digits)}, {fmt(hi, digits)}]"


def verdict(ci: Any, *, null: float = 0.0, direction: int = 1, paper: float | None = None) -> str:
    """The verdict on a claim from its CI: `holds` if the CI excludes `null` on the claimed side (`direction` +1 above,
    -1 below) and, when the paper states a size (`paper`), reaches it; `smaller than the paper's` if it excludes
    `null` on the claimed side but stays short of that size; `does not hold` if it excludes `null` on the other side;
    `within noise` if it contains `null`."""
    lo, hi = (_num(c) for c in (ci or (math.nan, math.nan)))
    if math.isnan(lo) or math.isnan(hi):
        return "not measurable"
    if direction * (lo - null) > 0 and direction * (hi - null) > 0:
        reaches = paper is None or direction * (max(lo, hi) if direction > 0 else min(lo, hi)) >= direction * paper
        return "holds" if reaches else "smaller than the paper's"
    if direction * (lo - null) < 0 and direction * (hi - null) < 0:
        return "does not hold"
    return "within noise"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


# ------------------------------------------------------------------------------------------------ results access
def arm_runs(results: dict) -> dict[str, list[dict]]:
    """Runs by arm with at least one point: main arms first (known ones in the study's order), then ablations."""
    runs: dict[str, list[dict]] = {}
    for run in results.get("runs", []):
        if run.get("points"):
            runs.setdefault(run["arm"], []).append(run)
    arms = results.get("arms", {})

    def order(arm: str) -> tuple:
        known = MAIN_ORDER.index(arm) if arm in MAIN_ORDER else len(MAIN_ORDER)
        return (is_ablation(results, arm), known, list(arms).index(arm) if arm in arms else len(arms))

    return {arm: runs[arm] for arm in sorted(runs, key=order)}


def label(results: dict, arm: str) -> str:
    return results.get("arms", {}).get(arm, {}).get("label", arm)


def is_ablation(results: dict, arm: str) -> bool:
    return results.get("arms", {}).get(arm, {}).get("group") == "ablation" or arm in ABLATION_PARENTS


def final(runs: list[dict], key: str) -> list[float]:
    """`key` at each run's final point (`pass@k` keys as "pass_at_k.8")."""
    return [_get(run["points"][-1], key) for run in runs]


def _get(point: dict, key: str) -> float:
    if "." in key:
        outer, inner = key.split(".", 1)
        return _num((point.get(outer) or {}).get(inner))
    return _num(point.get(key))


def clean(runs: list[dict], axis: str) -> list[dict]:
    """Each run reduced to its points with a finite `axis` and accuracy, cost strictly increasing ([]: unusable)."""
    cleaned = []
    for run in runs:
        points = []
        for point in run["points"]:
            cost, accuracy = _get(point, axis), _get(point, "accuracy")
            if math.isfinite(cost) and math.isfinite(accuracy) and (not points or cost > points[-1][axis]):
                points.append({axis: cost, "accuracy": accuracy})
        if not points:
            return []
        cleaned.append({"points": points})
    return cleaned


def compare(arm: list[dict], base: list[dict], axis: str) -> tuple[dict | None, dict | None, str]:
    """`stats.cost_ratio` and `stats.accuracy_difference_at_equal_cost` of the arm vs the baseline on `axis`.

    The target is the baseline's mean final accuracy, lowered to the lowest best accuracy of the baseline runs when one
    of them never reaches it (then the note says so); both are `None` where the runs lack the axis.
    """
    arm, base = clean(arm, axis), clean(base, axis)
    if not arm or not base:
        return None, None, ""
    target = float(np.mean([run["points"][-1]["accuracy"] for run in base]))
    best = min(max(p["accuracy"] for p in run["points"]) for run in base)
    note = f"target lowered to {best:.3f}, the lowest best accuracy among GRPO's seeds" if best < target else ""
    with warnings.catch_warnings():  # an undefined comparison comes back as NaN, which renders as "—"
        warnings.simplefilter("ignore")
        ratio = stats.cost_ratio(arm, base, axis=axis, target=min(target, best))
        return ratio, stats.accuracy_difference_at_equal_cost(arm, base, axis=axis), note


def _wall_at_step(run: dict, step: float) -> float:
    points = [(_get(p, "step"), _get(p, "wall_seconds")) for p in run["points"]]
    points = sorted((s, w) for s, w in points if math.isfinite(s) and math.isfinite(w))
    return float(np.interp(step, [s for s, _ in points], [w for _, w in points])) if points else math.nan


def _ratio_of_means_ci(arm: list[float], base: list[float], num_resamples: int = 2000, seed: int = 0) -> tuple:
    """mean(arm) / mean(base) with a bootstrap CI that resamples both groups."""
    arm, base = np.asarray(arm, float), np.asarray(base, float)
    rng = np.random.default_rng(seed)
    draws = [rng.choice(arm, arm.size).mean() / rng.choice(base, base.size).mean() for _ in range(num_resamples)]
    return arm.mean() / base.mean(), tuple(np.quantile(draws, [0.025, 0.975]))


# ----------------------------------------------------------------------------------------------------- sections
def header_section(results: dict) -> str:
    meta = results.get("meta", {})
    machine = meta.get("machine", {})
    load = lambda key: "/".join(fmt(x, 2) for x in machine.get(key) or []) or MISSING  # noqa: E731
    commit = f"`{meta.get('commit', MISSING)}`" + (" (dirty)" if meta.get("dirty") else "")
    settings = json.dumps(meta.get("settings", {}), separators=(", ", ": "), sort_keys=True)
    runs = results.get("runs", [])
    planned, window = meta.get("planned_runs"), meta.get("runs_finished")
    loads = [r["load_end"][0] for r in runs if r.get("load_end")]
    if meta.get("report_only"):
        when = f"report rebuilt from the cached runs at {meta.get('finished', MISSING)} (load then {load('load_end')})"
    else:
        when = (
            f"run {meta.get('started', MISSING)} to {meta.get('finished', MISSING)}, load {load('load_start')} at "
            f"start and {load('load_end')} at end"
        )
    done = f"{len(runs)} of {planned} planned runs" if planned else f"{len(runs)} runs"
    if window:
        done += f", finished between {window[0]} and {window[1]}"
    if loads:
        done += f" (1-minute load when each ended: {min(loads):.1f}-{max(loads):.1f})"
    partial = ""
    if planned and len(runs) < planned:
        partial = (
            f"\n\n**Partial study: {planned - len(runs)} planned runs have not run yet** (`python benchmarks/run_study.py` "
            "resumes them from the cache); arms with fewer seeds show wider intervals, or none."
        )
    return (
        f"# {TITLE}\n\n"
        f"Commit {commit}; machine: {machine.get('cpus', MISSING)} CPUs; {when}; "
        f"{'quick' if meta.get('quick') else 'full'} study with {meta.get('workers', MISSING)} workers; {done}."
        f"{partial}\n\n"
        "All numbers below come from these runs of the committed code; this report is generated from their results "
        f"file.\n\nSettings:\n\n```json\n{settings}\n```"
    )


def task_section(results: dict, runs: dict[str, list[dict]]) -> str:
    tp = results.get("task_properties", {})
    pct = lambda x: MISSING if math.isnan(_num(x)) else f"{100 * _num(x):.0f}%"  # noqa: E731
    gains = [
        100 * (_get(r["points"][-1], "accuracy") - _get(r["points"][0], "accuracy")) for r in runs.get(BASELINE, [])
    ]
    gain = [g for g in gains if math.isfinite(g)]
    met = lambda ok: MISSING if ok is None else ("yes" if ok else "no")  # noqa: E731
    notions = ", ".join(f"{k} {pct(v)}" for k, v in (tp.get("notion_score_share") or {}).items()) or MISSING
    shares = [_num(v) for v in (tp.get("notion_score_share") or {}).values()]
    ratio, zero = _num(tp.get("length_ratio")), _num(tp.get("zero_variance_share"))
    rows = [
        ["RL can learn (GRPO final − warm-start accuracy, points)", fmt_pm(gain, 1), ">= +10",
         met(None if not gain else float(np.mean(gain)) >= 10)],
        ["solutions dominate cost (solution / meta length)", fmt(ratio, 2), ">= 2.5",
         met(None if math.isnan(ratio) else ratio >= 2.5)],
        ["difficulty spread (zero-variance share: trivial, unsolvable)",
         f"{pct(zero)} ({pct(tp.get('zero_variance_trivial'))}, {pct(tp.get('zero_variance_unsolvable'))})", ">= 25%",
         met(None if math.isnan(zero) else zero >= 0.25)],
        ["notions can score (share scoring; meta notion reward)",
         f"{notions}; {fmt(tp.get('meta_notion_reward_mean'))}", "some notion > 0",
         met(any(s > 0 for s in shares) if shares else None)],
        ["wrong − correct length (overall; within problem)",
         fmt(tp.get("wrong_minus_correct_length_overall"), 1) + "; "
         + fmt(tp.get("wrong_minus_correct_length_within_problem"), 1), "reported", MISSING],
    ]  # fmt: skip
    text = "## Task properties\n\n" + table(["property", "measured", "required", "met"], rows)
    cells = tp.get("per_cell") or []
    if cells:
        keys = list(dict.fromkeys(k for cell in cells for k in cell))
        body = [[str(c.get(k)) if k in ("cell", "n") else fmt(c.get(k)) for k in keys] for c in cells]
        text += "\n\nPer cell (warm start):\n\n" + table(keys, body)
    return text


def headline_rows(results: dict, runs: dict[str, list[dict]], arms: list[str]) -> tuple[list[list[str]], set[str]]:
    rows, notes = [], set()
    for arm in arms:
        for axis, axis_label in COST_AXES:
            ratio, diff, note = compare(runs[arm], runs[BASELINE], axis)
            notes |= {note} - {""}
            row = [label(results, arm), axis_label]
            row += (
                [fmt(ratio["ratio"]), fmt_ci(ratio["ratio_ci"]), f"{ratio['reached']}/{len(runs[arm])}"]
                if ratio
                else [MISSING] * 3
            )
            row += [fmt(diff["difference"]), fmt_ci(diff["difference_ci"])] if diff else [MISSING] * 2
            row += [f"{len(runs[arm]) - diff['arm_missing']}/{len(runs[arm])}" if diff else f"0/{len(runs[arm])}"]
            rows.append(row)
    return rows, notes


def _claim(name: str, measured: str, word: str) -> str:
    return f"- {name}: {measured} — **{word}**"


def claims(results: dict, runs: dict[str, list[dict]]) -> list[str]:
    """The paper's claims against this run's numbers, each with its interval and a verdict computed from it."""
    lines, base, eff = [], runs.get(BASELINE), runs.get("masa_efficient")
    for arm in ("masa_efficient", "masa"):
        if arm in runs and base:
            _, diff, _ = compare(runs[arm], base, "step")
            measured = f"{fmt(diff['difference'])} {fmt_ci(diff['difference_ci'])}" if diff else MISSING
            word = verdict(diff["difference_ci"]) if diff else "not measurable"
            lines.append(
                _claim(f"Accuracy gain, {label(results, arm)} − GRPO at equal steps (paper: > 0)", measured, word)
            )
    if eff and base:
        ratio, _, note = compare(eff, base, "wall_seconds")
        measured = MISSING
        if ratio:
            measured = f"{fmt(ratio['ratio'])} {fmt_ci(ratio['ratio_ci'])}, reached {ratio['reached']}/{len(eff)}"
            measured += f" ({note})" if note else ""
        word = verdict(ratio["ratio_ci"], null=1.0, direction=-1, paper=PAPER_SPEEDUP) if ratio else "not measurable"
        name = "1.28x faster (wall time to reach GRPO's final accuracy, MASA-efficient / GRPO; paper "
        name += f"{PAPER_SPEEDUP:.2f})"
        lines.append(_claim(name, measured, word))
    if eff and "masa" in runs:
        step = min(_get(r["points"][-1], "step") for r in eff + runs["masa"])
        walls = [[_wall_at_step(r, step) for r in group] for group in (eff, runs["masa"])]
        name = f"-34.5% train time (MASA-efficient vs MASA wall time at step {fmt(step, 0)}; paper "
        name += f"{100 * PAPER_TRAIN_TIME_CHANGE:.1f}%)"
        if math.isfinite(step) and all(math.isfinite(w) for group in walls for w in group):
            ratio, ci = _ratio_of_means_ci(*walls)
            change = [100 * (x - 1) for x in (ratio, *ci)]
            measured = f"{change[0]:+.1f}% [{change[1]:+.1f}%, {change[2]:+.1f}%]"
            word = verdict(change[1:], direction=-1, paper=100 * PAPER_TRAIN_TIME_CHANGE)
            lines.append(_claim(name, measured, word))
        else:
            lines.append(_claim(name, MISSING, "not measurable"))
    shares = []
    for run in eff or []:
        values = [_get(p, "gated_share") for p in run["points"] if _get(p, "step") > 0]
        if any(math.isfinite(v) for v in values):
            shares.append(_mean(values))
    if shares:
        lo, hi = stats.bootstrap_ci(shares)
        word = "matches" if lo <= PAPER_GATED_SHARE <= hi else ("lower" if hi < PAPER_GATED_SHARE else "higher")
        name = "37% gated (MASA-efficient's mean gated share after step 0; paper 0.37)"
        lines.append(_claim(name, f"{fmt_pm(shares)} {fmt_ci((lo, hi))}", word))
    if eff and len(eff) == 1:
        lines.append(
            "- (One seed of MASA-efficient: the intervals above collapse to a point; they say nothing about noise.)"
        )
    return lines


def headline_section(results: dict, runs: dict[str, list[dict]]) -> str:
    if BASELINE not in runs:
        return "## Headline\n\nNo GRPO runs: nothing to compare against."
    header = ["arm", "cost axis", "cost ratio to reach GRPO's accuracy", "95% CI", "reached",
              "Δ accuracy at GRPO's final cost", "95% CI", "runs there"]  # fmt: skip
    main = [arm for arm in HEADLINE_ARMS if arm in runs]
    others = [arm for arm in runs if arm != BASELINE and arm not in main]
    text = (
        "## Headline\n\nCost to reach GRPO's final held-out accuracy as a ratio to GRPO's (mean over seeds; < 1 means "
        "cheaper), and the held-out accuracy difference to GRPO at GRPO's mean final cost, on each cost axis (— where no "
        "run of the arm lasts that long; `runs there` counts those that do).\n\n"
    )
    main_rows, notes = headline_rows(results, runs, main)
    text += table(header, main_rows) if main else "No MASA arms."
    if others:
        other_rows, other_notes = headline_rows(results, runs, others)
        text += "\n\nOther arms:\n\n" + table(header, other_rows)
        notes |= other_notes
    if notes:
        text += "\n\nA GRPO seed never reached GRPO's mean final accuracy: " + "; ".join(sorted(notes)) + "."
    return text + "\n\n### Claims\n\n" + ("\n".join(claims(results, runs)) or "No claim can be checked.")


def final_section(results: dict, runs: dict[str, list[dict]]) -> str:
    ks = sorted({k for rs in runs.values() for r in rs for k in (r["points"][-1].get("pass_at_k") or {})}, key=int)
    header = ["arm", "seeds", "accuracy"] + [f"pass@{k}" for k in ks] + [name for _, name in FINAL_COLUMNS]
    keys = ["accuracy"] + [f"pass_at_k.{k}" for k in ks] + [key for key, _ in FINAL_COLUMNS]
    rows = [[label(results, arm), str(len(arm_list))] + [fmt_pm(final(arm_list, key)) for key in keys]
            for arm, arm_list in runs.items()]  # fmt: skip
    return "## Final held-out results\n\nAt each run's final point, mean ± std over seeds.\n\n" + table(header, rows)


def ablation_section(results: dict, runs: dict[str, list[dict]]) -> str:
    rows = []
    for arm, parent in ABLATION_PARENTS.items():
        if arm not in runs or parent not in runs:
            continue
        ablation, base = runs[arm], runs[parent]
        diff = [a - _mean(final(base, "accuracy")) for a in final(ablation, "accuracy")]
        tokens, wall = (
            [v / _mean(final(base, k)) for v in final(ablation, k)] for k in ("solution_tokens", "wall_seconds")
        )
        pearson = f"{fmt_pm(final(ablation, 'pearson'))} (parent {fmt_pm(final(base, 'pearson'))})"
        rows.append([label(results, arm), label(results, parent), fmt_pm(diff), pearson,
                     fmt_pm(tokens), fmt_pm(wall)])  # fmt: skip
    if not rows:
        return "## Ablations\n\nNo ablation ran together with its parent."
    header = ["ablation", "parent", "Δ final accuracy", "Pearson", "solution tokens ratio", "wall time ratio"]
    return (
        "## Ablations\n\nEach ablation against its parent at the final point (differences and ratios to the parent's "
        "mean, mean ± std over the ablation's seeds).\n\n" + table(header, rows)
    )


def hint_section(results: dict, runs: dict[str, list[dict]]) -> str | None:
    """Plain against hinted held-out accuracy at each point, for the arms trained with notion hints."""
    rows = []
    for arm, arm_list in runs.items():
        points = [p for r in arm_list for p in r["points"]]
        steps = sorted({p["step"] for p in points if math.isfinite(_num(p.get("accuracy_hinted")))})
        for step in steps:
            at = [p for p in points if p["step"] == step]
            rows.append([label(results, arm), str(step)] + [fmt_pm([_get(p, key) for p in at]) for key in HINT_KEYS])
    if not rows:
        return None
    header = ["arm", "step", "plain accuracy", "hinted accuracy", "hint gain", "hinted share"]
    return (
        "## Notion hints\n\nHeld-out accuracy with plain solution prompts (as in any evaluation) and with the hint "
        "MASA-efficient appends (the notions its own meta predictions name; none where the gate would act). Hint gain "
        "is the paired difference, hinted minus plain, over the problems that got a hint; mean ± std over seeds.\n\n"
        + table(header, rows)
    )


# -------------------------------------------------------------------------------------------------------- figures
def mean_curve(runs: list[dict], x_key: str, y_key: str, num: int = 40) -> tuple | None:
    """Interpolates each run's `y_key` onto a common grid of `x_key` (the range all runs cover); mean and std."""
    curves = []
    for run in runs:
        pairs = sorted((_get(p, x_key), _get(p, y_key)) for p in run["points"])
        pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
        if pairs:
            curves.append((np.array([x for x, _ in pairs]), np.array([y for _, y in pairs])))
    if not curves:
        return None
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    grid = np.linspace(lo, hi, num) if hi > lo else np.array([lo])
    values = np.array([np.interp(grid, x, y) for x, y in curves])
    std = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(grid)
    return grid, values.mean(axis=0), std


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from cycler import cycler

    # Twelve arms: the default cycle's ten colours would give two arms one colour. tab20 comes in (dark, light) pairs of
    # one hue: the ten dark ones first, so that the first ten arms get ten different hues.
    plt.rcParams["axes.prop_cycle"] = cycler(color=plt.cm.tab20.colors[0::2] + plt.cm.tab20.colors[1::2])
    return plt


def _save(plt, fig, path: Path, legend_ax) -> bool:
    """Saves `fig` with a legend on `legend_ax` (nothing drawn and nothing saved when it is `None`), closes it."""
    if legend_ax is not None:
        legend_ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return legend_ax is not None


def curves_figure(path: Path, arms: dict[str, list[dict]], panels: list[tuple[str, str, str, str]]) -> bool:
    """One subplot per `(x_key, y_key, x_label, y_label)` panel, a mean line ± std band per arm (label -> runs)."""
    plt = _pyplot()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows), squeeze=False)
    drawn = False
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (x_key, y_key, x_label, y_label) in zip(axes.flat, panels, strict=False):
        for i, (name, runs) in enumerate(arms.items()):
            curve = mean_curve(runs, x_key, y_key)
            if curve is not None:  # an arm keeps its colour in every panel, also where another arm has no curve
                grid, mean, std = curve
                colour = colours[i % len(colours)]
                ax.plot(grid, mean, label=name, color=colour, marker="." if len(grid) == 1 else None)
                ax.fill_between(grid, mean - std, mean + std, color=colour, alpha=0.2)
                drawn = True
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel(y_label, fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    return _save(plt, fig, path, axes.flat[0] if drawn else None)


def length_figure(path: Path, arms: dict[str, list[dict]]) -> bool:
    """Predicted vs true solution length per cell at the final point, mean over seeds (the paper's fig. 7)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3.5))
    everything = []
    for marker, (name, runs) in zip(MARKERS * 4, arms.items(), strict=False):
        cells: dict[str, list[tuple[float, float]]] = {}
        for run in runs:
            for cell in run["points"][-1].get("per_cell") or []:
                true, pred = _num(cell.get("true_length")), _num(cell.get("pred_length"))
                if math.isfinite(true) and math.isfinite(pred):
                    cells.setdefault(cell.get("cell"), []).append((true, pred))
        if cells:
            true, pred = np.array([np.mean(v, axis=0) for v in cells.values()]).T
            ax.scatter(true, pred, marker=marker, label=name, alpha=0.8)
            everything += list(true) + list(pred)
    if everything:
        lim = (0, max(everything) * 1.05)
        ax.plot(lim, lim, "k--", lw=0.8, label="y = x")
        ax.set(xlabel="true length (tokens)", ylabel="predicted length (tokens)")
    return _save(plt, fig, path, ax if everything else None)


def pass_at_k_figure(path: Path, arms: dict[str, list[dict]]) -> bool:
    """Held-out pass@k against k at the final point, mean ± std over seeds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    drawn = False
    for name, runs in arms.items():
        ks = sorted({k for r in runs for k in (r["points"][-1].get("pass_at_k") or {})}, key=int)
        values = [[_get(r["points"][-1], f"pass_at_k.{k}") for r in runs] for k in ks]
        keep = [(int(k), *stats.mean_std(v)) for k, v in zip(ks, values, strict=True) if np.isfinite(v).any()]
        if keep:
            k, mean, std = np.array(keep).T
            ax.errorbar(k, mean, yerr=std, marker="o", capsize=2, label=name)
            drawn = True
    ax.set_xscale("log", base=2)
    ax.set(xlabel="k", ylabel="held-out pass@k")
    return _save(plt, fig, path, ax if drawn else None)


def hints_figure(path: Path, arms: dict[str, list[dict]]) -> bool:
    """Plain and hinted held-out accuracy vs step (nothing drawn when no run measured the hinted one)."""
    if not any(math.isfinite(_get(p, "accuracy_hinted")) for runs in arms.values() for r in runs for p in r["points"]):
        return False
    panels = [("step", "accuracy", "step", "accuracy, plain prompts"),
              ("step", "accuracy_hinted", "step", "accuracy, hinted prompts")]  # fmt: skip
    return curves_figure(path, arms, panels)


def figures_section(results: dict, runs: dict[str, list[dict]], out_dir: Path) -> str:
    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    named = lambda arms: {label(results, a): runs[a] for a in arms}  # noqa: E731
    main = named(a for a in runs if not is_ablation(results, a))
    meta = named(a for a in runs if any(math.isfinite(v) for v in final(runs[a], "pearson")))
    gating = named(a for a in runs if a in EFFICIENT_ARMS)
    cutoff = gating
    hinted = named(a for a in ("masa_bc", "masa_efficient", "efficient_no_hint") if a in runs)
    step = lambda key, name: ("step", key, "step", name)  # noqa: E731
    figures = [
        ("accuracy_vs_cost.png", "Held-out accuracy vs each cost axis (mean ± std over seeds)",
         lambda p: curves_figure(p, main, [(a, "accuracy", name, "held-out accuracy") for a, name in COST_AXES])),
        ("meta_calibration.png", "Meta predictions: pass-rate Pearson and MAE vs step per MASA arm",
         lambda p: curves_figure(p, meta, [step("pearson", "Pearson"), step("mae", "pass-rate MAE")])),
        ("length_per_cell.png", "Predicted vs true solution length per cell at the final point (fig. 7 style)",
         lambda p: length_figure(p, meta)),
        ("gated_share.png", "Share of prompts gated vs step, MASA-efficient and its ablations (fig. 5 style)",
         lambda p: curves_figure(p, gating, [step("gated_share", "gated share")])),
        ("gating_quality.png", "Gating precision, recall and F1 vs step (fig. 3b style)",
         lambda p: curves_figure(p, gating, [step(f"gating_{m}", m) for m in ("precision", "recall", "f1")])),
        ("cutoff_precision.png", CUTOFF_CAPTION,
         lambda p: curves_figure(p, cutoff, [step("cutoff_precision", "cutoff precision (held-out)"),
                                             step("train_cutoff_precision", "cutoff precision (training)")])),
        ("pass_at_k.png", "Held-out pass@k at the final point per main arm (mean ± std over seeds)",
         lambda p: pass_at_k_figure(p, main)),
        ("hints.png", HINTS_CAPTION, lambda p: hints_figure(p, hinted)),
    ]  # fmt: skip
    parts = ["## Figures"]
    for letter, (name, caption, draw) in zip("abcdefgh", figures, strict=True):
        if draw(fig_dir / name):
            parts.append(f"![{caption}](figures/{name})\n\n*({letter}) {caption}.*")
    return "\n\n".join(parts)


# ----------------------------------------------------------------------------------------------------- entry points
def load_results(path: str | Path) -> dict:
    """Reads a results JSON file."""
    with open(path) as f:
        return json.load(f)


def make_report(results: dict, out_dir: str | Path) -> Path:
    """Writes `out_dir/REPORT.md` and its figures under `out_dir/figures/`.

    Args:
        results (`dict`):
            The study's results (`meta`, `arms`, `task_properties`, `runs`).
        out_dir (`str` or `Path`):
            Directory to write into; created if missing.

    Returns:
        `Path`: the path of `REPORT.md`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = arm_runs(results)
    sections = [
        header_section(results),
        task_section(results, runs),
        headline_section(results, runs),
        final_section(results, runs),
        ablation_section(results, runs),
        hint_section(results, runs),
        figures_section(results, runs, out_dir),
    ]
    path = out_dir / "REPORT.md"
    path.write_text("\n\n".join(section for section in sections if section) + "\n")
    return path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="the study's results JSON file")
    parser.add_argument("--out", default=None, help="output directory (default: the results file's directory)")
    args = parser.parse_args(argv)
    path = make_report(load_results(args.results), args.out or Path(args.results).parent)
    print(path)
    return path


if __name__ == "__main__":
    main()
