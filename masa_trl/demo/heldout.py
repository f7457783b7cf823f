"""Held-out evaluation of meta-awareness, and the callbacks that run it inside `MASAGRPOTrainer.train()`.

For every held-out problem the policy writes K solution samples and M meta samples at temperature 1, from the same
rendered prompts the trainer uses:

- **true pass rate**: the share of the K solutions that the project's answer reward
  ([`masa_trl.math_reward.math_accuracy_reward`], the trainer's correctness reward) scores 1; it is re-measured at
  every evaluation, because RL changes the solver too;
- **predicted pass rate**: the mean over the M meta samples that parse ([`masa_trl.meta.parse_meta_prediction`],
  strict JSON) of their predicted pass rate;
- **true length**: the mean token length (EOS included, as the trainer counts it) of the correct solutions;
  **predicted length**: the mean predicted `solution_length`.

[`HeldoutEvaluation.summary`] gives the Pearson and Spearman correlations and the mean absolute error between
predicted and true pass rate across problems, the held-out accuracy (mean true pass rate), the strict parse rate, the
length metrics, and two reference points: a constant predictor (the mean true pass rate) and the in-sample cell mean
(each problem predicted by the mean true pass rate of its difficulty cell), the ceiling for a predictor that only
knows the cell.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from masa_trl.meta import parse_meta_prediction
from masa_trl.meta_metrics import pearson


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _mean(values) -> float:
    values = _finite(values)
    return sum(values) / len(values) if values else math.nan


def _ranks(values: Sequence[float]) -> list[float]:
    """Ranks from 1, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman rank correlation (Pearson on average ranks); NaN when undefined."""
    return pearson(_ranks(xs), _ranks(ys)) if len(xs) >= 2 else math.nan


# The per-problem fields of `HeldoutEvaluation`, in problem order.
_PER_PROBLEM = ("true_pass_rate", "pred_pass_rate", "parse_rate", "pred_length", "true_length", "length_hits")


@dataclass
class HeldoutEvaluation:
    """Per-problem results of one held-out evaluation (NaN where a value is undefined, e.g. no meta sample parsed)."""

    problems: list[str]
    cells: list[tuple[int, int]]
    true_pass_rate: list[float]
    pred_pass_rate: list[float]
    parse_rate: list[float]
    pred_length: list[float]
    true_length: list[float]
    length_hits: list[float]  # per problem: share of parsed meta samples whose length lies in the correct range
    num_solution_samples: int
    num_meta_samples: int
    seconds: float = 0.0
    meta_examples: list[str] = field(default_factory=list)

    @classmethod
    def empty(cls, problems, cells, num_solution_samples: int, num_meta_samples: int, **kwargs) -> "HeldoutEvaluation":
        """An evaluation of `problems` with no per-problem result yet; evaluators append one value per problem."""
        return cls(
            problems=list(problems),
            cells=[tuple(cell) for cell in cells],
            **{name: [] for name in _PER_PROBLEM},
            num_solution_samples=num_solution_samples,
            num_meta_samples=num_meta_samples,
            **kwargs,
        )

    def summary(self) -> dict[str, float]:
        """Aggregate metrics (see the module docstring)."""
        pairs = [(p, t) for p, t in zip(self.pred_pass_rate, self.true_pass_rate, strict=True) if not math.isnan(p)]
        predicted, true = [p for p, _ in pairs], [t for _, t in pairs]
        accuracy = _mean(self.true_pass_rate)
        cell_true: dict[tuple[int, int], list[float]] = {}
        for cell, t in zip(self.cells, self.true_pass_rate, strict=True):
            cell_true.setdefault(cell, []).append(t)
        cell_mean = [_mean(cell_true[cell]) for cell in self.cells]
        length_pairs = [
            (p, t)
            for p, t in zip(self.pred_length, self.true_length, strict=True)
            if not (math.isnan(p) or math.isnan(t))
        ]
        return {
            "pearson": pearson(predicted, true),
            "spearman": spearman(predicted, true),
            "mae": _mean([abs(p - t) for p, t in pairs]),
            "accuracy": accuracy,
            "parse_rate": _mean(self.parse_rate),
            "pred_pass_rate": _mean(self.pred_pass_rate),
            "true_pass_rate": accuracy,
            "pred_length": _mean(self.pred_length),
            "true_length": _mean(self.true_length),
            "length_mae": _mean([abs(p - t) for p, t in length_pairs]),
            "length_hit_rate": _mean(self.length_hits),
            "constant_mae": _mean([abs(accuracy - t) for t in self.true_pass_rate]),
            "cell_mean_pearson": pearson(cell_mean, self.true_pass_rate),
            "cell_mean_mae": _mean([abs(c - t) for c, t in zip(cell_mean, self.true_pass_rate, strict=True)]),
            "num_problems": len(self.problems),
            "seconds": self.seconds,
        }

    def per_cell(self) -> list[dict]:
        """Mean predicted and true pass rate and length per difficulty cell, in cell order."""
        rows: dict[tuple[int, int], dict[str, list[float]]] = {}
        for i, cell in enumerate(self.cells):
            row = rows.setdefault(cell, {"pred": [], "true": [], "pred_len": [], "true_len": [], "parse": []})
            row["pred"].append(self.pred_pass_rate[i])
            row["true"].append(self.true_pass_rate[i])
            row["pred_len"].append(self.pred_length[i])
            row["true_len"].append(self.true_length[i])
            row["parse"].append(self.parse_rate[i])
        return [
            {
                "terms": cell[0],
                "digits": cell[1],
                "n": len(values["true"]),
                "pred_pass_rate": _mean(values["pred"]),
                "true_pass_rate": _mean(values["true"]),
                "pred_length": _mean(values["pred_len"]),
                "true_length": _mean(values["true_len"]),
                "parse_rate": _mean(values["parse"]),
            }
            for cell, values in sorted(rows.items(), key=lambda item: (item[0][1], item[0][0]))
        ]


def sample_completions(
    model,
    tokenizer,
    prompt_ids: list[list[int]],
    *,
    num_samples: int = 1,
    max_new_tokens: int,
    batch_rows: int = 1024,
    greedy: bool = False,
) -> list[list[int]]:
    """Sample `num_samples` completions per prompt at temperature 1 (top-p 1, no top-k), the trainer's sampling.

    A plain KV-cached decoding loop rather than `generate`, for speed on CPU: each prompt is encoded once and its
    cache repeated for its samples (prompts are longer than these completions), and rows that have written EOS leave
    the batch at once. Prompts are left-padded with explicit positions, as in TRL's generation. `greedy=True` takes
    the argmax instead (tests).

    Returns:
        `list[list[int]]`: prompt-major (the samples of prompt 0 first), the completion ids up to and including the
        first EOS (as TRL counts them), or `max_new_tokens` ids without EOS.
    """
    import torch
    from transformers import DynamicCache

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    completions: list[list[int] | None] = [None] * (len(prompt_ids) * num_samples)
    # Prompts of similar length together: less padding per chunk.
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    prompts_per_chunk = max(1, batch_rows // num_samples)
    for start in range(0, len(order), prompts_per_chunk):
        chunk = order[start : start + prompts_per_chunk]
        width = max(len(prompt_ids[i]) for i in chunk)
        input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, i in enumerate(chunk):
            ids = prompt_ids[i]
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention_mask[row, width - len(ids) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        with torch.no_grad():
            logits = model(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            ).logits[:, -1, :]
            if num_samples > 1:
                cache.batch_repeat_interleave(num_samples)
                logits = logits.repeat_interleave(num_samples, dim=0)
                attention_mask = attention_mask.repeat_interleave(num_samples, dim=0)
                position_ids = position_ids.repeat_interleave(num_samples, dim=0)
            num_rows = len(chunk) * num_samples
            output = torch.full((num_rows, max_new_tokens), pad, dtype=torch.long)
            lengths = torch.full((num_rows,), max_new_tokens, dtype=torch.long)
            active = torch.arange(num_rows)  # rows still decoding
            next_position = position_ids[:, -1] + 1
            for step in range(max_new_tokens):
                if greedy:
                    tokens = logits.argmax(-1)
                else:
                    # Inverse-CDF sampling: the same distribution as torch.multinomial, several times cheaper on CPU.
                    cdf = torch.softmax(logits.float(), dim=-1).cumsum(-1)
                    u = torch.rand(len(cdf), 1) * cdf[:, -1:]
                    tokens = torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.size(1) - 1)
                output[active, step] = tokens
                finished = tokens == eos
                lengths[active[finished]] = step + 1
                keep = ~finished
                if step == max_new_tokens - 1 or not keep.any():
                    break
                if not keep.all():
                    kept = keep.nonzero().squeeze(1)
                    cache.batch_select_indices(kept)
                    active, tokens = active[kept], tokens[kept]
                    attention_mask, next_position = attention_mask[kept], next_position[kept]
                attention_mask = torch.cat([attention_mask, attention_mask.new_ones((len(active), 1))], dim=1)
                logits = model(
                    input_ids=tokens.unsqueeze(1),
                    attention_mask=attention_mask,
                    position_ids=next_position.unsqueeze(1),
                    past_key_values=cache,
                    use_cache=True,
                ).logits[:, -1, :]
                next_position = next_position + 1
        for row in range(num_rows):
            i, sample = chunk[row // num_samples], row % num_samples
            completions[i * num_samples + sample] = output[row, : lengths[row]].tolist()
    return completions


def evaluate_heldout(
    model,
    tokenizer,
    problems: Sequence[str],
    answers: Sequence[str],
    cells: Sequence[tuple[int, int]],
    *,
    render_solution: Callable[[list[str]], list[list[int]]],
    render_meta: Callable[[list[str]], list[list[int]]],
    num_solution_samples: int = 32,
    num_meta_samples: int = 8,
    max_new_tokens: int = 48,
    pass_rate_scale: int = 8,
    seed: int = 0,
    num_examples: int = 3,
    sampler: Callable | None = None,
) -> HeldoutEvaluation:
    """Evaluate meta-awareness on held-out problems; see the module docstring for the definitions.

    The model is put in eval mode for the evaluation and back in its previous mode afterwards; sampling runs under a
    forked, seeded RNG, so an evaluation neither depends on nor disturbs the training RNG.

    Args:
        model: a causal LM (the trainer's policy).
        tokenizer: its tokenizer (EOS ends a completion).
        problems, answers, cells: the held-out problems, their gold answers and (terms, digits) cells.
        render_solution, render_meta: token ids of the rendered solution / meta prompts of a list of problems,
            identical to what the trainer generates from (e.g. [`~masa_trl.demo.warm_start.PromptRenderer`]).
        num_solution_samples (`int`): K solution samples per problem.
        num_meta_samples (`int`): M meta samples per problem.
        max_new_tokens (`int`): the trainer's `max_completion_length`.
        pass_rate_scale (`int`): the meta prompt's scale S.
        seed (`int`): seed of the sampling RNG.
        num_examples (`int`): how many raw meta outputs to keep for display.
        sampler (`Callable`, *optional*): replaces [`sample_completions`] (same signature), e.g. scripted outputs.
    """
    import torch

    from masa_trl.math_reward import math_accuracy_reward
    from masa_trl.rewards import length_reward

    start = time.perf_counter()
    sampler = sampler or sample_completions
    problems, answers = list(problems), list(answers)
    was_training = model.training
    model.eval()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            solution_ids = sampler(
                model,
                tokenizer,
                render_solution(problems),
                num_samples=num_solution_samples,
                max_new_tokens=max_new_tokens,
            )
            meta_ids = sampler(
                model, tokenizer, render_meta(problems), num_samples=num_meta_samples, max_new_tokens=max_new_tokens
            )
    finally:
        model.train(was_training)

    solution_texts = tokenizer.batch_decode(solution_ids, skip_special_tokens=True)
    scores = math_accuracy_reward(solution_texts, answer=[a for a in answers for _ in range(num_solution_samples)])
    meta_texts = tokenizer.batch_decode(meta_ids, skip_special_tokens=True)

    result = HeldoutEvaluation.empty(
        problems,
        cells,
        num_solution_samples,
        num_meta_samples,
        meta_examples=meta_texts[:: max(1, len(meta_texts) // max(1, num_examples))][:num_examples],
    )
    for i in range(len(problems)):
        k0, m0 = i * num_solution_samples, i * num_meta_samples
        correct = [s is not None and s >= 1.0 for s in scores[k0 : k0 + num_solution_samples]]
        correct_lengths = [
            len(ids) for ids, c in zip(solution_ids[k0 : k0 + num_solution_samples], correct, strict=True) if c
        ]
        predictions = [
            # The trainer's range with the demo's meta_min_length of 1: lengths 1..max_completion_length.
            parse_meta_prediction(text, pass_rate_scale=pass_rate_scale, max_length=max_new_tokens, min_length=1)
            for text in meta_texts[m0 : m0 + num_meta_samples]
        ]
        parsed = [p for p in predictions if p is not None]
        result.true_pass_rate.append(sum(correct) / num_solution_samples)
        result.pred_pass_rate.append(_mean([p.pass_rate for p in parsed]))
        result.parse_rate.append(len(parsed) / num_meta_samples)
        result.pred_length.append(_mean([p.length for p in parsed]))
        result.true_length.append(_mean(correct_lengths))
        result.length_hits.append(
            _mean([length_reward(p.length, correct_lengths) for p in parsed]) if correct_lengths else math.nan
        )
    result.seconds = time.perf_counter() - start
    return result
