"""Per-step cost of GRPO vs MASA vs MASA-efficient, split by phase, on the transformers and vLLM colocate backends.

    python benchmarks/bench_step_cost.py                          # transformers backend (this venv), ~4 min
    .venv-vllm/bin/python benchmarks/bench_step_cost.py --backend vllm
    python benchmarks/bench_step_cost.py --backend both           # vLLM part in .venv-vllm subprocesses
    python benchmarks/bench_step_cost.py --quick                  # smoke run (vLLM: mostly engine start-up)

Every method trains the same random-init tiny Qwen3 (`masa_trl.tiny_model`) on the same prompts, in the same order
(`shuffle_dataset=False`), with the same seed:

- `grpo`: `trl.GRPOTrainer`, G solution rollouts per prompt;
- `masa`: `MASAGRPOTrainer` with both kinds in one generation call (`joint_generation=True`; the default on vLLM,
  while on transformers the default is `masa_separate`'s, which this benchmark measured faster);
- `masa_separate`: `MASAGRPOTrainer` with `joint_generation=False` (one call per kind), run only when the config has
  that field; it gives MASA's solution generation time on its own, which goal 2 needs;
- `masa_efficient`: `MASAGRPOTrainer` with `efficient_start_step=0` (meta rollouts first, then gating, early cutoff
  and notion hints).

One generation batch feeds one optimizer step (`gradient_accumulation_steps=1`), so a "step" is a generation batch
plus its update. The first `--warmup` steps are excluded; the tables show per-step MEDIANS over the measured steps
(pooled over seeds) of each figure taken on its own, so the parts need not add up to the median total. Every figure
is measured as wall time and as CPU time of the process (`time.process_time`, all threads; the vLLM colocate engine
runs in the same process), which moves much less than wall time when other jobs share the machine. Runs use one
torch/OpenMP thread by default (`--threads`): on a small shared machine two threads of tiny ops were up to 15x
slower and erratic whenever another job took a core.

How the split is measured (timers installed by this script on the trainer instance; nothing in `masa_trl` is edited):

- step: `on_step_begin` to `on_step_end` of a `TrainerCallback` (generation, scoring, forward, backward, optimizer).
- generation (outer): the outermost of TRL's `_generate` / `_generate_single_turn` and, where this version of the
  trainer has them, MASA's own generation entry points (`_generate_rollouts`, `_generate_rows`,
  `_plan_from_meta_first`: MASA generates ahead of TRL's pipeline), minus the vLLM weight sync (own column). It
  includes prompt tokenisation, decoding and MASA-efficient's planning.
- meta / solution / joint generation: the backend call itself (`model.generate` for transformers, `LLM.generate` for
  vLLM), classified by its rows: all meta prompts, all solution prompts, or both in one call ("joint": then the
  meta and solution columns show "-" and the joint figure stands for both). The trainer's own `timing/generate_*_s`
  metrics are reported beside them.
- scoring: `_calculate_rewards` (reward functions; for MASA also the meta parsing and meta rewards).
- log-probs: `_get_per_token_logps_and_entropies` called with gradients off (old-policy and reference passes; on
  the transformers backend with `beta=0` TRL computes none, so it is 0), and "train forward" for the calls with
  gradients on (the loss forward).
- backward/optimizer: step minus `_prepare_inputs` minus train forward (backward, clipping, optimizer, scheduler).
- other: `_prepare_inputs` minus generation (outer), weight sync, scoring and log-probs (advantages, padding,
  tokenisation of the reward inputs, MASA's bookkeeping).

Fixed lengths. A random model rarely writes EOS, so without help every row runs to `max_completion_length`. Here
every solution row is exactly `--solution-length` tokens and every meta row exactly `--meta-length` tokens (defaults
96 and 36: ratio 0.375, the paper's 2293/6251 = 0.37), unless MASA-efficient caps a row shorter. With
`--length-tail` the G solution rows of a group get G different lengths instead, long-tailed around the same mean
(`Settings.solution_lengths`; 33 to 207 tokens for the default 96): real rollouts of one prompt differ in length, and
the paper's parallel generation counts on the meta rollouts running while a group's longest solutions finish.

- transformers: `trainer.model.generate` is wrapped to add a `LogitsProcessor` that, per row, forbids EOS until the
  row's length minus one and then forces EOS; the row's kind comes from its prompt (a meta prompt contains
  `</meta>`), so this also holds within one joint call. MASA-efficient's caps (its stopping criterion, or
  `max_new_tokens`) still stop rows earlier. The model really generates every token.
- vLLM: the engine object (`trainer.vllm_generation.llm`) is wrapped so that each request gets its own
  `SamplingParams` with `max_tokens = min(given, kind length)` and `min_tokens` equal to it (no early EOS); MASA's
  own per-request caps, which wrap the engine object again during a call, are honoured.

Scripted meta text. After the real generation of a meta row, its token ids are replaced by the tokens of a scripted
prediction of exactly the generated length (text padded with filler in the `<meta>` reasoning, EOS last), so
generation cost stays real while the plan of MASA-efficient is known: in every step, of the `--prompts` prompts the
first round(`--gated-share` x prompts) are predicted unanimously trivial (pass rate 8/8) or unsolvable (0/8),
alternating (gated, their solutions skipped; `gating_audit_fraction=0`), the next round(`--cut-share` x prompts)
predict `--cut-length` tokens (capped at `cutoff_factor` x that, below the real solution length: cut), and the
rest predict the full length (no cap). Non-gated predictions alternate 2/8 and 6/8 (not unanimous). All MASA
methods receive the same scripted texts. Solution text is the model's own (random; every reward is 0).

vLLM colocate on the CPU build: `vllm_gpu_memory_utilization=0.3`, `vllm_max_model_length=2048` (as in
tests/test_vllm.py), `VLLM_CPU_OMP_THREADS_BIND=nobind` unless set, and the CPU linear layers run as plain
`torch.nn.functional.linear` on unpacked weights, because the CPU build's packed weights break TRL's colocate weight
sync (see `unpacked_cpu_linear_weights` in tests/test_vllm.py). Each vLLM run is a fresh subprocess (one engine per
process); the engine's `max_num_seqs` / `max_num_batched_tokens` are recorded.

Results are cached as JSON under `outputs/bench_step_cost/` (one file per backend, method and seed, keyed by the
settings and a hash of the `masa_trl` sources and this file; `--force` reruns), with the per-step records and the
load averages; each report is also saved there as `summary-*.json`. The two goals of the issue are reported, on wall
and CPU time, never asserted:

1. MASA's generation time (outer) is at most 1.15 x GRPO's, on vLLM colocate;
2. MASA-efficient's solution generation time falls, relative to MASA's, by at least 0.8 x the share of solution
   tokens it saves, on each backend.

Private trainer methods wrapped (instance attributes): TRL's `_generate`, `_generate_single_turn`,
`_calculate_rewards`, `_get_per_token_logps_and_entropies`, `_prepare_inputs`, MASA's `_generate_rollouts` /
`_generate_rows` / `_plan_from_meta_first` where present; and `vllm_generation.sync_weights` / `.llm`. A missing TRL
one is reported in the output instead of failing the run.
"""

