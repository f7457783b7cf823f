r"""The study's task: sums worked step by step, learnt from demonstrations that contain a share of mistakes.

A problem is `Solve: 4+9+3+7` (one-digit terms). Its worked solution keeps the units digit of a running total and
counts the carries, so every step is a one-digit table lookup the tiny model can learn:

    step 1: 4+9=13, carry, tens 1; step 2: 3+3=6, hold, tens 1; step 3: 6+7=13, carry, tens 2; \boxed{23}

(the answer is the carry count followed by the last units digit). Why this design, against the properties the study
needs (`../shared/reference/study_feasibility_notes.md` measured a running-total design whose two-digit totals the
model itself got wrong from 4 terms on, so RL had nothing to sharpen there):

1. **RL can learn.** The warm-start demonstrations make each step wrong with probability `step_error` (the sum one
   too many; the chain carries the wrong digit on), so the warm start's pass@1 on n terms is about
   `(1 - step_error) ** (n - 1)` while its pass@8 is near 1: RL can sharpen it towards its own mode.
2. **Solutions dominate cost.** A step is about 16 tokens, the meta JSON about 27.
3. **Difficulty spread.** Cells from 1 term (`Solve: 37` -> `\boxed{37}`, trivial) to 9 terms, and two cells the
   warm start never shows (two or three three-digit terms, unsolvable): at G = 8 the first is all-correct, the last
   two all-wrong.
4. **Notions can score.** "carry", "hold" and "tens" are written by the solutions and never by the problems; which
   of the first two a problem needs depends on its digits. "subtraction" and "multiplication" are never written.

>>> task = ChainTask()
>>> task.solution("4+9+3+7")
'step 1: 4+9=13, carry, tens 1; step 2: 3+3=6, hold, tens 1; step 3: 6+7=13, carry, tens 2; \\boxed{23}'
>>> task.answer("4+9+3+7")
'23'
"""

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


SOLUTION_TEMPLATE = "Solve: {problem}"
META_TEMPLATE = "Predict: {problem}"
# Words a solution writes; the warm start's meta targets name them at random, so the notion reward has to teach which.
SOLUTION_NOTIONS = ("carry", "hold", "tens")
# Words no solution writes (a notion that never occurs in a correct rollout scores 0).
DISTRACTOR_NOTIONS = ("subtraction", "multiplication")
NOTIONS = SOLUTION_NOTIONS + DISTRACTOR_NOTIONS

UNSOLVABLE = "3-digit"
# Bump when the generator changes what a given setting produces (warm starts and runs are cached by these settings).
TASK_VERSION = 2


@dataclass(frozen=True)
class Cell:
    """A difficulty cell: `terms` terms of `digits` digits (digits 0 means "1 or 2", the trivial one-term copy)."""

    terms: int
    digits: int

    @property
    def name(self) -> str:
        if self.digits == 3:
            return f"{self.terms}x{UNSOLVABLE}"
        return f"{self.terms} term" + ("s" if self.terms > 1 else "")


