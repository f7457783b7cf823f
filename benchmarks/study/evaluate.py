"""Held-out evaluation at one point of a run: accuracy, calibration, and what MASA-efficient's decisions would do.

For every held-out problem the policy writes K solution samples and M meta samples at temperature 1 from the prompts
the trainer uses ([`masa_trl.demo.heldout.sample_completions`], the demo's sampler). From them:

- **accuracy**: pass@1 is the share of correct samples; pass@k uses the unbiased estimator of Chen et al. (2021);
- **calibration**: predicted pass rate (mean parsed prediction / S) against the true one re-measured from the K
  samples, Pearson and MAE ([`masa_trl.demo.heldout.HeldoutEvaluation`]); predicted against true length per cell;
- **gating** (fig. 3b): the gate MASA-efficient would apply ([`masa_trl.efficient.gate_verdict`] on the M predictions)
  against the truth, "all K samples agree" (K = 16 by default, stricter than the G = 8 the trainer sees);
- **cutoff** (fig. 3c): the cap MASA-efficient would set ([`masa_trl.efficient.length_cap`]); a sample longer than its
  prompt's cap is one the cutoff would have stopped. The samples are generated without a cap, so each cut sample's
  finished version is at hand: cutoff precision is the share of them that end wrong. This measures the cutoff off the
  training path, with the policy's ordinary sampling, at every evaluation point, whatever the arm;
- **hinted accuracy** (arms trained with MASA-efficient's notion hints): pass@1 again from K samples, with each
  problem's solution prompt carrying the hint MASA-efficient would append ([`masa_trl.efficient.hint_notions`] of the
  M predictions; none where the gate would act), as the trainer builds it. Held-out prompts are otherwise plain, as
  in any evaluation; the pair tells a hint that misleads the solver from a policy that learnt to solve hinted
  prompts only;
- **task properties**: mean solution and meta lengths, wrong-minus-correct lengths (overall and within a problem),
  and for each notion of the task the share of problems where it would score (found in more correct than incorrect
  samples, [`masa_trl.rewards.notion_reward`]).

Prompts of gated problems keep being evaluated normally: the evaluation measures what the gate would decide, it does
not act on it.
"""

import math
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

from masa_trl.demo.heldout import HeldoutEvaluation, sample_completions
from masa_trl.efficient import gate_verdict, hint_notions, length_cap
from masa_trl.meta import parse_meta_prediction
from masa_trl.rewards import notion_reward
from masa_trl.templates import add_notion_hint

from .stats import gating_confusion, pass_at_k
from .task import ChainTask


PASS_AT_K = (1, 2, 4, 8, 16)


def _mean(values) -> float:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.fmean(values) if values else math.nan


