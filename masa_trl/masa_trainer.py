"""`MASAGRPOTrainer`: TRL's GRPOTrainer with MASA's parallel meta rollouts trained in the same update."""

import json
import logging as std_logging
import math
import time
import weakref
from collections import defaultdict, deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from accelerate.utils import gather_object
from datasets import Dataset, IterableDataset
from torch import nn
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging
from trl import GRPOTrainer
from trl.trainer.utils import get_callable_name

from masa_trl.batching import concat_rollout_batches, select_rows
from masa_trl.behaviour_cloning import ExpertBC, ExpertBCCallback
from masa_trl.data import meta_prompt_kwargs
from masa_trl.efficient import TRIVIAL, UNSOLVABLE, GatingAudit, PromptPlan, plan_prompts
from masa_trl.generation_metrics import completion_length_metrics, sampling_metrics
from masa_trl.layout import RolloutLayout
from masa_trl.masa_config import MASAConfig
from masa_trl.math_reward import completion_text, math_accuracy_reward
from masa_trl.meta import parse_meta_prediction
from masa_trl.meta_metrics import meta_alignment_metrics
from masa_trl.meta_rewards import default_meta_reward_funcs
from masa_trl.model_card import add_masa_section
from masa_trl.rewards import SolutionStats
from masa_trl.rollout_generation import (
    META,
    SOLUTION,
    Generated,
    RowRequest,
    colocated_engine_seats,
    make_generator,
)
from masa_trl.templates import add_notion_hint, meta_prompt, solution_prompt


logger = logging.get_logger(__name__)


