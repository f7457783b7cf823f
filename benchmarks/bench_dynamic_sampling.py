"""Pre-rollout gating (MASA-efficient) against post-rollout filtering (DAPO's dynamic sampling), side by side.

    python benchmarks/bench_dynamic_sampling.py            # 4 arms, default size: 1.5-2.5 min on 2 shared cores
    python benchmarks/bench_dynamic_sampling.py --quick    # smoke run
    python benchmarks/bench_dynamic_sampling.py --arms grpo dapo --seeds 0 1 --force

Both methods spend no gradient on prompts whose G rollouts all get the same reward (zero group-relative advantage).
DAPO finds them *after* generating their solutions and draws more generation batches until the training batch holds
only informative groups; MASA-efficient predicts them *before* generating (from M short meta rollouts) and skips their
solution rollouts. This benchmark measures what each pays, in tokens and time, per informative group it trains.

Arms (same random-init tiny Qwen3 from `masa_trl.tiny_model`, same prompts in the same order with
`shuffle_dataset=False`, same seeds; one generation batch per optimizer step, `gradient_accumulation_steps=1`):

- `grpo`: `trl.GRPOTrainer`; constant groups are trained with zero advantage;
- `dapo`: `masa_trl.DAPOTrainer` with `dynamic_sampling=True` (round 1 is TRL's own batch, extra rounds come from the
  trainer's seeded prompt stream over the same training set);
- `masa_efficient`: `MASAGRPOTrainer` with `efficient_start_step=0` (meta rollouts first, then gating),
  `gating_audit_fraction=0`, `cutoff_factor=None` and `notion_hint=False`, so that only gating differs from GRPO;
- `masa_dapo`: `MASADAPOTrainer`, the same MASA-efficient settings plus `dynamic_sampling=True` (gated prompts never
  reach the filter; the batch is filled with informative groups from extra rounds).

The dataset. `--prompts` prompts per step; in every step the first round(`--constant-share` x prompts) prompts (by
default 3 of 8, 37.5%) are constant, alternately always solved ("trivial") and never solved ("unsolvable"), and the others are solved by exactly
half of their rollouts ("mixed"; G must be even). The category is a function of the problem's index, so DAPO's extra
rounds, which draw from the whole training set, meet the same share on average. The reward is a plain exact match of
the last `\\boxed{}` against the `answer` column (`boxed_answer_reward`, cheap and deterministic).

Generation really runs; only the text is scripted. `model.generate` of the trainer's model is wrapped (an instance
attribute; nothing in `masa_trl` is edited) to add a `LogitsProcessor` that, per row, forbids EOS before the row's
target length minus one and then forces EOS, so every solution row is exactly `--solution-length` tokens and every meta
row exactly `--meta-length` tokens, all of them sampled by the model. After the call, each row's generated tokens are
replaced in place by scripted tokens of exactly the same length, ending in EOS: a solution row gets filler text and
`\\boxed{answer}` (the right answer for a trivial prompt and for every other rollout of a mixed prompt, a wrong one
otherwise; the rollout index counts the prompt's rows within the call), a meta row gets a parsable prediction (filler
and `{"math_notion": ..., "pass_rate": ..., "solution_length": ...}`, compacted until it fits) that says 8/8 for
trivial, 0/8 for unsolvable and 4/8 for mixed prompts, unanimously, so MASA-efficient gates exactly the constant
prompts. Rewards, advantages, the dynamic-sampling filter, the loss forward and backward then all run on the scripted
ids, so token counts and times are those of real rollouts of those lengths.

What is reported, per arm (medians of the measured steps after `--warmup`, pooled over seeds, unless said otherwise):

- solution / meta tokens generated per step: counted in the `generate` wrapper (rows up to and including EOS;
  MASA-efficient's gated prompts are never generated), over all rounds of a step;
- trained groups / informative groups per step: read from the batch that `_generate_and_score_completions` returns to
  TRL's `_prepare_inputs` (the training batch): a solution group is trained when all its rows enter the loss (MASA's
  `trained` flag; GRPO and DAPO train every row), and informative when, in addition, its advantages are not all zero,
  i.e. its reward is not constant. GRPO: the mixed groups of its batch; DAPO: all its (kept) groups; MASA-efficient:
  the non-gated groups with non-constant reward;
- solution tokens per informative group: total solution tokens generated over the measured steps divided by the
  total informative groups trained (a ratio of sums); "all tokens" adds the meta tokens;
- solution tokens outside informative groups: generated solution tokens that did not reach the loss in an informative
  group (GRPO: the constant groups; DAPO: filtered and surplus groups). For DAPO this is what its own metric
  `dynamic_sampling/wasted_solution_tokens` counts, which is shown beside it as a cross-check;
- rounds per step: `dynamic_sampling/num_gen_batches` (DAPO arms), and the trainer's `efficient/gated_frac` (under
  `MASADAPOTrainer` a mean over the step's rounds, whose extra prompts are random draws: not exactly the constant
  share). Tokens are counted here rather than read from `efficient/*_tokens`, which `MASADAPOTrainer` also logs as a
  per-round mean, not a per-step total;
- wall time per step (median), and per informative group; CPU time of the process per step (all threads), which
  moves less than wall time when other jobs share the machine; the load averages are recorded per step.

Reading the times. On this tiny model the token figures transfer to real runs, the wall times much less: a meta
prompt (the paper's appendix-A instructions, about 420 tokens here) is 7x a solution prompt (about 60), while the
rollouts are only 24 and 64 tokens, so MASA's step time is dominated by the prefill and the training forward/backward
of its M meta rows per prompt, not by decoding (the prompt tokens per step are shown in the time table). With the
paper's lengths (thousands of solution tokens per rollout) decoding dominates and the token counts decide.

Runs use one torch thread by default (`--threads`): on a small shared machine several threads of tiny ops are slower
and erratic whenever another job takes a core. Results are cached as JSON under `outputs/bench_dynamic_sampling/`
(one file per arm and seed, keyed by the settings and a hash of the `masa_trl` sources and this file; `--force`
reruns); every report is saved there as `summary-*.json` with its markdown.
"""

