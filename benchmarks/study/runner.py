"""One run of the study: an arm, a seed, the shared warm start; evaluated on held-out problems at fixed steps.

Costs are counted the same way for every arm by [`CostMeter`], a mixin put in front of the arm's trainer class:

- **generation**: every row TRL's generation returns (`GRPOTrainer._generate_single_turn`, or MASA's
  `_trl_generate`, which wraps it): prompt and completion lengths, split into meta and solution rows by the prompt's
  template. Rounds that dynamic sampling discards and gated prompts MASA-efficient audits are counted: they were
  generated. Prompts seen = solution rows / G for GRPO and DAPO, meta rows / M for MASA arms (every prompt gets its
  M meta rollouts, gated or not).
- **training**: every forward through `_get_per_token_logps_and_entropies` (the policy loss, old log-probs when TRL
  computes them, and expert BC's passes): sequence lengths, and whether gradients were on (backward = 2 forwards).
- **cutoff on the training path** (fig. 3c): MASA arms also finish a sample of the solution rollouts the early
  cutoff stopped (`_generate_rows`), off the training path (no gradient, forked RNG, time excluded), and score the
  finished version: how many of the stopped rollouts would have been wrong.
- **FLOPs** from those lengths with [`study.flops`] (Kaplan et al.'s estimate; padding excluded), **wall time**
  of training without the held-out evaluations.
"""

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .arms import ARMS, Arm
from .task import META_TEMPLATE, ChainTask


@dataclass(frozen=True)
class StudySettings:
    """Everything that decides a run's result; all fields enter the cache key.

    The RL settings follow the paper's recipe scaled to a 0.5M-parameter model on 2 cores (the demo's measured
    learning rate; no KL; clip 0.2 / 0.28; token-level loss), with k, N_expert and the step budget shrunk in
    proportion to the 80 steps of a run (a measured probe: GRPO gains about 29 points in 60 steps at lr 1e-4, and
    flattens out towards the ceiling the unsolvable cells set).
    """

    task: ChainTask = field(default_factory=ChainTask)
    warm_start_steps: int = 1500
    vocab_size: int = 400
    max_steps: int = 80
    eval_every: int = 20
    prompts_per_step: int = 8
    num_generations: int = 8  # G
    num_meta_generations: int = 8  # M
    max_completion_length: int = 160  # the longest worked solution (9 terms) is about 150 tokens
    learning_rate: float = 1e-4
    efficient_start_step: int = 20  # k: the paper starts at step 120 of its run
    expert_buffer_size: int = 32
    expert_bc_steps: int = 1
    expert_bc_learning_rate: float = 1e-4
    heldout_per_cell: int = 16
    heldout_seed: int = 1234
    eval_solution_samples: int = 16
    eval_meta_samples: int = 8
    num_train_problems: int = 4000
    stream_seed: int = 0

    def to_dict(self) -> dict:
        settings = asdict(self)
        settings["task"] = self.task.settings()
        return settings

    @property
    def eval_steps(self) -> list[int]:
        steps = list(range(0, self.max_steps + 1, self.eval_every))
        return steps if steps[-1] == self.max_steps else [*steps, self.max_steps]


# --------------------------------------------------------------------------------------------------- cost metering
@dataclass
class Costs:
    prompts_seen: float = 0.0
    solution_tokens: int = 0
    meta_tokens: int = 0
    generation_flops: float = 0.0
    training_flops: float = 0.0
    training_tokens: int = 0

    def snapshot(self) -> dict:
        return {
            "prompts_seen": self.prompts_seen,
            "solution_tokens": self.solution_tokens,
            "generated_tokens": self.solution_tokens + self.meta_tokens,
            "meta_tokens": self.meta_tokens,
            "generation_flops": self.generation_flops,
            "training_flops": self.training_flops,
            "flops": self.generation_flops + self.training_flops,
            "training_tokens": self.training_tokens,
        }


