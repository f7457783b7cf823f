"""Coding benchmarks (evaluation/code_benchmarks.py): registry, prompts, extraction, sandboxed scoring, a tiny run."""

import json
import os

import pytest

from evaluation import code_benchmarks, ood
from evaluation.__main__ import main
from evaluation.benchmarks import BENCHMARK_GROUPS, get_benchmark, load_benchmark, resolve_benchmarks
from evaluation.code_benchmarks import extract_output_prediction, extract_program, literal_prediction
from evaluation.scoring import make_scorer


FIXTURE_COUNTS = {"mbpp": 5, "cruxeval_o": 6}


# ---------------------------------------------------------------------------------------------------------------
# Registry, fixtures, prompts


def test_code_group_and_ood_group():
    assert [s.name for s in resolve_benchmarks("code")] == ["mbpp", "cruxeval_o"]
    assert BENCHMARK_GROUPS["ood"] == (*ood.LOGIC_BENCHMARKS, *ood.SCIENCE_BENCHMARKS, "mbpp", "cruxeval_o")
    assert get_benchmark("CRUX-O").name == "cruxeval_o" and get_benchmark("mbpp").kind == "code"
    mbpp, crux = get_benchmark("mbpp"), get_benchmark("cruxeval_o")
    assert (mbpp.hf_id, mbpp.config, mbpp.split, mbpp.id_column) == (
        "google-research-datasets/mbpp",
        "full",
        "test",
        "task_id",
    )
    assert (crux.hf_id, crux.split) == ("cruxeval-org/cruxeval", "test")
    assert not mbpp.in_domain and not crux.in_domain


@pytest.mark.parametrize("name", sorted(FIXTURE_COUNTS))
def test_fixtures_have_the_hub_columns(name):
    spec = get_benchmark(name)
    rows = [json.loads(line) for line in spec.fixture_path.read_text().splitlines()]
    columns = {"mbpp": {"task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list"}}
    assert all(set(row) == columns.get(name, {"code", "input", "output", "id"}) for row in rows)
    problems = load_benchmark(name, source="fixtures")
    assert len(problems) == FIXTURE_COUNTS[name] and all(p.kind == "code" for p in problems)
    for problem in problems:  # the coding prompts carry their own instructions in both prompt styles
        assert problem.messages("instruct") == problem.messages("raw")
        assert "\\boxed" not in problem.messages()[0]["content"]


def test_mbpp_prompt_is_deepseek_coder_three_shot_with_the_asserts():
    problem = load_benchmark("mbpp", source="fixtures")[3]
    text = problem.messages()[0]["content"]
    assert text.startswith("Please refer the given examples and generate a python function for my problem.\n")
    assert text.count(">>> Code:\n```python\n") == 3 and "- Example 3:\n>>> Problem:\n" in text
    assert [ex["task_id"] for ex in code_benchmarks.MBPP_FEW_SHOT] == [2, 3, 4]
    assert text.endswith(
        "Here is my problem:\n>>> Problem:\nWrite a function to count the keys of a dictionary whose value is above a "
        "threshold.\n>>> Test Cases:\nassert count_above(SCORES, 50) == 2\nassert count_above(SCORES, 100) == 0\n"
        "assert count_above({}, 0) == 0\n"
    )
    assert problem.metadata["setup"] == "SCORES = {'a': 70, 'b': 40, 'c': 90}"


def test_crux_prompt():
    problem = load_benchmark("cruxeval_o", source="fixtures")[2]
    text = problem.messages()[0]["content"]
    assert "[ANSWER]\nassert f(17) == 17\n[/ANSWER]" in text
    assert text.endswith("    return d\nassert f({'a': 1}, 'b') == ??\n[/PYTHON]")
    assert problem.answer == "{'a': 1, 'b': 1}"


# ---------------------------------------------------------------------------------------------------------------
# Extraction


DRAFT = "```python\ndef f(x):\n    return 0  # draft\n```"