import argparse
import dataclasses
import gc
import hashlib
import importlib.metadata
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared pieces of bench_step_cost.py
from bench_step_cost import Clock, install_fixed_length_generate, markdown, ratio


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = REPO / "outputs" / "bench_dynamic_sampling"
ARMS = ("grpo", "dapo", "masa_efficient", "masa_dapo")
LABELS = {
    "grpo": "GRPO",
    "dapo": "DAPO (dynamic sampling)",
    "masa_efficient": "MASA-efficient (gating)",
    "masa_dapo": "MASA-efficient + DAPO",
}
DYNAMIC_ARMS = ("dapo", "masa_dapo")
MASA_ARMS = ("masa_efficient", "masa_dapo")
PROBLEM_RE = re.compile(r"Problem (\d+):")
BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")
PASS_RATE = {"trivial": 8, "unsolvable": 0, "mixed": 4}  # scripted meta predictions, of 8: unanimous per prompt
FILLER_UNITS = (". ", "a ", "1 ", "x", " ")
TRAINER_METRICS = (
    "dynamic_sampling/num_gen_batches",
    "dynamic_sampling/filtered_frac",
    "dynamic_sampling/wasted_solution_tokens",
    "dynamic_sampling/round_seconds",
    "efficient/gated_frac",
    "efficient/skipped_frac",
    "efficient/solution_tokens",
    "efficient/meta_tokens",
    "meta/parse_failure_rate",
    "reward",
)


