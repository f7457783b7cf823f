"""Unit tests of benchmarks/study/flops.py and benchmarks/study/stats.py, with hand-computed values."""

import math
import sys
from itertools import combinations
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from study import flops, stats


# L=1, hidden 4, intermediate 8, 2 heads and 1 KV head of dim 2, vocab 10:
# N = 4 * (2 * 4 + 2 * 2) + 3 * 4 * 8 + 4 * 10 = 48 + 96 + 40 = 184, d_attn = 4,
# so the token at position i costs 2 * 184 + 2 * 1 * i * 4 = 368 + 8 i.
TINY = flops.ModelShape(
    hidden_size=4,
    intermediate_size=8,
    num_hidden_layers=1,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=2,
    vocab_size=10,
)


def run(costs, accuracies, axis="tokens"):
    return {"points": [{axis: c, "accuracy": a} for c, a in zip(costs, accuracies, strict=True)]}


class TestModelShape:
    def test_matmul_params_by_hand(self):
        assert TINY.matmul_params == 184
        assert TINY.attention_dim == 4

    def test_from_config_reads_the_attributes(self):
        config = SimpleNamespace(
            hidden_size=4,
            intermediate_size=8,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=2,
            vocab_size=10,
            rope_theta=1e6,
        )
        assert flops.ModelShape.from_config(config) == TINY

    def test_from_config_defaults_head_dim_and_kv_heads(self):
        config = SimpleNamespace(
            hidden_size=8, intermediate_size=8, num_hidden_layers=1, num_attention_heads=2, head_dim=None, vocab_size=3
        )
        shape = flops.ModelShape.from_config(config)
        assert (shape.head_dim, shape.num_key_value_heads) == (4, 2)

    def test_rejects_non_positive_sizes(self):
        with pytest.raises(ValueError, match="vocab_size=0"):
            flops.ModelShape(4, 8, 1, 2, 1, 2, 0)
        with pytest.raises(ValueError, match="multiple of"):
            flops.ModelShape(4, 8, 1, 3, 2, 2, 10)


class TestFlops:
    def test_forward_by_hand(self):
        assert flops.forward_flops(TINY, 3, 2) == 3 * (368 + 16)

    def test_generation_by_hand(self):
        # Prefill of positions 1, 2, then decoding at positions 3, 4, 5.
        prefill = (368 + 8) + (368 + 16)
        decode = (368 + 24) + (368 + 32) + (368 + 40)
        assert flops.generation_flops(TINY, [2], [3]) == prefill + decode == 1960

    def test_one_token_prompt_is_one_forward(self):
        assert flops.generation_flops(TINY, [1], [0]) == flops.forward_flops(TINY, 1, 1)

    def test_generation_is_linear_in_rows(self):
        one = flops.generation_flops(TINY, [5], [7])
        assert flops.generation_flops(TINY, [5] * 4, [7] * 4) == 4 * one
        assert flops.generation_flops(TINY, [5, 2], [7, 3]) == one + flops.generation_flops(TINY, [2], [3])

    def test_generation_equals_a_forward_over_prompt_and_completion(self):
        assert flops.generation_flops(TINY, [6, 3], [4, 9]) == flops.training_flops(TINY, [10, 12], backward=False)

    def test_training_by_hand(self):
        forward = 368 * 3 + 8 * (1 + 2 + 3)
        assert flops.training_flops(TINY, [3], backward=False) == forward == 1152
        assert flops.training_flops(TINY, [3]) == 3 * forward
        assert flops.training_flops(TINY, [3], forward_passes=2) == 4 * forward

    def test_training_is_linear_in_rows(self):
        assert flops.training_flops(TINY, [9, 9, 9]) == 3 * flops.training_flops(TINY, [9])

    def test_training_with_one_pass_is_three_forwards(self):
        lengths = [4, 11, 1]
        forwards = sum(flops.forward_flops(TINY, n, (n + 1) / 2) for n in lengths)
        assert flops.training_flops(TINY, lengths) == pytest.approx(3 * forwards)

    def test_negative_lengths_raise(self):
        with pytest.raises(ValueError, match="non-negative"):
            flops.generation_flops(TINY, [3, -1], [1, 1])
        with pytest.raises(ValueError, match="non-negative"):
            flops.training_flops(TINY, [-2])
        with pytest.raises(ValueError, match="non-negative"):
            flops.forward_flops(TINY, -1, 1)

    def test_mismatched_rows_and_passes_raise(self):
        with pytest.raises(ValueError, match="one of each per row"):
            flops.generation_flops(TINY, [3, 1], [1])
        with pytest.raises(ValueError, match="forward_passes=0"):
            flops.training_flops(TINY, [3], forward_passes=0)


