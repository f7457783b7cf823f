"""The study's statistics: seed means and bootstrap intervals, cost to reach an accuracy, accuracy at equal cost.

A run is a dict `{"points": [{"<axis>": cost, "accuracy": acc, ...}, ...]}`: its evaluation points in order, the
first one at the start of training, with one cost per axis (tokens, FLOPs, seconds, ...). The comparisons between an
arm and the baseline work on these curves, interpolated linearly between evaluation points and never extrapolated
beyond a run's last point. Intervals are percentile bootstraps over runs (seeds), taken outwards (lower and higher
order statistics, no interpolation) so that they stay exact when some resamples are infinite.

>>> cost_to_reach([0, 10, 20], [0.2, 0.4, 0.6], 0.5)
15.0
>>> pass_at_k(num_samples=4, num_correct=1, k=2)
0.5
"""

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np


# Accuracies are fractions of a few hundred problems: a mean of equal finals may exceed them by one rounding error.
_ACCURACY_TOLERANCE = 1e-9


def _finite(values: Sequence[float], name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    array = array[~np.isnan(array)]
    if array.size == 0:
        raise ValueError(f"{name} is empty once NaNs are skipped; pass at least one number.")
    return array


def _percentile_interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence={confidence} must lie strictly between 0 and 1, e.g. 0.95.")
    alpha = (1 - confidence) / 2
    # Order statistics rather than interpolation: inf - inf would turn an interval with infinite resamples into NaN.
    return float(np.quantile(samples, alpha, method="lower")), float(np.quantile(samples, 1 - alpha, method="higher"))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0.0 for one value) of `values` (one per run), NaNs skipped."""
    array = _finite(values, "values")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def bootstrap_ci(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over `values` (one per seed), NaNs skipped.

    Args:
        values: one number per run.
        statistic: maps a 1-D array to a number.
        num_resamples: bootstrap resamples, each of `len(values)` draws with replacement.
        confidence: the interval's coverage.
        seed: the resampling generator's seed; the same seed gives the same interval.
    """
    array = _finite(values, "values")
    if num_resamples < 1:
        raise ValueError(f"num_resamples={num_resamples} must be at least 1.")
    if array.size == 1:
        value = float(statistic(array))
        return value, value
    indices = np.random.default_rng(seed).integers(0, array.size, size=(num_resamples, array.size))
    samples = np.array([statistic(array[row]) for row in indices], dtype=np.float64)
    return _percentile_interval(samples, confidence)


