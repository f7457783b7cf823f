r"""Scorers: turn a completion into (correct, extracted answer) for a problem.

Two scorers, selectable by name (`--scorers math_verify,paper`):

* `math_verify` (default): the project's robust scorer, [`masa_trl.math_reward.MathVerifier`]: the last
  `\boxed{}` answer, math-verify in a worker pool with hard timeouts, cached verdicts. A completion without a boxed
  answer is wrong.
* `paper`: the semantics the MASA authors' tables were produced with ([`evaluation.compat_grader`]): last
  `boxed`, else "the answer is", else the last number; numeric tolerance 1e-4 accepting x100 and /100; a symbolic
  check in a worker process killed after `timeout` seconds. It uses `final_answer[0]` on OlympiadBench, as the
  authors did.

GPQA-Diamond is scored by letter, differently by the two scorers (a deliberate split):

* `math_verify` uses the letter rules of the out-of-domain sets ([`evaluation.ood.extract_letter`], the same as
  R-Bench, ARC and the Logic-LM sets), restricted to the item's own options A-D: the LAST explicit answer among
  `\boxed{X}` (also `\boxed{\text{X}}`, `\boxed{\mathrm{X}}`, `\boxed{X) text}`) and "the answer is (X)" /
  "Answer: X" / "the correct option is X", preferring the text after `</think>`; never a first standalone letter,
  and a lowercase letter only inside a box or brackets, so the article in "this answer is a consequence of ..." is
  no answer. Options discussed in the reasoning ("A) is wrong because ...", "Option B seems ...") are not answers,
  and a letter outside A-D ("the answer is (E)") is none either.
* `paper` keeps the authors' `get_choice` unchanged ([`extract_choice_paper`]): a boxed / bracketed / prefixed
  letter A-H, else the FIRST standalone letter A-H of either case (so the article "a" counts as "A"; see
  `official_code_notes.md` §9.16). Its defects are kept on purpose: with `--paper-protocol` (the authors' loader,
  every correct option at "D", §9.15) it exists to reproduce the paper's GPQA number, which was produced with that
  extraction; a fixed extraction would no longer reproduce it. Use `math_verify` for a GPQA number to trust.

The other out-of-domain letter sets (R-Bench, ARC, Logic-LM) and SciBench are scored by `evaluation.ood`'s rules
under both scorers (`ood.handles`).

The coding sets (MBPP, CRUX-O) are scored alike by both: the completion's program / predicted output is run in
`evaluation.sandbox` ([`evaluation.code_benchmarks`], `code_timeout_s` per program, default 10 s; make_scorer's
`code_timeout`, in a run `--code-timeout` / `EvalConfig.code_timeout`), correct = the program passes; sandbox
timeouts count as timeouts, other errors as `code_errors`.

Every scorer counts timeouts (`stats()["timeouts"]`); the report states which scorer produced each table.
"""

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from evaluation import code_benchmarks, ood
from evaluation.benchmarks import CHOICE_LETTERS, Problem


SCORERS = ("math_verify", "paper")


@dataclass
class ScoreResult:
    correct: bool
    extracted: str | None


# ---------------------------------------------------------------------------------------------------------------
# Multiple-choice letters (GPQA; the module doc says which scorer uses which rule, and why)


def choice_letters(problem: Problem) -> str:
    """The option letters of a `"choice"` problem (GPQA: A-D), one per option."""
    return CHOICE_LETTERS[: len(problem.choices)] or CHOICE_LETTERS


def extract_choice(text: str, letters: str = CHOICE_LETTERS) -> str | None:
    """`math_verify`'s GPQA letter: the last explicit answer among `letters`, by `evaluation.ood`'s letter rules
    ([`ood.extract_letter`]: boxed letter or "the answer is (X)", text after `</think>` first, never a first
    standalone letter, a lowercase letter only boxed or bracketed), or None."""
    return ood.extract_letter(text or "", letters or CHOICE_LETTERS)


_PAPER_PATTERNS = (
    re.compile(r"boxed\{\s*(?:\\text\{)?\s*\(?([A-Ha-h])\)?"),
    re.compile(r"\(([A-H])\)"),
    re.compile(r"(?i:answer(?:\s+is)?)\s*:?\s*\(?([A-Ha-h])\b"),
)
_STANDALONE_LETTER = re.compile(r"\b([A-Ha-h])\b")


def extract_choice_paper(text: str) -> str | None:
    """The authors' letter extraction (`get_choice`): boxed / bracketed / prefixed letter, else the FIRST standalone
    A-H, a-h. Kept as the authors had it, article "a" -> "A" included: the `paper` scorer reproduces their GPQA
    protocol (see the module doc)."""
    text = text or ""
    for pattern in _PAPER_PATTERNS:
        matches = pattern.findall(text)
        if matches:
            return matches[-1].upper()
    match = _STANDALONE_LETTER.search(text)
    return match.group(1).upper() if match else None


# ---------------------------------------------------------------------------------------------------------------
# Scorers