class MASAGRPOTrainer(GRPOTrainer):
    r"""
    Trainer for MASA, Meta-Awareness via Self-Alignment ([arXiv 2510.03259](https://huggingface.co/papers/2510.03259)).

    For every prompt of a generation batch the policy writes `num_generations` (G) solution rollouts from the solution
    prompt and `num_meta_generations` (M) meta rollouts from the meta prompt (appendix A of the paper). Solution
    rollouts are scored by `reward_funcs` exactly as in [`~trl.GRPOTrainer`]; meta rollouts are scored by
    `meta_reward_funcs` against the statistics of the same prompt's G solution rollouts, gathered across processes.
    Both kinds of row get group-relative advantages (solutions within their G, meta rollouts within their M) and go
    through TRL's loss in the same optimizer step.

    What changes w.r.t. [`~trl.GRPOTrainer`]: `_generate_and_score_completions` first generates the step's rollouts of
    both kinds, in one generation call (through one generator per backend, `masa_trl.rollout_generation`), then runs
    TRL's own pipeline twice on the generated completions, once on the solution rows and once, with the group size,
    reward functions, metrics and completion logs switched to their meta counterparts, on the meta rows, and joins the
    two batches; `_calculate_rewards` records the solution statistics and parses the meta outputs. The per-batch state
    lives in one `_RolloutBatch`. Generation itself, log-probabilities, importance sampling, the reference model,
    advantages and every `loss_type` are TRL's own code. Two collaborators stand beside this core: MASA-efficient's
    planning (`masa_trl.efficient`, from `efficient_start_step`) and expert behaviour cloning
    (`masa_trl.behaviour_cloning.ExpertBC`).

    Args:
        model, args, train_dataset, eval_dataset, processing_class, reward_processing_classes, callbacks, optimizers,
        peft_config:
            As in [`~trl.GRPOTrainer`]; `args` is a [`MASAConfig`].
        reward_funcs (`RewardFunc` or `list[RewardFunc]`, *optional*):
            Solution reward functions. Defaults to [`~masa_trl.math_reward.math_accuracy_reward`], which reads the
            dataset's `answer` column. The one named by `args.correctness_reward` (default: the first) decides which
            solution rollouts are correct for the meta reward.
        meta_reward_funcs (`list[Callable]`, *optional*):
            Meta reward callables, TRL-style (`f(prompts, completions, completion_ids, **kwargs)`), receiving
            `meta_prediction` and `solution_stats` keyword arguments (see `masa_trl.meta_rewards`). Defaults to the
            paper's length, difficulty and notion alignment rewards, averaged.

    Datasets need a `problem` column (both prompts are rendered from it) and the columns the reward functions read
    (`answer` for the default reward). A ready `prompt` column, if present, is used as the solution prompt.

    Example:

    ```python
    >>> from masa_trl import MASAConfig, MASAGRPOTrainer
    >>> trainer = MASAGRPOTrainer(model="Qwen/Qwen3-8B-Base", args=MASAConfig(num_meta_generations=16), train_dataset=ds)
    >>> trainer.train()
    ```
    """

    _tag_names: ClassVar[list[str]] = ["trl", "grpo", "masa"]
    # The GRPOTrainer attributes that the meta phase switches to their meta counterparts (see `_meta_phase`).
    _META_PHASE_ATTRIBUTES = (
        "num_generations",
        "num_generations_eval",
        "reward_funcs",
        "reward_func_names",
        "reward_weights",
        "reward_processing_classes",
        "_metrics",
        "_logs",
    )
    _name = "MASA"
    _paper: ClassVar[dict[str, str]] = {
        "title": "Meta-Awareness Enhances Reasoning Models: Self-Alignment Reinforcement Learning",
        "id": "2510.03259",
    }

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: MASAConfig | None = None,
        train_dataset: Dataset | IterableDataset | None = None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        peft_config=None,
        meta_reward_funcs: list | None = None,
        **kwargs,
    ):
        unsupported = sorted(k for k, v in kwargs.items() if v is not None)
        if unsupported:
            raise NotImplementedError(
                f"MASAGRPOTrainer does not support {unsupported}: MASA needs one plain-text solution rollout per row "
                "and a meta rollout rendered from the same problem. Remove these arguments."
            )
        if args is None:
            model_name = model if isinstance(model, str) else model.config._name_or_path
            args = MASAConfig(f"{model_name.split('/')[-1]}-MASA")
        elif not isinstance(args, MASAConfig):
            raise TypeError(f"args must be a MASAConfig, got {type(args).__name__}. Build it with MASAConfig(...).")
        if reward_funcs is None:
            reward_funcs = [math_accuracy_reward]
        reward_func_list = reward_funcs if isinstance(reward_funcs, list) else [reward_funcs]
        required = ["problem"] + (["answer"] if math_accuracy_reward in reward_func_list else [])
        train_dataset = _prepare_dataset(train_dataset, required, "train_dataset")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: _prepare_dataset(v, required, f"eval_dataset[{k!r}]") for k, v in eval_dataset.items()}
        else:
            eval_dataset = _prepare_dataset(eval_dataset, required, "eval_dataset")

        # TRL seats its colocated vLLM engine for the solution rows of a call; MASA's calls also hold meta rows.
        with colocated_engine_seats(args):
            super().__init__(
                model=model,
                reward_funcs=reward_funcs,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                reward_processing_classes=reward_processing_classes,
                callbacks=callbacks,
                optimizers=optimizers,
                peft_config=peft_config,
            )

        if args.dynamic_sampling and not hasattr(self, "_dynamic_sampling_scores"):
            raise ValueError(
                "dynamic_sampling=True needs a trainer with dynamic sampling: use masa_trl.MASADAPOTrainer (MASA + "
                "DAPO) instead of MASAGRPOTrainer, or set --dynamic_sampling false."
            )
        if args.correctness_reward is None:
            self._correctness_index = 0
        elif args.correctness_reward in self.reward_func_names:
            self._correctness_index = self.reward_func_names.index(args.correctness_reward)
        else:
            raise ValueError(
                f"correctness_reward={args.correctness_reward!r} names no reward function; the reward functions are "
                f"{self.reward_func_names}. Set --correctness_reward to one of them."
            )

        self.meta_reward_funcs = meta_reward_funcs or default_meta_reward_funcs(args.difficulty_base)
        for func in self.meta_reward_funcs:
            if isinstance(func, (str, nn.Module)) or not callable(func):
                raise TypeError(f"meta_reward_funcs must be callables, got {func!r}.")
        self.meta_reward_func_names = [get_callable_name(func) for func in self.meta_reward_funcs]
        num_meta_funcs = len(self.meta_reward_funcs)
        weights = args.meta_reward_weights or [1.0 / num_meta_funcs] * num_meta_funcs
        if len(weights) != num_meta_funcs:
            raise ValueError(
                f"meta_reward_weights has {len(weights)} values but there are {num_meta_funcs} meta reward functions "
                f"({self.meta_reward_func_names})."
            )
        self.meta_reward_weights = torch.tensor(weights, dtype=torch.float32)

        if self.processing_class.chat_template is None:
            raise ValueError(
                "The tokenizer has no chat template, which the meta prompt (a system and a user message) needs. Set "
                "tokenizer.chat_template or use a chat model's tokenizer."
            )
        self._meta_prompt("A problem with {braces} to check the meta prompt template.")  # a bad template fails now

        # The generation batch under way (`_RolloutBatch`), the one object TRL's hooks read; the latest finished one
        # stays in `last_rollout_batch` for inspection.
        self._batch: _RolloutBatch | None = None
        self.last_rollout_batch: _RolloutBatch | None = None
        # The collaborators below hold a weak proxy of the trainer, not the trainer: vLLM freezes the garbage collector
        # when its engine starts (gc.freeze), so a reference cycle through the trainer would never be collected and
        # would keep the model and the vLLM engine alive after the trainer is dropped (e.g. a second run in a notebook).
        trainer = weakref.proxy(self)
        # One generator for the backend, chosen now; it calls TRL's generation through `_trl_generate`.
        self._rollout_generator = make_generator(trainer, lambda prompt_ids, n: trainer._trl_generate(prompt_ids, n))
        self._solution_tokens_total = 0.0
        # Training generation batches so far: the paper's RL steps, which k and the BC trigger count (one generation
        # batch may feed several optimizer steps).
        self._generation_step = 0
        self._gating_audit = GatingAudit(
            args.gating_audit_fraction, args.gating_precision_floor, args.gating_audit_window, seed=args.seed
        )

        # Expert behaviour cloning, a collaborator beside the RL loop: fed by `_collect_experts`, run by its callback.
        self.expert_bc = ExpertBC(trainer)
        if args.use_expert_bc:
            self.add_callback(ExpertBCCallback(trainer))

    # ------------------------------------------------------------------------------------------------ prompts
    def _meta_prompt(self, problem: str) -> list[dict]:
        return meta_prompt(problem, **meta_prompt_kwargs(self.args))

    def _parse_meta(self, text: str):
        """The meta prediction of a rollout; `None` when unparsable, also for a length outside the prompt's range."""
        args = self.args
        return parse_meta_prediction(
            text, args.pass_rate_scale, max_length=args.max_completion_length, min_length=args.meta_min_length
        )

    def _group_size(self, mode: str) -> int:
        return self.num_generations if mode == "train" else self.num_generations_eval

    # ------------------------------------------------------------------------------------------------ rollouts
    def _generate_and_score_completions(self, inputs: list[dict]) -> dict:
        """Both kinds of rollout of one generation batch, scored, with advantages, joined into one batch for TRL.

        1. Meta inputs: one meta prompt per row, M per prompt, laid out over the processes like the solution rows.
        2. Generation (`_generate_rollouts`): both kinds in one call, or, under MASA-efficient, meta first, then the
           planned solutions.
        3. TRL's pipeline on the solution rows (rewards, log-probs, advantages), handed the generated completions.
        4. The solution statistics of every prompt, gathered; TRL's pipeline again on the meta rows, switched to the
           meta group size and reward functions, which score each meta rollout against its prompt's statistics.
        5. The join: meta advantages weighted, untrained rows flagged, expert collection and the gate's audit.
        """
        mode = "train" if self.model.training else "eval"
        # The completion table shows the latest generation batch, both kinds of row; TRL's fixed-size deques would
        # push solution rows out and misalign the columns that only one kind of row has.
        self._logs = _completion_logs()
        layout = RolloutLayout(
            len(inputs),
            self._group_size(mode),
            self.args.num_meta_generations,
            self.accelerator.process_index,
            self.accelerator.num_processes,
        )
        all_prompts = gather_object([inputs[i] for i in layout.group_starts()])
        meta_inputs = [
            {**all_prompts[g], "prompt": self._meta_prompt(all_prompts[g]["problem"]), "prompt_index": g}
            for g in layout.meta_prompts()
        ]
        batch = self._batch = _RolloutBatch(mode, layout, meta_inputs)
        try:
            inputs = self._generate_rollouts(batch, inputs)
            solution_batch = super()._generate_and_score_completions(inputs)
            batch.solution_stats = self._gather_solution_stats(batch, all_prompts)
            if batch.plans is not None:
                self._recount_generation_metrics(batch, solution_batch)
            self._set_trained_rows(solution_batch, batch.solution_trains())
            for meta_example in meta_inputs:
                # A skipped prompt has no solution rollouts, hence no statistics: its meta rows are unscored (NaN),
                # so they enter neither the meta reward metrics nor, below, the loss. Scoring them against the gate's
                # own verdict would pay the meta rollouts for agreeing with the consensus that gated them.
                meta_example["solution_stats"] = batch.solution_stats[meta_example["prompt_index"]]

            batch.phase = META
            with self._meta_phase(mode) as (meta_metrics, meta_logs):
                meta_batch = super()._generate_and_score_completions(meta_inputs)
            meta_batch["advantages"] = meta_batch["advantages"] * self.args.meta_loss_weight
            self._set_trained_rows(meta_batch, batch.meta_trains())
            predictions, prompt_index = self._record_meta_phase(batch, meta_metrics, meta_logs)
            if mode == "train" and self.args.use_expert_bc:
                self._collect_experts(batch, predictions, prompt_index)
            if batch.plans is not None:
                self._audit_gate(batch)
            if mode == "train":
                self._record_generation_cost(batch)
                self._count_generation_batch()
        finally:
            self.last_rollout_batch, self._batch = batch, None

        device = solution_batch["advantages"].device
        solution_batch["is_meta"] = torch.zeros(len(inputs), dtype=torch.bool, device=device)
        meta_batch["is_meta"] = torch.ones(len(meta_inputs), dtype=torch.bool, device=device)
        return concat_rollout_batches(solution_batch, meta_batch, self._tokenizer.pad_token_id)

    def _generate_rollouts(self, batch: "_RolloutBatch", inputs: list[dict]) -> list[dict]:
        """Generate the batch's rollouts into `batch.generated`; returns the solution inputs (hinted if planned).

        Whenever neither kind waits for the other, all rows go into one generation call (`joint_generation`; by
        default on vLLM): the paper's parallel rollouts, where meta generation hides in the solutions' long tail.
        MASA-efficient needs the meta predictions to plan the solutions, so it makes two calls.
        """
        layout = batch.layout
        meta_rows = self._row_requests(batch.meta_inputs, META, layout.meta_prompts())
        if batch.mode == "train" and self._efficient_active():
            batch.generated[META] = self._generate_rows(batch, meta_rows)
            batch.plans = self._plan(batch)
            prompts = layout.solution_prompts()
            inputs = [self._hinted(example, batch.plans[g]) for example, g in zip(inputs, prompts, strict=True)]
            solution_rows = self._row_requests(inputs, SOLUTION, layout.solution_prompts(), batch.plans)
            batch.generated[SOLUTION] = self._generate_rows(batch, solution_rows)
            return inputs
        solution_rows = self._row_requests(inputs, SOLUTION, layout.solution_prompts())
        if self.args.generates_jointly:  # the default per backend, as measured: see MASAConfig.joint_generation
            joint = self._generate_rows(batch, solution_rows + meta_rows)
            num_solution = len(solution_rows)
            batch.generated[SOLUTION] = joint.select(range(num_solution))
            batch.generated[META] = joint.select(range(num_solution, num_solution + len(meta_rows)))
        else:
            batch.generated[SOLUTION] = self._generate_rows(batch, solution_rows)
            batch.generated[META] = self._generate_rows(batch, meta_rows)
        return inputs

    def _row_requests(self, examples, kind, prompt_indices, plans=None) -> list[RowRequest]:
        """Tokenise the examples' prompts as TRL's pipeline will, one `RowRequest` per row."""
        prompt_ids = self._tokenize_prompts([example["prompt"] for example in examples])[0]
        return [
            RowRequest(
                list(ids),
                kind,
                g,
                cap=None if plans is None else plans[g].cap,
                skip=False if plans is None else plans[g].skip,
            )
            for ids, g in zip(prompt_ids, prompt_indices, strict=True)
        ]

    def _generate_rows(self, batch: "_RolloutBatch", rows: list[RowRequest]) -> Generated:
        """One generation call through the backend's generator, with its cost recorded in the batch."""
        start = time.perf_counter()
        generated = self._rollout_generator.generate(rows)
        kinds = {row.kind for row in rows}
        label = "joint" if len(kinds) > 1 else kinds.pop()
        cost = batch.cost
        cost[f"{label}_seconds"] += time.perf_counter() - start
        for row, ids in zip(rows, generated.completion_ids, strict=True):
            if row.skip:  # a placeholder, never generated
                continue
            cost[f"{row.kind}_tokens"] += len(ids)
            if row.cap is not None:
                cost["capped_rows"] += 1
                cost["cut_rows"] += float(len(ids) >= row.cap and ids[-1] not in self.eos_token_ids)
        return generated

    def _trl_generate(self, prompt_ids: list[list[int]], num_generations: int):
        """TRL's generation of one call (`GRPOTrainer._generate_single_turn`), which MASA's generators wrap."""
        return super()._generate_single_turn(prompt_ids, None, {}, num_generations)

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        """Hand TRL's pipeline the completions `_generate_rollouts` generated for the phase under way."""
        batch = self._batch
        if batch is None:  # not inside a MASA generation batch
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations)
        generated = batch.generated.pop(batch.phase, None)
        if generated is None or generated.prompt_ids != [list(ids) for ids in prompt_ids]:
            raise RuntimeError(
                f"TRL's pipeline asked for {batch.phase} completions of prompts that MASA did not generate (TRL's "
                "`_generate` changed how it tokenises or calls `_generate_single_turn`); see tests/test_trl_drift.py."
            )
        return generated.completion_ids, generated.logprobs

    def _count_generation_batch(self) -> None:
        """One more training generation batch (an RL step of the paper): k and the BC schedule count these."""
        self._generation_step += 1

    # ------------------------------------------------------------------------------------------------ MASA-efficient
    def _efficient_active(self) -> bool:
        """Whether this generation batch is planned by MASA-efficient: k counts generation batches (RL steps)."""
        return self.args.efficient_start_step is not None and self._generation_step >= self.args.efficient_start_step

    def _plan(self, batch: "_RolloutBatch") -> list[PromptPlan]:
        """Every prompt's solution plan from its M meta predictions, gathered (the same plan on every process)."""
        texts = self.processing_class.batch_decode(batch.generated[META].completion_ids, skip_special_tokens=True)
        per_prompt = batch.layout.per_prompt(
            gather_object([self._parse_meta(text) for text in texts]), self.args.num_meta_generations
        )
        return plan_prompts(
            per_prompt,
            self._gating_audit,
            pass_rate_scale=self.args.pass_rate_scale,
            std_threshold=self.args.gating_std_threshold,
            cutoff_factor=self.args.cutoff_factor,
            max_length=self.args.max_completion_length,
            notion_hint_size=self.args.notion_hint_max_notions if self.args.notion_hint else 0,
        )

    @staticmethod
    def _hinted(example: dict, plan: PromptPlan) -> dict:
        """The solution input with its prompt's notion hint; all rows of a prompt share it (one prompt per group)."""
        return {**example, "prompt": add_notion_hint(example["prompt"], plan.notions)} if plan.notions else example

    def _set_trained_rows(self, batch, trains: list[bool] | None) -> None:
        """Flag the rows that enter the loss; the others keep their shape but carry no loss and no tokens.

        Untrained rows (skipped and audited solutions, the meta rows of skipped prompts) stay in the batch so that
        every process holds the same number of rows; `_compute_loss` leaves them out of its row means. `None` (no
        MASA-efficient plan, which is decided alike on every process) means every row trains: nothing to mask.
        """
        device = batch["completion_mask"].device
        if trains is None:
            batch["trained"] = torch.ones(batch["completion_mask"].size(0), dtype=torch.bool, device=device)
            return
        keep = torch.tensor(trains, dtype=torch.bool, device=device)
        batch["trained"] = keep
        # No early exit when every local row trains: another process may have untrained rows, and all must gather.
        batch["completion_mask"] = batch["completion_mask"] * keep.unsqueeze(1).to(batch["completion_mask"].dtype)
        batch["advantages"] = batch["advantages"] * keep
        batch["num_items_in_batch"] = self.accelerator.gather(batch["completion_mask"].sum()).sum()

    def _compute_loss(self, model, inputs):
        """TRL's loss over the trained rows only.

        Several loss types average over rows (`grpo`, `sapo`, `luspo`) or divide by the number of rows (`dr_grpo`),
        so a masked row would still shrink the gradient of the others. Untrained rows are therefore removed before
        TRL's loss, which then equals the loss of the batch without them for every loss type; a micro-batch with no
        trained row is passed as it is (everything masked: an exactly zero loss and gradient, and the forward and
        backward still run, as FSDP and ZeRO-3 need on every process).
        """
        trained = inputs.get("trained")
        if trained is not None and trained.any() and not trained.all():
            inputs = select_rows(inputs, trained)
        return super()._compute_loss(model, inputs)

    def _recount_generation_metrics(self, batch: "_RolloutBatch", solution_batch: dict) -> None:
        """Replace TRL's completion-length and sampling metrics of this batch by their values without placeholders.

        Skipped prompts' rows hold one-token placeholders that were never generated; audited rows were generated and
        count. TRL appended one value per metric for this batch, which is overwritten here.
        """
        device = self.accelerator.device
        generated = [not batch.plans[g].skip for g in batch.layout.solution_prompts()]
        _, completion_ids_list, _ = batch.solution_rollouts
        eos_and_pad = [*self.eos_token_ids, self._tokenizer.pad_token_id]
        local = torch.tensor(
            [
                [len(ids), ids[-1] not in eos_and_pad, keep]
                for ids, keep in zip(completion_ids_list, generated, strict=True)
            ],
            device=device,
        )
        rows = self.accelerator.gather(local)
        rows = rows[rows[:, 2].bool()]
        metrics = completion_length_metrics(rows[:, 0], rows[:, 1].bool())
        if self.use_vllm and self.vllm_importance_sampling_correction:
            row_mask = torch.tensor(generated, device=device).unsqueeze(1)
            metrics.update(
                sampling_metrics(
                    solution_batch["old_per_token_logps"],
                    solution_batch["sampling_per_token_logps"],
                    solution_batch["importance_sampling_ratio"],
                    solution_batch["completion_mask"].bool() & row_mask,
                    gather=self.accelerator.gather,
                )
            )
        for name, value in metrics.items():
            self._metrics["train"][name][-1] = value

    def _record_generation_cost(self, batch: "_RolloutBatch") -> None:
        """Generation work of the step per kind (tokens) and per call (wall time), and what MASA-efficient decided."""
        metrics, cost, plans = self._metrics["train"], batch.cost, batch.plans
        keys = ["meta_tokens", "solution_tokens", "cut_rows", "capped_rows"]
        local = torch.tensor([cost[k] for k in keys], device=self.accelerator.device)
        totals = dict(zip(keys, self.accelerator.gather(local.unsqueeze(0)).sum(0).tolist(), strict=True))
        self._solution_tokens_total += totals["solution_tokens"]
        metrics["efficient/solution_tokens"].append(totals["solution_tokens"])
        metrics["efficient/solution_tokens_total"].append(self._solution_tokens_total)
        metrics["efficient/meta_tokens"].append(totals["meta_tokens"])
        metrics["efficient/active"].append(float(plans is not None))
        # One call holding both kinds is timed as "joint"; MASA-efficient's two calls as "meta" and "solution".
        for label in ("joint", "meta", "solution"):
            if f"{label}_seconds" in cost:
                metrics[f"timing/generate_{label}_s"].append(cost[f"{label}_seconds"])
        metrics["timing/generate_s"].append(sum(v for k, v in cost.items() if k.endswith("_seconds")))
        if plans is None:
            return
        num_prompts = len(plans)
        metrics["efficient/gated_frac"].append(sum(p.gate is not None for p in plans) / num_prompts)
        metrics["efficient/gated_trivial_frac"].append(sum(p.gate == TRIVIAL for p in plans) / num_prompts)
        metrics["efficient/gated_unsolvable_frac"].append(sum(p.gate == UNSOLVABLE for p in plans) / num_prompts)
        metrics["efficient/skipped_frac"].append(sum(p.skip for p in plans) / num_prompts)
        metrics["efficient/audit_precision"].append(self._gating_audit.precision)
        metrics["efficient/gating_paused"].append(float(self._gating_audit.paused))
        metrics["efficient/cutoff_frac"].append(totals["cut_rows"] / max(totals["capped_rows"], 1.0))

    def _audit_gate(self, batch: "_RolloutBatch") -> None:
        """Record, for every gated prompt that was rolled out (audited, or gating paused), whether the gate was right."""
        was_paused = self._gating_audit.paused
        for plan, stats in zip(batch.plans, batch.solution_stats, strict=True):
            if plan.gate is not None and not plan.skip and stats is not None:
                self._gating_audit.record(plan.gate, stats.pass_rate)
        if self._gating_audit.paused and not was_paused:
            logger.warning(
                f"MASA-efficient: the audited gating precision fell to {self._gating_audit.precision:.2f}, below "
                f"gating_precision_floor={self.args.gating_precision_floor}; gating is paused until it recovers."
            )
        elif was_paused and not self._gating_audit.paused:
            logger.warning(f"MASA-efficient: gating precision recovered ({self._gating_audit.precision:.2f}).")

    # ------------------------------------------------------------------------------------------------ rewards
    @contextmanager
    def _meta_phase(self, mode: str):
        """Switch TRL's pipeline to the meta rollouts: group size M, meta reward functions, separate metrics/logs."""
        saved = {name: getattr(self, name) for name in self._META_PHASE_ATTRIBUTES}
        meta_metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        meta_logs = _completion_logs()
        self.num_generations = self.num_generations_eval = self.args.num_meta_generations
        self.reward_funcs = self.meta_reward_funcs
        self.reward_func_names = self.meta_reward_func_names
        self.reward_weights = self.meta_reward_weights
        self.reward_processing_classes = [None] * len(self.meta_reward_funcs)
        self._metrics, self._logs = meta_metrics, meta_logs
        try:
            yield meta_metrics[mode], meta_logs
        finally:
            for name, value in saved.items():
                setattr(self, name, value)

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        batch = self._batch
        if batch.phase == META:
            for example, completion in zip(inputs, completions, strict=True):
                example["meta_prediction"] = self._parse_meta(completion_text(completion))
        with _without_trl_row_dump():
            rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        # The rewards are gathered, so every process logs the same share. Unscored meta rows are MASA's own (a skipped
        # prompt has no solution statistics); unscored solution rows mean every reward function returned None.
        unscored = torch.isnan(rewards_per_func).all(dim=1).float().mean().item()
        self._metrics[batch.mode]["unscored_frac"].append(unscored)
        if batch.phase == META:
            batch.meta_rewards_per_func = rewards_per_func
            return rewards_per_func

        if unscored > 0:
            logger.warning_once(
                "Some solution rollouts were scored by no reward function (every one returned None, e.g. for a gold "
                "answer that cannot be parsed); they are left out of the baselines. `unscored_frac` logs their share."
            )
        batch.solution_rollouts = (completions, completion_ids_list, rewards_per_func.clone())
        if batch.plans is not None:
            # Gated placeholders and audited rollouts stay out of reward means and advantage baselines.
            # The rewards are gathered: one row per solution rollout of the whole batch, G per prompt.
            trains = torch.tensor([plan.trains for plan in batch.plans], device=rewards_per_func.device)
            rewards_per_func[~trains.repeat_interleave(batch.layout.group_size)] = torch.nan
        return rewards_per_func

    def _gather_solution_stats(self, batch: "_RolloutBatch", all_prompts) -> list[SolutionStats | None]:
        """Per prompt of the whole (gathered) batch: correctness, token lengths and texts of its solution rollouts."""
        completions, completion_ids_list, rewards_per_func = batch.solution_rollouts
        group_size = batch.layout.group_size
        device = self.accelerator.device
        lengths = self.accelerator.gather(torch.tensor([len(ids) for ids in completion_ids_list], device=device))
        texts = gather_object([completion_text(c) for c in completions])
        scores = rewards_per_func[:, self._correctness_index].view(-1, group_size).cpu()
        lengths = lengths.view(-1, group_size).tolist()
        stats = []
        for g, example in enumerate(all_prompts):
            if batch.plans is not None and batch.plans[g].skip:  # gated: no solution rollouts, only placeholders
                stats.append(None)
                continue
            if torch.isnan(scores[g]).all():  # gold answer unparsable: the meta rows of this prompt stay unscored
                stats.append(None)
                continue
            stats.append(
                SolutionStats(
                    correct=(scores[g] >= self.args.correctness_threshold).tolist(),
                    lengths=lengths[g],
                    solutions=texts[g * group_size : (g + 1) * group_size],
                    problem=example["problem"],
                )
            )
        return stats

    # ------------------------------------------------------------------------------------------------ logging
    def _record_meta_phase(self, batch: "_RolloutBatch", meta_metrics, meta_logs):
        mode, meta_inputs = batch.mode, batch.meta_inputs
        for name, values in meta_metrics.items():
            if name != "num_tokens":  # a running total of all tokens, already logged by the solution phase
                self._metrics[mode][f"meta/{name}"].extend(values)

        predictions = gather_object([example["meta_prediction"] for example in meta_inputs])
        prompt_index = gather_object([example["prompt_index"] for example in meta_inputs])
        for name, value in meta_alignment_metrics(predictions, prompt_index, batch.solution_stats).items():
            self._metrics[mode][f"meta/{name}"].append(value)

        if self.log_completions:
            meta_logs["extra"]["pred_pass_rate"].extend(p.pass_rate if p else None for p in predictions)
            meta_logs["extra"]["pred_length"].extend(p.length if p else None for p in predictions)
            meta_logs["extra"]["pred_notions"].extend(", ".join(p.notions) if p else None for p in predictions)
            _merge_completion_logs(self._logs, meta_logs)
        return predictions, prompt_index

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's logging, without the metrics that had no defined value since the last log.

        TRL logs a metric whose values are all NaN (e.g. the meta metrics while nothing parses, `bc/*` before any
        expert) as `None`, which TensorBoard drops with a warning at every step; such a metric is left out instead.
        """
        metrics = self._metrics["train" if self.model.training else "eval"]
        for key in [key for key, values in metrics.items() if all(math.isnan(v) for v in values)]:
            del metrics[key]
        super().log(logs, start_time)

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """TRL's model card, plus a section naming MASA and the paper, the MASA config and the final meta metrics."""
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if self.is_world_process_zero():
            add_masa_section(
                Path(self.args.output_dir) / "README.md", self.args, self.state.log_history, model=self.model
            )

    # ------------------------------------------------------------------------------------------------ expert BC
    @property
    def expert_buffer(self):
        """The experts collected since the last behaviour-cloning pass (see `masa_trl.behaviour_cloning.ExpertBC`)."""
        return self.expert_bc.buffer

    def _collect_experts(self, batch: "_RolloutBatch", predictions, prompt_index) -> None:
        """Feed this batch's meta rollouts, with their total rewards, to the BC collaborator."""
        totals = (batch.meta_rewards_per_func.cpu() * self.meta_reward_weights).nansum(dim=1).tolist()
        self.expert_bc.collect(predictions, totals, prompt_index, batch.solution_stats)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        state = {
            **self.expert_bc.state_dict(),
            "gating_audit": self._gating_audit.state_dict(),
            "solution_tokens_total": self._solution_tokens_total,
            "generation_step": self._generation_step,
        }
        (folder / f"masa_state_rank{self.accelerator.process_index}.json").write_text(json.dumps(state))

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = Path(checkpoint) / f"masa_state_rank{self.accelerator.process_index}.json"
        if path.exists():
            state = json.loads(path.read_text())
            self.expert_bc.load_state_dict(state)
            self._gating_audit.load_state_dict(state["gating_audit"])
            self._solution_tokens_total = state["solution_tokens_total"]
            self._generation_step = state.get("generation_step", 0)