import argparse
import contextlib
import dataclasses
import functools
import gc
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE_DIR = REPO / "outputs" / "bench_step_cost"
VLLM_PYTHON = REPO / ".venv-vllm" / "bin" / "python"
METHODS = ("grpo", "masa", "masa_separate", "masa_efficient")
LABELS = {
    "grpo": "GRPO",
    "masa": "MASA (one call)",
    "masa_separate": "MASA (separate calls)",
    "masa_efficient": "MASA-efficient",
}
BACKENDS = ("transformers", "vllm")
GOAL_GENERATION_RATIO = 1.15
GOAL_SAVING_FACTOR = 0.8
NON_GATED_RATES = (2, 6)  # alternating predicted pass rates (of 8) of a non-gated prompt: std 0.25, never unanimous
# Methods timed as "generation (outer)", outermost call only: TRL's, then MASA's (if present in this trainer version).
OUTER_GENERATION = (
    "_generate",
    "_generate_single_turn",
    "_generate_rollouts",
    "_generate_rows",
    "_plan_from_meta_first",
)
PROBLEM_RE = re.compile(r"Problem (\d+):")
TRAINER_METRICS = (
    "timing/generate_s",
    "timing/generate_joint_s",
    "timing/generate_meta_s",
    "timing/generate_solution_s",
    "efficient/meta_tokens",
    "efficient/solution_tokens",
    "efficient/gated_frac",
    "efficient/skipped_frac",
    "efficient/cutoff_frac",
    "meta/parse_failure_rate",
    "step_time",
)


@dataclasses.dataclass
class Settings:
    prompts: int = 8
    generations: int = 8
    meta_generations: int = 8
    solution_length: int = 96
    meta_length: int = 36
    cut_length: int = 24
    gated_share: float = 0.25
    cut_share: float = 0.25
    steps: int = 6
    warmup: int = 1
    hidden_size: int = 64
    num_layers: int = 2
    beta: float = 0.0
    learning_rate: float = 1e-5
    threads: int = 1
    vllm_max_num_seqs: int | None = None  # None: TRL's choice (per_device_train_batch_size x steps_per_generation)
    length_tail: bool = False  # solution lengths vary within a group (mean solution_length, long right tail)

    @property
    def solution_lengths(self) -> list[int]:
        """The fixed length of the j-th solution row of every group.

        With `length_tail`, the G lengths are quantiles of a log-normal (sigma 0.6) scaled to mean `solution_length`
        (for G = 8: 0.34x to 2.16x), so that a group, like real reasoning rollouts, has a long right tail; the
        meta/solution token ratio is unchanged.
        """
        if not self.length_tail:
            return [self.solution_length] * self.generations
        quantiles = [statistics.NormalDist().inv_cdf((j + 0.5) / self.generations) for j in range(self.generations)]
        weights = [math.exp(0.6 * z) for z in quantiles]
        mean = sum(weights) / len(weights)
        return [max(1, round(self.solution_length * w / mean)) for w in weights]

    @property
    def max_solution_length(self) -> int:
        return max(self.solution_lengths)

    @property
    def num_gated(self) -> int:
        return round(self.gated_share * self.prompts)

    @property
    def num_cut(self) -> int:
        return min(round(self.cut_share * self.prompts), self.prompts - self.num_gated)

    def category(self, problem_index: int) -> str:
        """`trivial`, `unsolvable`, `cut` or `plain`, by the prompt's position in its step."""
        position = problem_index % self.prompts
        if position < self.num_gated:
            return "trivial" if position % 2 == 0 else "unsolvable"
        return "cut" if position < self.num_gated + self.num_cut else "plain"


QUICK = dict(prompts=4, generations=4, meta_generations=4, steps=2, warmup=1)


