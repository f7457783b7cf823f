"""Smoke test of benchmarks/bench_step_cost.py: the transformers backend at its smallest, no timing asserted."""

from pathlib import Path

import pytest
from file_modules import import_file


BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step_cost.py"


def load_benchmark():
    return import_file(BENCHMARK)


@pytest.mark.slow
def test_transformers_backend_reports_every_method(tmp_path, capsys):
    bench = load_benchmark()
    argv = ["--backend", "transformers", "--quick", "--steps", "1", "--warmup", "1", "--cache-dir", str(tmp_path)]
    summary = bench.main(argv + ["--prompts", "2", "--generations", "2", "--meta-generations", "2"])
    printed = capsys.readouterr().out

    stats = summary["backends"]["transformers"]["medians"]
    for method in ("grpo", "masa", "masa_efficient"):
        assert method in stats, method
        assert f"| {bench.LABELS[method]} |" in printed
        for column, _ in bench.TIME_COLUMNS:
            value = stats[method][column]
            assert value is None or value >= 0, (method, column, value)
        assert stats[method]["solution_tokens"] > 0
    assert stats["masa"]["meta_tokens"] > 0 and stats["grpo"]["meta_tokens"] == 0
    assert "Goals (reported, not asserted)" in printed
    assert list(tmp_path.glob("transformers-grpo-seed0-*.json")) and list(tmp_path.glob("summary-*.json"))

    # A second run with the same settings reads the cached results instead of training again.
    bench.main(argv + ["--prompts", "2", "--generations", "2", "--meta-generations", "2", "--methods", "grpo"])
    assert "(cached)" in capsys.readouterr().out


def test_length_tail_keeps_the_mean_and_assigns_lengths_by_place_in_the_group():
    import types

    bench = load_benchmark()
    settings = bench.Settings(length_tail=True)
    lengths = settings.solution_lengths
    assert len(lengths) == settings.generations and lengths == sorted(lengths)
    assert abs(sum(lengths) / len(lengths) - settings.solution_length) < 1  # meta/solution token ratio unchanged
    assert lengths[-1] > 2 * settings.solution_length > 4 * lengths[0]  # a long right tail
    assert settings.max_solution_length == lengths[-1]
    assert bench.Settings().solution_lengths == [96] * 8  # fixed lengths by default

    script = bench.MetaScript(types.SimpleNamespace(eos_token_id=0), settings, settings.max_solution_length)
    rows = [("solution", 3), ("meta", 3), ("solution", 5), ("solution", 3), ("meta", 5)]
    assert script.target_lengths(rows) == [lengths[0], settings.meta_length, lengths[0], lengths[1], 36]
