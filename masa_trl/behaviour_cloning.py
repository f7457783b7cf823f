"""Expert behaviour cloning beside the RL trainer (paper section 3.3, algorithm 1).

`ExpertBC` owns everything of the BC pass: the expert buffer, the pass itself (a few cross-entropy steps on the RL
optimizer, with its own learning rate and clipping, on DDP, FSDP and DeepSpeed ZeRO), the drought warning and their
checkpoint state. [`MASAGRPOTrainer`] feeds it the experts of every training generation batch (`collect`), and
`ExpertBCCallback` runs the pass once N_expert have been collected, after the last optimizer step of a generation
batch. The selection rules themselves are pure functions in `masa_trl.expert_bc`.
"""

import math
from contextlib import contextmanager

import torch
from accelerate.utils import is_peft_model
from transformers import TrainerCallback
from transformers.utils import logging
from trl.trainer.utils import add_fused_lm_head, pad

from masa_trl.expert_bc import ExpertBuffer, expert_text, select_experts
from masa_trl.meta import META_OPEN_TAG
from masa_trl.templates import META_PROMPT_TEMPLATE


logger = logging.get_logger(__name__)

# Generation batches in a row without a single expert before the trainer warns that BC cannot run.
EXPERT_DROUGHT_BATCHES = 20