# ---------------------------------------------------------------------------------------------------- timers
class Clock:
    """Per-step accumulators: wall seconds per key and, as `cpu:key`, this process's CPU seconds (all its threads),
    outermost call only when nested; and counters."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.counts = defaultdict(float)
        self._depth = defaultdict(int)

    def reset(self):
        self.seconds.clear()
        self.counts.clear()

    @contextlib.contextmanager
    def time(self, key: str):
        outer = self._depth[key] == 0
        self._depth[key] += 1
        start, cpu_start = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._depth[key] -= 1
            if outer:
                self.seconds[key] += time.perf_counter() - start
                self.seconds[f"cpu:{key}"] += time.process_time() - cpu_start


def wrap_method(obj, name: str, clock: Clock, key, missing: list) -> None:
    """Replace `obj.name` by a timed wrapper (an instance attribute); `key` may be a callable of no argument."""
    original = getattr(obj, name, None)
    if original is None:
        missing.append(name)
        return

    @functools.wraps(original)
    def timed(*args, **kwargs):
        with clock.time(key() if callable(key) else key):
            return original(*args, **kwargs)

    setattr(obj, name, timed)


# ---------------------------------------------------------------------------------------------------- scripting
class MetaScript:
    """Classifies prompts (meta or solution, which problem) and writes the scripted meta rollouts."""

    def __init__(self, tokenizer, settings: Settings, max_length: int):
        self.tokenizer, self.settings, self.max_length = tokenizer, settings, max_length
        self.eos = tokenizer.eos_token_id
        self._kinds: dict[tuple, tuple[str, int]] = {}
        self._ids: dict[tuple, list[int]] = {}
        self._rollouts = defaultdict(int)
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

    def target_lengths(self, rows: list[tuple[str, int]]) -> list[int]:
        """The fixed length of each row of one generation call: the meta length, or the solution length of the row's
        place in its group (rows of one problem are its group's samples, in order)."""
        seen, lengths = defaultdict(int), []
        for kind, problem in rows:
            if kind == "meta":
                lengths.append(self.settings.meta_length)
            else:
                lengths.append(self.settings.solution_lengths[seen[problem] % self.settings.generations])
                seen[problem] += 1
        return lengths

    def prediction(self, problem_index: int) -> tuple[int, int]:
        """(pass rate of 8, predicted length) of the next meta rollout of this problem."""
        category = self.settings.category(problem_index)
        rollout = self._rollouts[problem_index]
        self._rollouts[problem_index] += 1
        if category in ("trivial", "unsolvable"):
            return (8 if category == "trivial" else 0), self.max_length
        rate = NON_GATED_RATES[rollout % len(NON_GATED_RATES)]
        return rate, self.settings.cut_length if category == "cut" else self.max_length

    def meta_ids(self, problem_index: int, length: int) -> list[int]:
        """Token ids of exactly `length` tokens: a scripted prediction padded in its reasoning, then EOS."""
        rate, predicted = self.prediction(problem_index)
        key = (rate, predicted, length)
        if key not in self._ids:
            self._ids[key] = self._build(rate, predicted, length)
        return self._ids[key]

    def _build(self, rate: int, predicted: int, length: int) -> list[int]:
        payload = json.dumps({"math_notion": ["addition"], "pass_rate": rate, "solution_length": predicted})

        def encode(reasoning: str) -> list[int]:
            return self.tokenizer(f"<meta>{reasoning}</meta>\n{payload}", add_special_tokens=False)["input_ids"]

        want = length - 1
        if len(encode("")) <= want:
            for unit in (". ", "- ", "a ", "1 ", "x"):
                for repeat in range(4 * length):
                    ids = encode((unit * repeat).strip())
                    if len(ids) == want:
                        return ids + [self.eos]
                    if len(ids) > want:
                        break
        self.unscriptable_rows += 1  # too short for a prediction: truncated text (unparsable), same length
        return (encode("") + [self.eos] * length)[:want] + [self.eos]


class FixedLengthProcessor:
    """LogitsProcessor: row i gets no EOS before `targets[i] - 1` generated tokens, then EOS is forced."""

    def __init__(self, targets, prompt_width: int, eos_ids: list[int]):
        import torch

        self.targets = torch.tensor(targets)
        self.width, self.eos_ids = prompt_width, eos_ids

    def __call__(self, input_ids, scores):
        import torch

        generated = input_ids.shape[1] - self.width
        targets = self.targets.to(scores.device)
        early = generated < targets - 1
        scores[
            early.nonzero(as_tuple=True)[0].unsqueeze(1), torch.tensor(self.eos_ids, device=scores.device)
        ] = -float("inf")
        due = ~early
        if due.any():
            scores[due] = -float("inf")
            scores[due, self.eos_ids[0]] = 0.0
        return scores


def install_fixed_length_generate(trainer, script, clock: Clock, rewrite) -> None:
    """Make the trainer's transformers `generate` stop each row at its kind's fixed length, time each call by phase,
    count tokens per kind, and let `rewrite(kind, problem, length)` return the scripted ids to put in its place (or
    None to keep the generated ones). `script` classifies prompts and gives the target lengths."""
    import torch
    from transformers import LogitsProcessorList

    model = trainer.accelerator.unwrap_model(trainer.model)
    original = model.generate
    eos_ids = list(trainer.eos_token_ids)
    pad = trainer.processing_class.pad_token_id

    def generate(*args, **kwargs):
        input_ids, attention_mask = kwargs["input_ids"], kwargs["attention_mask"]
        rows = [
            script.classify(ids[mask.bool()].tolist()) for ids, mask in zip(input_ids, attention_mask, strict=True)
        ]
        width = input_ids.shape[1]
        processor = FixedLengthProcessor(script.target_lengths(rows), width, eos_ids)
        kwargs["logits_processor"] = LogitsProcessorList([*(kwargs.get("logits_processor") or []), processor])
        kinds = {kind for kind, _ in rows}
        phase = kinds.pop() if len(kinds) == 1 else "joint"
        with clock.time(f"gen_{phase}_s"):
            output = original(*args, **kwargs)
        clock.counts[f"calls_{phase}"] += 1
        completions = output[:, width:]
        is_eos = torch.isin(completions, torch.tensor(eos_ids, device=completions.device))
        for i, (kind, problem) in enumerate(rows):
            hits = is_eos[i].nonzero()
            if len(hits):
                length = int(hits[0]) + 1
            else:  # stopped by a cap (stopping criterion or max_new_tokens): the padding after it is not generated
                kept = (completions[i] != pad).flip(0).int().cumsum(0).bool().flip(0)
                length = int(kept.sum())
            clock.counts[f"tokens_{kind}"] += length
            clock.counts[f"rows_{kind}"] += 1
            clock.counts["prompt_tokens"] += float(attention_mask[i].sum())
            ids = rewrite(kind, problem, length) if length else None
            if ids is not None:
                output[i, width : width + length] = torch.tensor(ids, dtype=output.dtype)
                output[i, width + length :] = pad
        return output

    model.generate = generate


def install_transformers_generation(trainer, script: MetaScript, clock: Clock) -> None:
    """Fixed-length generation; the meta rows get the script's prediction of the same length."""

    def rewrite(kind, problem, length):
        return script.meta_ids(problem, length) if kind == "meta" else None

    install_fixed_length_generate(trainer, script, clock, rewrite)


class FixedLengthLLM:
    """The colocated vLLM engine seen through TRL: one `SamplingParams` per request, of the row's fixed length."""

    def __init__(self, llm, script: MetaScript, clock: Clock):
        self._llm, self._script, self._clock = llm, script, clock

    def generate(self, prompts, sampling_params=None, **kwargs):
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params] * len(prompts)
        rows = [self._script.classify(prompt["prompt_token_ids"]) for prompt in prompts]
        per_request = []
        for target, given in zip(self._script.target_lengths(rows), params, strict=True):
            request = given.clone()
            request.max_tokens = min(given.max_tokens, target)
            request.min_tokens = request.max_tokens
            per_request.append(request)
        kinds = {kind for kind, _ in rows}
        phase = kinds.pop() if len(kinds) == 1 else "joint"
        with self._clock.time(f"gen_{phase}_s"):
            outputs = self._llm.generate(prompts, sampling_params=per_request, **kwargs)
        self._clock.counts[f"calls_{phase}"] += 1
        for output, (kind, problem) in zip(outputs, rows, strict=True):
            for completion in output.outputs:
                self._clock.counts[f"tokens_{kind}"] += len(completion.token_ids)
                if kind == "meta":
                    completion.token_ids = self._script.meta_ids(problem, len(completion.token_ids))
        return outputs

    def __getattr__(self, name):
        return getattr(self._llm, name)


