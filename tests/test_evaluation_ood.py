"""Out-of-domain logic and science benchmarks (evaluation/ood.py): registry, fixtures, extraction, scoring, a tiny run."""

import json

import pytest

from evaluation import ood
from evaluation.__main__ import main
from evaluation.benchmarks import BENCHMARK_GROUPS, get_benchmark, load_benchmark, resolve_benchmarks
from evaluation.ood import extract_letter, extract_scibench, parse_number, scibench_equal, score_completion


FIXTURE_COUNTS = {
    "prontoqa": 5,
    "proofwriter": 5,
    "folio": 5,
    "logicaldeduction": 5,
    "ar_lsat": 5,
    "rbench": 6,
    "arc_challenge": 6,
    "scibench": 6,
}


# ---------------------------------------------------------------------------------------------------------------
# Registry and fixtures


def test_groups_select_the_new_benchmarks():
    assert [s.name for s in resolve_benchmarks("logic")] == list(ood.LOGIC_BENCHMARKS)
    assert [s.name for s in resolve_benchmarks("science")] == ["gpqa_diamond", "rbench", "arc_challenge", "scibench"]
    assert [s.name for s in resolve_benchmarks("ood")] == [
        *ood.LOGIC_BENCHMARKS,
        *ood.SCIENCE_BENCHMARKS,
        *ood.CODE_BENCHMARKS,
    ]
    assert BENCHMARK_GROUPS["math"] == ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
    assert get_benchmark("AR-LSAT").name == "ar_lsat" and get_benchmark("arc").name == "arc_challenge"
    assert get_benchmark("R-Bench").name == "rbench" and get_benchmark("logical_deduction").name == "logicaldeduction"


