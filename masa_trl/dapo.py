"""The paper's DAPO baseline and MASA + DAPO (table 4): TRL's GRPO and MASA's trainer with dynamic sampling."""

import math

import torch
from trl import GRPOTrainer

from masa_trl.dynamic_sampling import DynamicSamplingMixin
from masa_trl.masa_trainer import MASAGRPOTrainer


# Generation-cost metrics that MASA records once per generation batch and that a step of several rounds sums.
_PER_STEP_SUMS = ("efficient/solution_tokens", "efficient/meta_tokens")


class DAPOTrainer(DynamicSamplingMixin, GRPOTrainer):
    """[`~trl.GRPOTrainer`] with DAPO's dynamic sampling, configured by a [`DAPOConfig`]: the paper's DAPO baseline."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dynamic_sampling_index = self._deciding_reward_index(default=0)
        self._latest_rewards = self._latest_lengths = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self._latest_rewards = rewards  # gathered over processes, one row per rollout, prompt-major
        self._latest_lengths = [len(ids) for ids in completion_ids_list]  # local, as generated (before any mask)
        return rewards

    def _dynamic_sampling_scores(self) -> torch.Tensor:
        return self._latest_rewards[:, self._dynamic_sampling_index].view(-1, self.num_generations).cpu()

    def _dynamic_sampling_solution_tokens(self, batch) -> list[int]:
        return self._latest_lengths

    def _dynamic_sampling_rows(self, batch) -> list[int]:
        first = self.accelerator.process_index * batch["completion_mask"].size(0)
        return [(first + i) // self.num_generations for i in range(batch["completion_mask"].size(0))]


class MASADAPOTrainer(DynamicSamplingMixin, MASAGRPOTrainer):
    """MASA on top of DAPO (paper table 4): [`~masa_trl.MASAGRPOTrainer`] with dynamic sampling.

    A prompt is kept or filtered with its meta rows (module docstring); k (`efficient_start_step`) and the BC
    schedule count training batches, not generation rounds.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._dynamic_sampling_index = self._deciding_reward_index(default=self._correctness_index)
        self._in_rounds = False

    def _generate_and_score_completions(self, inputs):
        self._in_rounds = self.args.dynamic_sampling and self.model.training
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self._in_rounds = False

    def _count_generation_batch(self) -> None:
        if not self._in_rounds:  # counted once per training batch in _after_dynamic_sampling
            super()._count_generation_batch()

    def _after_dynamic_sampling(self, rounds: int) -> None:
        self._in_rounds = False
        self._count_generation_batch()
        # The generation cost was recorded once per round; the step's cost is their sum (the running total: its last).
        metrics = self._metrics["train"]
        for key, values in metrics.items():
            if len(values) < rounds:
                continue
            if key in _PER_STEP_SUMS or key.startswith("timing/generate_"):
                values[-rounds:] = [sum(values[-rounds:])]
            elif key == "efficient/solution_tokens_total":
                values[-rounds:] = values[-1:]

    def _dynamic_sampling_scores(self) -> torch.Tensor:
        batch = self.last_rollout_batch
        rewards = batch.solution_rollouts[2]  # gathered, before untrained rows were blanked
        scores = rewards[:, self._dynamic_sampling_index].reshape(-1, batch.layout.group_size).clone().cpu()
        if batch.plans is not None:  # gated (skipped) and audited prompts carry no solution loss: never kept
            scores[torch.tensor([not plan.trains for plan in batch.plans])] = math.nan
        return scores

    def _dynamic_sampling_rows(self, batch) -> list[int]:
        layout = self.last_rollout_batch.layout
        return layout.solution_prompts() + layout.meta_prompts()

    def _dynamic_sampling_solution_tokens(self, batch) -> list[int]:
        rollout = self.last_rollout_batch
        _, completion_ids, _ = rollout.solution_rollouts  # as generated, before untrained rows were masked
        plans = rollout.plans
        solution = [
            0 if plans is not None and plans[g].skip else len(ids)
            for ids, g in zip(completion_ids, rollout.layout.solution_prompts(), strict=True)
        ]
        return solution + [0] * rollout.layout.num_local_meta_rows