def vllm_engine_settings(llm) -> dict:
    """The scheduler limits TRL gave the colocated engine (best effort: {} if vLLM moved them)."""
    try:
        scheduler = llm.llm_engine.vllm_config.scheduler_config
        return {"max_num_seqs": scheduler.max_num_seqs, "max_num_batched_tokens": scheduler.max_num_batched_tokens}
    except AttributeError:
        return {}


def override_vllm_max_num_seqs(value: int) -> None:
    """Diagnostic: build TRL's colocated engine with another `max_num_seqs` (TRL sizes it for the solution rows)."""
    from trl.generation import vllm_generation

    engine_class = vllm_generation.LLM

    def build(*args, **kwargs):
        return engine_class(*args, **{**kwargs, "max_num_seqs": value})

    vllm_generation.LLM = build


def keep_cpu_linear_weights() -> None:
    """vLLM CPU build: keep unpacked linear weights so that TRL's colocate weight sync can write them."""
    import torch
    import vllm.model_executor.layers.utils as layer_utils

    def keep_weights(layer, remove_weight):
        layer.cpu_linear = torch.nn.functional.linear

    layer_utils.dispatch_cpu_unquantized_gemm = keep_weights


# ---------------------------------------------------------------------------------------------------- one run
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


def make_dataset(settings: Settings):
    import random

    from datasets import Dataset

    from masa_trl.templates import solution_prompt

    rng = random.Random(0)
    problems, answers = [], []
    for i in range(settings.prompts * (settings.steps + settings.warmup)):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        problems.append(f"Problem {i:04d}: What is {a} + {b}?")
        answers.append(str(a + b))
    return Dataset.from_dict(
        {"problem": problems, "answer": answers, "prompt": [solution_prompt(p) for p in problems]}
    )


def training_args(method: str, backend: str, seed: int, settings: Settings, output_dir: str):
    from trl import GRPOConfig

    from masa_trl import MASAConfig

    values = dict(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=settings.prompts * settings.generations,
        gradient_accumulation_steps=1,
        num_generations=settings.generations,
        num_meta_generations=settings.meta_generations,
        max_completion_length=settings.max_solution_length,
        meta_min_length=min(8, settings.cut_length),
        max_steps=settings.steps + settings.warmup,
        learning_rate=settings.learning_rate,
        beta=settings.beta,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
        shuffle_dataset=False,
        efficient_start_step=0 if method == "masa_efficient" else None,
        gating_audit_fraction=0.0,
    )
    if backend == "vllm":
        values.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, vllm_max_model_length=2048)
    if method == "grpo":
        grpo_fields = {field.name for field in dataclasses.fields(GRPOConfig)}
        return GRPOConfig(**{k: v for k, v in values.items() if k in grpo_fields})
    if method == "masa_separate":
        values["joint_generation"] = False
    elif method == "masa" and has_joint_generation():
        values["joint_generation"] = True
    return MASAConfig(**values)