@pytest.mark.parametrize(
    "text, expected",
    [
        (f"First try:\n{DRAFT}\nWrong. Final:\n```python\ndef f(x):\n    return x\n```", "def f(x):\n    return x"),
        (
            f"<think>{DRAFT}\n```python\nprint(1)\n```</think>\nAnswer:\n```py\ndef g():\n    pass\n```",
            "def g():\n    pass",
        ),
        (f"<think>{DRAFT}</think>\nNo code in the answer.", "def f(x):\n    return 0  # draft"),  # whole-text fallback
        (
            "```python\ndef a(): pass\n```\nusage:\n```\na()\n```",
            "def a(): pass",
        ),  # python block over a later plain one
        ("```\ndef b(): pass\n```\n```text\noutput\n```", "output"),  # no python block: the last block of any kind
        ("def c(): pass", None),  # no fence: no answer
        ("```python\ndef d(): pass", None),  # unclosed fence
        ("", None),
    ],
)
def test_extract_program_last_python_block(text, expected):
    assert extract_program(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        (
            "[ANSWER]\nassert f(1) == 3\n[/ANSWER] hmm, no:\n[ANSWER]\nassert f(1) == [1, (2, '==')]\n[/ANSWER]",
            "[1, (2, '==')]",
        ),
        ("<think>[ANSWER]assert f(1) == 1[/ANSWER]</think>[ANSWER]\nassert f(1) == 'x'\n[/ANSWER]", "'x'"),
        ("[ANSWER]\n42\n[/ANSWER]", "42"),
        ("So:\n```python\nassert f(2) == 4\n```\n```\nassert f(2) == 5\n```", "5"),
        ("Tracing...\nassert f(3) == 6\nthen\nassert f(3) == {'a': 1}\n", "{'a': 1}"),
        ("The output is probably 7.", None),
    ],
)
def test_extract_output_prediction_takes_the_last_answer(text, expected):
    assert extract_output_prediction(text) == expected


@pytest.mark.parametrize(
    "prediction, ok",
    [
        ("[1, -2.5, 'a', (None, True)]", True),
        ("{1: {2}}", True),
        ("1, 2", True),
        ("-1+2j", True),
        ("1 or True", False),
        ("len('ab')", False),
        ("__import__('os').getcwd()", False),
        ("1)\nprint(2", False),
        ("x", False),
        ("", False),
        (None, False),
    ],
)
def test_only_literals_are_accepted(prediction, ok):
    assert (literal_prediction(prediction) is not None) == ok


# ---------------------------------------------------------------------------------------------------------------
# Scoring in the sandbox


GOOD_SUM_SQUARES = "```python\ndef sum_squares(nums):\n    return sum(x * x for x in nums)\n```"
MBPP_CASES = [  # fixture index, completion, expected correct
    (0, "<think>```python\ndef sum_squares(n):\n    return 0\n```</think>" + GOOD_SUM_SQUARES, True),
    (
        3,
        "```python\ndef count_above(d, t):\n    return len([v for v in d.values() if v > t])\n```",
        True,
    ),  # setup code
    (1, "```python\ndef reverse_words(s):\n    return s\n```", False),  # wrong: an assert fails
    (2, "I would use math.isqrt.", False),  # unparsable: no block, not run
    (4, "```python\ndef max_of_three(a, b, c):\n    while True:\n        pass\n```", False),  # timeout
]
CRUX_CASES = [
    (0, "[ANSWER]\nassert f([1, 2, 3, 4, 5]) == [2, 6, 10]\n[/ANSWER]", True),
    (4, "<think>maybe ['a']</think>\n[ANSWER]\nassert f('a-b-c', '-') == ('a', 'b', 'c')\n[/ANSWER]", True),
    (1, "[ANSWER]\nassert f('abc') == 'ABC'\n[/ANSWER]", False),
    (3, "[ANSWER]\nassert f(5) == sum(range(5))\n[/ANSWER]", False),  # a call: not a literal, not run
    (5, "[ANSWER]\nassert f(7) == 1 or True\n[/ANSWER]", False),  # gaming the assert: no answer
    (2, "no idea", False),
]


