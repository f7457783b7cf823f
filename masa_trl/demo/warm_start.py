"""Supervised warm start of the demo model, cached on disk by a hash of its settings.

MASA needs a policy that already writes `\\boxed{N}` answers that are sometimes right and a parsable meta JSON. The
warm start teaches both with plain next-token cross-entropy on the rendered chat prompts the trainer will use
([`masa_trl.demo.task`]), so that RL starts on-distribution:

- solution batches: `\\boxed{sum}` for problems drawn uniformly over the difficulty cells;
- meta batches (a `meta_fraction` of the steps): a meta JSON whose pass rate, length and notions are random, so the
  meta predictor starts without any knowledge of difficulty (held-out Pearson about 0) and MASA has to learn it.

Each batch holds one kind of row, which keeps padding low. Problems are drawn from the whole task distribution,
held-out problems included: the small cells (81 problems with two 1-digit terms) are memorised whatever one does,
and leaving the held-out problems out would make them harder than the training ones, which biases the held-out
calibration (prototype notes). RL never sees a held-out problem.

Another task plugs in through the [`WarmStartTask`] interface (the study in `benchmarks/study/` does); the demo's is
[`SumTask`].

The result is saved as a Hub-style directory `cache_dir/warm-start-<hash>/` with a `warm_start.json` record; a later
run with the same settings loads it instead of training.
"""

import json
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from masa_trl.arithmetic import SUM_CELLS, sum_problem
from masa_trl.demo.task import (
    META_TEMPLATE,
    NOTIONS,
    SOLUTION_TEMPLATE,
    DemoModelSpec,
    build_demo_model,
    random_meta_target,
    settings_digest,
    solution_target,
    tokenizer_corpus,
)


# Bump when the training code changes what a given configuration produces, so that stale caches are not reused.
WARM_START_VERSION = 1
RECORD_FILE = "warm_start.json"


class WarmStartTask(Protocol):
    """What the warm start needs from a task: its two templates, a tokenizer corpus and supervised examples."""

    solution_template: str
    meta_template: str

    def settings(self) -> dict:
        """Everything that changes the examples (it enters the cache key)."""

    def corpus(self, seed: int) -> list[str]:
        """Lines in the task's formats, for the tokenizer's BPE merges."""

    def solution_example(self, rng: random.Random) -> tuple[str, str]:
        """`(problem, target)`: the `{problem}` of the solution template and the supervised solution."""

    def meta_example(self, rng: random.Random, config: "WarmStartConfig") -> tuple[str, str]:
        """`(problem, target)`: the `{problem}` of the meta template and a meta target."""


class SumTask:
    """The demo's task (see [`masa_trl.demo.task`]): compact sums, bare boxed answers, uninformative meta targets."""

    solution_template = SOLUTION_TEMPLATE
    meta_template = META_TEMPLATE

    def settings(self) -> dict:
        return {
            "solution_template": SOLUTION_TEMPLATE,
            "meta_template": META_TEMPLATE,
            "notions": list(NOTIONS),
            "cells": [list(cell) for cell in SUM_CELLS],
        }

    def corpus(self, seed: int) -> list[str]:
        return tokenizer_corpus(seed=seed)

    def solution_example(self, rng: random.Random) -> tuple[str, str]:
        problem, answer = sum_problem(rng, *rng.choice(SUM_CELLS))
        return problem, solution_target(answer)

    def meta_example(self, rng: random.Random, config: "WarmStartConfig") -> tuple[str, str]:
        problem, _ = sum_problem(rng, *rng.choice(SUM_CELLS))
        low, high = config.meta_length_range
        return problem, random_meta_target(
            rng, pass_rate_scale=config.pass_rate_scale, min_length=low, max_length=high
        )


@dataclass(frozen=True)
class WarmStartConfig:
    """Settings of the supervised warm start; all of them except `max_seconds` enter the cache key.

    The defaults are the prototype's (about 3 minutes on 2 idle cores): batch 64, AdamW at 3e-3 with 5% linear
    warm-up and a cosine decay to 10%, weight decay 0.01, 15% meta batches.
    """

    steps: int = 1100
    batch_size: int = 64
    learning_rate: float = 3e-3
    warmup_ratio: float = 0.05
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    meta_fraction: float = 0.15
    pass_rate_scale: int = 8
    # Range of the random solution_length in meta targets: the lengths a bare answer can have (a 1-digit answer is 6
    # tokens with EOS, a 3-digit one 8), widened on both sides; it carries no information about a given problem.
    meta_length_range: tuple[int, int] = (4, 16)
    seed: int = 0
    model: DemoModelSpec = field(default_factory=DemoModelSpec)
    # A time guard for slow machines, not part of the cache key: training stops early when it is reached, and the
    # record says how many steps were done.
    max_seconds: float | None = None

    def cache_settings(self, task: WarmStartTask | None = None) -> dict:
        settings = asdict(self)
        settings.pop("max_seconds")
        settings["task"] = (task or SumTask()).settings()
        settings["version"] = WARM_START_VERSION
        return settings

    def cache_key(self, task: WarmStartTask | None = None) -> str:
        return settings_digest(self.cache_settings(task))