def has_joint_generation() -> bool:
    """Whether this MASAConfig can generate both kinds in one call (otherwise `masa` already makes separate calls)."""
    from masa_trl import MASAConfig

    return "joint_generation" in {field.name for field in dataclasses.fields(MASAConfig)}


def run_method(backend: str, method: str, seed: int, settings: Settings, cache_dir: Path) -> dict:
    """Train one method for warmup + steps steps and return its per-step records."""
    import torch
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOTrainer

    from masa_trl import MASAGRPOTrainer
    from masa_trl.math_reward import math_accuracy_reward

    load_start = os.getloadavg()
    start = time.perf_counter()
    path = model_dir(settings, cache_dir)
    # One thread by default: on a small shared machine two OpenMP threads of tiny ops are many times slower and
    # erratic as soon as another job takes a core (measured: 0.5 s vs 0.5-8 s for the same generate call).
    torch.set_num_threads(settings.threads)
    if backend == "vllm":
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")  # no pinning to a core another job may hold
        os.environ.setdefault("OMP_NUM_THREADS", str(settings.threads))
        keep_cpu_linear_weights()
        if settings.vllm_max_num_seqs is not None:
            override_vllm_max_num_seqs(settings.vllm_max_num_seqs)
    clock, missing, records = Clock(), [], []
    with tempfile.TemporaryDirectory() as output_dir:
        args = training_args(method, backend, seed, settings, output_dir)
        trainer_class = GRPOTrainer if method == "grpo" else MASAGRPOTrainer
        trainer = trainer_class(
            model=str(path), reward_funcs=[math_accuracy_reward], args=args, train_dataset=make_dataset(settings)
        )
        setup_s = time.perf_counter() - start
        script = MetaScript(AutoTokenizer.from_pretrained(path), settings, settings.max_solution_length)
        engine = {}
        if backend == "vllm":
            engine = vllm_engine_settings(trainer.vllm_generation.llm)
            trainer.vllm_generation.llm = FixedLengthLLM(trainer.vllm_generation.llm, script, clock)
            wrap_method(trainer.vllm_generation, "sync_weights", clock, "sync_s", missing)
        else:
            install_transformers_generation(trainer, script, clock)
        # Outer generation: TRL's `_generate` (which calls `_generate_single_turn`), and MASA's own generation entry
        # points where this version of the trainer has them (they generate ahead of TRL's pipeline).
        wrapped = [name for name in OUTER_GENERATION if hasattr(trainer, name)]
        for name in wrapped:
            wrap_method(trainer, name, clock, "gen_outer_s", missing)
        missing += [name for name in ("_generate", "_generate_single_turn") if name not in wrapped]
        wrap_method(trainer, "_calculate_rewards", clock, "scoring_s", missing)
        wrap_method(trainer, "_prepare_inputs", clock, "prepare_s", missing)
        wrap_method(
            trainer,
            "_get_per_token_logps_and_entropies",
            clock,
            lambda: "train_forward_s" if torch.is_grad_enabled() else "logps_nograd_s",
            missing,
        )

        class StepClock(TrainerCallback):
            def on_step_begin(self, args, state, control, **kwargs):
                clock.reset()
                self.start, self.cpu_start = time.perf_counter(), time.process_time()

            def on_step_end(self, args, state, control, **kwargs):
                step_s, cpu_s = time.perf_counter() - self.start, time.process_time() - self.cpu_start
                records.append(
                    {"step": state.global_step, "step_s": step_s, "cpu:step_s": cpu_s, **clock.seconds}
                    | {**clock.counts, "loadavg": os.getloadavg()}
                )

        trainer.add_callback(StepClock())
        trainer.train()
        logged = {entry["step"]: entry for entry in trainer.state.log_history if "step" in entry}
        for record in records:
            entry = logged.get(record["step"], {})
            record.update(
                {f"trainer:{k}": entry[k] for k in TRAINER_METRICS if isinstance(entry.get(k), (int, float))}
            )
        unscriptable = script.unscriptable_rows
        del trainer
        gc.collect()
    return {
        "backend": backend,
        "method": method,
        "seed": seed,
        "settings": dataclasses.asdict(settings),
        "records": records,
        "setup_s": setup_s,
        "wall_s": time.perf_counter() - start,
        "load_start": load_start,
        "load_end": os.getloadavg(),
        "missing_hooks": missing,
        "outer_generation_hooks": wrapped,
        "vllm_engine": engine,
        "torch_threads": torch.get_num_threads(),
        "unscriptable_meta_rows": unscriptable,
        "python": sys.executable,
        "versions": versions(),
    }


# ---------------------------------------------------------------------------------------------------- caching
def versions() -> dict:
    names = ("torch", "transformers", "trl", "accelerate", "vllm")
    found = {}
    for name in names:
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


def cache_path(cache_dir: Path, backend: str, method: str, seed: int, settings: Settings, code: str) -> Path:
    key = json.dumps({"settings": dataclasses.asdict(settings), "code": code}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:12]
    return cache_dir / f"{backend}-{method}-seed{seed}-{digest}.json"


def backend_python(backend: str) -> str | None:
    """The interpreter that runs this backend: this one if it can, else .venv-vllm's for vLLM; None: unavailable."""
    if backend == "transformers" or importlib.util.find_spec("vllm") is not None:
        return sys.executable
    return str(VLLM_PYTHON) if VLLM_PYTHON.exists() else None


