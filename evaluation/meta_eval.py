"""Meta-awareness evaluation: does the model know, before solving, how hard a problem is and how long it will take?

For each problem the model answers MASA's meta prompt ([`masa_trl.templates.meta_prompt`]) `meta_n` times; each
answer is parsed ([`masa_trl.meta.parse_meta_prediction`]) into notions, a predicted pass rate in [0, 1] and a
predicted solution length in tokens. The per-problem mean prediction is then compared with what the solution
rollouts of the same run measured (pass rate c / n under the primary scorer, mean completion length):

* Pearson and Spearman correlation, mean absolute error and bias of the pass rate and of the length;
* the share of problems whose predicted length lies within [shortest, longest] correct solution (the interval the
  MASA length reward checks, here inclusive);
* a calibration table: predicted pass rate bucket (k / pass_rate_scale) against the measured rate;
* a PNG plot (matplotlib with the Agg backend, imported only when a plot is requested).
"""

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def _finite(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation; NaN with fewer than two points or a constant side."""
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    return float(np.clip((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum()), -1.0, 1.0))


def rankdata(values: Sequence[float]) -> np.ndarray:
    """Ranks starting at 1, ties sharing their average rank (as `scipy.stats.rankdata(method="average")`)."""
    v = np.asarray(values, dtype=np.float64)
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    sorted_v = v[order]
    i = 0
    while i < len(v):
        j = i
        while j + 1 < len(v) and sorted_v[j + 1] == sorted_v[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN where Pearson is undefined."""
    if len(xs) < 2:
        return math.nan
    return pearson(rankdata(xs), rankdata(ys))


def _errors(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    diff = predicted - measured
    return {
        "pearson": pearson(predicted, measured),
        "spearman": spearman(predicted, measured),
        "mae": float(np.abs(diff).mean()) if len(diff) else math.nan,
        "bias": float(diff.mean()) if len(diff) else math.nan,
        "rmse": float(np.sqrt((diff**2).mean())) if len(diff) else math.nan,
    }


def calibration_table(
    predicted: Sequence[float], measured: Sequence[float], pass_rate_scale: int = 8
) -> list[dict[str, Any]]:
    """Per predicted bucket k / scale (k = 0..scale): count, mean predicted and mean measured pass rate."""
    buckets: dict[int, list[tuple[float, float]]] = {}
    for p, m in zip(predicted, measured, strict=True):
        k = round(float(p) * pass_rate_scale)
        buckets.setdefault(min(max(k, 0), pass_rate_scale), []).append((float(p), float(m)))
    table = []
    for k in range(pass_rate_scale + 1):
        items = buckets.get(k, [])
        table.append(
            {
                "bucket": f"{k}/{pass_rate_scale}",
                "bucket_value": k / pass_rate_scale,
                "count": len(items),
                "predicted_mean": float(np.mean([p for p, _ in items])) if items else None,
                "measured_mean": float(np.mean([m for _, m in items])) if items else None,
            }
        )
    return table


def expected_calibration_error(table: list[dict[str, Any]]) -> float:
    total = sum(row["count"] for row in table)
    if not total:
        return math.nan
    return (
        sum(row["count"] * abs(row["predicted_mean"] - row["measured_mean"]) for row in table if row["count"]) / total
    )


def meta_awareness_metrics(rows: Sequence[dict[str, Any]], pass_rate_scale: int = 8) -> dict[str, Any]:
    """Compare per-problem predictions with measurements.

    Each row: `pred_pass_rate`, `pred_length` (None when no meta answer parsed), `measured_pass_rate`,
    `measured_length`, and optionally `correct_length_min` / `correct_length_max` (None without a correct sample),
    `meta_parsed` / `meta_samples` (counts).
    """
    rows = list(rows)
    samples = sum(int(r.get("meta_samples", 0)) for r in rows)
    parsed = sum(int(r.get("meta_parsed", 0)) for r in rows)
    with_pass = [r for r in rows if r.get("pred_pass_rate") is not None and r.get("measured_pass_rate") is not None]
    with_len = [r for r in rows if r.get("pred_length") is not None and r.get("measured_length") is not None]
    pred_p = _finite([r["pred_pass_rate"] for r in with_pass])
    meas_p = _finite([r["measured_pass_rate"] for r in with_pass])
    pred_l = _finite([r["pred_length"] for r in with_len])
    meas_l = _finite([r["measured_length"] for r in with_len])
    in_range = [
        r["correct_length_min"] <= r["pred_length"] <= r["correct_length_max"]
        for r in with_len
        if r.get("correct_length_min") is not None and r.get("correct_length_max") is not None
    ]
    table = calibration_table(pred_p, meas_p, pass_rate_scale)
    pass_rate = _errors(pred_p, meas_p) | {
        "brier": float(((pred_p - meas_p) ** 2).mean()) if len(pred_p) else math.nan,
        "ece": expected_calibration_error(table),
    }
    length = _errors(pred_l, meas_l) | {
        "mape": float((np.abs(pred_l - meas_l) / np.maximum(meas_l, 1.0)).mean()) if len(pred_l) else math.nan,
        "within_correct_range": float(np.mean(in_range)) if in_range else math.nan,
        "problems_with_correct_range": len(in_range),
    }
    return {
        "num_problems": len(rows),
        "num_with_prediction": len(with_pass),
        "meta_samples": samples,
        "meta_parse_rate": parsed / samples if samples else math.nan,
        "pass_rate": pass_rate,
        "length": length,
        "calibration": table,
    }


def aggregate_predictions(parsed: Sequence[Any]) -> dict[str, Any]:
    """Mean pass rate and length, and the notions ordered by frequency, over the parsed meta answers of a problem."""
    valid = [p for p in parsed if p is not None]
    notions = Counter(n.strip() for p in valid for n in (getattr(p, "notions", None) or []) if str(n).strip())
    lengths = [float(p.length) for p in valid if getattr(p, "length", None) is not None]
    rates = [float(p.pass_rate) for p in valid if getattr(p, "pass_rate", None) is not None]
    return {
        "pred_pass_rate": float(np.mean(rates)) if rates else None,
        "pred_length": float(np.mean(lengths)) if lengths else None,
        "notions": [n for n, _ in notions.most_common()],
        "meta_parsed": len(valid),
        "meta_samples": len(parsed),
    }


def plot_meta(rows: Sequence[dict[str, Any]], path: str | Path, *, title: str = "", pass_rate_scale: int = 8) -> Path:
    """Save a two-panel PNG: predicted vs measured pass rate (with bucket means), predicted vs measured length."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pass_rows = [r for r in rows if r.get("pred_pass_rate") is not None and r.get("measured_pass_rate") is not None]
    len_rows = [r for r in rows if r.get("pred_length") is not None and r.get("measured_length") is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4.5))
    if pass_rows:
        pred = [r["pred_pass_rate"] for r in pass_rows]
        meas = [r["measured_pass_rate"] for r in pass_rows]
        ax1.scatter(pred, meas, s=12, alpha=0.5, label="problems")
        table = [row for row in calibration_table(pred, meas, pass_rate_scale) if row["count"]]
        ax1.plot(
            [row["predicted_mean"] for row in table],
            [row["measured_mean"] for row in table],
            "o-",
            color="C3",
            label="bucket mean",
        )
    ax1.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
    ax1.set(xlim=(-0.05, 1.05), ylim=(-0.05, 1.05), xlabel="predicted pass rate", ylabel="measured pass rate")
    ax1.set_title("pass rate calibration")
    if pass_rows:
        ax1.legend(loc="upper left", fontsize=8)
    else:
        ax1.text(0.5, 0.5, "no parsed predictions", ha="center", va="center", transform=ax1.transAxes)
    if len_rows:
        pred = [max(r["pred_length"], 1.0) for r in len_rows]
        meas = [max(r["measured_length"], 1.0) for r in len_rows]
        ax2.scatter(pred, meas, s=12, alpha=0.5, color="C2")
        lo, hi = min(pred + meas), max(pred + meas)
        ax2.plot([lo, hi], [lo, hi], "--", color="gray", linewidth=1)
        if hi / lo > 20:
            ax2.set_xscale("log")
            ax2.set_yscale("log")
    ax2.set(xlabel="predicted length (tokens)", ylabel="measured mean length (tokens)")
    ax2.set_title("solution length")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def format_meta_markdown(name: str, metrics: dict[str, Any]) -> str:
    """A Markdown section with the correlation summary and the calibration table of one benchmark."""

    def f(value, digits=3):
        return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    p, ln = metrics["pass_rate"], metrics["length"]
    lines = [
        f"#### Meta-awareness: {name}",
        "",
        (
            f"Problems with a parsed prediction: {metrics['num_with_prediction']}/{metrics['num_problems']} "
            f"(meta answers parsed: {f(metrics['meta_parse_rate'] * 100 if metrics['meta_samples'] else None, 1)}%)"
        ),
        "",
        "| Target | Pearson | Spearman | MAE | Bias |",
        "|---|---|---|---|---|",
        f"| pass rate | {f(p['pearson'])} | {f(p['spearman'])} | {f(p['mae'])} | {f(p['bias'])} |",
        f"| length (tokens) | {f(ln['pearson'])} | {f(ln['spearman'])} | {f(ln['mae'], 1)} | {f(ln['bias'], 1)} |",
        "",
        (
            f"Predicted length within [shortest, longest] correct solution: {f(ln['within_correct_range'])} "
            f"({ln['problems_with_correct_range']} problems with a correct sample); pass-rate Brier {f(p['brier'])}, "
            f"ECE {f(p['ece'])}."
        ),
        "",
        "| Predicted bucket | Problems | Mean predicted | Mean measured |",
        "|---|---|---|---|",
    ]
    for row in metrics["calibration"]:
        lines.append(f"| {row['bucket']} | {row['count']} | {f(row['predicted_mean'])} | {f(row['measured_mean'])} |")
    return "\n".join(lines) + "\n"