def _curve(costs: Sequence[float], accuracies: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    costs, accuracies = np.asarray(costs, dtype=np.float64), np.asarray(accuracies, dtype=np.float64)
    if costs.ndim != 1 or costs.shape != accuracies.shape or costs.size == 0:
        raise ValueError(
            f"Got costs of shape {costs.shape} and accuracies of {accuracies.shape}; pass one of each per point."
        )
    if not (np.all(np.isfinite(costs)) and np.all(np.isfinite(accuracies))):
        raise ValueError("costs and accuracies must be finite; drop the evaluation points that lack a value.")
    if np.any(np.diff(costs) <= 0):
        raise ValueError(f"costs must be strictly increasing, got {costs.tolist()}; drop duplicate points.")
    return costs, accuracies


def cost_to_reach(costs: Sequence[float], accuracies: Sequence[float], target: float) -> float:
    """The cost at which a run's accuracy first reaches `target`, linearly interpolated between evaluation points.

    Args:
        costs: the run's cost at each evaluation point, strictly increasing, the first at the start.
        accuracies: the accuracy at each point.
        target: the accuracy to reach; the first point's cost is returned if the start reaches it, inf if no point.
    """
    costs, accuracies = _curve(costs, accuracies)
    reached = np.flatnonzero(accuracies >= target - _ACCURACY_TOLERANCE)
    if reached.size == 0:
        return math.inf
    k = int(reached[0])
    if k == 0:
        return float(costs[0])
    fraction = min(1.0, max(0.0, (target - accuracies[k - 1]) / (accuracies[k] - accuracies[k - 1])))
    return float(costs[k - 1] + fraction * (costs[k] - costs[k - 1]))


def accuracy_at_cost(costs: Sequence[float], accuracies: Sequence[float], cost: float) -> float:
    """A run's accuracy at `cost`, linearly interpolated between its evaluation points.

    Args:
        costs: the run's cost at each evaluation point, strictly increasing.
        accuracies: the accuracy at each point.
        cost: where to read the curve; below the first cost gives the first accuracy, beyond the last one NaN (the
            run never got there, and curves are not extrapolated).
    """
    costs, accuracies = _curve(costs, accuracies)
    if cost > costs[-1]:
        return math.nan
    return float(np.interp(cost, costs, accuracies))


def _curves(arm_runs: Sequence[dict], baseline_runs: Sequence[dict], axis: str) -> tuple[list, list]:
    if not arm_runs or not baseline_runs:
        raise ValueError(
            f"Got {len(arm_runs)} arm runs and {len(baseline_runs)} baseline runs; pass at least one each."
        )
    try:
        return tuple([([p[axis] for p in r["points"]], [p["accuracy"] for p in r["points"]]) for r in runs]
                     for runs in (arm_runs, baseline_runs))  # fmt: skip
    except KeyError as error:
        raise ValueError(
            f"A run lacks {error}; every run needs 'points', each with '{axis}' and 'accuracy'."
        ) from None


def _resampled_means(values: np.ndarray, rng: np.random.Generator, num_resamples: int) -> np.ndarray:
    return values[rng.integers(0, values.size, size=(num_resamples, values.size))].mean(axis=1)


def cost_ratio(
    arm_runs: Sequence[dict],
    baseline_runs: Sequence[dict],
    *,
    axis: str,
    target: float | None = None,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """How much of `axis` the arm spends to reach an accuracy, relative to the baseline: mean(arm) / mean(baseline).

    The bootstrap resamples arm runs and baseline runs independently, with replacement, and recomputes the ratio of
    means; a resample holding an arm run that never reaches the target has an infinite mean, hence ratio, which the
    outward percentiles keep. If no arm run reaches the target, the ratio and both bounds are inf. If a baseline run
    never reaches it (the default target, a mean, can lie above a seed's curve), the baseline cost is undefined: the
    ratio, its interval and the per-seed ratios are NaN and a warning names a target every baseline run reaches.

    Args:
        arm_runs, baseline_runs: runs as described in the module docstring.
        axis: the cost key of the points.
        target: the accuracy to reach; defaults to the mean final accuracy of the baseline runs.
        num_resamples, confidence, seed: see [`bootstrap_ci`].

    Returns:
        `dict` with `target`, `arm_costs` and `baseline_costs` (per run, inf when never reached), `ratio`, `ratio_ci`,
        `reached` and `baseline_reached` (runs that reach the target), and `per_seed_ratios` (each arm run's cost over
        the baseline mean cost) with their `per_seed_ratio_mean` and `per_seed_ratio_std` (NaN when one is inf).
    """
    arm_curves, baseline_curves = _curves(arm_runs, baseline_runs, axis)
    if target is None:
        target = float(np.mean([accuracies[-1] for _, accuracies in baseline_curves]))
    arm_costs = np.array([cost_to_reach(c, a, target) for c, a in arm_curves])
    baseline_costs = np.array([cost_to_reach(c, a, target) for c, a in baseline_curves])
    result = {
        "target": float(target),
        "arm_costs": arm_costs.tolist(),
        "baseline_costs": baseline_costs.tolist(),
        "reached": int(np.isfinite(arm_costs).sum()),
        "baseline_reached": int(np.isfinite(baseline_costs).sum()),
    }
    baseline_mean = baseline_costs.mean()
    if not 0 < baseline_mean < math.inf:
        lowest_best = min(max(accuracies) for _, accuracies in baseline_curves)
        warnings.warn(
            f"The baseline's mean {axis} to reach accuracy {target:.4g} is {baseline_mean} "
            f"({result['baseline_reached']} of {len(baseline_runs)} runs reach it), so the cost ratio is undefined; "
            f"pass a target every baseline run reaches after its start, e.g. target={lowest_best:.4g} (the lowest "
            "best accuracy among them).",
            stacklevel=2,
        )
        nan = math.nan
        return result | {"ratio": nan, "ratio_ci": (nan, nan), "per_seed_ratios": [nan] * len(arm_costs),
                         "per_seed_ratio_mean": nan, "per_seed_ratio_std": nan}  # fmt: skip
    rng = np.random.default_rng(seed)
    arm_means, baseline_means = (_resampled_means(c, rng, num_resamples) for c in (arm_costs, baseline_costs))
    with np.errstate(divide="ignore", invalid="ignore"):
        # A resample of only baseline runs that start at the target has mean cost 0: its ratio is inf (or NaN).
        resampled_ratios = arm_means / baseline_means
    per_seed = arm_costs / baseline_mean
    finite = bool(np.all(np.isfinite(per_seed)))
    return result | {
        "ratio": float(arm_costs.mean() / baseline_mean),
        "ratio_ci": _percentile_interval(resampled_ratios, confidence),
        "per_seed_ratios": per_seed.tolist(),
        "per_seed_ratio_mean": float(per_seed.mean()),
        "per_seed_ratio_std": (float(per_seed.std(ddof=1)) if per_seed.size > 1 else 0.0) if finite else math.nan,
    }


def accuracy_difference_at_equal_cost(
    arm_runs: Sequence[dict],
    baseline_runs: Sequence[dict],
    *,
    axis: str,
    cost: float | None = None,
    num_resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict:
    """The arm's accuracy minus the baseline's at the same cost, with a bootstrap interval of the difference of means.

    Runs whose last point lies below `cost` have no accuracy there (NaN, never extrapolated) and are left out of the
    means and the interval; the dict counts them. If every run of a group is left out, the difference and its
    interval are NaN and a warning says so.

    Args:
        arm_runs, baseline_runs: runs as described in the module docstring.
        axis: the cost key of the points.
        cost: where to compare; defaults to the mean final cost of the baseline runs on `axis`.
        num_resamples, confidence, seed: see [`bootstrap_ci`]; arm and baseline runs are resampled independently.

    Returns:
        `dict` with `cost`, `arm_accuracies` and `baseline_accuracies` (per run, NaN when missing), `difference`,
        `difference_ci`, `arm_mean`, `arm_std`, `baseline_mean`, `baseline_std`, `arm_missing`, `baseline_missing`
        and `note`.
    """
    arm_curves, baseline_curves = _curves(arm_runs, baseline_runs, axis)
    if cost is None:
        cost = float(np.mean([costs[-1] for costs, _ in baseline_curves]))
    result = {"cost": float(cost)}
    valid = {}
    for name, curves in (("arm", arm_curves), ("baseline", baseline_curves)):
        accuracies = np.array([accuracy_at_cost(c, a, cost) for c, a in curves])
        valid[name] = accuracies[~np.isnan(accuracies)]
        result[f"{name}_accuracies"] = accuracies.tolist()
        result[f"{name}_missing"] = int(np.isnan(accuracies).sum())
        result[f"{name}_mean"], result[f"{name}_std"] = mean_std(accuracies) if valid[name].size else (math.nan,) * 2
        if not valid[name].size:
            longest = max(c[-1] for c, _ in curves)
            warnings.warn(
                f"No {name} run reaches {axis}={cost:.6g} (the longest stops at {longest:.6g}), so the accuracy "
                "difference is undefined; pass a cost every compared run reaches.",
                stacklevel=2,
            )
    result["note"] = "runs whose last point lies below `cost` have NaN accuracy and are excluded from means and the CI"
    if not (valid["arm"].size and valid["baseline"].size):
        return result | {"difference": math.nan, "difference_ci": (math.nan, math.nan)}
    rng = np.random.default_rng(seed)
    arm_means, baseline_means = (_resampled_means(valid[k], rng, num_resamples) for k in ("arm", "baseline"))
    return result | {
        "difference": result["arm_mean"] - result["baseline_mean"],
        "difference_ci": _percentile_interval(arm_means - baseline_means, confidence),
    }


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. 2021: 1 - C(n - c, k) / C(n, k), computed as a product to stay stable.

    Args:
        num_samples: n, the samples drawn for the problem.
        num_correct: c, how many of them are correct.
        k: the budget, at most n.
    """
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"num_correct={num_correct} must lie between 0 and num_samples={num_samples}.")
    if not 1 <= k <= num_samples:
        raise ValueError(f"k={k} must lie between 1 and num_samples={num_samples}; draw at least k samples.")
    if num_samples - num_correct < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(num_samples - num_correct + 1, num_samples + 1)))


def gating_confusion(predicted_gated: Sequence[bool], truly_zero_variance: Sequence[bool]) -> dict:
    """Confusion counts of the gate (positive = gated) against the truth (positive = all G rewards equal).

    Args:
        predicted_gated: per prompt, whether the gate skipped its solution rollouts.
        truly_zero_variance: per prompt, whether its rollouts' rewards all turned out equal.

    Returns:
        `dict` with `tp`, `fp`, `fn`, `tn`, `precision` (NaN without predicted positives), `recall` (NaN without
        true positives) and `f1` = 2 tp / (2 tp + fp + fn) (NaN without any positive).
    """
    predicted, truth = np.asarray(predicted_gated, dtype=bool), np.asarray(truly_zero_variance, dtype=bool)
    if predicted.ndim != 1 or predicted.shape != truth.shape:
        raise ValueError(f"Got {predicted.shape} predictions and {truth.shape} truths; pass one of each per prompt.")
    tp, fp = int(np.sum(predicted & truth)), int(np.sum(predicted & ~truth))
    fn, tn = int(np.sum(~predicted & truth)), int(np.sum(~predicted & ~truth))
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return dict(tp=tp, fp=fp, fn=fn, tn=tn, precision=precision, recall=recall, f1=f1)