@dataclasses.dataclass
class Settings:
    prompts: int = 8
    generations: int = 8
    meta_generations: int = 8
    solution_length: int = 64
    meta_length: int = 24
    constant_share: float = 0.375
    steps: int = 6
    warmup: int = 1
    max_rounds: int = 10
    hidden_size: int = 64
    num_layers: int = 2
    learning_rate: float = 1e-5
    threads: int = 1

    def __post_init__(self):
        if self.generations % 2:
            raise ValueError(f"--generations must be even (mixed prompts are solved by half), got {self.generations}")
        if not 0 < self.num_constant < self.prompts:
            raise ValueError(
                f"--constant-share {self.constant_share} gives {self.num_constant} constant prompts of "
                f"{self.prompts}: need at least one constant and one mixed prompt per step"
            )

    @property
    def num_constant(self) -> int:
        return round(self.constant_share * self.prompts)

    def category(self, problem_index: int) -> str:
        """`trivial`, `unsolvable` or `mixed`, by the problem's position in its step."""
        position = problem_index % self.prompts
        if position < self.num_constant:
            return "trivial" if position % 2 == 0 else "unsolvable"
        return "mixed"


QUICK = dict(prompts=4, generations=4, meta_generations=4, solution_length=32, constant_share=0.5, steps=2, warmup=1)


# ---------------------------------------------------------------------------------------------------- scripting
def fit_ids(tokenizer, build, length: int) -> list[int] | None:
    """Token ids of `build(filler)` for a filler that makes them exactly `length` tokens; None if none does."""

    def encode(filler: str) -> list[int]:
        return tokenizer(build(filler), add_special_tokens=False)["input_ids"]

    if len(encode("")) == length:
        return encode("")
    if len(encode("")) > length:
        return None
    for unit in FILLER_UNITS:
        for repeat in range(length + 1):
            for tail in ("", "x", " x", "1"):
                ids = encode(unit * repeat + tail)
                if len(ids) == length:
                    return ids
            if len(encode(unit * repeat)) > length:
                break
    return None


class Script:
    """Classifies generation rows (kind, problem) and writes their scripted token ids of a given length."""

    def __init__(self, tokenizer, settings: Settings, answers: list[str]):
        self.tokenizer, self.settings, self.answers = tokenizer, settings, answers
        self.eos, self.pad = tokenizer.eos_token_id, tokenizer.pad_token_id
        self._kinds: dict[tuple, tuple[str, int]] = {}
        self._ids: dict[tuple, list[int]] = {}
        self.unscriptable_rows = 0

    def classify(self, prompt_ids) -> tuple[str, int]:
        key = tuple(prompt_ids)
        if key not in self._kinds:
            text = self.tokenizer.decode(list(key))
            match = PROBLEM_RE.search(text)
            if match is None:
                raise ValueError(f"cannot tell which benchmark problem this prompt is: {text[-200:]!r}")
            self._kinds[key] = ("meta" if "</meta>" in text else "solution", int(match.group(1)))
        return self._kinds[key]

    def target_length(self, kind: str) -> int:
        return self.settings.meta_length if kind == "meta" else self.settings.solution_length

    def solution_ids(self, problem: int, rollout: int, length: int) -> list[int]:
        category = self.settings.category(problem)
        correct = category == "trivial" or (category == "mixed" and rollout % 2 == 0)
        answer = self.answers[problem] if correct else str(int(self.answers[problem]) + 1)
        return self._cached(("solution", answer, length), [lambda f: f"{f} \\boxed{{{answer}}}".lstrip()], length)

    def meta_ids(self, problem: int, length: int) -> list[int]:
        rate = PASS_RATE[self.settings.category(problem)]
        predicted = self.settings.solution_length
        spaced = json.dumps({"math_notion": ["addition"], "pass_rate": rate, "solution_length": predicted})
        compact = json.dumps(
            {"math_notion": [], "pass_rate": rate, "solution_length": predicted}, separators=(",", ":")
        )
        forms = [  # the richest form that fits the row's length
            lambda f: f"<meta>{f}</meta>\n{spaced}",
            lambda f: f"<meta>{f}</meta>{compact}",
            lambda f: f"{f}{compact}",
        ]
        return self._cached(("meta", rate, length), forms, length)

    def _cached(self, key: tuple, forms, length: int) -> list[int]:
        if key not in self._ids:
            for build in forms:
                ids = fit_ids(self.tokenizer, build, length - 1)
                if ids is not None:
                    self._ids[key] = ids + [self.eos]
                    break
            else:  # too short for the text: an unparsable row of the same length (counted, reported)
                self._ids[key] = None
        ids = self._ids[key]
        if ids is None:
            self.unscriptable_rows += 1
            return [self.pad if self.pad != self.eos else 1] * (length - 1) + [self.eos]
        return ids


