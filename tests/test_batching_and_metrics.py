import math

import pytest
import torch

from masa_trl.batching import concat_rollout_batches
from masa_trl.meta import MetaPrediction
from masa_trl.meta_metrics import meta_alignment_metrics, pearson
from masa_trl.rewards import SolutionStats


PAD = 9


def batch(prompt_width, completion_width, rows, value):
    return {
        "prompt_ids": torch.full((rows, prompt_width), value),
        "prompt_mask": torch.ones(rows, prompt_width, dtype=torch.long),
        "completion_ids": torch.full((rows, completion_width), value),
        "completion_mask": torch.ones(rows, completion_width, dtype=torch.long),
        "old_per_token_logps": torch.full((rows, completion_width), -1.0),
        "importance_sampling_ratio": torch.ones(rows, 1),
        "advantages": torch.full((rows,), float(value)),
        "num_items_in_batch": torch.tensor(rows * completion_width),
    }


def test_concat_pads_prompts_left_and_completions_right():
    joined = concat_rollout_batches(batch(2, 5, rows=2, value=1), batch(4, 3, rows=1, value=2), pad_token_id=PAD)
    assert joined["prompt_ids"].tolist() == [[PAD, PAD, 1, 1], [PAD, PAD, 1, 1], [2, 2, 2, 2]]
    assert joined["prompt_mask"].tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1]]
    assert joined["completion_ids"][2].tolist() == [2, 2, 2, PAD, PAD]
    assert joined["completion_mask"][2].tolist() == [1, 1, 1, 0, 0]
    assert joined["old_per_token_logps"][2].tolist() == [-1.0, -1.0, -1.0, 0.0, 0.0]
    assert joined["importance_sampling_ratio"].shape == (3, 1)
    assert joined["advantages"].tolist() == [1.0, 1.0, 2.0]
    assert joined["num_items_in_batch"].item() == 2 * 5 + 3


def test_concat_refuses_mismatched_or_unknown_fields():
    first, second = batch(2, 2, 1, 1), batch(2, 2, 1, 1)
    del second["old_per_token_logps"]
    with pytest.raises(ValueError, match="different keys"):
        concat_rollout_batches(first, second, PAD)
    first, second = batch(2, 2, 1, 1), batch(2, 2, 1, 1)
    first["pixel_values"] = second["pixel_values"] = torch.zeros(1, 3)
    with pytest.raises(NotImplementedError, match="pixel_values"):
        concat_rollout_batches(first, second, PAD)


def test_pearson():
    assert pearson([0, 1, 2], [0, 2, 4]) == pytest.approx(1.0)
    assert pearson([0, 1, 2], [4, 2, 0]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1], [1]))
    assert math.isnan(pearson([1, 1], [0, 1]))


def test_meta_alignment_metrics_by_hand():
    stats = [
        SolutionStats(correct=[True, False], lengths=[10, 30], solutions=["a", "b"], problem="p"),
        SolutionStats(correct=[True, True], lengths=[20, 40], solutions=["a", "b"], problem="q"),
        None,  # unscorable prompt: excluded everywhere
    ]
    predictions = [
        MetaPrediction(("x",), 0.25, 12),
        None,
        MetaPrediction(("x", "y"), 1.0, 30),
        MetaPrediction((), 0.5, 5),
    ]
    metrics = meta_alignment_metrics(predictions, [0, 0, 1, 2], stats)
    assert metrics["parse_failure_rate"] == 0.25
    assert metrics["pred_pass_rate"] == pytest.approx((0.25 + 1.0 + 0.5) / 3)
    assert metrics["true_pass_rate"] == pytest.approx(0.75)
    assert metrics["pass_rate_abs_error"] == pytest.approx((0.25 + 0.0) / 2)
    assert metrics["pass_rate_correlation"] == pytest.approx(1.0)  # (0.25, 0.5) and (1.0, 1.0)
    assert metrics["pred_length"] == pytest.approx((12 + 30 + 5) / 3)
    assert metrics["true_correct_length"] == pytest.approx((10 + 30) / 2)
    assert metrics["num_notions"] == pytest.approx(1.0)