class TestMeanStdBootstrap:
    def test_mean_std(self):
        assert stats.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
        assert stats.mean_std([5.0]) == (5.0, 0.0)
        assert stats.mean_std([1.0, math.nan, 3.0]) == (2.0, pytest.approx(math.sqrt(2)))

    def test_mean_std_empty_raises(self):
        with pytest.raises(ValueError, match="empty once NaNs are skipped"):
            stats.mean_std([math.nan])

    def test_bootstrap_contains_the_mean_and_is_deterministic(self):
        values = [0.1, 0.4, 0.35, 0.2, 0.5]
        low, high = stats.bootstrap_ci(values, seed=3)
        assert low <= np.mean(values) <= high
        assert low >= min(values) and high <= max(values)
        assert stats.bootstrap_ci(values, seed=3) == (low, high)

    def test_bootstrap_single_value(self):
        assert stats.bootstrap_ci([0.7]) == (0.7, 0.7)

    def test_bootstrap_other_statistic(self):
        low, high = stats.bootstrap_ci([1.0, 2.0, 100.0], np.median, num_resamples=200)
        assert 1.0 <= low <= high <= 100.0

    def test_bad_confidence_raises(self):
        with pytest.raises(ValueError, match="confidence=1"):
            stats.bootstrap_ci([1.0, 2.0], confidence=1)


class TestCurves:
    def test_cost_to_reach_interpolates(self):
        assert stats.cost_to_reach([0, 10, 20], [0.2, 0.4, 0.6], 0.5) == 15.0
        assert stats.cost_to_reach([0, 10, 20], [0.2, 0.4, 0.6], 0.4) == 10.0

    def test_cost_to_reach_takes_the_first_crossing(self):
        assert stats.cost_to_reach([0, 10, 20, 30], [0.0, 0.8, 0.1, 0.9], 0.4) == 5.0

    def test_cost_to_reach_at_start_and_never(self):
        assert stats.cost_to_reach([3, 10], [0.7, 0.9], 0.5) == 3.0
        assert stats.cost_to_reach([0, 10], [0.1, 0.3], 0.5) == math.inf

    def test_cost_to_reach_tolerates_a_rounded_mean(self):
        target = np.mean([0.1 + 0.2, 0.3, 0.3])
        assert stats.cost_to_reach([0, 10], [0.0, 0.3], target) == pytest.approx(10.0)

    def test_curves_validate_their_input(self):
        with pytest.raises(ValueError, match="strictly increasing"):
            stats.cost_to_reach([0, 10, 10], [0.1, 0.2, 0.3], 0.2)
        with pytest.raises(ValueError, match="one of each per point"):
            stats.accuracy_at_cost([0, 10], [0.1], 5)

    def test_accuracy_at_cost(self):
        assert stats.accuracy_at_cost([0, 10, 20], [0.2, 0.4, 0.6], 5) == pytest.approx(0.3)
        assert stats.accuracy_at_cost([0, 10, 20], [0.2, 0.4, 0.6], 20) == 0.6
        assert stats.accuracy_at_cost([5, 10], [0.2, 0.4], 1) == 0.2
        assert math.isnan(stats.accuracy_at_cost([0, 10], [0.2, 0.4], 11))


