"""Smoke test of benchmarks/bench_dynamic_sampling.py at its `--quick` size: every arm reported, no timing asserted."""

from pathlib import Path

import pytest
from file_modules import import_file


BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dynamic_sampling.py"


def load_benchmark():
    return import_file(BENCHMARK)


@pytest.mark.slow
def test_quick_run_reports_every_arm(tmp_path, capsys):
    bench = load_benchmark()
    argv = ["--quick", "--cache-dir", str(tmp_path)]
    summary = bench.main(argv)
    printed = capsys.readouterr().out

    stats = summary["stats"]
    assert set(stats) == set(bench.ARMS)
    for arm in bench.ARMS:
        assert f"| {bench.LABELS[arm]} |" in printed, arm
        for key, value in stats[arm].items():
            if isinstance(value, (int, float)):
                assert value >= 0, (arm, key, value)
        assert stats[arm]["measured_steps"] > 0
        assert stats[arm]["tokens_solution"] > 0 and stats[arm]["informative_groups"] > 0
        assert stats[arm]["solution_tokens_per_informative"] > 0
        assert stats[arm]["unscriptable_rows"] == 0
    for arm in bench.DYNAMIC_ARMS:  # the filter fills the batch with informative groups only
        assert stats[arm]["trainer:dynamic_sampling/num_gen_batches"] >= 1
        assert stats[arm]["trainer:dynamic_sampling/wasted_solution_tokens"] is not None
        assert stats[arm]["informative_groups"] == stats[arm]["trained_groups"]
    for arm in bench.MASA_ARMS:
        assert stats[arm]["tokens_meta"] > 0
    assert stats["grpo"]["tokens_meta"] == 0
    settings = bench.settings_from(bench.parse_args(argv))
    # The scripted meta predictions gate exactly the constant prompts of TRL's own batches.
    assert stats["masa_efficient"]["trainer:efficient/gated_frac"] == settings.num_constant / settings.prompts
    assert list(tmp_path.glob("grpo-seed0-*.json")) and list(tmp_path.glob("summary-*.json"))

    # A second run with the same settings reads the cached results instead of training again.
    bench.main(argv + ["--arms", "grpo"])
    assert "(cached)" in capsys.readouterr().out