@dataclass
class _RolloutBatch:
    """Everything one generation batch carries between TRL's hooks.

    Created at the start of `MASAGRPOTrainer._generate_and_score_completions` and dropped at its end; the hooks TRL
    calls in between (`_generate_single_turn`, `_calculate_rewards`) read it, and nothing else carries per-batch state.
    """

    mode: str
    layout: RolloutLayout
    meta_inputs: list[dict]
    # MASA-efficient's plan, one per prompt of the gathered batch (None: plain MASA, every row generated and trained).
    plans: list[PromptPlan] | None = None
    # Which of TRL's two pipeline runs is under way: SOLUTION, then META.
    phase: str = SOLUTION
    # Completions generated ahead of TRL's pipeline, per phase, handed over (once) by `_generate_single_turn`.
    generated: dict[str, Generated] = field(default_factory=dict)
    # This process's solution completions, their ids and their rewards (before untrained rows are blanked).
    solution_rollouts: tuple | None = None
    # Per prompt of the gathered batch: its solution statistics, None when it has none (skipped, unscorable).
    solution_stats: list[SolutionStats | None] = field(default_factory=list)
    # The meta rewards per function of the gathered meta rows.
    meta_rewards_per_func: torch.Tensor | None = None
    # Generation cost: "<kind>_tokens", "<call>_seconds", "capped_rows", "cut_rows".
    cost: defaultdict = field(default_factory=lambda: defaultdict(float))

    def solution_trains(self) -> list[bool] | None:
        """Per local solution row, whether it trains (None without a plan: all do)."""
        if self.plans is None:
            return None
        return [self.plans[g].trains for g in self.layout.solution_prompts()]

    def meta_trains(self) -> list[bool] | None:
        """Per local meta row, whether it trains: not when its prompt was skipped (None without a plan: all do)."""
        if self.plans is None:
            return None
        return [not self.plans[g].skip for g in self.layout.meta_prompts()]


