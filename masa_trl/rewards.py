"""The MASA self-alignment rewards for meta predictions (paper, section 3.2).

A meta prediction is scored against the statistics of the G solution rollouts of the same prompt:

- length (eq. 1): 1 if the predicted length lies within the range of the correct rollouts' lengths, else 0;
- difficulty (eq. 2): `base ** |predicted pass rate - true pass rate|`;
- notion (eq. 3-4): the share of predicted notions found in more correct than incorrect rollouts, after dropping
  notions already in the problem.

The meta reward is the mean of the three. Lengths are counted in completion tokens, never characters.

>>> from masa_trl.meta import MetaPrediction
>>> stats = SolutionStats(
...     correct=[True, False], lengths=[300, 500], problem="Solve $x^2 = 4$.",
...     solutions=["By the quadratic formula, x = 2.", "Using modular arithmetic, x = 3."])
>>> meta_reward(MetaPrediction(notions=("Quadratic formulas",), pass_rate=0.5, length=300), stats)
MetaReward(length=1.0, difficulty=1.0, notion=1.0, total=1.0)
"""

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from lemminflect import getLemma

from masa_trl.meta import MetaPrediction


# The possessive "'s" goes before tokenizing, so that "Vieta's formulas", "Vieta’s formula" and "vieta formula" all
# become "vieta formula". Without this, "vieta's" would become the two words "vieta s". (The lookbehind comes last
# because a pattern that starts with it is several times slower to search.)
_POSSESSIVE = re.compile(r"['’]s\b(?<=[^\W_]['’]s)")
# Runs of Unicode letters and digits, once underscores are spaces: "[a-z0-9]+" that also keeps "bézout" or "π" whole.
# Everything else separates words, so "AM-GM" is "am gm" and "x^2" is "x 2", in notions and solutions alike.
_WORD = re.compile(r"\w+")


@functools.lru_cache(maxsize=1 << 16)
def _lemma(word: str) -> str:
    # Dictionary lemmas only: lemminflect's out-of-vocabulary rules mangle proper nouns and symbols ("fibonacci" ->
    # "fibonaccus", "pi" -> "pus", "cos" -> "co"), so unknown words stay unchanged.
    lemmas = getLemma(word, upos="NOUN", lemmatize_oov=False)
    return lemmas[0] if lemmas and lemmas[0] else word


def lemmatize(text: str) -> list[str]:
    """
    Split a text into lowercase words and lemmatize each as a noun with lemminflect.

    Possessive `'s` is dropped first; words are runs of letters and digits; words lemminflect does not know are kept
    unchanged. Multi-word notions are lemmatized word by word, so "Chinese remainder theorems" becomes `["chinese",
    "remainder", "theorem"]`. Notions and solutions go through this same function, so they stay comparable.

    Args:
        text (`str`):
            Any text.

    Returns:
        `list[str]`: The lemmas, in order.
    """
    return _lemma_string(text).split()


def _lemma_string(text: str) -> str:
    words = _WORD.findall(_POSSESSIVE.sub("", text.lower().replace("_", " ")))
    # Long solutions repeat few distinct words: look each up once.
    lemma_of = {word: _lemma(word) for word in set(words)}
    return " ".join(map(lemma_of.__getitem__, words))


def _padded(text: str) -> str:
    # Space-padded lemma string: " a b " in " x a b y " is a phrase match on word boundaries.
    return f" {_lemma_string(text)} "


def length_reward(predicted_length: int, correct_lengths: Sequence[int]) -> float:
    """
    Length reward (eq. 1): 1.0 if `min(correct_lengths) <= predicted_length <= max(correct_lengths)`, else 0.0.

    The range is inclusive, so a single correct rollout can be matched exactly (the authors' strict inequalities
    made that impossible). Without a correct rollout the reward is 0.0.

    Args:
        predicted_length (`int`):
            The predicted solution length, in tokens.
        correct_lengths (`Sequence[int]`):
            The completion lengths, in tokens, of the correct solution rollouts.

    Returns:
        `float`: 1.0 or 0.0.
    """
    if not correct_lengths:
        return 0.0
    return float(min(correct_lengths) <= predicted_length <= max(correct_lengths))


