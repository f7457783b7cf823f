"""Unbiased pass@k: brute force over k-subsets, closed forms, and the `evaluate` metric loaded offline."""

import itertools
import math
import os
from pathlib import Path

import pytest

from evaluation.passk import mean_accuracy, mean_pass_at_k, pass_at_k, valid_ks


METRIC_DIR = Path(__file__).resolve().parent.parent / "evaluation" / "metrics" / "pass_at_k"


def brute_force(n: int, c: int, k: int) -> float:
    """The fraction of k-subsets of the n samples that contain at least one correct sample."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_pass_at_k_matches_brute_force(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_closed_forms():
    for n in (1, 4, 16, 32):
        for c in range(n + 1):
            assert pass_at_k(n, c, 1) == pytest.approx(c / n)  # pass@1 = c / n
            assert pass_at_k(n, c, n) == (1.0 if c else 0.0)  # pass@n = 1[c > 0]
            if n >= 2:  # pass@2 = 1 - (n-c)(n-c-1) / (n(n-1))
                assert pass_at_k(n, c, 2) == pytest.approx(1 - (n - c) * (n - c - 1) / (n * (n - 1)))
    assert pass_at_k(32, 1, 32) == 1.0  # not the 0.64 of a bootstrap "best@32"
    # The product form is stable where the binomials are huge.
    assert pass_at_k(1000, 3, 10) == pytest.approx(1 - math.comb(997, 10) / math.comb(1000, 10), rel=1e-12)


def test_pass_at_k_rejects_invalid():
    for n, c, k in [(4, 5, 1), (4, -1, 1), (4, 2, 0), (4, 2, 5)]:
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_means():
    assert mean_pass_at_k(4, [0, 1, 2, 3, 4], 1) == pytest.approx(0.5)
    assert mean_pass_at_k(4, [0, 1, 2, 3, 4], 2) == pytest.approx((0 + 0.5 + 5 / 6 + 1 + 1) / 5)
    assert mean_pass_at_k(4, [0, 1, 2, 3, 4], 4) == pytest.approx(0.8)
    assert mean_pass_at_k([2, 4], [1, 1], 2) == pytest.approx((1.0 + 0.5) / 2)
    assert mean_accuracy([2, 4], [1, 1]) == pytest.approx((0.5 + 0.25) / 2)
    assert math.isnan(mean_pass_at_k(4, [], 1))
    assert valid_ks([32, 1, 4, 1, 0], 4) == [1, 4]


def test_evaluate_metric_loads_offline(tmp_path, monkeypatch):
    import evaluate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.chdir(METRIC_DIR.parent.parent.parent)
    metric = evaluate.load(os.path.join("evaluation", "metrics", "pass_at_k"))
    result = metric.compute(predictions=[[1, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 1]], k=[1, 2, 4])
    assert result["num_problems"] == 3
    for k in (1, 2, 4):
        expected = mean_pass_at_k(4, [2, 0, 3], k)
        assert result[f"pass@{k}"] == pytest.approx(expected)
    with pytest.raises(ValueError, match="pass@5"):
        metric.compute(predictions=[[1, 0]], k=5)