def _prepare_dataset(dataset, required: list[str], name: str):
    """Check the columns MASA needs and render the solution prompt from `problem` when there is no `prompt`."""
    if dataset is None:
        return None
    columns = dataset.column_names
    if columns is None:  # an IterableDataset of unknown features: checked lazily by the map below
        columns = required + ["prompt"]
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(
            f"{name} lacks the column(s) {missing} that MASA needs; it has {sorted(columns)}. Rename the columns "
            "(dataset.rename_column) so that the problem text is in 'problem' and the gold answer in 'answer'."
        )
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(
            f"{name} is empty: training would run 0 steps. Check the split and any filter applied to it (e.g. the "
            "prompt-length filter of masa_trl.data.prepare_problems)."
        )
    if "prompt" in columns:
        return dataset
    return dataset.map(lambda example: {"prompt": solution_prompt(example["problem"])})


class _RowDumpFilter(std_logging.Filter):
    """Drops TRL's warning about a row that no reward function scored: it prints the row's prompt and completion."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return "All reward functions returned None" not in str(record.msg)  # accelerate prefixes "[RANK r] "


@contextmanager
def _without_trl_row_dump():
    """Model output must not reach the logs; the trainer counts such rows in `unscored_frac` instead."""
    trl_logger, row_filter = std_logging.getLogger("trl.trainer.grpo_trainer"), _RowDumpFilter()
    trl_logger.addFilter(row_filter)
    try:
        yield
    finally:
        trl_logger.removeFilter(row_filter)


def _completion_logs() -> dict:
    """An empty completion table in the layout of `GRPOTrainer._logs`."""
    return {
        "images": deque(),
        "prompt": deque(),
        "completion": deque(),
        "rewards": defaultdict(deque),
        "advantages": deque(),
        "extra": defaultdict(deque),
    }


def _merge_completion_logs(logs: dict, meta_logs: dict) -> None:
    """Append the meta rows to the completion table, padding the columns one kind of row lacks.

    Reward columns are padded with NaN, TRL's own value for a reward that does not apply (its table formats rewards
    as numbers, so `None` would crash it); extra columns with `None`.
    """
    num_solution, num_meta = len(logs["prompt"]), len(meta_logs["prompt"])
    logs["extra"]["kind"].extend(["solution"] * num_solution)
    meta_logs["extra"]["kind"].extend(["meta"] * num_meta)
    for key in ("prompt", "completion", "advantages"):
        logs[key].extend(meta_logs[key])
    for group, missing in (("rewards", math.nan), ("extra", None)):
        for column in sorted(set(logs[group]) | set(meta_logs[group])):
            if column not in logs[group]:
                logs[group][column].extend([missing] * num_solution)
            logs[group][column].extend(meta_logs[group].get(column, [missing] * num_meta))
