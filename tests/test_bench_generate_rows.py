"""benchmarks/bench_generate_rows.py: its scenarios, its step-cost fit, and a smoke run (no timing asserted)."""

import json
from pathlib import Path

from file_modules import import_file


BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_generate_rows.py"


def load_benchmark():
    return import_file(BENCHMARK)


def test_scenarios_send_what_masa_efficient_sends():
    bench = load_benchmark()
    plan = bench.scenarios(57, 29, 96, with_meta=True)
    assert bench.generated_tokens(plan["masa"]) == 64 * 96
    efficient = plan["efficient"]
    assert efficient["rows"] == 48 and efficient["prompt"] == 86
    assert bench.generated_tokens(efficient) == 16 * 48 + 32 * 96  # 37.5% fewer than MASA
    one_call = plan["masa, one call"]
    assert (
        bench.row_caps(one_call) == [None] * 64 + [36] * 64 and bench.generated_tokens(one_call) == 64 * 96 + 64 * 36
    )


def test_step_cost_fit_recovers_a_known_cost():
    bench = load_benchmark()
    a, b, n, fill = 0.010, 0.001, 100, 0.002  # seconds per step, per row and step, steps, prefill per row

    def call(rows):
        return dict(new_tokens=n, rows=rows, median_s=fill * rows + n * (a + b * rows))

    step = bench.step_cost(call(64), call(48), dict(rows=64, median_s=fill * 64))
    assert abs(step["a"] - a) < 1e-9 and abs(step["b"] - b) < 1e-9
    # 48 rows' prefill, then half the steps with 48 rows and half with the 32 uncapped ones.
    ideal = fill * 48 + 50 * (a + b * 48) + 50 * (a + b * 32)
    assert abs(step["bound"] - (1 - ideal / call(64)["median_s"])) < 1e-9


def test_one_call_model_and_the_fixed_cost_the_goal_needs():
    bench = load_benchmark()
    # Compute-bound (no fixed part): 64 meta rows of 0.375 x the steps add 37.5% to 64 solution rows.
    assert abs(bench.one_call_ratio(0, 64, 64) - 1.375) < 1e-12
    # 1.15x needs a fixed part worth 64 * 0.375 / 0.15 - 64 = 96 rows; more than that stays below the goal.
    assert abs(bench.fixed_rows_for_goal(64, 64) - 96) < 1e-9
    assert abs(bench.one_call_ratio(96, 64, 64) - 1.15) < 1e-12 and bench.one_call_ratio(200, 64, 64) < 1.15


def test_meta_report_reads_a_saved_result(tmp_path, capsys):
    # The one-call line of the report, from a saved --with-meta result whose costs follow a + b * rows exactly.
    bench = load_benchmark()
    a, b, fill, n = 0.002, 0.0002, 0.0001, 384

    def row(scenario, rows, steps, generated, prompt=57, per_row_fill=fill):
        seconds = per_row_fill * rows + steps * (a + b * rows) if steps else per_row_fill * rows
        return dict(new_tokens=n, scenario=scenario, rows=rows, prompt_tokens=prompt, generated_tokens=generated,
                    median_s=seconds, min_s=seconds, max_s=seconds, seconds=[seconds])  # fmt: skip

    results = [
        row("meta only", 64, 144, 64 * 144, prompt=423),
        row("masa, one call", 128, 0, 64 * 384 + 64 * 144),
        row("masa", 64, n, 64 * n),
        row("efficient", 48, n, 48 * n),
        row("gated rows only", 48, n, 48 * n),
        row("prefill, masa", 64, 0, 64),
        row("prefill, efficient", 48, 0, 48),
    ]
    results[1]["median_s"] = 1.3 * results[2]["median_s"]
    saved = dict(backend="vllm", hidden_size=64, num_layers=2, repeats=1, prompt_tokens=57, hint_tokens=29,
                 load_end=[1.0, 1.0, 1.0], results=results)  # fmt: skip
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(saved))
    bench.main(["--from-json", str(path)])
    printed = capsys.readouterr().out
    assert "in one call take 1.30x the solution rows alone" in printed
    assert "worth 96 rows or more (here 10)" in printed  # a / b = 10 rows


def test_smoke_run_counts_every_token(tmp_path, capsys):
    bench = load_benchmark()
    argv = [
        "--hidden-size",
        "64",
        "--num-layers",
        "2",
        "--new-tokens",
        "8",
        "--repeats",
        "1",
        "--out-dir",
        str(tmp_path),
    ]
    result = bench.main(argv)
    printed = capsys.readouterr().out
    assert {r["scenario"] for r in result["results"]} >= {"masa", "efficient", "gated rows only", "prefill, masa"}
    assert "- N = 8: MASA-efficient saves" in printed
    assert (tmp_path / "transformers-h64-l2-8.json").exists()
    assert bench.main(["--from-json", str(tmp_path / "transformers-h64-l2-8.json")])["results"] == result["results"]
