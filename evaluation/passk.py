"""Unbiased pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code").

For one problem with `n` samples of which `c` are correct, the unbiased estimator of the probability that at least
one of `k` samples drawn without replacement is correct is

    pass@k = 1 - C(n - c, k) / C(n, k)        (1 when n - c < k)

computed here in the numerically stable product form `1 - prod_{i = n - c + 1}^{n} (1 - k / i)`, which never forms
the (huge) binomial coefficients. Special cases: pass@1 = c / n (the mean over samples, "avg@n"), and pass@n = 1[c > 0].
"""

from collections.abc import Iterable, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with `n` samples, `c` of them correct."""
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def mean_pass_at_k(num_samples: Sequence[int] | int, num_correct: Sequence[int], k: int) -> float:
    """Mean unbiased pass@k over problems; `num_samples` is one `n` for all problems or one per problem.

    Problems with fewer than `k` samples raise, since their pass@k is undefined.
    """
    counts = list(num_correct)
    if not counts:
        return float("nan")
    ns = [num_samples] * len(counts) if isinstance(num_samples, int) else list(num_samples)
    if len(ns) != len(counts):
        raise ValueError(f"{len(ns)} sample counts for {len(counts)} correct counts")
    return float(np.mean([pass_at_k(n, c, k) for n, c in zip(ns, counts, strict=True)]))


def mean_accuracy(num_samples: Sequence[int], num_correct: Sequence[int]) -> float:
    """pass@1 as the mean over samples, per problem first (c / n), then over problems."""
    if not num_correct:
        return float("nan")
    return float(np.mean([c / n for n, c in zip(num_samples, num_correct, strict=True)]))


def valid_ks(ks: Iterable[int], n: int) -> list[int]:
    """The `ks` that are defined for `n` samples per problem (1 <= k <= n), sorted and deduplicated."""
    return sorted({int(k) for k in ks if 1 <= int(k) <= n})