@dataclass(frozen=True)
class ChainTask:
    """The task family; every field enters the study's cache keys.

    Args:
        max_terms: the longest learnable chain (cells 2..max_terms one-digit terms).
        step_error: probability that a demonstration step is off by one.
        unsolvable_terms: one unsolvable cell per entry, of that many three-digit terms (never in the warm start).
        trivial: include the one-term copy cell (`Solve: 37` -> `\\boxed{37}`).
        hint_fraction: share of warm-start solution prompts with a random notion hint.
        meta_length_range: range of the random `solution_length` of warm-start meta targets (about the real range).
    """

    max_terms: int = 9
    step_error: float = 0.2
    unsolvable_terms: tuple[int, ...] = (2, 3)
    trivial: bool = True
    hint_fraction: float = 0.2
    meta_length_range: tuple[int, int] = (4, 112)
    notions: tuple[str, ...] = NOTIONS
    solution_template: str = SOLUTION_TEMPLATE
    meta_template: str = META_TEMPLATE
    cells: tuple[Cell, ...] = field(init=False)

    def __post_init__(self):
        if not 2 <= self.max_terms <= 9:
            raise ValueError(
                f"max_terms must be in 2..9 (at most 8 carries keep the answer a sum), got {self.max_terms}"
            )
        if not 0.0 <= self.step_error < 1.0:
            raise ValueError(f"step_error must be in [0, 1), got {self.step_error}")
        cells = ([Cell(1, 0)] if self.trivial else []) + [Cell(n, 1) for n in range(2, self.max_terms + 1)]
        cells += [Cell(n, 3) for n in self.unsolvable_terms]
        object.__setattr__(self, "cells", tuple(cells))

    def settings(self) -> dict:
        settings = asdict(self)
        settings["version"] = TASK_VERSION
        settings["cells"] = [cell.name for cell in self.cells]
        return settings

    # -- problems -------------------------------------------------------------------------------------------------
    def sample_problem(self, rng: random.Random, cell: Cell) -> str:
        if cell.digits == 0:
            return str(rng.randint(1, 99))
        low, high = (0, 9) if cell.digits == 1 else (100, 999)
        first = rng.randint(max(low, 1), high)  # no leading "0+"
        return "+".join([str(first)] + [str(rng.randint(low, high)) for _ in range(cell.terms - 1)])

    @staticmethod
    def terms(problem: str) -> list[int]:
        return [int(t) for t in problem.split("+")]

    def answer(self, problem: str) -> str:
        return str(sum(self.terms(problem)))

    def cell_of(self, problem: str) -> Cell:
        terms = self.terms(problem)
        if len(terms) == 1:
            return Cell(1, 0)
        return Cell(len(terms), 3 if max(terms) >= 100 else 1)

    # -- worked solutions -----------------------------------------------------------------------------------------
    def solution(self, problem: str, rng: random.Random | None = None, step_error: float | None = None) -> str:
        r"""The worked solution; with `rng`, each step is off by one with probability `step_error` (default: the
        task's), and the chain continues from the wrong digit, so the boxed answer is wrong too."""
        terms = self.terms(problem)
        if len(terms) == 1:
            return f"\\boxed{{{terms[0]}}}"
        if max(terms) > 9:
            raise ValueError(f"worked solutions exist for one-digit terms only, got {problem!r}")
        error = self.step_error if step_error is None else step_error
        units, carries, steps = terms[0], 0, []
        for index, term in enumerate(terms[1:], start=1):
            total = units + term
            if rng is not None and rng.random() < error:
                # One too many (one too few at 18, the largest step): always upwards, so that two mistakes of a chain
                # do not cancel (the boxed answer is the sum plus the mistakes) and a correct answer means a clean chain.
                total = total + 1 if total < 18 else total - 1
            carries += total >= 10
            steps.append(
                f"step {index}: {units}+{term}={total}, {'carry' if total >= 10 else 'hold'}, tens {carries};"
            )
            units = total % 10
        return " ".join(steps) + f" \\boxed{{{carries * 10 + units}}}"

    def carry_words(self, problem: str) -> set[str]:
        """The notions the correct solution of `problem` writes."""
        if self.cell_of(problem).digits == 3:
            return set()
        text = self.solution(problem)
        return {word for word in SOLUTION_NOTIONS if word in text}

    # -- datasets -------------------------------------------------------------------------------------------------
    def heldout(self, per_cell: int, seed: int) -> list[str]:
        """`per_cell` distinct problems per cell (fewer where the cell is smaller), cell-major."""
        rng = random.Random(seed)
        problems = []
        for cell in self.cells:
            chosen: list[str] = []
            seen: set[str] = set()
            for _ in range(per_cell * 50):
                if len(chosen) == per_cell:
                    break
                problem = self.sample_problem(rng, cell)
                if problem not in seen:
                    seen.add(problem)
                    chosen.append(problem)
            problems.extend(chosen)
        return problems

    def stream(self, num_problems: int, seed: int, exclude: Sequence[str] = ()) -> list[str]:
        """Training problems, cells drawn uniformly, held-out problems excluded (the same stream for every arm)."""
        rng = random.Random(seed)
        excluded = set(exclude)
        problems: list[str] = []
        while len(problems) < num_problems:
            problem = self.sample_problem(rng, rng.choice(self.cells))
            if problem not in excluded:
                problems.append(problem)
        return problems

    def warm_start_problem(self, rng: random.Random) -> str:
        """A warm-start problem: any cell but the unsolvable one, which the model must never see."""
        cells = [cell for cell in self.cells if cell.digits != 3]
        return self.sample_problem(rng, rng.choice(cells))

    # -- the warm start's interface (masa_trl.demo.warm_start.WarmStartTask) ----------------------------------------

    def corpus(self, seed: int, num_lines: int = 6000) -> list[str]:
        """Prompts, worked solutions (with mistakes), hints and meta JSON, for the tokenizer's BPE merges."""
        rng = random.Random(seed)
        lines = []
        for i in range(num_lines):
            if i % 3 == 0:
                problem, target = self.meta_example(rng, None)
                lines.append(f"user\n{self.meta_template.format(problem=problem)}\nassistant\n{target}")
            else:
                problem, target = self.solution_example(rng)
                lines.append(f"user\n{self.solution_template.format(problem=problem)}\nassistant\n{target}")
        lines += [self.sample_problem(rng, self.cells[-1]) for _ in range(200)]
        return lines

    def solution_example(self, rng: random.Random) -> tuple[str, str]:
        """A demonstration: a worked solution with the task's step errors; a `hint_fraction` of the prompts carry a
        random notion hint (so that MASA-efficient's hints do not take the solver off its training distribution)."""
        from masa_trl.templates import add_notion_hint

        problem = self.warm_start_problem(rng)
        target = self.solution(problem, rng)
        if rng.random() < self.hint_fraction:
            problem = add_notion_hint(problem, rng.sample(self.notions, rng.randint(1, 2)))
        return problem, target

    def meta_example(self, rng: random.Random, config) -> tuple[str, str]:
        """A meta target that says nothing about the problem (uniform pass rate and length, random notions), on any
        cell: the warm start teaches the format, MASA's rewards have to teach the numbers."""
        from masa_trl.meta import format_meta_prediction

        problem = self.sample_problem(rng, rng.choice(self.cells))
        low, high = self.meta_length_range
        scale = 8 if config is None else config.pass_rate_scale
        notions = rng.sample(self.notions, rng.randint(1, 2))
        return problem, format_meta_prediction(notions, rng.randint(0, scale), rng.randint(low, high), reasoning=None)
