"""The paper's three meta reward components as TRL-style reward callables.

[`MASAGRPOTrainer`] scores meta rollouts with a list of callables of the same form as TRL's `reward_funcs`:
`f(prompts, completions, completion_ids, **kwargs) -> list[float | None]`. Besides the dataset columns, they receive
two keyword arguments, one value per meta rollout:

- `meta_prediction`: the parsed [`~masa_trl.meta.MetaPrediction`], or `None` when the output could not be parsed;
- `solution_stats`: the [`~masa_trl.rewards.SolutionStats`] of the prompt's solution rollouts, gathered across
  processes, or `None` when the prompt's correctness could not be scored (its gold answer is unparsable).

Return `None` to leave a row unscored (TRL then excludes it from the group baseline), and a number otherwise. A user
can add a component (for instance a format bonus), weight the components with `meta_reward_weights`, or replace them,
without subclassing the trainer.
"""

from masa_trl.rewards import difficulty_reward, length_reward


def length_alignment_reward(completions, meta_prediction, solution_stats, **kwargs) -> list[float | None]:
    """1 when the predicted length lies within [min, max] of the correct rollouts' token lengths (paper eq. 1)."""
    return [
        None if stats is None else 0.0 if pred is None else length_reward(pred.length, stats.correct_lengths)
        for pred, stats in zip(meta_prediction, solution_stats, strict=True)
    ]


class DifficultyAlignmentReward:
    """`base ** |predicted pass rate - true pass rate|` (paper eq. 2).

    A callable class rather than a closure so that it stays picklable; its `__name__` names the metric.
    """

    __name__ = "difficulty_alignment_reward"

    def __init__(self, base: float = 0.01):
        self.base = base

    def __call__(self, completions, meta_prediction, solution_stats, **kwargs) -> list[float | None]:
        return [
            None
            if stats is None
            else 0.0
            if pred is None
            else difficulty_reward(pred.pass_rate, stats.pass_rate, base=self.base)
            for pred, stats in zip(meta_prediction, solution_stats, strict=True)
        ]


def notion_alignment_reward(completions, meta_prediction, solution_stats, **kwargs) -> list[float | None]:
    """Share of predicted notions found in more correct than incorrect solution rollouts (paper eq. 3-4)."""
    # The matcher is cached on the stats object, so the prompt's solutions are lemmatised once for all M rollouts.
    return [
        None if stats is None else 0.0 if pred is None else stats.notion_matcher.score(pred.notions)
        for pred, stats in zip(meta_prediction, solution_stats, strict=True)
    ]


def default_meta_reward_funcs(difficulty_base: float = 0.01) -> list:
    """The paper's components: length, difficulty and notion alignment (averaged by the default weights)."""
    return [length_alignment_reward, DifficultyAlignmentReward(difficulty_base), notion_alignment_reward]