def _check_base(base: float) -> None:
    # Written so that NaN fails too.
    if isinstance(base, bool) or not isinstance(base, (int, float)) or not 0 < base < 1:
        raise ValueError(f"`base` must lie strictly between 0 and 1 (the paper uses 0.01), got {base!r}.")


def difficulty_reward(predicted_pass_rate: float, true_pass_rate: float, base: float = 0.01) -> float:
    """
    Difficulty reward (eq. 2): `base ** |predicted_pass_rate - true_pass_rate|`.

    It is 1.0 for an exact prediction and `base` for the worst one.

    Args:
        predicted_pass_rate (`float`):
            The predicted pass rate in [0, 1], e.g. [`MetaPrediction.pass_rate`] (already divided by the scale S).
        true_pass_rate (`float`):
            The share of correct solution rollouts, in [0, 1].
        base (`float`, *optional*, defaults to `0.01`):
            The base b, in (0, 1). Smaller values punish errors harder.

    Returns:
        `float`: The reward, in [`base`, 1].
    """
    _check_base(base)
    for name, rate in (("predicted_pass_rate", predicted_pass_rate), ("true_pass_rate", true_pass_rate)):
        if not (isinstance(rate, (int, float)) and 0 <= rate <= 1):
            raise ValueError(
                f"`{name}` must be a rate in [0, 1], got {rate!r}. Divide an integer prediction by its scale S."
            )
    return float(base ** abs(predicted_pass_rate - true_pass_rate))


class NotionMatcher:
    """
    Notion reward (eq. 3-4) for one prompt, with its solution rollouts lemmatized once.

    All M meta rollouts of a prompt are scored against the same G solutions, which may be thousands of words long:
    lemmatizing them once per prompt, not once per meta rollout, is what keeps the reward cheap. Verdicts per notion
    are cached as well, since meta rollouts of one prompt tend to repeat notions.

    Matching: a notion and the texts are lemmatized with [`lemmatize`]; the notion matches a text when its lemmas
    appear there as consecutive words. It is therefore case-insensitive, insensitive to plurals ("Primes" matches
    "prime") and bound to word boundaries ("sum" does not match "summation").

    Scoring: notions that lemmatize to the same words count once; notions that occur in the problem text are
    dropped, since restating the problem is no prediction; notions without any letter or digit are dropped too.
    A remaining notion scores 1 when more correct than incorrect rollouts contain it. The reward is the mean over
    the remaining notions, and 0.0 when none remains.

    Args:
        solutions (`Sequence[str]`):
            The completion texts of the solution rollouts.
        correct (`Sequence[bool]`):
            Whether each rollout is correct (any truthy value counts as correct).
        problem (`str`):
            The problem text alone, without the solution or meta instructions, whose words would otherwise exclude
            notions.
    """

    def __init__(self, solutions: Sequence[str], correct: Sequence[bool], problem: str):
        if len(solutions) != len(correct):
            raise ValueError(
                f"`solutions` and `correct` must have one entry per rollout, got {len(solutions)} and {len(correct)}."
            )
        if not isinstance(problem, str):
            raise TypeError(f"`problem` must be a string, got {type(problem).__name__}.")
        self._texts = [
            (_padded(solution), bool(is_correct)) for solution, is_correct in zip(solutions, correct, strict=True)
        ]
        self._problem = _padded(problem)
        # Lemmatized notion -> None if it occurs in the problem, else whether it counts as found.
        self._verdicts: dict[str, bool | None] = {}

    def _verdict(self, phrase: str) -> bool | None:
        if phrase not in self._verdicts:
            needle = f" {phrase} "
            if needle in self._problem:
                self._verdicts[phrase] = None
            else:
                net = sum(1 if is_correct else -1 for text, is_correct in self._texts if needle in text)
                self._verdicts[phrase] = net > 0
        return self._verdicts[phrase]

    def score(self, notions: Iterable[str]) -> float:
        """
        Score a list of predicted notions.

        Args:
            notions (`Iterable[str]`):
                The predicted notions, e.g. [`MetaPrediction.notions`].

        Returns:
            `float`: The notion reward, in [0, 1].
        """
        if isinstance(notions, str):
            raise TypeError("`notions` must be a list of strings, not a single string.")
        notions = list(notions)
        if not all(isinstance(notion, str) for notion in notions):
            raise TypeError(f"`notions` must be a list of strings, got {notions!r}.")
        # dict.fromkeys deduplicates after lemmatization and keeps the order.
        phrases = dict.fromkeys(map(_lemma_string, notions))
        verdicts = [self._verdict(phrase) for phrase in phrases if phrase]
        remaining = [verdict for verdict in verdicts if verdict is not None]
        return sum(remaining) / len(remaining) if remaining else 0.0


