"""`MASAGRPOTrainer`: TRL's GRPOTrainer with MASA's parallel meta rollouts trained in the same update."""

import json
import math
import time
from collections import defaultdict, deque
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch
from accelerate.utils import gather_object, is_peft_model
from datasets import Dataset, IterableDataset
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from transformers.utils import logging
from trl import GRPOTrainer
from trl.trainer.utils import add_fused_lm_head, get_callable_name, pad

from masa_trl.batching import concat_rollout_batches, select_rows
from masa_trl.capped_generation import CappedClient, generation_limit, per_request_caps
from masa_trl.efficient import TRIVIAL, UNSOLVABLE, GatingAudit, PromptPlan, plan_prompts
from masa_trl.expert_bc import ExpertBuffer, expert_text, select_experts
from masa_trl.generation_metrics import completion_length_metrics, sampling_metrics
from masa_trl.masa_config import MASAConfig
from masa_trl.math_reward import completion_text, math_accuracy_reward
from masa_trl.meta import META_OPEN_TAG, parse_meta_prediction
from masa_trl.meta_metrics import meta_alignment_metrics
from masa_trl.meta_rewards import default_meta_reward_funcs
from masa_trl.model_card import add_masa_section
from masa_trl.rewards import SolutionStats
from masa_trl.templates import META_PROMPT_TEMPLATE, add_notion_hint, meta_prompt, solution_prompt


logger = logging.get_logger(__name__)

# Generation batches in a row without a single expert before the trainer warns that BC cannot run.
EXPERT_DROUGHT_BATCHES = 20