class Scorer:
    """Base class: `score(problems, completions)` returns one [`ScoreResult`] per pair."""

    name = "base"
    description = ""

    def __init__(self) -> None:
        self._stats: Counter = Counter()
        # Coding sets (MBPP, CRUX-O): per-program limit of the sandbox runs (evaluation.code_benchmarks).
        self.code_timeout_s: float = code_benchmarks.DEFAULT_TIMEOUT_S

    def score(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[ScoreResult]:
        if len(problems) != len(completions):
            raise ValueError(f"{len(problems)} problems for {len(completions)} completions")
        results: list[ScoreResult | None] = [None] * len(problems)
        own_rules = [ood.handles(p) for p in problems]  # the out-of-domain sets carry their own harness's rules
        code_idx = [i for i, p in enumerate(problems) if code_benchmarks.handles(p)]  # run in evaluation.sandbox
        math_idx = [i for i, p in enumerate(problems) if p.kind not in ("choice", "code") and not own_rules[i]]
        if code_idx:
            scored, counts = code_benchmarks.score_batch(
                [problems[i] for i in code_idx], [completions[i] for i in code_idx], timeout_s=self.code_timeout_s
            )
            for i, result in zip(code_idx, scored, strict=True):
                results[i] = ScoreResult(*result)
            self._stats["timeouts"] += counts.get("timeout", 0)
            self._stats["code_errors"] += counts.get("error", 0)
        for i, problem in enumerate(problems):
            if results[i] is not None:
                continue
            if own_rules[i]:
                results[i] = ScoreResult(*ood.score_completion(problem, completions[i]))
            elif problem.kind == "choice":
                letter = self._extract_choice(completions[i], problem)
                results[i] = ScoreResult(letter is not None and letter == problem.answer, letter)
        if math_idx:
            scored = self._score_math([problems[i] for i in math_idx], [completions[i] for i in math_idx])
            for i, result in zip(math_idx, scored, strict=True):
                results[i] = result
        self._stats["items"] += len(problems)
        self._stats["correct"] += sum(r.correct for r in results)
        self._stats["no_answer"] += sum(r.extracted in (None, "") for r in results)
        return results  # type: ignore[return-value]

    def _extract_choice(self, text: str, problem: Problem) -> str | None:
        """The letter of a GPQA-style `"choice"` problem: `evaluation.ood`'s letter rules over its own options."""
        return extract_choice(text, choice_letters(problem))

    def _score_math(self, problems: Sequence[Problem], completions: Sequence[str]) -> list[ScoreResult]:
        raise NotImplementedError

    def stats(self) -> dict[str, int]:
        return {key: int(self._stats[key]) for key in ("items", "correct", "no_answer", "timeouts")} | {
            key: int(value) for key, value in self._stats.items() if key not in ("items", "correct", "no_answer")
        }

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class MathVerifyScorer(Scorer):
    """The project's robust scorer: last `\\boxed{}` answer, math-verify in worker processes with hard timeouts."""

    name = "math_verify"
    description = (
        "masa_trl.math_reward: last \\boxed{} answer, math-verify in worker processes with a hard timeout "
        "(OlympiadBench lists compared as a whole)"
    )

    def __init__(self, timeout: float = 5.0, num_workers: int | None = None):
        super().__init__()
        from masa_trl.math_reward import MathVerifier

        self.verifier = MathVerifier(timeout=timeout, num_workers=num_workers)

    def _score_math(self, problems, completions):
        from masa_trl.math_reward import extract_boxed_answer

        predictions = [extract_boxed_answer(text) for text in completions]
        before = self.verifier.stats()
        scores = self.verifier.verify_batch([p.answer for p in problems], predictions)
        after = self.verifier.stats()
        for key in ("timeouts", "hard_timeouts", "gold_unparsable", "errors"):
            self._stats[key] += after.get(key, 0) - before.get(key, 0)
        return [ScoreResult(bool(s), pred) for s, pred in zip(scores, predictions, strict=True)]

    def close(self) -> None:
        self.verifier.close()


class PaperScorer(Scorer):
    """The paper-compatible scorer (see [`evaluation.compat_grader`])."""

    name = "paper"
    description = (
        "paper-compatible (MASA authors' grader semantics): last boxed / 'the answer is' / last number, "
        "numeric rel. tol. 1e-4 incl. x100 and /100, symbolic check in a worker with a hard timeout; "
        "OlympiadBench final_answer[0]"
    )

    def __init__(self, timeout: float = 1.0):
        super().__init__()
        from evaluation.compat_grader import SymbolicChecker

        self.checker = SymbolicChecker(timeout=timeout)

    def _extract_choice(self, text: str, problem: Problem) -> str | None:
        """The authors' `get_choice` (A-H, first standalone letter fallback), kept to reproduce their GPQA number."""
        return extract_choice_paper(text)

    def _score_math(self, problems, completions):
        from evaluation.compat_grader import extract_answer, math_equal, strip_string

        results = []
        before = self.checker.timeouts
        for problem, text in zip(problems, completions, strict=True):
            gold = problem.answers[0] if problem.answers else problem.answer
            extracted = extract_answer(text)
            correct = bool(extracted) and math_equal(extracted, strip_string(gold), symbolic=self.checker)
            results.append(ScoreResult(correct, extracted or None))
        self._stats["timeouts"] += self.checker.timeouts - before
        return results

    def close(self) -> None:
        self.checker.close()


def scorer_name(name: str) -> str:
    """The canonical name of a scorer (`math_verify` or `paper`); checks a name without starting its workers."""
    key = name.strip().lower().replace("-", "_")
    if key in ("math_verify", "mathverify", "mv"):
        return "math_verify"
    if key in ("paper", "masa_compat", "compat"):
        return "paper"
    raise ValueError(f"unknown scorer {name!r}; choose from {', '.join(SCORERS)}")


def make_scorer(name: str, *, timeout: float | None = None, code_timeout: float | None = None) -> Scorer:
    """A scorer by name: `math_verify` or `paper` (aliases: `masa_compat`, `compat`, `mv`).

    `timeout`: the math checker's; `code_timeout`: seconds per sandboxed program of the coding sets (default 10).
    """
    if scorer_name(name) == "math_verify":
        scorer: Scorer = MathVerifyScorer(timeout=timeout or 5.0)
    else:
        scorer = PaperScorer(timeout=timeout or 1.0)
    if code_timeout:
        scorer.code_timeout_s = float(code_timeout)
    return scorer