class TestCostRatio:
    def test_ratio_with_explicit_target(self):
        baseline = [run([0, 100], [0.0, 0.5]), run([0, 100], [0.0, 1.0])]  # reach 0.5 at 100 and 50
        arm = [run([0, 50], [0.0, 0.5]), run([0, 40], [0.0, 1.0])]  # at 50 and 20
        result = stats.cost_ratio(arm, baseline, axis="tokens", target=0.5, num_resamples=500)
        assert result["arm_costs"] == [50.0, 20.0]
        assert result["baseline_costs"] == [100.0, 50.0]
        assert result["ratio"] == pytest.approx(35 / 75)
        assert result["reached"] == 2
        assert result["per_seed_ratios"] == pytest.approx([50 / 75, 20 / 75])
        assert result["per_seed_ratio_mean"] == pytest.approx(35 / 75)
        assert result["per_seed_ratio_std"] == pytest.approx(np.std([50 / 75, 20 / 75], ddof=1))
        low, high = result["ratio_ci"]
        assert 20 / 100 <= low <= result["ratio"] <= high <= 50 / 50
        again = stats.cost_ratio(arm, baseline, axis="tokens", target=0.5, num_resamples=500)
        assert again["ratio_ci"] == result["ratio_ci"]

    def test_default_target_is_the_mean_final_baseline_accuracy(self):
        baseline = [run([0, 10, 20], [0.0, 0.6, 0.5]), run([0, 10, 20], [0.0, 0.4, 0.7])]
        result = stats.cost_ratio([run([0, 10], [0.0, 0.6])], baseline, axis="tokens", num_resamples=100)
        assert result["target"] == pytest.approx(0.6)
        assert result["baseline_costs"] == pytest.approx([10.0, 20 * 2 / 3 + 10 * 1 / 3])

    def test_baseline_that_never_reaches_gives_nan_and_a_fix(self):
        # The default target 0.6 lies above the first baseline run's curve.
        baseline = [run([0, 100], [0.0, 0.5]), run([0, 100], [0.0, 0.7])]
        with pytest.warns(UserWarning, match="target=0.5"):
            result = stats.cost_ratio([run([0, 10], [0.0, 0.9])], baseline, axis="tokens")
        assert result["baseline_reached"] == 1 and result["reached"] == 1
        assert math.isnan(result["ratio"]) and all(map(math.isnan, result["ratio_ci"]))
        assert math.isnan(result["per_seed_ratios"][0])

    def test_arm_that_never_reaches_is_inf(self):
        baseline = [run([0, 100], [0.0, 0.5])]
        arm = [run([0, 100], [0.0, 0.2]), run([0, 100], [0.0, 0.3])]
        result = stats.cost_ratio(arm, baseline, axis="tokens")
        assert result["ratio"] == math.inf
        assert result["ratio_ci"] == (math.inf, math.inf)
        assert result["reached"] == 0
        assert result["per_seed_ratio_mean"] == math.inf and math.isnan(result["per_seed_ratio_std"])

    def test_ci_with_some_infinite_resamples(self):
        baseline = [run([0, 100], [0.0, 0.5])]
        arm = [run([0, 100], [0.0, 0.2]), run([0, 50], [0.0, 0.5]), run([0, 50], [0.0, 0.5])]
        result = stats.cost_ratio(arm, baseline, axis="tokens", num_resamples=1000)
        assert result["ratio"] == math.inf and result["reached"] == 2
        low, high = result["ratio_ci"]
        assert low == 0.5 and high == math.inf

    def test_missing_axis_raises(self):
        with pytest.raises(ValueError, match="'flops'"):
            stats.cost_ratio([run([0, 1], [0, 1])], [run([0, 1], [0, 1])], axis="flops")


