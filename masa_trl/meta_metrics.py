"""Meta-awareness metrics of a generation batch: how well the meta predictions match the solution rollouts."""

import math
from collections.abc import Sequence

from masa_trl.meta import MetaPrediction
from masa_trl.rewards import SolutionStats


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def pearson(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Pearson correlation; NaN when fewer than two points or when either side is constant."""
    if len(xs) < 2:
        return math.nan
    mx, my = _mean(xs), _mean(ys)
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return math.nan
    return sxy / math.sqrt(sxx * syy)


def meta_alignment_metrics(
    predictions: Sequence[MetaPrediction | None],
    prompt_index: Sequence[int],
    solution_stats: Sequence[SolutionStats | None],
) -> dict[str, float]:
    """Summarise a batch of meta rollouts against their prompts' solution statistics.

    Args:
        predictions (`Sequence[MetaPrediction | None]`):
            Parsed meta rollouts of the whole batch (all processes); `None` for unparsable ones.
        prompt_index (`Sequence[int]`):
            For each meta rollout, the index of its prompt in `solution_stats`.
        solution_stats (`Sequence[SolutionStats | None]`):
            Per prompt, the statistics of its solution rollouts (`None` when the prompt could not be scored).

    Returns:
        `dict[str, float]`: metric name (without the `meta/` prefix) to value; NaN where undefined (e.g. the
        correlation of a batch with a single prompt), which TRL's logger drops.
    """
    parsed = [(p, solution_stats[i], i) for p, i in zip(predictions, prompt_index, strict=True) if p is not None]
    scored = [(p, s, i) for p, s, i in parsed if s is not None]

    per_prompt_predictions: dict[int, list[float]] = {}
    for p, _, i in scored:
        per_prompt_predictions.setdefault(i, []).append(p.pass_rate)
    prompts = sorted(per_prompt_predictions)
    predicted = [_mean(per_prompt_predictions[i]) for i in prompts]
    true = [solution_stats[i].pass_rate for i in prompts]

    scorable_stats = [s for s in solution_stats if s is not None]
    correct_lengths = [_mean(s.correct_lengths) for s in scorable_stats if s.correct_lengths]
    return {
        "parse_failure_rate": 1.0 - len(parsed) / len(predictions) if predictions else math.nan,
        "pred_pass_rate": _mean([p.pass_rate for p, _, _ in parsed]),
        "true_pass_rate": _mean([s.pass_rate for s in scorable_stats]),
        "pass_rate_abs_error": _mean([abs(p.pass_rate - s.pass_rate) for p, s, _ in scored]),
        "pass_rate_correlation": pearson(predicted, true),
        "pred_length": _mean([p.length for p, _, _ in parsed]),
        "true_correct_length": _mean(correct_lengths),
        "num_notions": _mean([len(p.notions) for p, _, _ in parsed]),
    }