class CostMeter:
    """Mixin (first in the MRO) that counts the generation and training cost of any of the study's trainers."""

    # A row is a meta rollout when its prompt carries the meta template's fixed text (the prompt's last 48 tokens are
    # decoded, which hold the template and the short problem).
    study_meta_marker: str = META_TEMPLATE.split("{")[0].strip()

    study_finish_per_step: int = 8  # cut rollouts finished per generation batch (a sample: finishing costs time)

    def _study_setup_costs(self, shape, task: ChainTask) -> None:
        self.study_costs = Costs()
        self.study_cutoff = {"cut": 0, "finished": 0, "finished_wrong": 0}
        self.study_offpath_seconds = 0.0
        self._study_shape, self._study_task = shape, task
        self._study_is_masa = hasattr(super(), "_trl_generate")

    def _study_count_generation(self, prompt_ids, completion_ids) -> None:
        from .flops import generation_flops

        if len(completion_ids) != len(prompt_ids):  # one prompt per group: repeat it for its rows
            group = len(completion_ids) // max(1, len(prompt_ids))
            prompt_ids = [ids for ids in prompt_ids for _ in range(group)]
        texts = self.processing_class.batch_decode([ids[-48:] for ids in prompt_ids], skip_special_tokens=True)
        kinds = [self.study_meta_marker in text for text in texts]
        costs = self.study_costs
        meta_rows = sum(kinds)
        solution_rows = len(kinds) - meta_rows
        costs.meta_tokens += sum(len(c) for c, m in zip(completion_ids, kinds, strict=True) if m)
        costs.solution_tokens += sum(len(c) for c, m in zip(completion_ids, kinds, strict=True) if not m)
        if self._study_is_masa:
            costs.prompts_seen += meta_rows / self.args.num_meta_generations
        else:
            costs.prompts_seen += solution_rows / self.num_generations
        costs.generation_flops += generation_flops(
            self._study_shape, [len(p) for p in prompt_ids], [len(c) for c in completion_ids]
        )

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        completion_ids, logprobs = super()._generate_single_turn(
            prompt_ids, images, multimodal_fields, num_generations
        )
        if not self._study_is_masa:  # MASA generates through _trl_generate and hands the result over here
            self._study_count_generation(prompt_ids, completion_ids)
        return completion_ids, logprobs

    def _trl_generate(self, prompt_ids, num_generations):
        completion_ids, logprobs = super()._trl_generate(prompt_ids, num_generations)
        self._study_count_generation(prompt_ids, completion_ids)
        return completion_ids, logprobs

    def _generate_rows(self, batch, rows):
        generated = super()._generate_rows(batch, rows)
        cut = [
            (row.prompt_ids, ids)
            for row, ids in zip(rows, generated.completion_ids, strict=True)
            if row.kind == "solution" and not row.skip and row.cap is not None and len(ids) >= row.cap
            and ids[-1] not in self.eos_token_ids
        ]  # fmt: skip
        self.study_cutoff["cut"] += len(cut)
        if cut and self.model.training:
            self._study_finish(cut[: self.study_finish_per_step])
        return generated

    def _study_finish(self, cut: list[tuple[list[int], list[int]]]) -> None:
        """Complete stopped rollouts without their cap and count the ones that end wrong."""
        import re

        import torch

        from masa_trl.demo.heldout import sample_completions
        from masa_trl.math_reward import math_accuracy_reward

        start = time.perf_counter()
        tokenizer = self.processing_class
        budget = self.args.max_completion_length
        for prompt_ids, partial in cut:
            with torch.random.fork_rng(devices=[]):
                rest = sample_completions(
                    self.model, tokenizer, [list(prompt_ids) + list(partial)], max_new_tokens=budget - len(partial)
                )[0] if len(partial) < budget else []  # fmt: skip
            problem = re.search(r"Solve: ([0-9+]+)", tokenizer.decode(prompt_ids))
            if problem is None:
                continue
            text = tokenizer.decode(list(partial) + rest, skip_special_tokens=True)
            score = math_accuracy_reward([text], answer=[self._study_task.answer(problem.group(1))])[0]
            self.study_cutoff["finished"] += 1
            self.study_cutoff["finished_wrong"] += not (score is not None and score >= 1.0)
        self.study_offpath_seconds += time.perf_counter() - start

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, *args, **kwargs):
        import torch

        from .flops import training_flops

        lengths = attention_mask.sum(1).tolist()
        self.study_costs.training_flops += training_flops(self._study_shape, lengths, backward=torch.is_grad_enabled())
        self.study_costs.training_tokens += sum(lengths)
        return super()._get_per_token_logps_and_entropies(model, input_ids, attention_mask, *args, **kwargs)


def trainer_class(arm: Arm):
    """The arm's trainer class with [`CostMeter`] in front."""
    from trl import GRPOTrainer

    from masa_trl import MASAGRPOTrainer
    from masa_trl.dapo import DAPOTrainer, MASADAPOTrainer

    base = {"grpo": GRPOTrainer, "dapo": DAPOTrainer, "masa": MASAGRPOTrainer, "masa_dapo": MASADAPOTrainer}[
        arm.trainer
    ]
    return type(f"Study{base.__name__}", (CostMeter, base), {})


