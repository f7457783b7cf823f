"""A procedural arithmetic task family with a difficulty knob, for CPU-scale MASA runs and tests.

A problem sums `terms` numbers of up to `digits` digits; more terms and digits make it harder for a small model,
which gives the meta predictions a pass-rate signal to learn. Generation is deterministic for a given seed, and the
held-out split never shares a problem with the training split.
"""

import random

from datasets import Dataset


def arithmetic_problem(rng: random.Random, terms: int, digits: int) -> tuple[str, str]:
    numbers = [rng.randint(1, 10**digits - 1) for _ in range(terms)]
    return f"What is {' + '.join(map(str, numbers))}?", str(sum(numbers))


def make_arithmetic_dataset(
    num_problems: int,
    *,
    seed: int = 0,
    terms: tuple[int, int] = (1, 6),
    digits: tuple[int, int] = (1, 2),
    exclude: set[str] | None = None,
) -> Dataset:
    """Generate `num_problems` distinct sum problems with `problem`, `answer`, `terms` and `digits` columns.

    Args:
        num_problems (`int`): how many problems.
        seed (`int`, *optional*, defaults to `0`): generator seed; the same seed gives the same problems.
        terms (`tuple[int, int]`, *optional*, defaults to `(1, 6)`): inclusive range of the number of terms.
        digits (`tuple[int, int]`, *optional*, defaults to `(1, 2)`): inclusive range of the digits per number.
        exclude (`set[str]`, *optional*): problems to leave out, e.g. the training split when making a held-out one.
    """
    rng = random.Random(seed)
    exclude = set(exclude or ())
    rows = {"problem": [], "answer": [], "terms": [], "digits": []}
    attempts = 0
    while len(rows["problem"]) < num_problems:
        attempts += 1
        if attempts > 100 * num_problems:
            raise ValueError(f"Cannot find {num_problems} distinct problems with terms={terms}, digits={digits}.")
        n_terms, n_digits = rng.randint(*terms), rng.randint(*digits)
        problem, answer = arithmetic_problem(rng, n_terms, n_digits)
        if problem in exclude:
            continue
        exclude.add(problem)
        rows["problem"].append(problem)
        rows["answer"].append(answer)
        rows["terms"].append(n_terms)
        rows["digits"].append(n_digits)
    return Dataset.from_dict(rows)


# ---------------------------------------------------------------------------------------------------------------------
# Difficulty cells: the task family of the CPU demo (`recipes/masa_demo_cpu.py`)
# ---------------------------------------------------------------------------------------------------------------------

# (terms, digits): every number of a problem has exactly `digits` digits. For a 0.5M-parameter model the pass rate
# falls from near 1 (one 2-digit number: a copy) to near 0 (several 2-digit numbers), which is the spread the meta
# predictions must learn.
SUM_CELLS: tuple[tuple[int, int], ...] = tuple((terms, digits) for digits in (1, 2) for terms in range(1, 7))
# One 1-digit number has only 9 problems, too few to hold any out.
HELDOUT_CELLS: tuple[tuple[int, int], ...] = tuple(cell for cell in SUM_CELLS if cell != (1, 1))


def sum_problem(rng: random.Random, terms: int, digits: int) -> tuple[str, str]:
    """A compact sum such as `"37+5+81"` and its answer, every number with exactly `digits` digits (no zero).

    >>> sum_problem(random.Random(0), 3, 2)
    ('59+63+15', '137')
    """
    if terms < 1 or digits < 1:
        raise ValueError(f"terms and digits must be positive, got terms={terms}, digits={digits}.")
    low = 1 if digits == 1 else 10 ** (digits - 1)
    numbers = [rng.randint(low, 10**digits - 1) for _ in range(terms)]
    return "+".join(map(str, numbers)), str(sum(numbers))


def sum_cell_size(terms: int, digits: int) -> int:
    """How many distinct problems a cell holds (9 one-digit numbers, 90 two-digit ones, ...)."""
    low = 1 if digits == 1 else 10 ** (digits - 1)
    return (10**digits - low) ** terms


def _sum_rows(problems: list[tuple[str, str, int, int]]) -> Dataset:
    problem, answer, terms, digits = zip(*problems, strict=True) if problems else ((), (), (), ())
    return Dataset.from_dict(
        {"problem": list(problem), "answer": list(answer), "terms": list(terms), "digits": list(digits)}
    )


def make_sum_heldout(
    per_cell: int = 20,
    *,
    seed: int = 1234,
    cells: tuple[tuple[int, int], ...] = HELDOUT_CELLS,
    max_cell_share: float = 0.25,
) -> Dataset:
    """A held-out split: `per_cell` distinct problems per difficulty cell, cell by cell.

    A cell contributes at most `max_cell_share` of its problems, so that a training stream drawn from the same cell
    keeps most of them: with the defaults, 20 problems in each of the 11 cells of [`HELDOUT_CELLS`] (220 problems;
    two 1-digit numbers, a cell of 81 problems, gives up 20 of them).

    Args:
        per_cell (`int`, *optional*, defaults to `20`): problems per cell.
        seed (`int`, *optional*, defaults to `1234`): generator seed; the same seed gives the same split.
        cells (`tuple[tuple[int, int], ...]`, *optional*): the (terms, digits) cells, default [`HELDOUT_CELLS`].
        max_cell_share (`float`, *optional*, defaults to `0.25`): largest share of a cell that may be held out.
    """
    rng = random.Random(seed)
    rows = []
    for terms, digits in cells:
        count = min(per_cell, int(max_cell_share * sum_cell_size(terms, digits)))
        seen: set[str] = set()
        while len(seen) < count:
            problem, answer = sum_problem(rng, terms, digits)
            if problem not in seen:
                seen.add(problem)
                rows.append((problem, answer, terms, digits))
    return _sum_rows(rows)


def make_sum_dataset(
    num_problems: int,
    *,
    seed: int = 0,
    cells: tuple[tuple[int, int], ...] = SUM_CELLS,
    exclude: set[str] | frozenset[str] | None = None,
) -> Dataset:
    """A training stream: `num_problems` problems, each from a cell drawn uniformly, never one of `exclude`.

    Problems are drawn independently, so small cells repeat (one 1-digit number has only 9 problems): the cells stay
    equally likely, which is what a difficulty-aware predictor needs to see.

    Args:
        num_problems (`int`): how many problems.
        seed (`int`, *optional*, defaults to `0`): generator seed; the same seed gives the same problems.
        cells (`tuple[tuple[int, int], ...]`, *optional*): the (terms, digits) cells, default [`SUM_CELLS`].
        exclude (`set[str]`, *optional*): problems never to draw, e.g. the held-out split's `problem` column.
    """
    rng = random.Random(seed)
    exclude = exclude or frozenset()
    available = [cell for cell in cells if sum_cell_size(*cell) > sum(1 for p in exclude if _cell_of(p) == cell)]
    if not available:
        raise ValueError("Every cell is entirely excluded; nothing left to draw.")
    rows = []
    while len(rows) < num_problems:
        terms, digits = rng.choice(cells)
        if (terms, digits) not in available:
            continue
        problem, answer = sum_problem(rng, terms, digits)
        if problem not in exclude:
            rows.append((problem, answer, terms, digits))
    return _sum_rows(rows)


def _cell_of(problem: str) -> tuple[int, int]:
    numbers = problem.split("+")
    return len(numbers), len(numbers[0])
