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