def notion_reward(notions: Iterable[str], solutions: Sequence[str], correct: Sequence[bool], problem: str) -> float:
    """
    Notion reward (eq. 3-4) of one meta prediction; see [`NotionMatcher`] for the matching rules.

    To score several predictions against the same rollouts, build one [`NotionMatcher`] (or use
    [`SolutionStats.notion_matcher`]) so the solutions are lemmatized once.

    Args:
        notions (`Iterable[str]`):
            The predicted notions.
        solutions (`Sequence[str]`):
            The completion texts of the solution rollouts.
        correct (`Sequence[bool]`):
            Whether each rollout is correct.
        problem (`str`):
            The problem text alone.

    Returns:
        `float`: The notion reward, in [0, 1].
    """
    return NotionMatcher(solutions, correct, problem).score(notions)


@dataclass
class SolutionStats:
    """
    Statistics of the G solution rollouts of one prompt, against which its meta predictions are scored.

    The notion matcher is built on first use and cached; do not modify the fields afterwards.

    Args:
        correct (`list[bool]`):
            Whether each rollout is correct.
        lengths (`list[int]`):
            The length of each rollout in completion tokens, counted as the trainer counts them (never characters).
        solutions (`list[str]`):
            The completion text of each rollout.
        problem (`str`):
            The problem text alone, without the solution or meta instructions.
    """

    correct: list[bool]
    lengths: list[int]
    solutions: list[str]
    problem: str

    def __post_init__(self):
        if not self.correct:
            raise ValueError("`SolutionStats` needs at least one solution rollout; `correct` is empty.")
        if not len(self.correct) == len(self.lengths) == len(self.solutions):
            raise ValueError(
                "`correct`, `lengths` and `solutions` must have one entry per rollout, got "
                f"{len(self.correct)}, {len(self.lengths)} and {len(self.solutions)}."
            )

    @property
    def pass_rate(self) -> float:
        """`float`: The share of correct rollouts."""
        return sum(map(bool, self.correct)) / len(self.correct)

    @property
    def correct_lengths(self) -> list[int]:
        """`list[int]`: The token lengths of the correct rollouts."""
        return [length for length, is_correct in zip(self.lengths, self.correct, strict=True) if is_correct]

    @functools.cached_property
    def notion_matcher(self) -> NotionMatcher:
        """[`NotionMatcher`]: The notion matcher for these rollouts, built once."""
        return NotionMatcher(self.solutions, self.correct, self.problem)


class MetaReward(NamedTuple):
    """The three components of the meta reward and their mean, `total`, which is the reward."""

    length: float
    difficulty: float
    notion: float
    total: float


def meta_reward(prediction: MetaPrediction | None, stats: SolutionStats, *, base: float = 0.01) -> MetaReward:
    """
    Meta reward of one meta prediction: the mean of the length, difficulty and notion rewards.

    An unparsable prediction (`None`) scores 0.0 on all three; there is no separate format reward.

    Args:
        prediction ([`MetaPrediction`] or `None`):
            The parsed prediction, as returned by [`~masa_trl.meta.parse_meta_prediction`].
        stats ([`SolutionStats`]):
            The statistics of the solution rollouts of the same prompt.
        base (`float`, *optional*, defaults to `0.01`):
            The base of the difficulty reward.

    Returns:
        [`MetaReward`]: The components and their mean.
    """
    _check_base(base)
    if prediction is None:
        return MetaReward(0.0, 0.0, 0.0, 0.0)
    length = length_reward(prediction.length, stats.correct_lengths)
    difficulty = difficulty_reward(prediction.pass_rate, stats.pass_rate, base)
    notion = stats.notion_matcher.score(prediction.notions)
    return MetaReward(length, difficulty, notion, math.fsum((length, difficulty, notion)) / 3)
