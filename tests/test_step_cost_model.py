"""benchmarks/step_cost_model.py: the call-cost replay against hand-computed costs, and its goal thresholds against
the closed forms they must reproduce."""

from pathlib import Path

import pytest
from file_modules import import_file


MODEL = Path(__file__).resolve().parents[1] / "benchmarks" / "step_cost_model.py"


@pytest.fixture(scope="module")
def model():
    return import_file(MODEL)


def test_call_cost_by_hand(model):
    # Rows of 2 and 4 steps, fixed part worth 1 row: 2 steps with 2 rows, then 2 with 1.
    assert model.call_cost([4, 2], 1, "linear") == 2 * (1 + 2) + 2 * (1 + 1)
    assert model.call_cost([4, 2], 1, "roofline") == 2 * max(1, 2) + 2 * max(1, 1)
    assert model.call_cost([3, 3, 3], 0) == 9  # compute-bound: the tokens
    with pytest.raises(ValueError, match="cost must be one of"):
        model.call_cost([1], 0, "quadratic")


def test_calls_follow_the_benchmark_plan(model):
    settings = model.Settings(solution_length=384, meta_length=144, cut_length=96)
    calls = model.step_calls(settings)
    assert calls["solution"] == [384] * 64 and calls["meta"] == [144] * 64
    assert sorted(calls["efficient"]) == [192] * 16 + [384] * 32  # 2 prompts gated, 2 capped at 2 x 96


def test_thresholds_match_the_closed_forms(model):
    settings = model.Settings(solution_length=384, meta_length=144, cut_length=96)
    at_zero = model.goals(settings, 0)
    assert at_zero["one_call_ratio"] == pytest.approx(1.375) and at_zero["saving"] == pytest.approx(0.375)
    # Linear, fixed lengths: goal 1 needs 64 * 144 / (384 r + 64 * 384) <= 0.15, i.e. r >= 96; goal 2 needs
    # 24 / (r + 64) >= 0.3, i.e. r <= 16.
    assert model.threshold(settings, "linear", "goal 1") == pytest.approx(96, abs=1e-6)
    assert model.threshold(settings, "linear", "goal 2") == pytest.approx(16, abs=1e-6)
    # Roofline: (144 * 128 + 240 r) / (384 r) <= 1.15 for r in [64, 128]; (192 * 48 + 192 r) / (384 * 64) <= 0.7.
    assert model.threshold(settings, "roofline", "goal 1") == pytest.approx(18432 / 201.6, abs=1e-6)
    assert model.threshold(settings, "roofline", "goal 2") == pytest.approx((0.7 * 24576 - 9216) / 192, abs=1e-6)


def test_a_goal_that_holds_nowhere_or_everywhere(model):
    unreachable = model.Settings(solution_length=8, meta_length=64, cut_length=4)  # meta rows outlast the solutions
    assert model.threshold(unreachable, "linear", "goal 1") is None
    no_cut = model.Settings(solution_length=384, meta_length=144, gated_share=0.0, cut_share=0.0)
    assert model.threshold(no_cut, "linear", "goal 2") == model.HIGHEST  # nothing saved, nothing needed
    with pytest.raises(ValueError, match="goal must be"):
        model.threshold(no_cut, "linear", "goal 3")


def test_caps_that_cut_the_longest_rows_meet_both(model, capsys):
    # Every kept prompt capped: the call's longest rows are cut, so the call gets shorter even at a large fixed part.
    text = model.main(["--length-tail", "--cut-share", "0.75"])
    assert "- linear: goal 1 holds for r >= 44.4; goal 2 holds for every r; both for r >= 44.4." in text


def test_report_names_the_verdict(model, capsys):
    text = model.main(["--length-tail"])
    assert text == capsys.readouterr().out.rstrip("\n")
    assert "| linear | 96 |" in text and "- roofline: goal 1 holds for r >= " in text
    assert text.count("**no r meets both**") == 2