def test_the_code_group_is_code_benchmarks_own_list():
    """ood.CODE_BENCHMARKS is code_benchmarks'.CODE_BENCHMARKS (no copy to drift), and importing code_benchmarks
    alone pulls in neither ood nor the registry (no import cycle)."""
    import subprocess
    import sys

    from evaluation import code_benchmarks

    assert ood.CODE_BENCHMARKS is code_benchmarks.CODE_BENCHMARKS
    assert ood.GROUPS["code"] == code_benchmarks.CODE_BENCHMARKS == BENCHMARK_GROUPS["code"]
    assert ood.OOD_BENCHMARKS[-len(code_benchmarks.CODE_BENCHMARKS) :] == code_benchmarks.CODE_BENCHMARKS
    code = (
        "import sys, evaluation.code_benchmarks; "
        "assert not {'evaluation.ood', 'evaluation.benchmarks'} & set(sys.modules), sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_specs_carry_the_hub_sources_and_are_out_of_domain():
    rbench, arc, sci = get_benchmark("rbench"), get_benchmark("arc_challenge"), get_benchmark("scibench")
    assert (rbench.hf_id, rbench.config, rbench.split) == ("R-Bench/R-Bench", "rbench-t_en", "test")
    assert (arc.hf_id, arc.config, arc.split, arc.answer_column) == (
        "allenai/ai2_arc",
        "ARC-Challenge",
        "test",
        "answerKey",
    )
    assert (sci.hf_id, sci.problem_column, sci.answer_column) == ("xw27/scibench", "problem_text", "answer_number")
    for name in (*ood.LOGIC_BENCHMARKS, *ood.SCIENCE_BENCHMARKS):  # the coding sets: tests/test_evaluation_code.py
        spec = get_benchmark(name)
        assert not spec.in_domain and spec.notes
        assert spec.kind == ("math" if name == "scibench" else "choice")
    for name in ood.LOGIC_BENCHMARKS:  # Logic-LM JSON files, read locally
        assert get_benchmark(name).hf_id is None and get_benchmark(name).split == "dev"


@pytest.mark.parametrize("name", sorted(FIXTURE_COUNTS))
def test_fixtures_load_with_the_hub_column_names(name):
    spec = get_benchmark(name)
    rows = [json.loads(line) for line in spec.fixture_path.read_text().splitlines()]
    assert all(set(spec.required_columns) <= set(row) for row in rows)
    problems = load_benchmark(name, source="fixtures")
    assert len(problems) == FIXTURE_COUNTS[name]
    for problem in problems:
        if problem.kind == "choice":
            letters = problem.metadata["letters"]
            assert problem.answer in letters and len(letters) == len(problem.choices)
            assert all(f"{letter}) " in problem.problem for letter in letters)
            assert "Let's think step by step and output the letter" in problem.messages()[0]["content"]
        else:
            assert float(problem.answer) == pytest.approx(float(problem.answer))
            assert "\\boxed{}" in problem.messages()[0]["content"]


def test_logic_prompt_and_options():
    problem = load_benchmark("logicaldeduction", source="fixtures")[3]
    assert problem.problem.startswith("Context:\n") and "\n\nQuestion: " in problem.problem
    assert problem.metadata["letters"] == "ABCDEFG" and problem.answer == "G"
    assert "G) The figs are the cheapest." in problem.problem and "A) A)" not in problem.problem
    folio = load_benchmark("folio", source="fixtures")[0]
    assert folio.choices == ("True", "False", "Uncertain")


def test_arc_numeric_labels_become_letters():
    problems = {p.problem_id: p for p in load_benchmark("arc_challenge", source="fixtures")}
    assert problems["Mercury_fx3"].answer == "D" and "D) wind" in problems["Mercury_fx3"].problem
    assert problems["Mercury_fx4"].answer == "B"
    assert problems["Mercury_fx5"].metadata["letters"] == "ABCDE"


def test_rbench_reads_letter_columns_or_an_options_list(tmp_path):
    problems = load_benchmark("rbench", source="fixtures")
    assert problems[3].answer == "F" and problems[3].metadata["letters"] == "ABCDEF"
    path = tmp_path / "rbench.jsonl"
    row = {"index": 1, "question": "Q?", "options": ["w", "x", "y", "z", "v"], "answer": "E"}
    path.write_text(json.dumps(row) + "\n")
    (problem,) = load_benchmark("rbench", source=str(path))
    assert problem.answer == "E" and "E) v" in problem.problem and problem.metadata["letters"] == "ABCDE"


def test_scibench_prompt_gives_the_unit():
    problems = load_benchmark("scibench", source="fixtures")
    assert problems[0].problem.endswith("The unit of the answer is $\\mathrm{m} / \\mathrm{s}^2$.")
    assert "unit of the answer" not in problems[3].problem  # a blank unit adds no sentence
    assert problems[1].metadata["unit"] == "$10^{-19} \\mathrm{~J}$"


# ---------------------------------------------------------------------------------------------------------------
# Letter extraction


@pytest.mark.parametrize(
    "text, letters, expected",
    [
        # decoys: options discussed before the final answer
        ("Option A looks right, but (B) fails. Checking C... So the answer is \\boxed{C}.", "ABC", "C"),
        ("\\boxed{A} was my first guess. On reflection the answer is (B).", "ABC", "B"),
        ("The answer is B. Wait, re-check: the answer is \\boxed{A}", "AB", "A"),
        # lowercase articles are never an answer
        ("a wumpus is a tumpus, so a rompus is red. I think this is a good sign.", "AB", None),
        ("The answer is a bit subtle: the statement is true.", "AB", None),
        ("The answer is a bit subtle. Final answer: \\boxed{b}", "AB", "B"),
        ("Therefore the answer is (a).", "AB", "A"),
        # options beyond D
        ("D and E are both possible, but the final answer is \\boxed{F}.", "ABCDEF", "F"),
        ("Answer: **E**", "ABCDE", "E"),
        ("The correct option is: G", "ABCDEFG", "G"),
        # letters outside the item's options do not count
        ("\\boxed{F}", "ABCD", None),
        ("the answer is \\boxed{\\text{C}}", "ABC", "C"),
        ("\\boxed{B) False}", "AB", "B"),
        ("\\boxed{(D)}", "ABCDE", "D"),
        # the answer after the reasoning trace wins over letters inside it
        ("<think>maybe \\boxed{A}... the answer is B?</think>\nThe answer is \\boxed{C}.", "ABC", "C"),
        ("<think>so the answer is \\boxed{B}</think>", "ABC", "B"),
        ("no letters here", "ABCD", None),
        ("", "AB", None),
    ],
)
def test_extract_letter(text, letters, expected):
    assert extract_letter(text, letters) == expected


def test_letter_scoring_per_item():
    problem = load_benchmark("rbench", source="fixtures")[3]  # gold F
    assert score_completion(problem, "A is wrong, E is wrong; the answer is \\boxed{F}") == (True, "F")
    assert score_completion(problem, "a derivative... f' = cos x, answer \\boxed{A}") == (False, "A")
    assert score_completion(problem, "a derivative of a sine is a cosine") == (False, None)
    assert ood.handles(problem) and not ood.handles(load_benchmark("aime24", source="fixtures")[0])


# ---------------------------------------------------------------------------------------------------------------
# SciBench numbers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("4.0", 4.0),
        ("-1.2 \\times 10^{-3} \\mathrm{~J}", -1.2e-3),
        ("1.5e4 m/s", 1.5e4),
        ("3.97 \\times 10^{-19}", 3.97e-19),
        ("2.998 \\cdot 10^8 \\mathrm{~m/s}", 2.998e8),
        ("1,234.5", 1234.5),
        ("\\text{2.00 mol}", 2.0),
        ("$9$", 9.0),
        ("\\frac{1}{5}", 0.2),
        ("10^{-3}", 1e-3),
        ("12 \\%", 12.0),
        ("about six", None),
        (None, None),
    ],
)
def test_parse_number(text, expected):
    value = parse_number(text)
    assert value == pytest.approx(expected, rel=1e-12) if expected is not None else value is None