def run_cached(backend, method, seed, settings, cache_dir: Path, force: bool, code: str) -> dict:
    path = cache_path(cache_dir, backend, method, seed, settings, code)
    if path.exists() and not force:
        result = json.loads(path.read_text())
        result["cached"] = True
        return result
    cache_dir.mkdir(parents=True, exist_ok=True)
    if backend == "transformers":
        result = run_method(backend, method, seed, settings, cache_dir)
    else:  # a fresh process per engine, with the vLLM interpreter
        python = backend_python(backend)
        job = {"backend": backend, "method": method, "seed": seed, "settings": dataclasses.asdict(settings)}
        job["out"] = str(path)  # named here: the sources may change (hence the hash) while the worker runs
        log = path.with_suffix(".log")
        command = [python, str(Path(__file__).resolve()), "--worker", json.dumps(job), "--cache-dir", str(cache_dir)]
        print(
            f"[bench_step_cost] {backend} {LABELS[method]} seed {seed}: subprocess {python} (log: {log})", flush=True
        )
        with open(log, "w") as stream:
            done = subprocess.run(command, stdout=stream, stderr=subprocess.STDOUT, cwd=REPO, check=False)
        if done.returncode != 0 or not path.exists():
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"{backend} {method} seed {seed} failed (exit {done.returncode}):\n{tail}")
        result = json.loads(path.read_text())
    result["code_hash"] = code
    path.write_text(json.dumps(result, indent=1))
    result["cached"] = False
    return result


def worker(job: dict, cache_dir: Path) -> None:
    settings = Settings(**job["settings"])
    result = run_method(job["backend"], job["method"], job["seed"], settings, cache_dir)
    result["worker_code_hash"] = code_hash()
    Path(job["out"]).write_text(json.dumps(result, indent=1))


# ---------------------------------------------------------------------------------------------------- report
def derived(record: dict, cpu: bool = False) -> dict:
    """The figures of the table, from one step's raw record (seconds, wall or CPU; None: not applicable)."""

    def get(key, default=0.0):
        return record.get(f"cpu:{key}" if cpu and key.endswith("_s") else key, default)

    joint = get("calls_joint", 0) > 0
    sync = get("sync_s")
    nograd = get("logps_nograd_s")
    return {
        "step": get("step_s"),
        "generation": get("gen_outer_s") - sync,
        "meta_gen": None if joint or not get("calls_meta") else get("gen_meta_s"),
        "solution_gen": None if joint else get("gen_solution_s"),
        "joint_gen": get("gen_joint_s") if joint else None,
        "backend_gen": get("gen_meta_s") + get("gen_solution_s") + get("gen_joint_s"),
        "sync": sync if "sync_s" in record else None,
        "scoring": get("scoring_s"),
        "logps": nograd,
        "train_forward": get("train_forward_s"),
        "backward_optimizer": get("step_s") - get("prepare_s") - get("train_forward_s"),
        "other": get("prepare_s") - get("gen_outer_s") - get("scoring_s") - nograd,
        "meta_tokens": get("tokens_meta"),
        "solution_tokens": get("tokens_solution"),
        **{key.removeprefix("trainer:"): value for key, value in record.items() if key.startswith("trainer:")},
    }


def medians(runs: list[dict], cpu: bool = False) -> dict:
    """Median per figure over the measured steps of all the runs (seeds) of one method."""
    rows = [derived(r, cpu) for run in runs for r in run["records"] if r["step"] > run["settings"]["warmup"]]
    keys = dict.fromkeys(k for row in rows for k in row)
    out = {}
    for key in keys:
        values = [row[key] for row in rows if row.get(key) is not None]
        out[key] = statistics.median(values) if values else None
    out["measured_steps"] = len(rows)
    return out


