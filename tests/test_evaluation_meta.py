"""Meta-awareness evaluation: statistics, calibration, plot, and a scripted run with meta predictions."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from evaluation.meta_eval import (
    aggregate_predictions,
    calibration_table,
    format_meta_markdown,
    meta_awareness_metrics,
    pearson,
    plot_meta,
    rankdata,
    spearman,
)


def test_correlations_match_scipy():
    from scipy import stats

    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 5, size=12).astype(float)  # ties on purpose
        y = x + rng.normal(size=12)
        assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
        assert rankdata(x) == pytest.approx(stats.rankdata(x))


def test_correlation_edge_cases():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [1, 8, 27]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))  # constant side
    assert math.isnan(spearman([1], [2]))
    assert list(rankdata([3, 1, 3, 2])) == [3.5, 1.0, 3.5, 2.0]


def test_calibration_and_metrics_by_hand():
    rows = [
        {"pred_pass_rate": 0.0, "measured_pass_rate": 0.0, "pred_length": 100, "measured_length": 120,
         "correct_length_min": None, "correct_length_max": None, "meta_parsed": 2, "meta_samples": 2},
        {"pred_pass_rate": 0.5, "measured_pass_rate": 0.25, "pred_length": 200, "measured_length": 180,
         "correct_length_min": 150, "correct_length_max": 210, "meta_parsed": 1, "meta_samples": 2},
        {"pred_pass_rate": 0.5, "measured_pass_rate": 0.75, "pred_length": 300, "measured_length": 300,
         "correct_length_min": 310, "correct_length_max": 400, "meta_parsed": 2, "meta_samples": 2},
        {"pred_pass_rate": 1.0, "measured_pass_rate": 1.0, "pred_length": 400, "measured_length": 400,
         "correct_length_min": 400, "correct_length_max": 400, "meta_parsed": 2, "meta_samples": 2},
        {"pred_pass_rate": None, "measured_pass_rate": 0.5, "pred_length": None, "measured_length": 50,
         "meta_parsed": 0, "meta_samples": 2},
    ]  # fmt: skip
    metrics = meta_awareness_metrics(rows, pass_rate_scale=4)
    assert metrics["num_problems"] == 5 and metrics["num_with_prediction"] == 4
    assert metrics["meta_parse_rate"] == pytest.approx(7 / 10)
    p = metrics["pass_rate"]
    assert p["mae"] == pytest.approx((0 + 0.25 + 0.25 + 0) / 4)
    assert p["bias"] == pytest.approx(0.0)
    assert p["brier"] == pytest.approx(2 * 0.0625 / 4)
    assert p["pearson"] == pytest.approx(pearson([0, 0.5, 0.5, 1], [0, 0.25, 0.75, 1]))
    length = metrics["length"]
    assert length["mae"] == pytest.approx((20 + 20 + 0 + 0) / 4)
    assert length["within_correct_range"] == pytest.approx(2 / 3)  # inclusive bounds: 200 in, 300 out, 400 in
    table = {row["bucket"]: row for row in metrics["calibration"]}
    assert table["2/4"]["count"] == 2 and table["2/4"]["measured_mean"] == pytest.approx(0.5)
    assert table["1/4"]["count"] == 0 and table["1/4"]["measured_mean"] is None
    assert metrics["pass_rate"]["ece"] == pytest.approx(0.0)  # the 2/4 bucket is calibrated on average
    text = format_meta_markdown("aime24", metrics)
    assert "| 2/4 | 2 | 0.500 | 0.500 |" in text


def test_calibration_table_buckets():
    table = calibration_table([0.1, 0.12, 0.9], [0.0, 0.5, 1.0], pass_rate_scale=8)
    assert [row["bucket"] for row in table][:2] == ["0/8", "1/8"]
    assert table[1]["count"] == 2 and table[1]["measured_mean"] == pytest.approx(0.25)
    assert table[7]["count"] == 1


def test_aggregate_predictions():
    parsed = [
        SimpleNamespace(notions=["parity", "modular arithmetic"], pass_rate=0.25, length=100),
        None,
        SimpleNamespace(notions=["modular arithmetic"], pass_rate=0.75, length=300),
    ]
    agg = aggregate_predictions(parsed)
    assert agg == {
        "pred_pass_rate": 0.5,
        "pred_length": 200.0,
        "notions": ["modular arithmetic", "parity"],
        "meta_parsed": 2,
        "meta_samples": 3,
    }
    assert aggregate_predictions([None])["pred_pass_rate"] is None


def test_plot_writes_a_png(tmp_path):
    rows = [
        {"pred_pass_rate": p / 8, "measured_pass_rate": min(1.0, p / 8 + 0.1), "pred_length": 100 * (p + 1),
         "measured_length": 90 * (p + 1)}
        for p in range(9)
    ]  # fmt: skip
    path = plot_meta(rows, tmp_path / "sub" / "meta.png", title="test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------------------------------------
# A scripted run with meta predictions


def _meta_setup():
    from evaluation.benchmarks import BOXED_INSTRUCTION, load_benchmark

    problems = load_benchmark("aime24", source="fixtures")

    def script(problem, idx, prompt):
        j = int(problem.metadata["index"])  # 0..4
        length = 200 + 20 * j
        if BOXED_INSTRUCTION in prompt:  # a solution prompt: 2j of 8 samples correct, all of the same length
            text = f"\\boxed{{{problem.answer}}}" if idx < 2 * j else "\\boxed{99999}"
            return text.rjust(length, "."), "stop"
        payload = {"math_notion": [f"notion {j}"], "pass_rate": 2 * j, "solution_length": length}
        return f"<meta>Problem {j} looks like level {j}.</meta>\n{json.dumps(payload)}", "stop"

    return problems, script


def _meta_config(tmp_path, **kwargs):
    from evaluation.runner import EvalConfig

    defaults = dict(
        model="meta-model",
        benchmarks="aime24",
        output_dir=str(tmp_path),
        n=8,
        ks=(1, 8),
        data_source="fixtures",
        progress=False,
        meta=True,
        meta_n=2,
    )
    return EvalConfig(**(defaults | kwargs))


def test_scripted_meta_evaluation(tmp_path):
    from test_evaluation_run import ScriptedBackend

    from evaluation.runner import run_evaluation

    problems, script = _meta_setup()
    backend = ScriptedBackend(problems, script)
    summary = run_evaluation(_meta_config(tmp_path), backend=backend)
    assert summary["benchmarks"]["aime24"]["scores"]["math_verify"]["pass@1"] == pytest.approx(0.5)
    meta = summary["meta"]["benchmarks"]["aime24"]
    assert meta["meta_parse_rate"] == 1.0 and meta["num_with_prediction"] == 5
    assert meta["pass_rate"]["pearson"] == pytest.approx(1.0) and meta["pass_rate"]["spearman"] == pytest.approx(1.0)
    assert meta["pass_rate"]["mae"] == pytest.approx(0.0) and meta["length"]["mae"] == pytest.approx(0.0)
    assert meta["length"]["within_correct_range"] == 1.0 and meta["length"]["problems_with_correct_range"] == 4
    calibrated = [row for row in meta["calibration"] if row["count"]]
    assert [row["bucket"] for row in calibrated] == ["0/8", "2/8", "4/8", "6/8", "8/8"]
    assert all(row["measured_mean"] == pytest.approx(row["predicted_mean"]) for row in calibrated)
    run_dir = tmp_path / "meta-model"
    assert (run_dir / "meta_aime24.png").read_bytes()[:4] == b"\x89PNG"
    assert len((run_dir / "meta_records" / "aime24.jsonl").read_text().splitlines()) == 10
    assert "Meta-awareness" in (run_dir / "results.md").read_text()
    # Resumed: nothing left to generate.
    again = ScriptedBackend(problems, script)
    run_evaluation(_meta_config(tmp_path), backend=again)
    assert again.calls == 0


def test_notion_feedin_appends_predicted_notions(tmp_path):
    from test_evaluation_run import ScriptedBackend

    from evaluation.benchmarks import BOXED_INSTRUCTION
    from evaluation.runner import run_evaluation

    problems, script = _meta_setup()
    backend = ScriptedBackend(problems, script)
    run_evaluation(_meta_config(tmp_path, meta=False, notion_feedin=True, n=2, ks=(1,)), backend=backend)
    solution_prompts = [p for p in backend.prompts if BOXED_INSTRUCTION in p]
    assert len(solution_prompts) == 5
    for prompt in solution_prompts:
        j = next(int(p.metadata["index"]) for p in problems if p.problem in prompt)
        assert f"notion {j}" in prompt
