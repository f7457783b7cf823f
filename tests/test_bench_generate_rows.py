"""benchmarks/bench_generate_rows.py: its scenarios, its step-cost fit, and a smoke run (no timing asserted)."""

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