# ---------------------------------------------------------------------------------------------------- recording
Recorder = Clock  # bench_step_cost's per-step timers and counters


def install_generation(trainer, script: Script, recorder: Recorder) -> None:
    """Fixed-length real generation, then the scripted ids swapped in (module docstring)."""
    rollouts = defaultdict(int)  # per problem, the next solution rollout of the current call

    def rewrite(kind, problem, length):
        if kind == "meta":
            return script.meta_ids(problem, length)
        index = rollouts[problem]
        rollouts[problem] += 1
        return script.solution_ids(problem, index, length)

    def reset_then(generate):
        def call(*args, **kwargs):
            rollouts.clear()
            return generate(*args, **kwargs)

        return call

    install_fixed_length_generate(trainer, script, recorder, rewrite)
    model = trainer.accelerator.unwrap_model(trainer.model)
    model.generate = reset_then(model.generate)


def install_batch_analysis(trainer, recorder: Recorder, group_size: int) -> None:
    """Time the outermost `_generate_and_score_completions` and count the trained / informative groups it returns."""
    import torch

    original = trainer._generate_and_score_completions

    def analysed(inputs):
        with recorder.time("rollout_s"):
            batch = original(inputs)
        mask = batch["completion_mask"]
        rows = mask.size(0)
        is_meta = batch.get("is_meta")
        solution = ~is_meta if is_meta is not None else torch.ones(rows, dtype=torch.bool, device=mask.device)
        trained = batch.get("trained")
        trained = torch.ones(rows, dtype=torch.bool, device=mask.device) if trained is None else trained.bool()
        advantages = batch["advantages"][solution].view(-1, group_size)
        tokens = mask[solution].sum(1).view(-1, group_size).sum(1).float()
        trained_groups = trained[solution].view(-1, group_size).all(1)
        informative = trained_groups & (advantages.abs() > 1e-8).any(1)
        recorder.counts["trained_groups"] += float(trained_groups.sum())
        recorder.counts["informative_groups"] += float(informative.sum())
        recorder.counts["batch_groups"] += float(trained_groups.numel())
        recorder.counts["informative_solution_tokens"] += float(tokens[informative].sum())
        recorder.counts["trained_solution_tokens"] += float(tokens[trained_groups].sum())
        if is_meta is not None:
            recorder.counts["trained_meta_rows"] += float((is_meta & trained).sum())
        return batch

    trainer._generate_and_score_completions = analysed


# ---------------------------------------------------------------------------------------------------- one run
def boxed_answer_reward(completions, answer, **kwargs) -> list[float]:
    """1.0 when the last `\\boxed{}` of a completion is exactly the `answer` column, else 0.0."""
    from masa_trl.math_reward import completion_text

    scores = []
    for completion, gold in zip(completions, answer, strict=True):
        found = BOXED_RE.findall(completion_text(completion))
        scores.append(float(bool(found) and found[-1].strip() == gold))
    return scores


def model_dir(settings: Settings, cache_dir: Path) -> Path:
    from masa_trl.tiny_model import build_tiny_model

    path = cache_dir / "models" / f"qwen3-h{settings.hidden_size}-l{settings.num_layers}"
    if not (path / "config.json").exists():
        build_tiny_model(
            path,
            hidden_size=settings.hidden_size,
            intermediate_size=2 * settings.hidden_size,
            num_hidden_layers=settings.num_layers,
        )
    return path


def make_problems(settings: Settings) -> tuple[list[str], list[str]]:
    import random

    rng = random.Random(0)
    problems, answers = [], []
    for i in range(settings.prompts * (settings.steps + settings.warmup)):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        problems.append(f"Problem {i:04d}: What is {a} + {b}?")
        answers.append(str(a + b))
    return problems, answers


def make_dataset(settings: Settings):
    from datasets import Dataset

    from masa_trl.templates import solution_prompt

    problems, answers = make_problems(settings)
    return Dataset.from_dict(
        {"problem": problems, "answer": answers, "prompt": [solution_prompt(p) for p in problems]}
    )