def training_args(arm: Arm, settings: StudySettings, seed: int, output_dir: str):
    """The arm's config: the common settings, then the arm's overrides."""
    from trl import GRPOConfig

    from masa_trl import MASAConfig
    from masa_trl.dynamic_sampling import DAPOConfig

    common = dict(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=settings.prompts_per_step * settings.num_generations,
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=1.0,
        top_p=1.0,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        beta=0.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        max_steps=settings.max_steps,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=seed,
        disable_tqdm=True,
    )
    overrides = dict(arm.overrides)
    if overrides.get("efficient_start_step") is True:
        overrides["efficient_start_step"] = settings.efficient_start_step
    if arm.is_masa:
        meta = dict(
            num_meta_generations=settings.num_meta_generations,
            meta_min_length=1,
            meta_prompt_template=settings.task.meta_template,
            meta_system_prompt="",
            difficulty_base=0.01,
            expert_buffer_size=settings.expert_buffer_size,
            expert_bc_steps=settings.expert_bc_steps,
            expert_bc_learning_rate=settings.expert_bc_learning_rate,
            expert_bc_batch_size=32,
            # Experts are admitted on every component but the notion reward, which scores 0 until the predictor names
            # the solutions' words.
            expert_min_notion_reward=0.0,
        )
        return MASAConfig(**common, **meta, **overrides)
    if arm.trainer == "dapo":
        return DAPOConfig(**common, **overrides)
    return GRPOConfig(**common, **overrides)


# ------------------------------------------------------------------------------------------------------ evaluation
class EvalPoints:
    """`TrainerCallback` that evaluates at the study's steps and records each point's costs and metrics."""

    def __new__(cls, *args, **kwargs):
        from transformers import TrainerCallback

        # Built lazily so that importing the study does not import transformers.
        impl = type("EvalPointsCallback", (_EvalPointsBase, TrainerCallback), {})
        return impl(*args, **kwargs)


class _EvalPointsBase:
    def __init__(self, trainer, evaluate, steps: list[int], initial: dict | None, on_point=None):
        self.trainer, self.evaluate, self.steps = trainer, evaluate, set(steps)
        self.initial, self.on_point = initial, on_point
        self.points: list[dict] = []
        self.eval_seconds = 0.0
        self.start = None

    def wall_seconds(self) -> float:
        return time.perf_counter() - self.start - self.eval_seconds - self.trainer.study_offpath_seconds

    def _record(self, step: int, metrics: dict) -> None:
        cutoff = self.trainer.study_cutoff
        training_path = {
            "train_cut_rows": cutoff["cut"],
            "train_cut_finished": cutoff["finished"],
            "train_cutoff_precision": cutoff["finished_wrong"] / cutoff["finished"] if cutoff["finished"] else None,
        }
        point = {"step": step, **self.trainer.study_costs.snapshot(), "wall_seconds": self.wall_seconds()}
        point |= training_path | metrics
        self.points.append(point)
        if self.on_point is not None:
            self.on_point(point)

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.start = time.perf_counter()
        if 0 in self.steps:
            begin = time.perf_counter()
            metrics = self.initial if self.initial is not None else self.evaluate(model)
            self.eval_seconds += time.perf_counter() - begin
            self._record(0, metrics)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and state.global_step > 0:
            begin = time.perf_counter()
            metrics = self.evaluate(model)
            self.eval_seconds += time.perf_counter() - begin
            self._record(state.global_step, metrics)


# ---------------------------------------------------------------------------------------------------------- a run
def run_arm(arm_name: str, seed: int, settings: StudySettings, prepared, *, initial: dict | None, threads: int = 1):
    """Train one arm for one seed and return its record (points, costs, train metrics, seconds)."""
    import tempfile

    import torch
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from masa_trl.math_reward import math_accuracy_reward

    from .flops import ModelShape

    torch.set_num_threads(threads)
    arm = ARMS[arm_name]
    start = time.perf_counter()
    train = Dataset.from_dict(
        {
            "problem": prepared.train_problems,
            "answer": [settings.task.answer(p) for p in prepared.train_problems],
            "prompt": [
                [{"role": "user", "content": settings.task.solution_template.format(problem=p)}]
                for p in prepared.train_problems
            ],
        }
    )
    with tempfile.TemporaryDirectory() as output_dir:
        args = training_args(arm, settings, seed, output_dir)
        trainer = trainer_class(arm)(
            model=str(prepared.model_dir), reward_funcs=[math_accuracy_reward], args=args, train_dataset=train
        )
        trainer._study_setup_costs(ModelShape.from_config(trainer.model.config), settings.task)
        for callback in (ProgressCallback, PrinterCallback):
            trainer.remove_callback(callback)
        hinted = getattr(args, "efficient_start_step", None) is not None and args.notion_hint
        evaluate = prepared.evaluator(seed=10_000, notion_hint_size=args.notion_hint_max_notions if hinted else 0)
        # The shared initial evaluation has no hinted accuracy: a hinted arm measures its own step 0.
        points = EvalPoints(trainer, evaluate, settings.eval_steps, None if hinted else initial)
        trainer.add_callback(points)
        trainer.train()
        logs = trainer.state.log_history
    return {
        "arm": arm_name,
        "seed": seed,
        "seconds": time.perf_counter() - start,
        "train_seconds": points.wall_seconds(),
        "eval_seconds": points.eval_seconds,
        "offpath_seconds": trainer.study_offpath_seconds,
        "points": points.points,
        "train": _train_summary(logs, trainer.state.global_step),
    }