def evaluate_point(
    model,
    tokenizer,
    task: ChainTask,
    problems: Sequence[str],
    *,
    render_solution: Callable[[list[str]], list[list[int]]],
    render_meta: Callable[[list[str]], list[list[int]]],
    max_new_tokens: int,
    num_solution_samples: int = 16,
    num_meta_samples: int = 8,
    pass_rate_scale: int = 8,
    gating_std_threshold: float = 0.1,
    cutoff_factor: float = 2.0,
    seed: int = 0,
    with_meta: bool = True,
    notion_hint_size: int = 0,
    sampler: Callable = sample_completions,
) -> dict:
    """Evaluate `model` on `problems`; returns a flat dict of metrics plus `per_cell` (see the module docstring).

    Args:
        with_meta: sample and score meta predictions (False for GRPO arms, whose policy is never asked for them; the
            calibration, gating and cutoff entries are then None).
        notion_hint_size: the trainer's `notion_hint_max_notions` for an arm trained with hints (0: no hinted
            evaluation; `accuracy_hinted`, `hinted_share` and `hint_gain` are then None).
        sampler: replaces [`~masa_trl.demo.heldout.sample_completions`] (tests script outputs with it).
    """

    start = time.perf_counter()
    problems = list(problems)
    K, M = num_solution_samples, num_meta_samples
    if notion_hint_size and not task.solution_template.endswith("{problem}"):
        # The hint is appended to the problem before rendering; the trainer appends it to the whole prompt.
        raise ValueError("A hinted evaluation needs a solution template that ends with {problem}.")
    with _sampling(model, seed):
        solution_ids = sampler(
            model, tokenizer, render_solution(problems), num_samples=K, max_new_tokens=max_new_tokens
        )
        meta_ids = (
            sampler(model, tokenizer, render_meta(problems), num_samples=M, max_new_tokens=max_new_tokens)
            if with_meta
            else None
        )

    texts = tokenizer.batch_decode(solution_ids, skip_special_tokens=True)
    correct_all = _correct(task, problems, texts, K)
    meta_texts = tokenizer.batch_decode(meta_ids, skip_special_tokens=True) if with_meta else None

    evaluation = HeldoutEvaluation.empty(
        problems, [(task.cell_of(p).terms, task.cell_of(p).digits) for p in problems], K, M
    )
    hints = []
    gated, zero_variance, cut, cut_wrong, cut_candidates, correct_cut = [], [], 0, 0, 0, 0
    within_gaps, notion_hits, meta_notion = [], {n: [] for n in task.notions}, []
    for i, problem in enumerate(problems):
        ids = solution_ids[i * K : (i + 1) * K]
        correct = correct_all[i * K : (i + 1) * K]
        lengths = [len(x) for x in ids]
        right = [n for n, c in zip(lengths, correct, strict=True) if c]
        wrong = [n for n, c in zip(lengths, correct, strict=True) if not c]
        if right and wrong:
            within_gaps.append(statistics.fmean(wrong) - statistics.fmean(right))
        solutions = texts[i * K : (i + 1) * K]
        for notion in task.notions:
            notion_hits[notion].append(notion_reward([notion], solutions, correct, problem))
        evaluation.true_pass_rate.append(sum(correct) / K)
        evaluation.true_length.append(statistics.fmean(right) if right else math.nan)
        if not with_meta:
            continue
        predictions = [
            parse_meta_prediction(t, pass_rate_scale=pass_rate_scale, max_length=max_new_tokens, min_length=1)
            for t in meta_texts[i * M : (i + 1) * M]
        ]
        parsed = [p for p in predictions if p is not None]
        evaluation.pred_pass_rate.append(_mean([p.pass_rate for p in parsed]))  # a fraction of S
        evaluation.parse_rate.append(len(parsed) / M)
        evaluation.pred_length.append(_mean([p.length for p in parsed]))
        evaluation.length_hits.append(math.nan)
        meta_notion.extend(notion_reward(p.notions, solutions, correct, problem) for p in parsed)
        verdict = gate_verdict(predictions, pass_rate_scale, gating_std_threshold)
        if notion_hint_size:  # as `plan_prompts` does: a prompt the gate would take is never hinted
            hints.append(hint_notions(predictions, notion_hint_size) if verdict is None else ())
        gated.append(verdict is not None)
        zero_variance.append(sum(correct) in (0, K))
        if verdict is None:
            cap = length_cap(predictions, cutoff_factor, max_new_tokens)
            cut_candidates += K
            if cap is not None:
                for n, c in zip(lengths, correct, strict=True):
                    if n > cap:  # a capped rollout of this sample would have stopped before it ended
                        cut += 1
                        cut_wrong += not c
                        correct_cut += c

    all_lengths = [len(x) for x in solution_ids]
    metrics: dict = {
        "accuracy": _mean(evaluation.true_pass_rate),
        "pass_at_k": {
            str(k): _mean([pass_at_k(K, round(t * K), k) for t in evaluation.true_pass_rate])
            for k in PASS_AT_K
            if k <= K
        },
        "zero_variance_share": _mean([t in (0.0, 1.0) for t in evaluation.true_pass_rate]),
        "zero_variance_trivial": _mean([t == 1.0 for t in evaluation.true_pass_rate]),
        "zero_variance_unsolvable": _mean([t == 0.0 for t in evaluation.true_pass_rate]),
        "solution_length_mean": statistics.fmean(all_lengths),
        "wrong_minus_correct_length_overall": _mean(
            [n for n, c in zip(all_lengths, correct_all, strict=True) if not c]
        )
        - _mean([n for n, c in zip(all_lengths, correct_all, strict=True) if c]),
        "wrong_minus_correct_length_within_problem": _mean(within_gaps),
        "notion_score_share": {n: _mean(v) for n, v in notion_hits.items()},
        "seconds": 0.0,
    }
    if with_meta:
        summary = evaluation.summary()
        confusion = gating_confusion(gated, zero_variance)
        metrics |= {
            "pearson": summary["pearson"],
            "mae": summary["mae"],
            "parse_rate": summary["parse_rate"],
            "pred_length": summary["pred_length"],
            "true_length": summary["true_length"],
            "length_mae": summary["length_mae"],
            "meta_length_mean": statistics.fmean(len(x) for x in meta_ids),
            "meta_notion_reward_mean": _mean(meta_notion),
            "gated_share": _mean(gated),
            "gating_precision": confusion["precision"],
            "gating_recall": confusion["recall"],
            "gating_f1": confusion["f1"],
            "cutoff_share": cut / cut_candidates if cut_candidates else math.nan,
            "cutoff_precision": cut_wrong / cut if cut else math.nan,
            "cutoff_num_cut": cut,
            "cutoff_correct_lost": correct_cut / max(1, sum(correct_all)),
        }
    else:
        evaluation.pred_pass_rate = evaluation.pred_length = [math.nan] * len(problems)
        evaluation.parse_rate = evaluation.length_hits = [math.nan] * len(problems)
        for key in ("pearson", "mae", "parse_rate", "pred_length", "length_mae", "meta_length_mean"):
            metrics[key] = None
        metrics["true_length"] = _mean(evaluation.true_length)
        for key in ("meta_notion_reward_mean", "gated_share", "gating_precision", "gating_recall", "gating_f1"):
            metrics[key] = None
        metrics |= {"cutoff_share": None, "cutoff_precision": None, "cutoff_num_cut": None}
        metrics["cutoff_correct_lost"] = None
    # pass@1 again with MASA-efficient's hints in the solution prompts (plain where it gives none: gated, no notion);
    # hint_gain is the paired difference, hinted minus plain, over the problems that got a hint.
    metrics |= {"accuracy_hinted": None, "hinted_share": None, "hint_gain": None}
    if hints and not any(hints):  # asked, but no prediction named a notion: every prompt is the plain one
        metrics |= {"accuracy_hinted": metrics["accuracy"], "hinted_share": 0.0}
    elif hints:
        hinted = [add_notion_hint(p, h) if h else p for p, h in zip(problems, hints, strict=True)]
        with _sampling(model, seed + 1):
            ids = sampler(model, tokenizer, render_solution(hinted), num_samples=K, max_new_tokens=max_new_tokens)
        correct = _correct(task, problems, tokenizer.batch_decode(ids, skip_special_tokens=True), K)
        rates = [sum(correct[i * K : (i + 1) * K]) / K for i in range(len(problems))]
        with_hint = [i for i, h in enumerate(hints) if h]
        metrics |= {
            "accuracy_hinted": _mean(rates),
            "hinted_share": len(with_hint) / len(problems),
            "hint_gain": _mean([rates[i] - evaluation.true_pass_rate[i] for i in with_hint]),
        }
    metrics["per_cell"] = _per_cell(task, problems, evaluation, solution_ids, K)
    metrics["seconds"] = time.perf_counter() - start
    return metrics