def training_args(arm: str, seed: int, settings: Settings, output_dir: str):
    from trl import GRPOConfig

    from masa_trl import DAPOConfig, MASAConfig

    values = dict(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=settings.prompts * settings.generations,
        gradient_accumulation_steps=1,
        num_generations=settings.generations,
        max_completion_length=settings.solution_length,
        max_steps=settings.steps + settings.warmup,
        learning_rate=settings.learning_rate,
        beta=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        shuffle_dataset=False,
    )
    if arm == "grpo":
        return GRPOConfig(**values)
    dynamic = dict(dynamic_sampling=True, dynamic_sampling_max_rounds=settings.max_rounds)
    if arm == "dapo":
        return DAPOConfig(**values, **dynamic)
    values.update(
        num_meta_generations=settings.meta_generations,
        meta_min_length=min(8, settings.solution_length),
        efficient_start_step=0,
        gating_audit_fraction=0.0,
        cutoff_factor=None,
        notion_hint=False,
    )
    return MASAConfig(**values, **(dynamic if arm == "masa_dapo" else {}))


def trainer_class(arm: str):
    from trl import GRPOTrainer

    from masa_trl import DAPOTrainer, MASADAPOTrainer, MASAGRPOTrainer

    return {"grpo": GRPOTrainer, "dapo": DAPOTrainer, "masa_efficient": MASAGRPOTrainer, "masa_dapo": MASADAPOTrainer}[
        arm
    ]


def run_arm(arm: str, seed: int, settings: Settings, cache_dir: Path) -> dict:
    """Train one arm for warmup + steps steps and return its per-step records."""
    import torch
    from transformers import AutoTokenizer, PrinterCallback, TrainerCallback

    load_start = os.getloadavg()
    start = time.perf_counter()
    torch.set_num_threads(settings.threads)
    # TRL warns once per call that all meta rewards of a gated prompt are None (it has no solution statistics, by
    # design); the per-step log dicts are dropped from the output for the same reason: readability.
    logging.getLogger("trl.trainer.grpo_trainer").setLevel(logging.ERROR)
    path = model_dir(settings, cache_dir)
    recorder, records = Recorder(), []
    with tempfile.TemporaryDirectory() as output_dir:
        trainer = trainer_class(arm)(
            model=str(path),
            reward_funcs=[boxed_answer_reward],
            args=training_args(arm, seed, settings, output_dir),
            train_dataset=make_dataset(settings),
        )
        trainer.remove_callback(PrinterCallback)  # the per-step log dicts: they stay in state.log_history
        setup_s = time.perf_counter() - start
        script = Script(AutoTokenizer.from_pretrained(path), settings, make_problems(settings)[1])
        install_generation(trainer, script, recorder)
        install_batch_analysis(trainer, recorder, settings.generations)

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                recorder.reset()
                self.start, self.cpu_start = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kwargs):
                step_s, cpu_s = time.perf_counter() - self.start, time.process_time() - self.cpu_start
                records.append(
                    {"step": state.global_step, "step_s": step_s, "cpu:step_s": cpu_s, **recorder.seconds}
                    | {**recorder.counts, "loadavg": os.getloadavg()}
                )

        trainer.add_callback(StepClock())
        trainer.train()
        logged = defaultdict(dict)  # the final summary entry (train_runtime, ...) has the last step's number too
        for entry in trainer.state.log_history:
            if "step" in entry:
                logged[entry["step"]].update(entry)
        for record in records:
            entry = logged.get(record["step"], {})
            record.update(
                {f"trainer:{k}": entry[k] for k in TRAINER_METRICS if isinstance(entry.get(k), (int, float))}
            )
        unscriptable = script.unscriptable_rows
        del trainer
        gc.collect()
    return {
        "arm": arm,
        "seed": seed,
        "settings": dataclasses.asdict(settings),
        "records": records,
        "setup_s": setup_s,
        "wall_s": time.perf_counter() - start,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "torch_threads": torch.get_num_threads(),
        "unscriptable_rows": unscriptable,
        "python": sys.executable,
        "versions": versions(),
    }


