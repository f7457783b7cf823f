"""Expert meta-trajectories and their buffer, for MASA's behaviour-cloning pass (paper section 3.3, algorithm 1).

After each RL step, every prompt contributes at most one *expert*: its best parsable meta rollout (highest notion
reward, ties broken by total meta reward), kept only when its notion reward reaches a minimum, with the predicted
pass rate and length replaced by the true statistics of the prompt's solution rollouts. When N_expert experts have
been collected, the trainer runs a few cross-entropy steps on them and empties the buffer (DAgger: only fresh,
on-policy experts are cloned).

Rewrite rule for the true statistics:

- `pass_rate`: the share of correct solution rollouts on the integer 0..S scale the meta prompt asks for, rounded to
  the nearest integer;
- `solution_length`: the mean token length of the correct solution rollouts, rounded. A prompt with **no** correct
  rollout has no correct length, so the mean length of all its rollouts is written instead (and `pass_rate` 0). Its
  notion reward is 0 by definition, so with a positive minimum notion reward (the default, 0.2) such a prompt never
  yields an expert.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from masa_trl.meta import MetaPrediction, format_meta_prediction
from masa_trl.rewards import SolutionStats


@dataclass(frozen=True)
class ExpertChoice:
    """The selected meta rollout of one prompt: its index among the batch's rows and its notion reward."""

    prompt_index: int
    row: int
    notion_reward: float


def select_experts(
    predictions: Sequence[MetaPrediction | None],
    total_rewards: Sequence[float],
    prompt_index: Sequence[int],
    solution_stats: Sequence[SolutionStats | None],
    min_notion_reward: float,
) -> list[ExpertChoice]:
    """Pick, per prompt, the parsable meta rollout with the highest notion reward (ties: highest total reward).

    Args:
        predictions: the parsed meta rollouts of the whole batch (`None` when unparsable).
        total_rewards: their total (weighted) meta rewards, in the same order.
        prompt_index: for each rollout, the index of its prompt in `solution_stats`.
        solution_stats: per prompt, the statistics of its solution rollouts (`None` when unscorable).
        min_notion_reward: experts whose notion reward is below this are dropped.

    Returns:
        `list[ExpertChoice]`: at most one per prompt, in prompt order.
    """
    best: dict[int, tuple[tuple[float, float], int, float]] = {}
    for row, (prediction, total, index) in enumerate(zip(predictions, total_rewards, prompt_index, strict=True)):
        stats = solution_stats[index]
        if prediction is None or stats is None:
            continue
        notion = stats.notion_matcher.score(prediction.notions)
        key = (notion, total)
        if index not in best or key > best[index][0]:  # strict: the first of equal rollouts wins
            best[index] = (key, row, notion)
    return [
        ExpertChoice(prompt_index=index, row=row, notion_reward=notion)
        for index, (_, row, notion) in sorted(best.items())
        if notion >= min_notion_reward
    ]


def expert_text(prediction: MetaPrediction, stats: SolutionStats, pass_rate_scale: int) -> str:
    """The expert completion: the rollout's reasoning and notions with the true pass rate and length (module doc)."""
    lengths = stats.correct_lengths or stats.lengths
    return format_meta_prediction(
        prediction.notions,
        pass_rate=round(stats.pass_rate * pass_rate_scale),
        length=max(1, round(sum(lengths) / len(lengths))),
        reasoning=prediction.reasoning,
    )


class ExpertBuffer:
    """The expert trajectories held by one process, as token ids (prompt and completion).

    Every process keeps the experts assigned to it; the trainer decides from the global count when to clone them.
    `state_dict`/`load_state_dict` let checkpoints carry the buffer across a resume.
    """

    def __init__(self):
        self.examples: list[dict[str, list[int]]] = []

    def add(self, prompt_ids: list[int], completion_ids: list[int]) -> None:
        self.examples.append({"prompt_ids": list(prompt_ids), "completion_ids": list(completion_ids)})

    def clear(self) -> None:
        self.examples = []

    def __len__(self) -> int:
        return len(self.examples)

    def state_dict(self) -> dict:
        return {"examples": self.examples}

    def load_state_dict(self, state: dict) -> None:
        self.examples = [dict(example) for example in state["examples"]]