class PromptRenderer:
    """Renders one-message chat prompts through the tokenizer's own chat template, then tokenizes them in a batch.

    The template is rendered once around a placeholder, so the text is exactly what `apply_chat_template` gives
    (checked on construction), at the cost of a string format per prompt.
    """

    _PLACEHOLDER = "\x00"

    def __init__(self, tokenizer, template: str):
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": self._PLACEHOLDER}], tokenize=False, add_generation_prompt=True
        )
        if rendered.count(self._PLACEHOLDER) != 1:
            raise ValueError("The chat template does not insert the user message verbatim; cannot render prompts.")
        self.prefix, self.suffix = rendered.split(self._PLACEHOLDER)
        self.tokenizer = tokenizer
        self.template = template
        sample = template.format(problem="12+3")
        expected = tokenizer.apply_chat_template(
            [{"role": "user", "content": sample}], tokenize=True, add_generation_prompt=True, return_dict=True
        )["input_ids"]
        if self(["12+3"])[0] != list(expected):
            raise ValueError("Rendering the chat template by hand does not reproduce apply_chat_template.")

    def __call__(self, problems: list[str]) -> list[list[int]]:
        texts = [f"{self.prefix}{self.template.format(problem=p)}{self.suffix}" for p in problems]
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"]


def _lr_lambda(config: WarmStartConfig):
    warmup = max(1, round(config.warmup_ratio * config.steps))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, config.steps - warmup))
        return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def _batch(
    rng: random.Random, config: WarmStartConfig, task: WarmStartTask, renderers: dict, tokenizer, is_meta: bool
):
    """Input ids, attention mask and labels (-100 on prompt and padding) for one batch of one kind of row."""
    import torch

    problems, targets = [], []
    for _ in range(config.batch_size):
        problem, target = task.meta_example(rng, config) if is_meta else task.solution_example(rng)
        problems.append(problem)
        targets.append(target)
    prompt_ids = renderers["meta" if is_meta else "solution"](problems)
    target_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    rows = [(p, t + [tokenizer.eos_token_id]) for p, t in zip(prompt_ids, target_ids, strict=True)]
    width = max(len(p) + len(t) for p, t in rows)
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (p, t) in enumerate(rows):  # right padding: positions start at 0 for every row
        n = len(p) + len(t)
        input_ids[i, :n] = torch.tensor(p + t)
        labels[i, len(p) : n] = torch.tensor(t)
        attention_mask[i, :n] = 1
    return input_ids, attention_mask, labels


def train_warm_start(
    output_dir: str | Path, config: WarmStartConfig, *, progress: bool = True, task: WarmStartTask | None = None
) -> dict:
    """Build the demo model in `output_dir` and train it in place; returns the record written to `warm_start.json`.

    `task` defaults to the demo's [`SumTask`]."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from masa_trl.demo.callbacks import fastest_thread_count

    task = task or SumTask()
    output_dir = Path(output_dir)
    start = time.perf_counter()
    build_demo_model(output_dir, config.model, corpus=task.corpus(config.model.seed))
    tokenizer = AutoTokenizer.from_pretrained(output_dir)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = AutoModelForCausalLM.from_pretrained(output_dir, dtype=torch.float32)
        model.train()
        renderers = {
            "solution": PromptRenderer(tokenizer, task.solution_template),
            "meta": PromptRenderer(tokenizer, task.meta_template),
        }
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
        rng = random.Random(config.seed)
        losses = {"solution": [], "meta": []}
        tokens = 0
        bar = tqdm(total=config.steps, desc="warm start", unit="step", disable=not progress, dynamic_ncols=True)
        steps_done = 0
        for step in range(config.steps):
            if config.max_seconds is not None and time.perf_counter() - start > config.max_seconds:
                break
            if step % 100 == 0:  # on a shared machine one thread can be several times faster than two
                torch.set_num_threads(fastest_thread_count())
            is_meta = rng.random() < config.meta_fraction
            input_ids, attention_mask, labels = _batch(rng, config, task, renderers, tokenizer, is_meta)
            loss = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses["meta" if is_meta else "solution"].append(loss.item())
            tokens += int(attention_mask.sum())
            steps_done = step + 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", kind="meta" if is_meta else "sol")
        bar.close()

    model.save_pretrained(output_dir)
    seconds = time.perf_counter() - start

    def tail_mean(values: list[float]) -> float | None:
        tail = values[-max(1, len(values) // 10) :]
        return sum(tail) / len(tail) if tail else None

    record = {
        "settings": config.cache_settings(task),
        "cache_key": config.cache_key(task),
        "steps_done": steps_done,
        "complete": steps_done == config.steps,
        "seconds": round(seconds, 1),
        "tokens_per_second": round(tokens / max(seconds, 1e-9)),
        "final_solution_loss": tail_mean(losses["solution"]),
        "final_meta_loss": tail_mean(losses["meta"]),
        "num_parameters": sum(p.numel() for p in model.parameters()),
    }
    text = json.dumps(record, indent=2)
    (output_dir / RECORD_FILE).write_text(text)
    return json.loads(text)  # the same value a cache hit returns (tuples become lists)


def warm_start(
    config: WarmStartConfig,
    cache_dir: str | Path = "outputs/demo",
    *,
    progress: bool = True,
    task: WarmStartTask | None = None,
):
    """The warm-started model directory for `config` (and `task`, default the demo's): loaded from the cache, or
    trained and cached.

    Returns:
        `tuple[Path, dict, bool]`: the model directory, its record, and whether it came from the cache.
    """
    final = Path(cache_dir) / f"warm-start-{config.cache_key(task)}"
    record_path = final / RECORD_FILE
    if record_path.exists():
        return final, json.loads(record_path.read_text()), True
    # Train into a scratch directory and rename it at the end, so an interrupted run leaves no half-written cache.
    scratch = final.with_name(final.name + ".partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.parent.mkdir(parents=True, exist_ok=True)
    record = train_warm_start(scratch, config, progress=progress, task=task)
    shutil.rmtree(final, ignore_errors=True)
    scratch.rename(final)
    return final, record, False
