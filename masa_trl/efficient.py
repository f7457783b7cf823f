"""MASA-efficient (paper section 3.3): decisions taken from the meta predictions before the solution rollouts.

From step k on, the trainer generates the M meta rollouts of a prompt first and uses them to

- **gate** the prompt: when the parsed predicted pass rates agree (population standard deviation below a threshold)
  and their consensus, rounded to the prompt's 0..S scale, is S (every rollout would be correct) or 0 (none would),
  the G solution rollouts are skipped, because their group-relative advantages would all be zero anyway;
- **cut off** its solution rollouts at `cutoff_factor` times the median predicted length (never above the maximum
  completion length; no cutoff when no prediction parsed);
- optionally **hint** the solution prompt with the predicted notions of a parsable meta rollout.

A gate that silently throws away learnable prompts is the failure users would fear most, so [`GatingAudit`] still
rolls out a small share of the gated prompts, without training on them, to measure the gate's precision as the run
goes, and pauses gating while that precision is below a floor.
"""

import math
import random
import statistics
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from masa_trl.meta import MetaPrediction


TRIVIAL, UNSOLVABLE = "trivial", "unsolvable"

# Gating pauses only once the audit window holds this many audited prompts: a single wrong audit must not stop it.
MIN_AUDITS_TO_PAUSE = 8


@dataclass(frozen=True)
class PromptPlan:
    """What MASA-efficient does with one prompt's solution rollouts.

    Attributes:
        gate: `"trivial"`, `"unsolvable"` or `None` (the gate's verdict from the meta predictions).
        skip: whether the solution rollouts are skipped (gated and not audited, and gating not paused).
        audit: whether the rollouts are generated only to check the gate's verdict (excluded from training).
        cap: the token cap of its solution rollouts, or `None` for `max_completion_length`.
        notions: the notions to hint, one tuple per solution rollout (empty: no hint).
    """

    gate: str | None
    skip: bool
    audit: bool
    cap: int | None
    notions: tuple[tuple[str, ...], ...]

    @property
    def trains(self) -> bool:
        """Whether the prompt's solution rows enter the loss, reward means and advantage baselines."""
        return not self.skip and not self.audit


def gate_verdict(
    predictions: Sequence[MetaPrediction | None], pass_rate_scale: int, std_threshold: float
) -> str | None:
    """Gate a prompt from its M meta predictions.

    Only parsed predictions count, and at least half of the M (and two) must have parsed: the gate acts on a
    confident consensus, not on one lucky parse.
    """
    rates = [p.pass_rate for p in predictions if p is not None]
    if len(rates) < max(2, math.ceil(len(predictions) / 2)) or statistics.pstdev(rates) >= std_threshold:
        return None
    consensus = round(statistics.fmean(rates) * pass_rate_scale)
    if consensus >= pass_rate_scale:
        return TRIVIAL
    if consensus <= 0:
        return UNSOLVABLE
    return None


def length_cap(predictions: Sequence[MetaPrediction | None], factor: float, max_length: int) -> int | None:
    """`factor` x the median predicted length, at most `max_length`; `None` (no cutoff) when nothing parsed."""
    lengths = [p.length for p in predictions if p is not None]
    if not lengths:
        return None
    cap = math.ceil(factor * statistics.median(lengths))
    return cap if cap < max_length else None


def hint_notions(predictions: Sequence[MetaPrediction | None], num_rollouts: int) -> tuple[tuple[str, ...], ...]:
    """Per solution rollout, the notions of a parsable meta rollout, cycling through them (empty when none parsed)."""
    parsed = [p.notions for p in predictions if p is not None and p.notions]
    if not parsed:
        return ((),) * num_rollouts
    return tuple(parsed[i % len(parsed)] for i in range(num_rollouts))


class GatingAudit:
    """Tracks the precision of the gate on audited prompts and pauses gating when it falls below a floor.

    A gated prompt is audited with probability `audit_fraction` (its rollouts are generated but not trained on).
    While gating is paused every prompt is rolled out and trained normally, and the would-be-gated ones are all
    audited for free, so the precision can recover and gating resumes. Decisions are drawn from a seeded generator,
    so every process takes the same ones.
    """

    def __init__(self, audit_fraction: float, precision_floor: float, window: int, seed: int = 0):
        self.audit_fraction = audit_fraction
        self.precision_floor = precision_floor
        self.outcomes: deque[bool] = deque(maxlen=window)
        self.rng = random.Random(seed)
        self.paused = False

    @property
    def precision(self) -> float:
        return sum(self.outcomes) / len(self.outcomes) if self.outcomes else math.nan

    def plan(self, verdicts: Sequence[str | None]) -> list[tuple[bool, bool]]:
        """Per prompt, `(skip, audit)`. Draws one random number per gated prompt, in order."""
        decisions = []
        for verdict in verdicts:
            if verdict is None:
                decisions.append((False, False))
            elif self.paused:
                decisions.append((False, False))  # trained normally; its outcome is still recorded
            else:
                audit = self.rng.random() < self.audit_fraction
                decisions.append((not audit, audit))
        return decisions

    def record(self, verdict: str, pass_rate: float) -> None:
        """Record whether a gated prompt, once rolled out, was what the gate said; then update the pause."""
        self.outcomes.append(pass_rate == 1.0 if verdict == TRIVIAL else pass_rate == 0.0)
        if len(self.outcomes) >= MIN_AUDITS_TO_PAUSE:
            self.paused = self.precision < self.precision_floor

    def state_dict(self) -> dict:
        return {"outcomes": list(self.outcomes), "paused": self.paused, "rng": self.rng.getstate()}

    def load_state_dict(self, state: dict) -> None:
        self.outcomes.clear()
        self.outcomes.extend(state["outcomes"])
        self.paused = state["paused"]
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


def plan_prompts(
    predictions_per_prompt: Sequence[Sequence[MetaPrediction | None]],
    audit: GatingAudit,
    *,
    pass_rate_scale: int,
    std_threshold: float,
    cutoff_factor: float | None,
    max_length: int,
    num_generations: int,
    notion_hint: bool,
) -> list[PromptPlan]:
    """The [`PromptPlan`] of every prompt of a generation batch, from its meta predictions."""
    verdicts = [gate_verdict(p, pass_rate_scale, std_threshold) for p in predictions_per_prompt]
    plans = []
    for predictions, verdict, (skip, audited) in zip(
        predictions_per_prompt, verdicts, audit.plan(verdicts), strict=True
    ):
        # Audited rollouts check the gate's claim about plain rollouts: no cutoff and no hint for them.
        plain = skip or audited
        plans.append(
            PromptPlan(
                gate=verdict,
                skip=skip,
                audit=audited,
                cap=None if plain or cutoff_factor is None else length_cap(predictions, cutoff_factor, max_length),
                notions=hint_notions(predictions, num_generations)
                if notion_hint and not plain
                else ((),) * num_generations,
            )
        )
    return plans