def test_scibench_extraction_takes_the_last_box_and_its_right_hand_side():
    text = "First v = \\boxed{10}. Redo: a = v/t, so \\boxed{a = 4.1 \\mathrm{~m/s^2}}"
    assert extract_scibench(text) == "4.1 \\mathrm{~m/s^2}"
    assert extract_scibench("so the answer is therefore 3.96 x 10^-19 J.") == "3.96 x 10^-19 J"
    assert extract_scibench("no number") is None


def test_scibench_tolerance_and_units():
    assert ood.SCIBENCH_REL_TOL == 0.05
    # math.isclose: |a - b| <= 0.05 * max(|a|, |b|), as SciBench
    assert scibench_equal("4.21", "4.0") and scibench_equal("3.81", "4.0") and not scibench_equal("4.22", "4.0")
    assert scibench_equal("3.97", "3.97", "$10^{-19} \\mathrm{~J}$")
    assert scibench_equal("3.9 \\times 10^{-19} \\mathrm{~J}", "3.97", "$10^{-19} \\mathrm{~J}$")  # base unit
    assert not scibench_equal("3.9 \\times 10^{-18}", "3.97", "$10^{-19} \\mathrm{~J}$")
    assert not scibench_equal(None, "1.0") and not scibench_equal("nan", "1.0")
    problems = load_benchmark("scibench", source="fixtures")
    assert score_completion(problems[5], "c = 3.00e8 m/s, so \\boxed{2.998 \\times 10^{8}}")[0]
    assert score_completion(problems[4], "CV = 2.5/12.5 = \\boxed{0.2}") == (True, "0.2")
    assert score_completion(problems[0], "<think>\\boxed{5}</think> a = 20/5 = \\boxed{4.0 m/s^2}")[0]
    assert score_completion(problems[0], "a = 20/5 = 4 m/s^2; \\boxed{5}") == (False, "5")


# ---------------------------------------------------------------------------------------------------------------
# An offline run on the tiny model


