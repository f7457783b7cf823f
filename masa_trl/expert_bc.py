"""Expert meta-trajectories and their buffer, for MASA's behaviour-cloning pass (paper section 3.3, algorithm 1).

After each RL step, every prompt contributes at most one *expert*: its best parsable meta rollout (highest notion
reward, ties broken by total meta reward), kept only when its notion reward reaches a minimum, with the predicted
pass rate and length replaced by the true statistics of the prompt's solution rollouts. When the meta prompt asks for
`<meta>` reasoning (the default template does), only rollouts that wrote it qualify: cloning bare JSON would teach
the model to skip the template's reasoning (see [`select_experts`]). When N_expert experts have been collected, the
trainer runs a few cross-entropy steps on them and empties the buffer (DAgger: only fresh, on-policy experts are
cloned).

Rewrite rule for the true statistics:

- `pass_rate`: the share k/G of correct solution rollouts on the integer 0..S scale the meta prompt asks for,
  rounded half up (`floor(k * S / G + 1/2)`, computed exactly in integers, not with Python's round-half-to-even),
  then, when S >= 2, kept within 1..S-1 for a prompt with 0 < k < G: only k = 0 is labelled 0 and only k = G is
  labelled S. MASA-efficient's gate reads 0 and S as "unsolvable" and "trivial", so a prompt whose rollouts still
  have reward variance must not be taught either. With G = 16 and S = 8, 1/16 correct is labelled 1 (Python's
  `round` gave 0) and 15/16 is labelled 7 (rounding either way gives 8);
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
    *,
    require_reasoning: bool = True,
) -> list[ExpertChoice]:
    """Pick, per prompt, the parsable meta rollout with the highest notion reward (ties: highest total reward).

    Args:
        predictions: the parsed meta rollouts of the whole batch (`None` when unparsable).
        total_rewards: their total (weighted) meta rewards, in the same order.
        prompt_index: for each rollout, the index of its prompt in `solution_stats`.
        solution_stats: per prompt, the statistics of its solution rollouts (`None` when unscorable).
        min_notion_reward: experts whose notion reward is below this are dropped.
        require_reasoning: when `True` (the default), a rollout without `<meta>` reasoning
            ([`~masa_trl.meta.MetaPrediction.reasoning`] is `None`) is never an expert; another rollout of the same
            prompt that has reasoning may be, and a prompt with none yields no expert. Its expert text would be bare
            JSON, teaching the model to skip the template's reasoning. The trainer passes
            `require_reasoning=META_OPEN_TAG in template`, for the meta prompt template it uses: the CPU demo's
            template ([`masa_trl.demo.task`]) asks for bare JSON on purpose, and there every rollout qualifies.

    Returns:
        `list[ExpertChoice]`: at most one per prompt, in prompt order.
    """
    best: dict[int, tuple[tuple[float, float], int, float]] = {}
    for row, (prediction, total, index) in enumerate(zip(predictions, total_rewards, prompt_index, strict=True)):
        stats = solution_stats[index]
        if prediction is None or stats is None or (require_reasoning and prediction.reasoning is None):
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


def _pass_rate_label(stats: SolutionStats, pass_rate_scale: int) -> int:
    """k of G correct on the 0..S scale: half up, and within 1..S-1 when 0 < k < G and S >= 2 (module doc)."""
    correct, total = sum(map(bool, stats.correct)), len(stats.correct)
    # floor(k * S / G + 1/2) in integers: exact, and halves go up rather than to the even neighbour.
    label = (2 * correct * pass_rate_scale + total) // (2 * total)
    if 0 < correct < total and pass_rate_scale >= 2:
        label = min(max(label, 1), pass_rate_scale - 1)
    return label


def expert_text(prediction: MetaPrediction, stats: SolutionStats, pass_rate_scale: int) -> str:
    """The expert completion: the rollout's reasoning and notions with the true pass rate and length.

    The pass rate is written as k of G correct on the 0..S scale, rounded half up (`floor(k * S / G + 1/2)`, exact);
    a prompt with 0 < k < G correct rollouts is never labelled 0 or S when S >= 2 (clamped into 1..S-1), since
    MASA-efficient's gate reads those labels as "unsolvable" and "trivial". The length is the mean length of the
    correct rollouts (of all rollouts when none is correct), rounded. See the module doc.
    """
    lengths = stats.correct_lengths or stats.lengths
    return format_meta_prediction(
        prediction.notions,
        pass_rate=_pass_rate_label(stats, pass_rate_scale),
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