class TestAccuracyAtEqualCost:
    def test_difference_by_hand(self):
        baseline = [run([0, 100], [0.0, 0.4]), run([0, 100], [0.0, 0.6])]
        arm = [run([0, 200], [0.2, 1.0]), run([0, 100], [0.2, 0.8]), run([0, 50], [0.0, 0.9])]
        result = stats.accuracy_difference_at_equal_cost(arm, baseline, axis="tokens", num_resamples=500)
        assert result["cost"] == 100.0
        assert result["arm_accuracies"][:2] == pytest.approx([0.6, 0.8])
        assert math.isnan(result["arm_accuracies"][2])
        assert result["arm_missing"] == 1 and result["baseline_missing"] == 0
        assert result["arm_mean"] == pytest.approx(0.7) and result["baseline_mean"] == pytest.approx(0.5)
        assert result["difference"] == pytest.approx(0.2)
        assert result["baseline_std"] == pytest.approx(np.std([0.4, 0.6], ddof=1))
        low, high = result["difference_ci"]
        assert low <= result["difference"] <= high
        assert "excluded" in result["note"]

    def test_default_cost_can_leave_baseline_runs_out(self):
        baseline = [run([0, 90], [0.0, 0.3]), run([0, 110], [0.0, 0.5])]
        result = stats.accuracy_difference_at_equal_cost([run([0, 200], [0.0, 1.0])], baseline, axis="tokens")
        assert result["cost"] == 100.0 and result["baseline_missing"] == 1
        assert result["baseline_mean"] == pytest.approx(0.5 * 100 / 110) and result["baseline_std"] == 0.0
        assert result["difference"] == pytest.approx(0.5 - 0.5 * 100 / 110)

    def test_no_arm_run_at_that_cost_gives_nan_and_a_warning(self):
        with pytest.warns(UserWarning, match="No arm run reaches tokens=100"):
            result = stats.accuracy_difference_at_equal_cost(
                [run([0, 50], [0.0, 0.9])], [run([0, 100], [0.0, 0.4])], axis="tokens"
            )
        assert math.isnan(result["difference"]) and all(map(math.isnan, result["difference_ci"]))
        assert result["arm_missing"] == 1 and math.isnan(result["arm_mean"])
        assert result["baseline_mean"] == pytest.approx(0.4)


class TestPassAtK:
    @pytest.mark.parametrize("n", [1, 2, 5, 7])
    def test_matches_the_combinatorial_definition(self, n):
        for c in range(n + 1):
            for k in range(1, n + 1):
                # The probability that a k-subset of the n samples holds a correct one, by enumeration.
                subsets = list(combinations([True] * c + [False] * (n - c), k))
                expected = sum(any(s) for s in subsets) / len(subsets)
                assert stats.pass_at_k(n, c, k) == pytest.approx(expected)
                assert stats.pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k))

    def test_invalid_arguments_raise(self):
        with pytest.raises(ValueError, match="k=5"):
            stats.pass_at_k(4, 1, 5)
        with pytest.raises(ValueError, match="num_correct=5"):
            stats.pass_at_k(4, 5, 1)


class TestGatingConfusion:
    def test_counts_and_scores(self):
        result = stats.gating_confusion([True, True, False, False, True], [True, False, True, False, True])
        assert (result["tp"], result["fp"], result["fn"], result["tn"]) == (2, 1, 1, 1)
        assert result["precision"] == pytest.approx(2 / 3)
        assert result["recall"] == pytest.approx(2 / 3)
        assert result["f1"] == pytest.approx(2 / 3)

    def test_no_predicted_positives_gives_nan_precision(self):
        result = stats.gating_confusion([False, False], [True, False])
        assert math.isnan(result["precision"])
        assert result["recall"] == 0.0 and result["f1"] == 0.0

    def test_no_positives_at_all_gives_nan_everywhere(self):
        result = stats.gating_confusion([False, False], [False, False])
        assert math.isnan(result["precision"]) and math.isnan(result["recall"]) and math.isnan(result["f1"])
        assert result["tn"] == 2

    def test_mismatched_lengths_raise(self):
        with pytest.raises(ValueError, match="one of each per prompt"):
            stats.gating_confusion([True], [True, False])