def test_cli_runs_ood_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    args = ["--model", str(tiny_model_dir), "--benchmarks", "ood", "--fixtures", "--n", "1", "--k", "1"]
    args += ["--max-new-tokens", "8", "--backend", "transformers", "--batch-size", "16", "--no-progress"]
    args += ["--output-dir", str(tmp_path), "--run-name", "ood"]
    assert main(args) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "ood" / "summary.json").read_text())
    # The code group is evaluation.code_benchmarks' own list (coding sets join it there): one run each, on its fixture.
    code = {name: len(load_benchmark(name, source="fixtures")) for name in ood.CODE_BENCHMARKS}
    assert (code["mbpp"], code["cruxeval_o"]) == (5, 6)
    counts = {**FIXTURE_COUNTS, "gpqa_diamond": 6, **code}
    assert set(summary["benchmarks"]) == set(counts)
    for name, count in counts.items():
        assert summary["benchmarks"][name]["num_problems"] == count
        records = [
            json.loads(line) for line in (tmp_path / "ood" / "records" / f"{name}.jsonl").read_text().splitlines()
        ]
        assert len(records) == count
        if name in FIXTURE_COUNTS:  # the harness scoring of evaluation.ood runs on every real completion
            by_id = {p.problem_id: p for p in load_benchmark(name, source="fixtures")}
            for record in records:
                correct, _ = score_completion(by_id[record["problem_id"]], record["completion"])
                assert isinstance(correct, bool)


def test_logiclm_dev_json_is_read_from_a_local_file(tmp_path):
    rows = [json.loads(line) for line in get_benchmark("folio").fixture_path.read_text().splitlines()]
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(rows))  # Logic-LM ships a JSON list per split
    problems = load_benchmark("folio", source=str(path))
    assert [p.answer for p in problems] == ["A", "B", "C", "A", "B"]
    with pytest.raises(Exception, match="--data-file folio=PATH"):
        load_benchmark("folio")


@pytest.mark.parametrize("scorer_name", ["math_verify", "masa_compat"])
def test_scorers_use_each_benchmarks_own_rules(scorer_name):
    # The generic scorers route the out-of-domain items to evaluation.ood: a letter beyond D counts, the article "a"
    # is no answer, and SciBench is judged with its numeric tolerance, not by the math scorers.
    from evaluation.scoring import make_scorer

    rbench = load_benchmark("rbench", source="fixtures")[3]  # gold F
    scibench = load_benchmark("scibench", source="fixtures")[0]
    value = float(scibench.answer)
    completions = [
        "Option A looks tempting, but a careful look rules it out. The answer is \\boxed{F}.",
        "This is a hard one, a real puzzle.",
        f"So the result is \\boxed{{{value * 1.01:.6g}}}",
    ]
    with make_scorer(scorer_name) as scorer:
        results = scorer.score([rbench, rbench, scibench], completions)
    assert [r.correct for r in results] == [True, False, True]
    assert results[0].extracted == "F" and results[1].extracted is None


def test_table_two_layout_per_domain_with_averages():
    from evaluation.report import ood_markdown_table

    def summary(name, values):
        benchmarks = {
            bench: {"display_name": bench.upper(), "in_domain": bench == "math500", "scores": {"mv": {"pass@1": v}}}
            for bench, v in values.items()
        }
        return {"run_name": name, "primary_scorer": "mv", "scorers": {"mv": ""}, "benchmarks": benchmarks}

    grpo = summary("GRPO", {"math500": 0.8, "prontoqa": 0.90, "folio": 0.70, "gpqa_diamond": 0.50, "scibench": 0.20})
    masa = summary("MASA", {"math500": 0.8, "prontoqa": 0.94, "folio": 0.70, "gpqa_diamond": 0.54})
    lines = ood_markdown_table([grpo, masa]).splitlines()
    assert lines[2] == "| Domain | Benchmark | GRPO | MASA | Δ MASA vs GRPO |"
    assert "| Logical Reasoning | PRONTOQA | 90.00 | 94.00 | +4.4% |" in lines
    assert "|  | **Avg.** | 80.00 | 82.00 | +2.5% |" in lines  # logic: (90 + 70) / 2 vs (94 + 70) / 2
    assert "| Scientific Reasoning | GPQA_DIAMOND | 50.00 | 54.00 | +8.0% |" in lines
    assert "|  | **Avg.** | 35.00 | – | – |" in lines  # MASA lacks SciBench: no science average
    assert not any("MATH500" in line for line in lines)  # in-domain sets belong to table 1
    assert ood_markdown_table([summary("only math", {"math500": 0.5})]) is None