class MASAGRPOTrainer(GRPOTrainer):
    r"""
    Trainer for MASA, Meta-Awareness via Self-Alignment ([arXiv 2510.03259](https://huggingface.co/papers/2510.03259)).

    For every prompt of a generation batch the policy writes `num_generations` (G) solution rollouts from the solution
    prompt and `num_meta_generations` (M) meta rollouts from the meta prompt (appendix A of the paper). Solution
    rollouts are scored by `reward_funcs` exactly as in [`~trl.GRPOTrainer`]; meta rollouts are scored by
    `meta_reward_funcs` against the statistics of the same prompt's G solution rollouts, gathered across processes.
    Both kinds of row get group-relative advantages (solutions within their G, meta rollouts within their M) and go
    through TRL's loss in the same optimizer step.

    What changes w.r.t. [`~trl.GRPOTrainer`]: `_generate_and_score_completions` runs TRL's own pipeline twice, once on
    the solution prompts and once, with the group size, reward functions, metrics and completion logs switched to
    their meta counterparts, on the meta prompts, then joins the two batches; `_calculate_rewards` records the
    solution statistics and parses the meta outputs. Generation, log-probabilities, importance sampling, the
    reference model, advantages and every `loss_type` are TRL's own code.

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

        self._in_meta_phase = False
        self._solution_rollouts = None  # the latest solution rollouts and their gathered rewards
        self._solution_stats: list[SolutionStats | None] = []
        self._meta_rewards_per_func = None  # the latest meta rewards, gathered

        # MASA-efficient state: the plan of the current batch, the meta rollouts generated first, generation costs.
        self._prompt_plans: list[PromptPlan] | None = None
        self._row_plans: list[PromptPlan] | None = None
        self._stashed_generation = None
        self._generation_phase = None
        self._generation_stats = defaultdict(float)
        self._solution_tokens_total = 0.0
        # Training generation batches so far: the paper's RL steps, which k and the BC trigger count (one generation
        # batch may feed several optimizer steps).
        self._generation_step = 0
        self._gating_audit = GatingAudit(
            args.gating_audit_fraction, args.gating_precision_floor, args.gating_audit_window, seed=args.seed
        )

        self.expert_buffer = ExpertBuffer()
        self._bc_passes = 0
        self._batches_without_experts = 0
        if args.use_expert_bc:
            self.add_callback(_ExpertBCCallback(self))

    # ------------------------------------------------------------------------------------------------ prompts
    def _meta_prompt(self, problem: str) -> list[dict]:
        return meta_prompt(
            problem,
            pass_rate_scale=self.args.pass_rate_scale,
            max_length=self.args.max_completion_length,
            min_length=self.args.meta_min_length,
            system_prompt=self.args.meta_system_prompt,
            template=self.args.meta_prompt_template or META_PROMPT_TEMPLATE,
        )

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
        mode = "train" if self.model.training else "eval"
        group_size = self._group_size(mode)
        # The completion table shows the latest generation batch, both kinds of row; TRL's fixed-size deques would
        # push solution rows out and misalign the columns that only one kind of row has.
        self._logs = _completion_logs()
        self._generation_stats = defaultdict(float)  # this batch's generation cost only (not an evaluation's)

        # Meta rows are laid out prompt-major over the gathered batch, M per prompt, and each process takes an equal
        # contiguous share, like the solution rows; a prompt whose rollouts straddle two processes is therefore
        # handled exactly as TRL handles a straddling solution group.
        first_row = self.accelerator.process_index * len(inputs)
        all_prompts = gather_object([ex for i, ex in enumerate(inputs) if (first_row + i) % group_size == 0])
        num_local = len(inputs) * self.args.num_meta_generations // group_size
        start = self.accelerator.process_index * num_local
        meta_inputs = []
        for row in range(start, start + num_local):
            index = row // self.args.num_meta_generations
            meta_example = dict(all_prompts[index])
            meta_example["prompt"] = self._meta_prompt(meta_example["problem"])
            meta_example["prompt_index"] = index
            meta_inputs.append(meta_example)

        plans = None
        if mode == "train" and self._efficient_active():
            plans = self._plan_from_meta_first(meta_inputs, len(all_prompts))
            inputs = self._apply_plans(inputs, plans, first_row, group_size)
        self._prompt_plans = plans
        try:
            solution_batch = super()._generate_and_score_completions(inputs)  # records self._solution_rollouts
        finally:
            self._prompt_plans = None
        self._solution_stats = self._gather_solution_stats(all_prompts, *self._solution_rollouts, plans=plans)
        solution_trains = None
        if plans is not None:
            solution_trains = [plans[(first_row + i) // group_size].trains for i in range(len(inputs))]
            self._recount_generation_metrics(solution_batch, plans, first_row, group_size)
        self._set_trained_rows(solution_batch, solution_trains)
        for meta_example in meta_inputs:
            # A skipped prompt has no solution rollouts, hence no statistics: its meta rows are unscored (NaN), so
            # they enter neither the meta reward metrics nor, below, the loss. Scoring them against the gate's own
            # verdict would pay the meta rollouts for agreeing with the consensus that gated them.
            meta_example["solution_stats"] = self._solution_stats[meta_example["prompt_index"]]

        with self._meta_phase(mode) as (meta_metrics, meta_logs):
            meta_batch = super()._generate_and_score_completions(meta_inputs)
        meta_batch["advantages"] = meta_batch["advantages"] * self.args.meta_loss_weight
        meta_trains = None if plans is None else [not plans[example["prompt_index"]].skip for example in meta_inputs]
        self._set_trained_rows(meta_batch, meta_trains)
        predictions, prompt_index = self._record_meta_phase(mode, meta_inputs, meta_metrics, meta_logs)
        if mode == "train" and self.args.use_expert_bc:
            self._collect_experts(predictions, prompt_index)
        if plans is not None:
            self._audit_gate(plans)
        if mode == "train":
            self._record_generation_cost(plans)
            self._generation_step += 1

        device = solution_batch["advantages"].device
        solution_batch["is_meta"] = torch.zeros(len(inputs), dtype=torch.bool, device=device)
        meta_batch["is_meta"] = torch.ones(len(meta_inputs), dtype=torch.bool, device=device)
        return concat_rollout_batches(solution_batch, meta_batch, self._tokenizer.pad_token_id)

    # ------------------------------------------------------------------------------------------------ MASA-efficient
    def _efficient_active(self) -> bool:
        """Whether this generation batch is planned by MASA-efficient: k counts generation batches (RL steps)."""
        return self.args.efficient_start_step is not None and self._generation_step >= self.args.efficient_start_step

    def _plan_from_meta_first(self, meta_inputs: list[dict], num_prompts: int) -> list[PromptPlan]:
        """Generate the meta rollouts first (kept for the meta phase) and plan every prompt's solution rollouts."""
        prompt_ids, _, _ = self._tokenize_prompts([example["prompt"] for example in meta_inputs])
        self._generation_phase = "meta"
        generated = self._generate_single_turn(prompt_ids, None, {}, self.args.num_meta_generations)
        self._stashed_generation = generated  # returned again when TRL's pipeline asks for the meta completions
        texts = self.processing_class.batch_decode(generated[0], skip_special_tokens=True)
        parsed = [self._parse_meta(text) for text in texts]
        all_parsed = gather_object(parsed)
        per_prompt = [
            all_parsed[i * self.args.num_meta_generations : (i + 1) * self.args.num_meta_generations]
            for i in range(num_prompts)
        ]
        return plan_prompts(
            per_prompt,
            self._gating_audit,
            pass_rate_scale=self.args.pass_rate_scale,
            std_threshold=self.args.gating_std_threshold,
            cutoff_factor=self.args.cutoff_factor,
            max_length=self.args.max_completion_length,
            notion_hint_size=self.args.notion_hint_max_notions if self.args.notion_hint else 0,
        )

    def _apply_plans(self, inputs, plans, first_row, group_size):
        """Hint the solution prompts, and tell the generation which rows to skip and where to cut them.

        Every row of a prompt gets the same hint, so a group is generated from, and trained on, one prompt.
        """
        hinted, self._row_plans = [], []
        for i, example in enumerate(inputs):
            plan = plans[(first_row + i) // group_size]
            notions = plan.notions
            hinted.append({**example, "prompt": add_notion_hint(example["prompt"], notions)} if notions else example)
            self._row_plans.append(plan)
        return hinted

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

    def _recount_generation_metrics(self, batch, plans, first_row, group_size) -> None:
        """Replace TRL's completion-length and sampling metrics of this batch by their values without placeholders.

        Skipped prompts' rows hold one-token placeholders that were never generated; audited rows were generated and
        count. TRL appended one value per metric for this batch, which is overwritten here.
        """
        device = self.accelerator.device
        generated = [not plans[(first_row + i) // group_size].skip for i in range(len(batch["advantages"]))]
        _, completion_ids_list, _ = self._solution_rollouts
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
                    batch["old_per_token_logps"],
                    batch["sampling_per_token_logps"],
                    batch["importance_sampling_ratio"],
                    batch["completion_mask"].bool() & row_mask,
                    gather=self.accelerator.gather,
                )
            )
        for name, value in metrics.items():
            self._metrics["train"][name][-1] = value

    def _record_generation_cost(self, plans) -> None:
        """Generation work of the step per phase (tokens, wall time), and what MASA-efficient decided."""
        metrics = self._metrics["train"]
        keys = ["meta_tokens", "solution_tokens", "cut_rows", "capped_rows"]
        local = torch.tensor([self._generation_stats[k] for k in keys], device=self.accelerator.device)
        totals = dict(zip(keys, self.accelerator.gather(local.unsqueeze(0)).sum(0).tolist(), strict=True))
        self._solution_tokens_total += totals["solution_tokens"]
        metrics["efficient/solution_tokens"].append(totals["solution_tokens"])
        metrics["efficient/solution_tokens_total"].append(self._solution_tokens_total)
        metrics["efficient/meta_tokens"].append(totals["meta_tokens"])
        metrics["efficient/active"].append(float(plans is not None))
        for phase in ("meta", "solution"):
            metrics[f"timing/generate_{phase}_s"].append(self._generation_stats[f"{phase}_seconds"])
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

    def _audit_gate(self, plans) -> None:
        """Record, for every gated prompt that was rolled out (audited, or gating paused), whether the gate was right."""
        was_paused = self._gating_audit.paused
        for plan, stats in zip(plans, self._solution_stats, strict=True):
            if plan.gate is not None and not plan.skip and stats is not None:
                self._gating_audit.record(plan.gate, stats.pass_rate)
        if self._gating_audit.paused and not was_paused:
            logger.warning(
                f"MASA-efficient: the audited gating precision fell to {self._gating_audit.precision:.2f}, below "
                f"gating_precision_floor={self.args.gating_precision_floor}; gating is paused until it recovers."
            )
        elif was_paused and not self._gating_audit.paused:
            logger.warning(f"MASA-efficient: gating precision recovered ({self._gating_audit.precision:.2f}).")

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        if self._in_meta_phase and self._stashed_generation is not None:  # generated first by MASA-efficient
            generated, self._stashed_generation = self._stashed_generation, None
            return generated
        phase = "meta" if self._in_meta_phase or self._generation_phase == "meta" else "solution"
        self._generation_phase = None
        start = time.perf_counter()
        if phase == "solution" and self._prompt_plans is not None:
            completion_ids, logprobs = self._generate_planned(prompt_ids, images, multimodal_fields, num_generations)
        else:
            completion_ids, logprobs = super()._generate_single_turn(
                prompt_ids, images, multimodal_fields, num_generations, has_tool_images
            )
        self._generation_stats[f"{phase}_seconds"] += time.perf_counter() - start
        self._generation_stats[f"{phase}_tokens"] += sum(len(ids) for ids in completion_ids)
        return completion_ids, logprobs

    def _generate_planned(self, prompt_ids, images, multimodal_fields, num_generations):
        """Solution rollouts under MASA-efficient: skip gated rows, stop each row at its prompt's cap."""
        plans, eos = self._row_plans, self.eos_token_ids[0]
        generated = [i for i, plan in enumerate(plans) if not plan.skip]
        if self.use_vllm and self.vllm_mode == "server":
            # Every process sends all its rows (TRL slices the server's answer by equal row counts); the main process
            # drops the skipped prompts from the requests and sends one request per cap.
            with self._capped_server_requests():
                completion_ids, logprobs = super()._generate_single_turn(prompt_ids, images, {}, num_generations)
        else:
            rows = [prompt_ids[i] for i in generated]
            caps = [plans[i].cap or self.max_completion_length for i in generated]
            if self.use_vllm:
                out_ids, out_logps = self._generate_colocated_with_caps(rows, caps, num_generations)
            else:
                out_ids, out_logps = self._generate_grouped_by_cap(rows, caps, num_generations, prompt_ids[0]), None
            completion_ids = [[eos] for _ in prompt_ids]
            logprobs = None if out_logps is None else [[0.0] for _ in prompt_ids]
            for j, i in enumerate(generated):
                completion_ids[i] = out_ids[j]
                if logprobs is not None:
                    logprobs[i] = out_logps[j]
        for i in generated:
            if plans[i].cap is not None:
                ids = completion_ids[i]
                self._generation_stats["capped_rows"] += 1
                self._generation_stats["cut_rows"] += float(len(ids) >= plans[i].cap and ids[-1] != eos)
        self._generation_stats["solution_tokens"] -= len(prompt_ids) - len(generated)  # placeholders: not generated
        return completion_ids, logprobs

    def _generate_colocated_with_caps(self, rows, caps, num_generations):
        """vLLM colocate: one `SamplingParams` per request, each with its own `max_tokens`, in one engine call."""
        if not rows:  # colocate generation is local to the process (tensor parallel size 1): nothing to join
            return [], None
        with per_request_caps(self.vllm_generation, caps):
            return super()._generate_single_turn(rows, None, {}, num_generations)

    def _generate_grouped_by_cap(self, rows, caps, num_generations, spare_row) -> list[list[int]]:
        """transformers generation, one `generate` call per cap bucket, so that short caps stop early.

        Caps are rounded up to 1/16 of `max_completion_length` to bound the number of calls, and each row is then
        cut at its exact cap (the same distribution as stopping there). Every process makes one call per bucket of
        the whole batch, with `spare_row` thrown away where it has none, so FSDP/ZeRO-3 generation stays in step.
        """
        bucket = max(1, self.max_completion_length // 16)
        bucketed = [min(math.ceil(cap / bucket) * bucket, self.max_completion_length) for cap in caps]
        all_buckets = sorted({b for local in gather_object([sorted(set(bucketed))]) for b in local})
        completions = [None] * len(rows)
        for limit in all_buckets:
            members = [j for j, b in enumerate(bucketed) if b == limit]
            with generation_limit(self.generation_config, limit):
                ids, _ = super()._generate_single_turn(
                    [rows[j] for j in members] or [spare_row], None, {}, num_generations
                )
            for j, completion in zip(members, ids, strict=False):  # drops the spare row's answer
                completions[j] = completion[: caps[j]]
        return completions

    @contextmanager
    def _capped_server_requests(self):
        """On the main process, wrap the vLLM client so that one request goes out per cap, concurrently."""
        if not self.accelerator.is_main_process:
            yield
            return
        client = self.vllm_generation.vllm_client
        self.vllm_generation.vllm_client = CappedClient(
            client, self._prompt_plans, self.max_completion_length, self.eos_token_ids[0]
        )
        try:
            yield
        finally:
            self.vllm_generation.vllm_client = client

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
        self._in_meta_phase = True
        try:
            yield meta_metrics[mode], meta_logs
        finally:
            for name, value in saved.items():
                setattr(self, name, value)
            self._in_meta_phase = False

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self._in_meta_phase:
            for example, completion in zip(inputs, completions, strict=True):
                example["meta_prediction"] = self._parse_meta(completion_text(completion))
            self._meta_rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
            return self._meta_rewards_per_func

        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._solution_rollouts = (completions, completion_ids_list, rewards_per_func.clone())
        if self._prompt_plans is not None:
            # Gated placeholders and audited rollouts stay out of reward means and advantage baselines.
            untrained = torch.tensor([not plan.trains for plan in self._prompt_plans], device=rewards_per_func.device)
            rewards_per_func[untrained.repeat_interleave(self.num_generations)] = torch.nan
        return rewards_per_func

    def _gather_solution_stats(self, all_prompts, completions, completion_ids_list, rewards_per_func, plans=None):
        """Per prompt of the whole (gathered) batch: correctness, token lengths and texts of its solution rollouts."""
        group_size = self._group_size("train" if self.model.training else "eval")
        device = self.accelerator.device
        lengths = self.accelerator.gather(torch.tensor([len(ids) for ids in completion_ids_list], device=device))
        texts = gather_object([completion_text(c) for c in completions])
        problems = [example["problem"] for example in all_prompts]
        scores = rewards_per_func[:, self._correctness_index].view(-1, group_size).cpu()
        lengths = lengths.view(-1, group_size).tolist()
        stats = []
        for g, problem in enumerate(problems):
            if plans is not None and plans[g].skip:  # gated: no solution rollouts, only placeholders
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
                    problem=problem,
                )
            )
        return stats

    # ------------------------------------------------------------------------------------------------ logging
    def _record_meta_phase(self, mode, meta_inputs, meta_metrics, meta_logs):
        for name, values in meta_metrics.items():
            if name != "num_tokens":  # a running total of all tokens, already logged by the solution phase
                self._metrics[mode][f"meta/{name}"].extend(values)

        predictions = gather_object([example["meta_prediction"] for example in meta_inputs])
        prompt_index = gather_object([example["prompt_index"] for example in meta_inputs])
        for name, value in meta_alignment_metrics(predictions, prompt_index, self._solution_stats).items():
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
    def _collect_experts(self, predictions, prompt_index):
        """Add this batch's experts to the buffer; prompt i's expert is kept by process i % num_processes."""
        totals = (self._meta_rewards_per_func.cpu() * self.meta_reward_weights).nansum(dim=1).tolist()
        stats = self._solution_stats
        # An expert keeps the template's structure: when the meta prompt asks for <meta> reasoning, a rollout
        # without it would teach the model to skip the reasoning.
        template = self.args.meta_prompt_template or META_PROMPT_TEMPLATE
        choices = select_experts(
            predictions,
            totals,
            prompt_index,
            stats,
            self.args.expert_min_notion_reward,
            require_reasoning=META_OPEN_TAG in template,
        )
        world, rank = self.accelerator.num_processes, self.accelerator.process_index
        for choice in choices:
            if choice.prompt_index % world != rank:
                continue
            prompt_stats = stats[choice.prompt_index]
            # The same tokenised meta prompt as the RL step: no second chat template around it.
            prompt_ids = self._tokenize_prompts([self._meta_prompt(prompt_stats.problem)])[0][0]
            text = expert_text(predictions[choice.row], prompt_stats, self.args.pass_rate_scale)
            completion_ids = self._tokenizer(text, add_special_tokens=False)["input_ids"] + [self.eos_token_ids[0]]
            self.expert_buffer.add(prompt_ids, completion_ids)
        self._warn_on_expert_drought(bool(choices))
        metrics = self._metrics["train"]
        metrics["bc/expert_yield"].append(len(choices) / len(stats) if stats else 0.0)
        metrics["bc/expert_notion_reward"].append(
            sum(c.notion_reward for c in choices) / len(choices) if choices else math.nan
        )

    def _warn_on_expert_drought(self, found: bool) -> None:
        """Warn once per drought when no prompt has yielded an expert for a while: BC would then never run."""
        self._batches_without_experts = 0 if found else self._batches_without_experts + 1
        if self._batches_without_experts == EXPERT_DROUGHT_BATCHES:
            logger.warning(
                f"Expert BC is on, but no prompt has yielded an expert in the last {EXPERT_DROUGHT_BATCHES} "
                "generation batches, so the behaviour-cloning pass cannot run. An expert needs a parsable meta "
                "rollout with a notion reward of at least "
                f"expert_min_notion_reward={self.args.expert_min_notion_reward}: check meta/parse_failure_rate and "
                "meta/rewards/notion_alignment_reward/mean, lower --expert_min_notion_reward (0 accepts any parsable "
                "rollout of a prompt with a correct solution), or set --use_expert_bc false."
            )

    def _maybe_run_expert_bc(self) -> None:
        """Run the behaviour-cloning pass once N_expert experts are buffered over all processes."""
        count = self.accelerator.gather(torch.tensor([len(self.expert_buffer)], device=self.accelerator.device))
        if count.sum().item() >= self.args.expert_buffer_size:
            self._expert_bc_pass()

    def _expert_bc_pass(self) -> None:
        """`expert_bc_steps` optimizer steps of token cross-entropy over the whole expert buffer, then empty it.

        Every process runs the same number of forward/backward calls (the largest local buffer decides; a process
        with fewer experts feeds masked rows), so DDP, FSDP and ZeRO collectives line up. The loss is the token mean
        over all processes' experts. The RL optimizer runs with `expert_bc_learning_rate` and
        `expert_bc_max_grad_norm` for the pass (see `_expert_bc_optimizer`); the RL scheduler is not stepped.
        """
        args, device = self.args, self.accelerator.device
        model = self.model_wrapped
        examples = self.expert_buffer.examples
        num_local = torch.tensor([len(examples)], device=device)
        num_micro = math.ceil(self.accelerator.gather(num_local).max().item() / args.expert_bc_batch_size)
        local_tokens = torch.tensor([sum(len(e["completion_ids"]) for e in examples)], device=device)
        total_tokens = self.accelerator.gather(local_tokens).sum().item()
        total_examples = self.accelerator.gather(num_local).sum().item()

        def summed_nll(micro: int, grad: bool) -> torch.Tensor:
            batch = examples[micro * args.expert_bc_batch_size : (micro + 1) * args.expert_bc_batch_size]
            input_ids, attention_mask, completion_mask = self._bc_tensors(batch)
            with torch.set_grad_enabled(grad), self.compute_loss_context_manager():
                logps, _, _ = self._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep=completion_mask.size(1)
                )
            return -(logps * completion_mask).sum()

        def mean_nll(local_sum: torch.Tensor) -> float:
            return self.accelerator.gather(local_sum.detach().reshape(1)).sum().item() / total_tokens

        losses = []
        with self._untempered_log_probs(), self._expert_bc_optimizer() as (backward, step):
            for _ in range(args.expert_bc_steps):
                step_nll = torch.zeros((), device=device)
                for micro in range(num_micro):
                    nll = summed_nll(micro, grad=True)
                    # Data parallelism averages gradients over processes: scale so the result is the global token mean.
                    backward(nll * self.accelerator.num_processes / total_tokens, micro == num_micro - 1)
                    step_nll += nll.detach()
                losses.append(mean_nll(step_nll))
                step()
            after = mean_nll(
                sum((summed_nll(micro, grad=False) for micro in range(num_micro)), torch.zeros((), device=device))
            )
        self.expert_buffer.clear()
        self._bc_passes += 1
        metrics = self._metrics["train"]
        metrics["bc/loss_before"].append(losses[0])
        metrics["bc/loss_after"].append(after)
        metrics["bc/num_examples"].append(total_examples)
        metrics["bc/passes"].append(self._bc_passes)

    @contextmanager
    def _untempered_log_probs(self):
        """Log-probabilities at temperature 1 for the BC loss, which is -log pi_theta (paper eq. 5).

        TRL computes log-probabilities through a fused LM head that divides the logits by the sampling temperature.
        For the pass, the model gets a second fused head at temperature 1 (TRL's `add_fused_lm_head`, which replaces
        `model.forward`); the RL head is put back afterwards.
        """
        if self.temperature == 1.0:
            yield
            return
        model = self.accelerator.unwrap_model(self.model)
        model = model.get_base_model() if is_peft_model(model) else model
        had_own_forward = "forward" in vars(model)
        saved = model.forward
        add_fused_lm_head(model, temperature=1.0, cast_lm_head_to_fp32=self.args.cast_lm_head_to_fp32)
        try:
            yield
        finally:
            if had_own_forward:
                model.forward = saved
            else:
                del model.forward

    @contextmanager
    def _expert_bc_optimizer(self):
        """Yield `backward(loss, last_micro_batch)` and `step()` for the BC pass, with the BC rate and clipping.

        The RL optimizer (and its moments) is reused; its learning rates and, under DeepSpeed, the engine's clipping,
        scheduler and accumulation boundary are restored on exit. DeepSpeed is driven through its engine directly:
        `accelerator.backward` would step the engine after every micro-batch and divide the loss by the RL gradient
        accumulation, so the BC pass owns the boundary instead and steps once per BC step.
        """
        args = self.args
        saved_lrs = [group["lr"] for group in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = args.expert_bc_learning_rate
        engine = self.model_wrapped if self.is_deepspeed_enabled else None
        if engine is None:

            def backward(loss: torch.Tensor, last: bool) -> None:
                self.accelerator.backward(loss)

            def step() -> None:
                self.accelerator.clip_grad_norm_(self.model_wrapped.parameters(), args.expert_bc_max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()

        else:
            # ZeRO optimizers clip inside their own step with the norm they were built with, not the engine config's.
            zero_clip = hasattr(engine.optimizer, "clip_grad")
            saved_engine = (
                engine._config.gradient_clipping,
                engine.optimizer.clip_grad if zero_clip else None,
                engine.lr_scheduler,
                engine._is_gradient_accumulation_boundary,
            )
            engine._config.gradient_clipping = args.expert_bc_max_grad_norm
            if zero_clip:
                engine.optimizer.clip_grad = args.expert_bc_max_grad_norm
            engine.lr_scheduler = None  # a DeepSpeed-native RL schedule must not advance during BC

            def backward(loss: torch.Tensor, last: bool) -> None:
                engine.set_gradient_accumulation_boundary(last)
                engine.backward(loss, scale_wrt_gas=False)

            def step() -> None:
                engine.step()  # clips, steps and zeroes the gradients at the boundary set by the last backward

        self.optimizer.zero_grad()
        try:
            yield backward, step
        finally:
            for group, lr in zip(self.optimizer.param_groups, saved_lrs, strict=True):
                group["lr"] = lr
            if engine is not None:
                clip, optimizer_clip, engine.lr_scheduler, boundary = saved_engine
                engine._config.gradient_clipping = clip
                if zero_clip:
                    engine.optimizer.clip_grad = optimizer_clip
                if boundary is None:  # never set: back to DeepSpeed's own micro-step counting
                    engine._is_gradient_accumulation_boundary = None
                else:
                    engine.set_gradient_accumulation_boundary(boundary)

    def _bc_tensors(self, batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded prompts + right-padded completions, as in an RL row; an empty batch gives one masked row."""
        pad_id = self._tokenizer.pad_token_id
        rows = batch or [{"prompt_ids": [pad_id], "completion_ids": [pad_id]}]
        prompts = [torch.tensor(e["prompt_ids"]) for e in rows]
        completions = [torch.tensor(e["completion_ids"]) for e in rows]
        prompt_ids = pad(prompts, padding_value=pad_id, padding_side="left")
        prompt_mask = pad([torch.ones_like(t) for t in prompts], padding_value=0, padding_side="left")
        completion_ids = pad(completions, padding_value=pad_id, padding_side="right")
        completion_mask = pad([torch.ones_like(t) for t in completions], padding_value=0, padding_side="right")
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        loss_mask = completion_mask.float() if batch else torch.zeros_like(completion_mask, dtype=torch.float)
        device = self.accelerator.device
        return input_ids.to(device), attention_mask.to(device), loss_mask.to(device)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        state = {
            "expert_buffer": self.expert_buffer.state_dict(),
            "bc_passes": self._bc_passes,
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
            self.expert_buffer.load_state_dict(state["expert_buffer"])
            self._bc_passes = state["bc_passes"]
            self._gating_audit.load_state_dict(state["gating_audit"])
            self._solution_tokens_total = state["solution_tokens_total"]
            self._generation_step = state.get("generation_step", 0)


class _ExpertBCCallback(TrainerCallback):
    """Runs the behaviour-cloning check after the last optimizer step of each generation batch.

    The paper clones the experts after the RL update of the step that collected them; one generation batch may feed
    several optimizer steps (`steps_per_generation` > `gradient_accumulation_steps`, or `num_iterations` > 1), and a
    pass between two of them would move the policy in the middle of a batch. `on_step_end` comes after the optimizer
    step and zero_grad, outside any `no_sync` context, so a pass there neither mixes with the RL gradients nor breaks
    DDP's reduction; vLLM picks up the new weights at the next generation because the weight sync keys on
    `global_step`.
    """

    def __init__(self, trainer: "MASAGRPOTrainer"):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        # TRL generates again when its micro-step counter reaches a multiple of this: the batch is used up.
        if trainer._step % (trainer.args.steps_per_generation * trainer.num_iterations) == 0:
            trainer._maybe_run_expert_bc()


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