@contextmanager
def _sampling(model, seed: int):
    """Eval mode and a forked, seeded RNG: an evaluation neither depends on nor disturbs the training RNG."""
    import torch

    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        model.train(was_training)


def _correct(task: ChainTask, problems: Sequence[str], texts: list[str], K: int) -> list[bool]:
    """Whether each of the K samples per problem (in problem order) boxes the right answer."""
    from masa_trl.math_reward import math_accuracy_reward

    scores = math_accuracy_reward(texts, answer=[task.answer(p) for p in problems for _ in range(K)])
    return [s is not None and s >= 1.0 for s in scores]


def _per_cell(task: ChainTask, problems, evaluation: HeldoutEvaluation, solution_ids, K: int) -> list[dict]:
    rows: dict = {}
    for i, problem in enumerate(problems):
        cell = task.cell_of(problem)
        row = rows.setdefault(cell, {"pred": [], "true": [], "pred_len": [], "true_len": [], "len": [], "p8": []})
        row["pred"].append(evaluation.pred_pass_rate[i])
        row["true"].append(evaluation.true_pass_rate[i])
        row["pred_len"].append(evaluation.pred_length[i])
        row["true_len"].append(evaluation.true_length[i])
        row["len"].extend(len(x) for x in solution_ids[i * K : (i + 1) * K])
        row["p8"].append(pass_at_k(K, round(evaluation.true_pass_rate[i] * K), min(8, K)))
    return [
        {
            "cell": cell.name,
            "n": len(values["true"]),
            "pred_pass_rate": _mean(values["pred"]),
            "true_pass_rate": _mean(values["true"]),
            "pass_at_8": _mean(values["p8"]),
            "pred_length": _mean(values["pred_len"]),
            "true_length": _mean(values["true_len"]),
            "solution_length": _mean(values["len"]),
        }
        for cell, values in ((c, rows[c]) for c in task.cells if c in rows)
    ]