@pytest.mark.parametrize("scorer_name", ["math_verify", "paper"])
def test_both_scorers_run_the_code_sets_in_the_sandbox(scorer_name):
    mbpp = load_benchmark("mbpp", source="fixtures")
    crux = load_benchmark("cruxeval_o", source="fixtures")
    math = load_benchmark("aime24", source="fixtures")[0]
    problems = [mbpp[i] for i, _, _ in MBPP_CASES] + [crux[i] for i, _, _ in CRUX_CASES] + [math]
    completions = [c for _, c, _ in MBPP_CASES] + [c for _, c, _ in CRUX_CASES] + [f"\\boxed{{{math.answer}}}"]
    with make_scorer(scorer_name, code_timeout=2) as scorer:
        assert scorer.code_timeout_s == 2
        results = scorer.score(problems, completions)
        stats = scorer.stats()
    assert [r.correct for r in results] == [e for *_, e in MBPP_CASES] + [e for *_, e in CRUX_CASES] + [True]
    assert results[0].extracted.startswith("def sum_squares(nums)") and results[3].extracted is None
    assert results[5].extracted == "[2, 6, 10]" and results[8].extracted == "sum(range(5))"
    assert stats["timeouts"] >= 1 and stats["items"] == len(problems)


def test_model_output_runs_only_in_the_sandbox(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("MASA_CODE_SECRET", "hunter2")
    monkeypatch.chdir(tmp_path)
    payload = (
        "import os\n"
        f"open({str(marker)!r}, 'w').write(os.environ.get('MASA_CODE_SECRET', 'absent'))\n"
        "assert os.environ.get('MASA_CODE_SECRET') is None\n"
    )
    mbpp = load_benchmark("mbpp", source="fixtures")[0]
    crux = load_benchmark("cruxeval_o", source="fixtures")[3]
    crux_payload = f"[ANSWER]\nassert f(5) == __import__('os').system('touch {marker}')\n[/ANSWER]"
    # extraction and program building only parse text: nothing is executed in this process
    assert code_benchmarks.build_program(crux, crux_payload) == (None, f"__import__('os').system('touch {marker}')")
    assert code_benchmarks.extract_program(f"```python\n{payload}```") == payload.rstrip("\n")
    assert not marker.exists()
    scored, counts = code_benchmarks.score_batch([mbpp, crux], [f"```python\n{payload}```", crux_payload], timeout_s=5)
    assert [c for c, _ in scored] == [False, False]
    # run in the sandbox: no environment (the secret is never seen) and, as root, a dropped uid that cannot write
    # into tmp_path; unprivileged, the audit hook refuses writes outside the sandbox directory
    assert counts.get("pass", 0) == 0
    assert not marker.exists() or marker.read_text() == "absent"
    assert os.environ["MASA_CODE_SECRET"] == "hunter2"


# ---------------------------------------------------------------------------------------------------------------
# An offline run on the tiny model


def test_cli_runs_code_on_the_tiny_model(tiny_model_dir, tmp_path, capsys):
    args = ["--model", str(tiny_model_dir), "--benchmarks", "code", "--fixtures", "--n", "1", "--k", "1"]
    args += ["--max-new-tokens", "8", "--backend", "transformers", "--batch-size", "16", "--no-progress"]
    args += ["--output-dir", str(tmp_path), "--run-name", "code"]
    assert main(args) == 0
    capsys.readouterr()
    summary = json.loads((tmp_path / "code" / "summary.json").read_text())
    assert set(summary["benchmarks"]) == set(FIXTURE_COUNTS)
    for name, count in FIXTURE_COUNTS.items():
        assert summary["benchmarks"][name]["num_problems"] == count
        records = [
            json.loads(line) for line in (tmp_path / "code" / "records" / f"{name}.jsonl").read_text().splitlines()
        ]
        assert len(records) == count
        assert records[0]["scores"] and not any(s["correct"] for r in records for s in r["scores"].values())


def test_table_two_puts_the_code_sets_under_coding():
    from evaluation.report import ood_markdown_table

    benchmarks = {
        bench: {"display_name": name, "in_domain": False, "scores": {"mv": {"pass@1": v}}}
        for bench, name, v in (("mbpp", "MBPP", 0.5), ("cruxeval_o", "CRUX-O", 0.3), ("folio", "FOLIO", 0.7))
    }
    run = {"run_name": "MASA", "primary_scorer": "mv", "scorers": {"mv": ""}, "benchmarks": benchmarks}
    lines = ood_markdown_table([run]).splitlines()
    assert "| Coding | MBPP | 50.00 |" in lines and "|  | CRUX-O | 30.00 |" in lines
    assert "|  | **Avg.** | 40.00 |" in lines
