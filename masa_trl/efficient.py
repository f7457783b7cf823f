"""MASA-efficient (paper section 3.3): decisions taken from the meta predictions before the solution rollouts.

From step k on, the trainer generates the M meta rollouts of a prompt first and uses them to

- **gate** the prompt: when the parsed predicted pass rates agree (population standard deviation of the rates as
  fractions, `pass_rate / S` in 0..1, below a threshold) and their mean is within half a step of S (every rollout would
  be correct) or of 0 (none would), the G solution rollouts are skipped, because their group-relative advantages
  would all be zero anyway;
- **cut off** its solution rollouts at `cutoff_factor` times the median predicted length (never above the maximum
  completion length; no cutoff when no prediction parsed; out-of-range lengths do not parse);
- optionally **hint** the solution prompt with the notions most of its parsable meta rollouts name: one hint per
  prompt, so that all G solution rollouts of a group share one prompt (GRPO's group baseline and TRL's server mode,
  which sends each group's prompt once, both assume it).

Gated prompts that are rolled out anyway (audited, or while gating is paused) are rolled out *plainly*, without cutoff
or hint: they measure the gate's claim about the policy's ordinary rollouts.

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
        notions: the notions hinted in the prompt's solution prompt, shared by all its rollouts (empty: no hint).
    """

    gate: str | None
    skip: bool
    audit: bool
    cap: int | None
    notions: tuple[str, ...]

    @property
    def trains(self) -> bool:
        """Whether the prompt's solution rows enter the loss, reward means and advantage baselines."""
        return not self.skip and not self.audit


def gate_verdict(
    predictions: Sequence[MetaPrediction | None], pass_rate_scale: int, std_threshold: float
) -> str | None:
    """Gate a prompt from its M meta predictions.

    Only parsed predictions count, and at least half of the M (and two) must have parsed: the gate acts on a
    confident consensus, not on one lucky parse. The spread is the population standard deviation of the predicted
    rates as fractions (`pass_rate / S`, 0..1), the scale on which the authors' reward code uses them (it divides the
    0..8 integer by 8): on the integer scale a threshold of 0.1 would demand unanimity (with M = 16, one prediction
    off by one gives 0.24), while on the fraction scale one such dissent gives 0.03. The consensus must lie strictly
    within half a step of the end of the scale (mean rate * S > S - 1/2 for trivial, < 1/2 for unsolvable), so a tie
    between 0 and 1 of 8 is not called unsolvable.
    """
    rates = [p.pass_rate for p in predictions if p is not None]
    if len(rates) < max(2, math.ceil(len(predictions) / 2)) or statistics.pstdev(rates) >= std_threshold:
        return None
    consensus = statistics.fmean(rates) * pass_rate_scale
    if consensus > pass_rate_scale - 0.5:
        return TRIVIAL
    if consensus < 0.5:
        return UNSOLVABLE
    return None


def length_cap(predictions: Sequence[MetaPrediction | None], factor: float, max_length: int) -> int | None:
    """`factor` x the median predicted length, at most `max_length`; `None` (no cutoff) when nothing parsed."""
    lengths = [p.length for p in predictions if p is not None]
    if not lengths:
        return None
    cap = math.ceil(factor * statistics.median(lengths))
    return cap if cap < max_length else None


def hint_notions(predictions: Sequence[MetaPrediction | None], max_notions: int) -> tuple[str, ...]:
    """The notion hint of a prompt: the (at most `max_notions`) notions named by the most parsable meta rollouts.

    Each rollout counts a notion once (case-insensitively, after stripping); ties go to the notion named first, in
    rollout order, and the hint uses the spelling of that first mention. Empty when no rollout parsed or named any.
    """
    counts: dict[str, int] = {}
    spelling: dict[str, str] = {}
    for prediction in predictions:
        if prediction is None:
            continue
        for key in dict.fromkeys(notion.strip().casefold() for notion in prediction.notions if notion.strip()):
            counts[key] = counts.get(key, 0) + 1
        for notion in prediction.notions:
            spelling.setdefault(notion.strip().casefold(), notion.strip())
    ranked = sorted(counts, key=lambda key: -counts[key])  # stable: first mention wins a tie
    return tuple(spelling[key] for key in ranked[:max_notions])


class GatingAudit:
    """Tracks the precision of the gate on audited prompts and pauses gating when it falls below a floor.

    A gated prompt is audited with probability `audit_fraction` (its rollouts are generated but not trained on).
    While gating is paused every prompt is rolled out and trained, and the would-be-gated ones (rolled out plainly,
    like audits) are all recorded for free, so the precision can recover and gating resumes. Decisions are drawn from a seeded generator,
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
    notion_hint_size: int,
) -> list[PromptPlan]:
    """The [`PromptPlan`] of every prompt of a generation batch, from its meta predictions.

    `notion_hint_size` = 0 turns the hint off. A gated prompt is never capped or hinted, whether it is skipped,
    audited or rolled out because gating is paused: its rollouts check the gate against plain rollouts.
    """
    verdicts = [gate_verdict(p, pass_rate_scale, std_threshold) for p in predictions_per_prompt]
    plans = []
    for predictions, verdict, (skip, audited) in zip(
        predictions_per_prompt, verdicts, audit.plan(verdicts), strict=True
    ):
        plain = verdict is not None
        plans.append(
            PromptPlan(
                gate=verdict,
                skip=skip,
                audit=audited,
                cap=None if plain or cutoff_factor is None else length_cap(predictions, cutoff_factor, max_length),
                notions=() if plain else hint_notions(predictions, notion_hint_size),
            )
        )
    return plans