def fmt(value, digits=3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def markdown(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def solution_time(stats: dict) -> tuple[float | None, str]:
    if stats.get("solution_gen") is not None:
        return stats["solution_gen"], "solution generation"
    return stats.get("joint_gen"), "generation (joint)"


TIME_COLUMNS = [
    ("step", "step total"),
    ("generation", "generation (outer)"),
    ("meta_gen", "meta gen"),
    ("solution_gen", "solution gen"),
    ("joint_gen", "generation (joint)"),
    ("sync", "weight sync"),
    ("scoring", "scoring"),
    ("logps", "log-probs (old/ref)"),
    ("train_forward", "train forward"),
    ("backward_optimizer", "backward/optimizer"),
    ("other", "other"),
]
TOKEN_COLUMNS = [
    ("meta_tokens", "meta tokens", 0),
    ("solution_tokens", "solution tokens", 0),
    ("efficient/meta_tokens", "meta tokens (trainer)", 0),
    ("efficient/solution_tokens", "solution tokens (trainer)", 0),
    ("timing/generate_joint_s", "gen joint s (trainer)", 3),
    ("timing/generate_meta_s", "gen meta s (trainer)", 3),
    ("timing/generate_solution_s", "gen solution s (trainer)", 3),
    ("efficient/gated_frac", "gated", 3),
    ("efficient/cutoff_frac", "cut", 3),
    ("meta/parse_failure_rate", "meta parse failures", 3),
]
RATIO_PAIRS = [
    ("MASA / GRPO", "masa", "grpo"),
    ("MASA (separate calls) / GRPO", "masa_separate", "grpo"),
    ("MASA-efficient / MASA", "masa_efficient", "masa"),
    ("MASA-efficient / MASA (separate calls)", "masa_efficient", "masa_separate"),
]


def time_table(stats: dict) -> str:
    return markdown(
        ["method"] + [label for _, label in TIME_COLUMNS],
        [[LABELS[m]] + [fmt(s.get(k)) for k, _ in TIME_COLUMNS] for m, s in stats.items()],
    )


def ratio_table(stats: dict) -> str:
    rows = []
    for name, top, bottom in RATIO_PAIRS:
        if top not in stats or bottom not in stats:
            continue
        a, b = stats[top], stats[bottom]
        (ta, label_a), (tb, label_b) = solution_time(a), solution_time(b)
        joint = "joint" in label_a or "joint" in label_b
        rows.append(
            [
                name,
                fmt(ratio(a["generation"], b["generation"])),
                fmt(ratio(a["backend_gen"], b["backend_gen"])),
                fmt(ratio(ta, tb)) + (" (a joint call on one side)" if joint else ""),
                fmt(ratio(a["step"], b["step"])),
                fmt(ratio(a["solution_tokens"], b["solution_tokens"])),
            ]
        )
    headers = ["ratio", "generation (outer)", "generation (backend)", "solution gen", "step total", "solution tokens"]
    return markdown(headers, rows) if rows else ""


def goals_for(backend: str, stats: dict, clock: str) -> list[dict]:
    goals = []
    if backend == "vllm" and {"masa", "grpo"} <= set(stats):
        value = ratio(stats["masa"]["generation"], stats["grpo"]["generation"])
        goals.append(
            {
                "goal": f"vllm: MASA generation (outer) <= {GOAL_GENERATION_RATIO} x GRPO's",
                "clock": clock,
                "value": value,
                "met": value is not None and value <= GOAL_GENERATION_RATIO,
                "text": f"MASA/GRPO = {fmt(value)}",
            }
        )
    # Goal 2 needs MASA's solution generation on its own: default MASA if it makes separate calls, else the
    # separate-calls variant; with neither, the joint figure stands in (and says so).
    baseline = next(
        (m for m in ("masa", "masa_separate") if m in stats and stats[m].get("solution_gen") is not None),
        "masa" if "masa" in stats else None,
    )
    if baseline is not None and "masa_efficient" in stats:
        (t_eff, label), (t_base, label_base) = solution_time(stats["masa_efficient"]), solution_time(stats[baseline])
        time_saved = None if ratio(t_eff, t_base) is None else 1 - ratio(t_eff, t_base)
        tokens = ratio(stats["masa_efficient"]["solution_tokens"], stats[baseline]["solution_tokens"])
        token_saved = None if tokens is None else 1 - tokens
        needed = None if token_saved is None else GOAL_SAVING_FACTOR * token_saved
        goals.append(
            {
                "goal": f"{backend}: MASA-efficient {label} time saved vs {LABELS[baseline]} ({label_base}) >= "
                f"{GOAL_SAVING_FACTOR} x solution tokens saved",
                "clock": clock,
                "value": time_saved,
                "met": time_saved is not None and needed is not None and time_saved >= needed,
                "text": f"time saved {fmt(time_saved)}, tokens saved {fmt(token_saved)}, needed {fmt(needed)}",
            }
        )
    return goals


def report(results: dict, settings: Settings) -> tuple[str, dict]:
    """Markdown tables and the goal verdicts, from {backend: {method: [runs]}}."""
    out, summary = [], {"settings": dataclasses.asdict(settings), "backends": {}, "goals": []}
    seeds = sorted({run["seed"] for runs in results.values() for m in runs.values() for run in m})
    out.append(
        f"{settings.prompts} prompts x G={settings.generations} solution + M={settings.meta_generations} meta rollouts "
        f"per step; solution {settings.solution_length} tokens"
        + (f" on average (long-tailed within each group: {settings.solution_lengths})" if settings.length_tail else "")
        + f", meta {settings.meta_length} tokens (meta/solution "
        f"{settings.meta_length / settings.solution_length:.3f}; paper 2293/6251 = 0.367); MASA-efficient plan per "
        f"step: {settings.num_gated}/{settings.prompts} gated, {settings.num_cut}/{settings.prompts} predicted "
        f"{settings.cut_length} tokens (cut); tiny Qwen3 hidden {settings.hidden_size}, {settings.num_layers} layers, "
        f"{settings.threads} thread(s); seeds {seeds}; medians of {settings.steps} measured steps per seed after "
        f"{settings.warmup} warm-up; seconds per step."
        + (
            f" vLLM max_num_seqs overridden to {settings.vllm_max_num_seqs} (diagnostic)."
            if settings.vllm_max_num_seqs
            else ""
        )
    )
    for backend, by_method in results.items():
        stats = {method: medians(runs) for method, runs in by_method.items()}
        cpu_stats = {method: medians(runs, cpu=True) for method, runs in by_method.items()}
        goals = goals_for(backend, stats, "wall") + goals_for(backend, cpu_stats, "cpu")
        summary["backends"][backend] = {"medians": stats, "cpu_medians": cpu_stats, "runs": []}
        summary["goals"] += goals
        out.append(f"\n### Backend: {backend}{' (vLLM colocate)' if backend == 'vllm' else ''}\n")
        out.append("Wall time, median seconds per step:\n\n" + time_table(stats))
        rows = []
        for m, s in stats.items():
            meta_share = ratio(s.get("meta_tokens"), s.get("solution_tokens")) if m != "grpo" else None
            rows.append([LABELS[m]] + [fmt(s.get(k), d) for k, _, d in TOKEN_COLUMNS] + [fmt(meta_share)])
        headers = ["method"] + [label for _, label, _ in TOKEN_COLUMNS] + ["meta/solution tokens"]
        out.append("\nTokens per step and the trainer's own metrics (medians):\n\n" + markdown(headers, rows))
        out.append("\nRatios (wall time):\n\n" + ratio_table(stats))
        out.append(
            "\nCPU time of the benchmark process (all its threads; the engine runs in-process in colocate mode), "
            "less sensitive than wall time to other jobs on the machine:\n\n" + time_table(cpu_stats)
        )
        out.append("\nRatios (CPU time):\n\n" + ratio_table(cpu_stats))
        out.append("\nGoals (reported, not asserted):")
        for goal in goals:
            out.append(f"- [{goal['clock']}] {goal['goal']}: {'MET' if goal['met'] else 'NOT MET'} ({goal['text']})")

        out.append("\nRuns (load averages 1/5/15 min at start and end of each run):")
        for method, runs in by_method.items():
            for run in runs:
                load = [round(x, 2) for x in run["load_start"]], [round(x, 2) for x in run["load_end"]]
                step_loads = [round(r["loadavg"][0], 2) for r in run["records"]]
                notes = []
                if run.get("missing_hooks"):
                    notes.append(f"hooks not installed: {run['missing_hooks']}")
                if not any(r.get(f"calls_{p}") for r in run["records"] for p in ("meta", "solution", "joint")):
                    notes.append("the generation hook was never reached: lengths and meta texts were NOT fixed")
                if run.get("vllm_engine"):
                    notes.append(f"vLLM engine {run['vllm_engine']}")
                if run.get("unscriptable_meta_rows"):
                    notes.append(f"{run['unscriptable_meta_rows']} meta rows too short for a scripted prediction")
                out.append(
                    f"- {LABELS[method]} seed {run['seed']}: setup {run['setup_s']:.1f} s, wall {run['wall_s']:.1f} s, "
                    f"load {load[0]} -> {load[1]}, 1-min load per step {step_loads}"
                    f"{' (cached)' if run.get('cached') else ''}{'; ' + '; '.join(notes) if notes else ''}"
                )
                summary["backends"][backend]["runs"].append(
                    {k: run[k] for k in ("method", "seed", "setup_s", "wall_s", "load_start", "load_end")}
                )
    if not results:
        out.append("\nNo backend ran.")
    out.append(f"\nReport load average (1/5/15 min): {[round(x, 2) for x in os.getloadavg()]}, {os.cpu_count()} CPUs")
    return "\n".join(out), summary


# ---------------------------------------------------------------------------------------------------- CLI
def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = Settings()
    parser.add_argument("--backend", choices=[*BACKENDS, "both"], default="transformers")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, help=f"measured steps per run (default {defaults.steps})")
    parser.add_argument("--warmup", type=int, help=f"warm-up steps, not measured (default {defaults.warmup})")
    parser.add_argument("--prompts", type=int, help=f"prompts per step (default {defaults.prompts})")
    parser.add_argument("--generations", type=int, help=f"G, solution rollouts per prompt ({defaults.generations})")
    parser.add_argument(
        "--meta-generations", type=int, help=f"M, meta rollouts per prompt ({defaults.meta_generations})"
    )
    parser.add_argument("--solution-length", type=int, help=f"tokens per solution row ({defaults.solution_length})")
    parser.add_argument("--meta-length", type=int, help=f"tokens per meta row ({defaults.meta_length})")
    parser.add_argument(
        "--length-tail",
        action="store_true",
        default=None,
        help="solution lengths vary within each group, long-tailed around --solution-length (see Settings)",
    )
    parser.add_argument("--cut-length", type=int, help=f"predicted length of the cut prompts ({defaults.cut_length})")
    parser.add_argument("--gated-share", type=float, help=f"share of gated prompts ({defaults.gated_share})")
    parser.add_argument("--cut-share", type=float, help=f"share of cut prompts ({defaults.cut_share})")
    parser.add_argument("--hidden-size", type=int, help=f"tiny model hidden size ({defaults.hidden_size})")
    parser.add_argument("--num-layers", type=int, help=f"tiny model layers ({defaults.num_layers})")
    parser.add_argument("--beta", type=float, help="KL coefficient; > 0 adds TRL's reference log-prob pass (0.0)")
    parser.add_argument("--threads", type=int, help=f"torch / OpenMP threads per run ({defaults.threads})")
    parser.add_argument(
        "--vllm-max-num-seqs", type=int, help="diagnostic: override the max_num_seqs TRL gives the colocated engine"
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK} unless given explicitly")
    parser.add_argument("--force", action="store_true", help="rerun even when a cached result exists")
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
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
    if options.worker:
        worker(json.loads(options.worker), options.cache_dir)
        return {}
    settings = settings_from(options)
    backends = list(BACKENDS) if options.backend == "both" else [options.backend]
    code = code_hash()
    results, skipped = {}, []
    methods = list(options.methods)
    if "masa_separate" in methods and not has_joint_generation():
        methods.remove("masa_separate")
        skipped.append("masa_separate: this MASAConfig has no joint_generation, so MASA already makes separate calls")
    for backend in backends:
        if backend_python(backend) is None:
            skipped.append(f"{backend}: no interpreter with vLLM (looked for {VLLM_PYTHON})")
            continue
        results[backend] = defaultdict(list)
        for seed in options.seeds:
            for method in methods:
                print(f"[bench_step_cost] {backend} {LABELS[method]} seed {seed} ...", flush=True)
                run = run_cached(backend, method, seed, settings, options.cache_dir, options.force, code)
                results[backend][method].append(run)
    text, summary = report({b: dict(r) for b, r in results.items()}, settings)
    for line in skipped:
        text += f"\nskipped {line}"
    print(text)
    summary["skipped"] = skipped
    summary["code_hash"] = code
    summary["markdown"] = text
    options.cache_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (options.cache_dir / f"summary-{options.backend}-{stamp}.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