# ---------------------------------------------------------------------------------------------------- caching
def versions() -> dict:
    found = {}
    for name in ("torch", "transformers", "trl", "accelerate"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def code_hash() -> str:
    digest = hashlib.sha256()
    for path in sorted((REPO / "masa_trl").rglob("*.py")) + [Path(__file__).resolve()]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_path(cache_dir: Path, arm: str, seed: int, settings: Settings, code: str) -> Path:
    key = json.dumps({"settings": dataclasses.asdict(settings), "code": code}, sort_keys=True)
    return cache_dir / f"{arm}-seed{seed}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.json"


def run_cached(arm: str, seed: int, settings: Settings, cache_dir: Path, force: bool, code: str) -> dict:
    path = cache_path(cache_dir, arm, seed, settings, code)
    if path.exists() and not force:
        result = json.loads(path.read_text())
        result["cached"] = True
        return result
    cache_dir.mkdir(parents=True, exist_ok=True)
    result = run_arm(arm, seed, settings, cache_dir)
    result["code_hash"] = code
    path.write_text(json.dumps(result, indent=1))
    result["cached"] = False
    return result


# ---------------------------------------------------------------------------------------------------- report
COUNTS = (
    "tokens_solution",
    "tokens_meta",
    "trained_groups",
    "informative_groups",
    "informative_solution_tokens",
    "prompt_tokens",
)


def measured(runs: list[dict]) -> list[dict]:
    return [r for run in runs for r in run["records"] if r["step"] > run["settings"]["warmup"]]


def median_of(rows: list[dict], key: str):
    values = [row[key] for row in rows if row.get(key) is not None]
    return statistics.median(values) if values else None


def summarise(runs: list[dict]) -> dict:
    """The figures of one arm over the measured steps of all its runs (seeds)."""
    rows = [dict(row) for row in measured(runs)]
    for row in rows:
        for key in COUNTS:  # a counter that never moved (e.g. GRPO's meta tokens) is 0
            row.setdefault(key, 0.0)
        row["gen_s"] = sum(row.get(f"gen_{k}_s", 0.0) for k in ("solution", "meta", "joint"))
        row["train_s"] = row["step_s"] - row.get("rollout_s", 0.0)
        row["step_s_per_informative"] = ratio(row["step_s"], row["informative_groups"])
        row["outside_informative_tokens"] = row["tokens_solution"] - row["informative_solution_tokens"]
    total = {key: sum(row[key] for row in rows) for key in ("tokens_solution", "tokens_meta")}
    informative = sum(row["informative_groups"] for row in rows)
    keys = [
        "tokens_solution",
        "tokens_meta",
        "trained_groups",
        "informative_groups",
        "outside_informative_tokens",
        "step_s",
        "cpu:step_s",
        "rollout_s",
        "gen_s",
        "gen_solution_s",
        "gen_meta_s",
        "train_s",
        "step_s_per_informative",
        "prompt_tokens",
        *(f"trainer:{k}" for k in TRAINER_METRICS),
    ]
    out = {key: median_of(rows, key) for key in keys}
    rounds = [
        row["trainer:dynamic_sampling/num_gen_batches"]
        for row in rows
        if "trainer:dynamic_sampling/num_gen_batches" in row
    ]
    out.update(
        measured_steps=len(rows),
        rounds_min=min(rounds) if rounds else None,
        rounds_max=max(rounds) if rounds else None,
        total_solution_tokens=total["tokens_solution"],
        total_meta_tokens=total["tokens_meta"],
        total_informative_groups=informative,
        solution_tokens_per_informative=ratio(total["tokens_solution"], informative),
        all_tokens_per_informative=ratio(total["tokens_solution"] + total["tokens_meta"], informative),
        unscriptable_rows=sum(run.get("unscriptable_rows", 0) for run in runs),
    )
    return out


def fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 10:
        return f"{value:.0f}"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def rounds_cell(stats: dict) -> str:
    value = stats.get("trainer:dynamic_sampling/num_gen_batches")
    if value is None:
        return "-"
    return f"{fmt(value, 1)} ({fmt(stats['rounds_min'], 0)}-{fmt(stats['rounds_max'], 0)})"


MAIN_COLUMNS = [
    ("steps", lambda s: str(s["measured_steps"])),
    ("rounds/step (min-max)", rounds_cell),
    ("solution tokens/step", lambda s: fmt(s["tokens_solution"], 0)),
    ("meta tokens/step", lambda s: fmt(s["tokens_meta"], 0)),
    ("trained groups/step", lambda s: fmt(s["trained_groups"], 1)),
    ("informative groups/step", lambda s: fmt(s["informative_groups"], 1)),
    ("**solution tokens / informative group**", lambda s: fmt(s["solution_tokens_per_informative"], 1)),
    ("all tokens / informative group", lambda s: fmt(s["all_tokens_per_informative"], 1)),
    ("solution tokens outside informative groups/step", lambda s: fmt(s["outside_informative_tokens"], 0)),
    ("DAPO waste/step (trainer)", lambda s: fmt(s.get("trainer:dynamic_sampling/wasted_solution_tokens"), 0)),
    ("gated share (trainer)", lambda s: fmt(s.get("trainer:efficient/gated_frac"))),
    ("wall s/step (median)", lambda s: fmt(s["step_s"])),
    ("wall s / informative group", lambda s: fmt(s["step_s_per_informative"])),
    ("CPU s/step", lambda s: fmt(s["cpu:step_s"])),
]
TIME_COLUMNS = [
    ("step", "step_s"),
    ("rollouts (generate + score, all rounds)", "rollout_s"),
    ("generation (model.generate)", "gen_s"),
    ("solution generation", "gen_solution_s"),
    ("meta generation", "gen_meta_s"),
    ("training (step - rollouts)", "train_s"),
    ("prompt tokens/step (all rows generated)", "prompt_tokens"),
]


def report(results: dict[str, list[dict]], settings: Settings) -> tuple[str, dict]:
    stats = {arm: summarise(runs) for arm, runs in results.items()}
    seeds = sorted({run["seed"] for runs in results.values() for run in runs})
    threads = sorted({run.get("torch_threads") for runs in results.values() for run in runs})
    header = (
        f"{settings.prompts} prompts x G={settings.generations} solution rollouts per step (MASA: + M="
        f"{settings.meta_generations} meta rollouts); {settings.num_constant}/{settings.prompts} prompts per step "
        f"constant ({settings.num_constant / settings.prompts:.1%}: trivial and unsolvable alternating), the rest "
        f"solved by half their rollouts; solution {settings.solution_length} tokens, meta {settings.meta_length} "
        f"tokens; tiny Qwen3 hidden {settings.hidden_size}, {settings.num_layers} layers, {threads} torch thread(s); "
        f"seeds {seeds}; {settings.steps} measured steps per seed after {settings.warmup} warm-up. Per-step figures "
        "are medians over the measured steps; tokens per informative group are total tokens / total informative "
        "groups over the measured steps.\n"
    )
    out = [header]
    out.append(
        markdown(
            ["arm"] + [h for h, _ in MAIN_COLUMNS],
            [[LABELS[a]] + [f(s) for _, f in MAIN_COLUMNS] for a, s in stats.items()],
        )
    )
    if "grpo" in stats:
        base = stats["grpo"]
        rows = []
        for arm, s in stats.items():
            rows.append(
                [
                    LABELS[arm],
                    fmt(ratio(s["solution_tokens_per_informative"], base["solution_tokens_per_informative"])),
                    fmt(ratio(s["all_tokens_per_informative"], base["all_tokens_per_informative"])),
                    fmt(ratio(s["step_s_per_informative"], base["step_s_per_informative"])),
                    fmt(ratio(s["step_s"], base["step_s"])),
                ]
            )
        headers = [
            "arm",
            "solution tokens / inf. group",
            "all tokens / inf. group",
            "wall s / inf. group",
            "wall s/step",
        ]
        out.append("\nRelative to GRPO:\n\n" + markdown(headers, rows))
    out.append(
        "\nWall time split, median seconds per step:\n\n"
        + markdown(
            ["arm"] + [h for h, _ in TIME_COLUMNS],
            [[LABELS[a]] + [fmt(s.get(k)) for _, k in TIME_COLUMNS] for a, s in stats.items()],
        )
    )
    out.append("\nRuns (load averages 1/5/15 min at start and end; 1-min load per step):")
    for arm, runs in results.items():
        for run in runs:
            notes = []
            if run.get("unscriptable_rows"):
                notes.append(f"{run['unscriptable_rows']} rows too short for their scripted text (unparsable)")
            parse = [r.get("trainer:meta/parse_failure_rate") for r in run["records"]]
            if any(p for p in parse if p is not None):
                notes.append(f"meta parse failure rates {parse}")
            out.append(
                f"- {LABELS[arm]} seed {run['seed']}: setup {run['setup_s']:.1f} s, wall {run['wall_s']:.1f} s, load "
                f"{[round(x, 2) for x in run['load_start']]} -> {[round(x, 2) for x in run['load_end']]}, per step "
                f"{[round(r['loadavg'][0], 2) for r in run['records']]}{' (cached)' if run.get('cached') else ''}"
                f"{'; ' + '; '.join(notes) if notes else ''}"
            )
    out.append(f"\nReport load average (1/5/15 min): {[round(x, 2) for x in os.getloadavg()]}, {os.cpu_count()} CPUs")
    summary = {"settings": dataclasses.asdict(settings), "stats": stats, "loadavg": os.getloadavg()}
    summary["runs"] = [
        {k: run.get(k) for k in ("arm", "seed", "setup_s", "wall_s", "load_start", "load_end", "cached")}
        for runs in results.values()
        for run in runs
    ]
    return "\n".join(out), summary


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Settings()
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, help=f"measured steps per run (default {defaults.steps})")
    parser.add_argument("--warmup", type=int, help=f"warm-up steps, not measured (default {defaults.warmup})")
    parser.add_argument("--prompts", type=int, help=f"prompts per step (default {defaults.prompts})")
    parser.add_argument("--generations", type=int, help=f"G, solution rollouts per prompt ({defaults.generations})")
    parser.add_argument(
        "--meta-generations", type=int, help=f"M, meta rollouts per prompt, MASA arms ({defaults.meta_generations})"
    )
    parser.add_argument("--solution-length", type=int, help=f"tokens per solution row ({defaults.solution_length})")
    parser.add_argument("--meta-length", type=int, help=f"tokens per meta row ({defaults.meta_length})")
    parser.add_argument(
        "--constant-share", type=float, help=f"share of constant prompts per step ({defaults.constant_share})"
    )
    parser.add_argument("--max-rounds", type=int, help=f"dynamic_sampling_max_rounds ({defaults.max_rounds})")
    parser.add_argument("--hidden-size", type=int, help=f"tiny model hidden size ({defaults.hidden_size})")
    parser.add_argument("--num-layers", type=int, help=f"tiny model layers ({defaults.num_layers})")
    parser.add_argument("--threads", type=int, help=f"torch threads ({defaults.threads})")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK} unless given explicitly")
    parser.add_argument("--force", action="store_true", help="rerun even when a cached result exists")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    return parser.parse_args(argv)


def settings_from(options) -> Settings:
    values = dict(QUICK) if options.quick else {}
    for field in dataclasses.fields(Settings):
        given = getattr(options, field.name, None)
        if given is not None:
            values[field.name] = given
    return Settings(**values)


def main(argv=None) -> dict:
    options = parse_args(argv)
    settings = settings_from(options)
    code = code_hash()
    results = defaultdict(list)
    for seed in options.seeds:
        for arm in options.arms:
            print(f"[bench_dynamic_sampling] {LABELS[arm]} seed {seed} ...", flush=True)
            results[arm].append(run_cached(arm, seed, settings, options.cache_dir, options.force, code))
    text, summary = report(dict(results), settings)
    print(text)
    summary.update(code_hash=code, markdown=text)
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (options.cache_dir / f"summary-{stamp}.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