def _train_summary(logs: list[dict], steps: int) -> dict:
    """The trainer's own view of gating and cutoff (after step k), and the last logged rewards."""

    def mean_of(key: str) -> float | None:
        values = [entry[key] for entry in logs if key in entry and not math.isnan(entry[key])]
        return sum(values) / len(values) if values else None

    return {
        "steps": steps,
        "gated_share": mean_of("efficient/gated_frac"),
        "skipped_share": mean_of("efficient/skipped_frac"),
        "cut_share": mean_of("efficient/cutoff_frac"),
        "audit_precision": mean_of("efficient/audit_precision"),
        "reward": mean_of("reward"),
        "meta_reward": mean_of("meta/reward"),
        "logs": [{k: v for k, v in entry.items() if isinstance(v, int | float)} for entry in logs],
    }


def save_json(path: Path, record: dict) -> None:
    """Write atomically: a killed study never leaves a half-written cache entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".partial")
    scratch.write_text(json.dumps(record, indent=1, default=float))
    scratch.rename(path)


# ------------------------------------------------------------------------------------------------ shared set-up
@dataclass
class Prepared:
    """The warm start, the held-out problems and the RL prompt stream shared by every run of a study."""

    settings: StudySettings
    model_dir: Path
    warm_start_record: dict
    tokenizer: object
    heldout: list[str]
    train_problems: list[str]

    def evaluator(self, seed: int, notion_hint_size: int = 0):
        """`model -> metrics` at the study's evaluation settings (one fixed sampling seed for every point and arm).

        `notion_hint_size` > 0 (an arm trained with notion hints) adds the hinted accuracy (see `evaluate_point`).
        """
        from masa_trl.demo.warm_start import PromptRenderer

        from .evaluate import evaluate_point

        settings = self.settings
        render_solution = PromptRenderer(self.tokenizer, settings.task.solution_template)
        render_meta = PromptRenderer(self.tokenizer, settings.task.meta_template)

        def evaluate(model, problems=None, num_solution_samples=None) -> dict:
            return evaluate_point(
                model,
                self.tokenizer,
                settings.task,
                self.heldout if problems is None else problems,
                render_solution=render_solution,
                render_meta=render_meta,
                max_new_tokens=settings.max_completion_length,
                num_solution_samples=num_solution_samples or settings.eval_solution_samples,
                num_meta_samples=settings.eval_meta_samples,
                seed=seed,
                notion_hint_size=notion_hint_size,
            )

        return evaluate


def warm_start_config(settings: StudySettings):
    from masa_trl.demo.task import DemoModelSpec
    from masa_trl.demo.warm_start import WarmStartConfig

    # The demo's model (2 layers, hidden 128), with room for the worked solutions' tokens and positions.
    spec = DemoModelSpec(vocab_size=settings.vocab_size, max_position_embeddings=256)
    return WarmStartConfig(steps=settings.warm_start_steps, model=spec)


def prepare(settings: StudySettings, cache_dir: str | Path, *, progress: bool = True) -> Prepared:
    """Warm-start (or load from the cache) the model, and draw the held-out problems and the RL stream."""
    from transformers import AutoTokenizer

    from masa_trl.demo.warm_start import warm_start

    model_dir, record, _ = warm_start(warm_start_config(settings), cache_dir, progress=progress, task=settings.task)
    heldout = settings.task.heldout(settings.heldout_per_cell, seed=settings.heldout_seed)
    train = settings.task.stream(settings.num_train_problems, seed=settings.stream_seed, exclude=heldout)
    return Prepared(settings, model_dir, record, AutoTokenizer.from_pretrained(model_dir), heldout, train)