class ExpertBC:
    """The expert buffer and the behaviour-cloning pass of one [`MASAGRPOTrainer`].

    It reads the trainer's model, optimizer, accelerator and log-probability code (no second copy of the model), and
    writes its metrics under `bc/*` into the trainer's training metrics.
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.buffer = ExpertBuffer()
        self.passes = 0
        self.batches_without_experts = 0

    # ------------------------------------------------------------------------------------------------ collection
    def collect(self, predictions, totals: list[float], prompt_index: list[int], stats) -> None:
        """Add a generation batch's experts; prompt i's expert is kept by process i % num_processes.

        Args:
            predictions, totals, prompt_index: per gathered meta row, its parsed prediction, total meta reward and
                prompt index.
            stats: per prompt of the gathered batch, its `SolutionStats` (None: no solution rollouts).
        """
        trainer, args = self.trainer, self.trainer.args
        # An expert keeps the template's structure: when the meta prompt asks for <meta> reasoning, a rollout
        # without it would teach the model to skip the reasoning.
        template = args.meta_prompt_template or META_PROMPT_TEMPLATE
        choices = select_experts(
            predictions,
            totals,
            prompt_index,
            stats,
            args.expert_min_notion_reward,
            require_reasoning=META_OPEN_TAG in template,
        )
        world, rank = trainer.accelerator.num_processes, trainer.accelerator.process_index
        for choice in choices:
            if choice.prompt_index % world != rank:
                continue
            prompt_stats = stats[choice.prompt_index]
            # The same tokenised meta prompt as the RL step: no second chat template around it.
            prompt_ids = trainer._tokenize_prompts([trainer._meta_prompt(prompt_stats.problem)])[0][0]
            text = expert_text(predictions[choice.row], prompt_stats, args.pass_rate_scale)
            completion_ids = trainer._tokenizer(text, add_special_tokens=False)["input_ids"] + [
                trainer.eos_token_ids[0]
            ]
            self.buffer.add(prompt_ids, completion_ids)
        self._warn_on_drought(bool(choices))
        metrics = trainer._metrics["train"]
        metrics["bc/expert_yield"].append(len(choices) / len(stats) if stats else 0.0)
        metrics["bc/expert_notion_reward"].append(
            sum(c.notion_reward for c in choices) / len(choices) if choices else math.nan
        )

    def _warn_on_drought(self, found: bool) -> None:
        """Warn once per drought when no prompt has yielded an expert for a while: BC would then never run."""
        self.batches_without_experts = 0 if found else self.batches_without_experts + 1
        if self.batches_without_experts == EXPERT_DROUGHT_BATCHES:
            logger.warning(
                f"Expert BC is on, but no prompt has yielded an expert in the last {EXPERT_DROUGHT_BATCHES} "
                "generation batches, so the behaviour-cloning pass cannot run. An expert needs a parsable meta "
                "rollout with a notion reward of at least "
                f"expert_min_notion_reward={self.trainer.args.expert_min_notion_reward}: check "
                "meta/parse_failure_rate and meta/rewards/notion_alignment_reward/mean, lower "
                "--expert_min_notion_reward (0 accepts any parsable rollout of a prompt with a correct solution), or "
                "set --use_expert_bc false."
            )

    # ------------------------------------------------------------------------------------------------ the pass
    def maybe_run(self) -> None:
        """Run the behaviour-cloning pass once N_expert experts are buffered over all processes."""
        trainer = self.trainer
        count = trainer.accelerator.gather(torch.tensor([len(self.buffer)], device=trainer.accelerator.device))
        if count.sum().item() >= trainer.args.expert_buffer_size:
            self.run_pass()

    def run_pass(self) -> None:
        """`expert_bc_steps` optimizer steps of token cross-entropy over the whole expert buffer, then empty it.

        Every process runs the same number of forward/backward calls (the largest local buffer decides; a process
        with fewer experts feeds masked rows), so DDP, FSDP and ZeRO collectives line up. The loss is the token mean
        over all processes' experts. The RL optimizer runs with `expert_bc_learning_rate` and
        `expert_bc_max_grad_norm` for the pass (see `_optimizer`); the RL scheduler is not stepped.
        """
        trainer = self.trainer
        args, accelerator, device = trainer.args, trainer.accelerator, trainer.accelerator.device
        model = trainer.model_wrapped
        examples = self.buffer.examples
        num_local = torch.tensor([len(examples)], device=device)
        num_micro = math.ceil(accelerator.gather(num_local).max().item() / args.expert_bc_batch_size)
        local_tokens = torch.tensor([sum(len(e["completion_ids"]) for e in examples)], device=device)
        total_tokens = accelerator.gather(local_tokens).sum().item()
        total_examples = accelerator.gather(num_local).sum().item()

        def summed_nll(micro: int, grad: bool) -> torch.Tensor:
            batch = examples[micro * args.expert_bc_batch_size : (micro + 1) * args.expert_bc_batch_size]
            input_ids, attention_mask, completion_mask = self._tensors(batch)
            with torch.set_grad_enabled(grad), trainer.compute_loss_context_manager():
                logps, _, _ = trainer._get_per_token_logps_and_entropies(
                    model, input_ids, attention_mask, logits_to_keep=completion_mask.size(1)
                )
            return -(logps * completion_mask).sum()

        def mean_nll(local_sum: torch.Tensor) -> float:
            return accelerator.gather(local_sum.detach().reshape(1)).sum().item() / total_tokens

        losses = []
        with self._untempered_log_probs(), self._optimizer() as (backward, step):
            for _ in range(args.expert_bc_steps):
                step_nll = torch.zeros((), device=device)
                for micro in range(num_micro):
                    nll = summed_nll(micro, grad=True)
                    # Data parallelism averages gradients over processes: scale so the result is the global token mean.
                    backward(nll * accelerator.num_processes / total_tokens, micro == num_micro - 1)
                    step_nll += nll.detach()
                losses.append(mean_nll(step_nll))
                step()
            after = mean_nll(
                sum((summed_nll(micro, grad=False) for micro in range(num_micro)), torch.zeros((), device=device))
            )
        self.buffer.clear()
        self.passes += 1
        metrics = trainer._metrics["train"]
        metrics["bc/loss_before"].append(losses[0])
        metrics["bc/loss_after"].append(after)
        metrics["bc/num_examples"].append(total_examples)
        metrics["bc/passes"].append(self.passes)

    @contextmanager
    def _untempered_log_probs(self):
        """Log-probabilities at temperature 1 for the BC loss, which is -log pi_theta (paper eq. 5).

        TRL computes log-probabilities through a fused LM head that divides the logits by the sampling temperature.
        For the pass, the model gets a second fused head at temperature 1 (TRL's `add_fused_lm_head`, which replaces
        `model.forward`); the RL head is put back afterwards.
        """
        trainer = self.trainer
        if trainer.temperature == 1.0:
            yield
            return
        model = trainer.accelerator.unwrap_model(trainer.model)
        model = model.get_base_model() if is_peft_model(model) else model
        had_own_forward = "forward" in vars(model)
        saved = model.forward
        add_fused_lm_head(model, temperature=1.0, cast_lm_head_to_fp32=trainer.args.cast_lm_head_to_fp32)
        try:
            yield
        finally:
            if had_own_forward:
                model.forward = saved
            else:
                del model.forward

    @contextmanager
    def _optimizer(self):
        """Yield `backward(loss, last_micro_batch)` and `step()` for the BC pass, with the BC rate and clipping.

        The RL optimizer (and its moments) is reused; its learning rates and, under DeepSpeed, the engine's clipping,
        scheduler and accumulation boundary are restored on exit. DeepSpeed is driven through its engine directly:
        `accelerator.backward` would step the engine after every micro-batch and divide the loss by the RL gradient
        accumulation, so the BC pass owns the boundary instead and steps once per BC step.
        """
        trainer = self.trainer
        args, optimizer = trainer.args, trainer.optimizer
        saved_lrs = [group["lr"] for group in optimizer.param_groups]
        for group in optimizer.param_groups:
            group["lr"] = args.expert_bc_learning_rate
        engine = trainer.model_wrapped if trainer.is_deepspeed_enabled else None
        if engine is None:

            def backward(loss: torch.Tensor, last: bool) -> None:
                trainer.accelerator.backward(loss)

            def step() -> None:
                trainer.accelerator.clip_grad_norm_(trainer.model_wrapped.parameters(), args.expert_bc_max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()

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

        optimizer.zero_grad()
        try:
            yield backward, step
        finally:
            for group, lr in zip(optimizer.param_groups, saved_lrs, strict=True):
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

    def _tensors(self, batch: list[dict]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded prompts + right-padded completions, as in an RL row; an empty batch gives one masked row."""
        pad_id = self.trainer._tokenizer.pad_token_id
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
        device = self.trainer.accelerator.device
        return input_ids.to(device), attention_mask.to(device), loss_mask.to(device)

    # ------------------------------------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {"expert_buffer": self.buffer.state_dict(), "bc_passes": self.passes}

    def load_state_dict(self, state: dict) -> None:
        self.buffer.load_state_dict(state["expert_buffer"])
        self.passes = state["bc_passes"]


class ExpertBCCallback(TrainerCallback):
    """Runs the behaviour-cloning check after the last optimizer step of each generation batch.

    The paper clones the experts after the RL update of the step that collected them; one generation batch may feed
    several optimizer steps (`steps_per_generation` > `gradient_accumulation_steps`, or `num_iterations` > 1), and a
    pass between two of them would move the policy in the middle of a batch. `on_step_end` comes after the optimizer
    step and zero_grad, outside any `no_sync` context, so a pass there neither mixes with the RL gradients nor breaks
    DDP's reduction; vLLM picks up the new weights at the next generation because the weight sync keys on
    `global_step`.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        trainer = self.trainer
        # TRL generates again when its micro-step counter reaches a multiple of this: the batch is used up.
        if trainer._step % (trainer.args.steps_per_generation * trainer.num_iterations) == 0:
            trainer.expert_bc.maybe_run()
