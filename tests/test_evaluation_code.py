"""Coding benchmarks (evaluation/code_benchmarks.py): registry, prompts, extraction, sandboxed scoring, a tiny run."""

import json
import os

import pytest

from evaluation import code_benchmarks, livecodebench, ood
from evaluation.__main__ import main
from evaluation.benchmarks import BENCHMARK_GROUPS, get_benchmark, load_benchmark, resolve_benchmarks
from evaluation.code_benchmarks import extract_output_prediction, extract_program, literal_prediction
from evaluation.scoring import make_scorer


FIXTURE_COUNTS = {"mbpp": 5, "cruxeval_o": 6, "humaneval_plus": 4, "mbpp_plus": 4, "livecodebench": 4}
CODE_SETS = ("mbpp", "cruxeval_o", "humaneval_plus", "mbpp_plus", "livecodebench")


# ---------------------------------------------------------------------------------------------------------------
# Registry, fixtures, prompts


def test_code_group_and_ood_group():
    assert [s.name for s in resolve_benchmarks("code")] == list(CODE_SETS) == list(code_benchmarks.CODE_BENCHMARKS)
    assert BENCHMARK_GROUPS["ood"] == (*ood.LOGIC_BENCHMARKS, *ood.SCIENCE_BENCHMARKS, *ood.CODE_BENCHMARKS)
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


HUB_COLUMNS = {
    "mbpp": {"task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list"},
    "cruxeval_o": {"code", "input", "output", "id"},
    "humaneval_plus": {"task_id", "prompt", "canonical_solution", "entry_point", "test"},
    "mbpp_plus": {"task_id", "code", "prompt", "source_file", "test_imports", "test_list", "test"},
    "livecodebench": {
        "question_title",
        "question_content",
        "platform",
        "question_id",
        "contest_id",
        "contest_date",
        "starter_code",
        "difficulty",
        "public_test_cases",
        "private_test_cases",
        "metadata",
    },
}


@pytest.mark.parametrize("name", sorted(FIXTURE_COUNTS))
def test_fixtures_have_the_hub_columns(name):
    spec = get_benchmark(name)
    rows = [json.loads(line) for line in spec.fixture_path.read_text().splitlines()]
    assert all(set(row) == HUB_COLUMNS[name] for row in rows)
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


# ---------------------------------------------------------------------------------------------------------------
# EvalPlus (HumanEval+, MBPP+) and LiveCodeBench


def _block(code: str) -> str:
    return f"```python\n{code}\n```"


def test_evalplus_and_livecodebench_registry():
    he, mp, lcb = get_benchmark("HumanEval+"), get_benchmark("mbpp+"), get_benchmark("LCB")
    assert get_benchmark("humanevalplus") is he and get_benchmark("MBPPPlus") is mp
    assert (he.hf_id, he.split, he.id_column) == ("evalplus/humanevalplus", "test", "task_id")
    assert (mp.hf_id, mp.split, mp.id_column) == ("evalplus/mbppplus", "test", "task_id")
    assert (lcb.hf_id, lcb.config, lcb.split) == ("livecodebench/code_generation_lite", "release_v5", "test")
    assert all(s.kind == "code" and not s.in_domain for s in (he, mp, lcb))
    assert [s.name for s in resolve_benchmarks("evalplus")] == ["humaneval_plus", "mbpp_plus"]
    assert code_benchmarks.TABLE_ROWS == {"EvalPlus": ("humaneval_plus", "mbpp_plus")}


def test_evalplus_prompts_are_evalplus_instruction_prompts():
    he = load_benchmark("humaneval_plus", source="fixtures")[0]
    assert he.messages()[0]["content"] == (
        "Please provide a self-contained Python script that solves the following problem in a markdown code block:\n"
        '```\nfrom typing import List\n\n\ndef running_max(numbers: List[int]) -> List[int]:\n    """ Return the '
        'list of running maxima of the given list.\n    >>> running_max([1, 3, 2, 5])\n    [1, 3, 3, 5]\n    """\n'
        "```\n"
    )
    assert he.metadata["entry_point"] == "running_max" and "def check(candidate):" in he.metadata["test"]
    mp = load_benchmark("mbpp_plus", source="fixtures")[1]
    assert mp.problem_id == "9102" and mp.messages()[0]["content"].endswith(
        '```\n"""\nWrite a python function to check whether the digits of a non-negative integer read the same '
        'backwards.\nassert is_digit_palindrome(121) == True\n"""\n```\n'
    )


def test_livecodebench_prompts_stdin_and_starter_code():
    stdin_item, _, functional, _ = load_benchmark("livecodebench", source="fixtures")
    text = stdin_item.messages()[0]["content"]
    assert text.startswith("You are an expert Python programmer. You will be given a question (problem specification)")
    assert "\n\n### Question:\nYou are given N integers" in text
    assert "### Format: Read the inputs from stdin solve the problem and write the answer to stdout" in text
    assert text.endswith(
        "```python\n# YOUR CODE HERE\n```\n\n### Answer: (use the provided format with backticks)\n\n"
    )
    text = functional.messages()[0]["content"]
    assert "### Format: You will use the following starter code to write the solution to the problem" in text
    assert "```python\nclass Solution:\n    def countPairs(self, nums: List[int], target: int) -> int:\n" in text
    assert functional.metadata["fn_name"] == "countPairs" and stdin_item.metadata["fn_name"] is None
    assert stdin_item.answer == "stdin/stdout tests (2 public + private)"


def test_livecodebench_private_tests_decode_the_hub_encoding():
    row = json.loads(get_benchmark("livecodebench").fixture_path.read_text().splitlines()[2])
    assert not row["private_test_cases"].lstrip().startswith("[")  # base64(zlib(pickle(json))), as on the Hub
    tests = livecodebench.decode_private_tests(row["private_test_cases"])
    assert tests[0] == {"input": "[1, 1, 1]\n2", "output": "3", "testtype": "functional"} and len(tests) == 3
    assert livecodebench.decode_private_tests(json.dumps(tests)) == tests  # plain JSON is read first, as LCB does
    assert livecodebench.decode_private_tests(livecodebench.encode_private_tests(tests)) == tests


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_refuses_a_pickle_with_a_global(tmp_path):
    import base64
    import pickle
    import zlib

    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load the global"):
        livecodebench.restricted_unpickle(evil)
    encoded = base64.b64encode(zlib.compress(evil)).decode()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        livecodebench.decode_private_tests(encoded)
    assert not marker.exists()
    wrapped = base64.b64encode(zlib.compress(pickle.dumps(["not", "a", "str"]))).decode()
    with pytest.raises(TypeError, match="not a str"):
        livecodebench.decode_private_tests(wrapped)
    assert livecodebench.restricted_unpickle(pickle.dumps("[]")) == "[]"


def test_livecodebench_date_window_as_lcb():
    problems = load_benchmark("livecodebench", source="fixtures")
    window = livecodebench.filter_by_contest_date(problems, "2024-09-01", "2024-11-02")
    assert [p.problem_id for p in window] == ["1901A", "3901"]  # both ends included (midnight)
    assert len(livecodebench.filter_by_contest_date(problems, end_date="2024-08-09")) == 0


def test_evalplus_sanitize_keeps_definitions_only():
    code = (
        "import math; print('side effect')\nfrom functools import cache\n\n@cache\ndef f(n):\n    return n\n"
        "LIMIT: int = 3\nprint(f(2))\nassert f(1) == 5\nif __name__ == '__main__':\n    f(int(input()))\n"
        "class Helper:\n    pass\n"
    )
    assert code_benchmarks.evalplus_sanitize(code) == (
        "import math\nfrom functools import cache\n@cache\ndef f(n):\n    return n\nLIMIT: int = 3\n"
        "class Helper:\n    pass"
    )
    assert code_benchmarks.evalplus_sanitize("def broken(:\n") == "def broken(:\n"  # run as it is, fails there


HE_RUNNING_MAX = (
    "from typing import List\n\ndef running_max(numbers: List[int]) -> List[int]:\n    out, best = [], None\n"
    "    for x in numbers:\n        best = x if best is None or x > best else best\n        out.append(best)\n"
    "    return out"
)
HE_MEAN = "def mean_of_squares(values):\n    return sum(v * v for v in values) / len(values) if values else 0.0"
MP_SECOND = "def second_largest(nums):\n    d = sorted(set(nums))\n    return d[-2] if len(d) > 1 else None"
MP_RING = "import math\ndef ring_area(r, R):\n    return math.pi * (R ** 2 - r ** 2) + 1e-9"  # within atol 1e-4
LCB_SUM_TWO = "import sys\ninput = sys.stdin.readline\nn = int(input())\na = sorted(map(int, input().split()))\nprint(a[-1] + a[-2])"
LCB_AVERAGES = (
    "t = int(input())\nfor _ in range(t):\n    k, *xs = map(int, input().split())\n    print(round(sum(xs) / k, 2))"
)
LCB_PAIRS = (
    "class Solution:\n    def countPairs(self, nums: List[int], target: int) -> int:\n"
    "        return sum(nums[i] + nums[j] == target for i in range(len(nums)) for j in range(i + 1, len(nums)))"
)
LCB_SPLIT = "class Solution:\n    def splitWords(self, s: str) -> List[str]:\n        return tuple(w for w in s.split(',') if w)"
# (benchmark, fixture index, completion, expected correct)
NEW_CASES = [
    (
        "humaneval_plus",
        0,
        "<think>" + _block("def running_max(n):\n    return n") + "</think>" + _block(HE_RUNNING_MAX),
        True,
    ),
    (  # a decoy block before the final one; the model's demo print and failing assert are sanitized away
        "humaneval_plus",
        1,
        _block("def mean_of_squares(v):\n    return 0")
        + "\nFixed:\n"
        + _block(HE_MEAN + "\nprint(mean_of_squares([1.0]))\nassert False"),
        True,
    ),
    ("humaneval_plus", 2, _block("def count_vowel_runs(s):\n    return sum(c in 'aeiou' for c in s)"), False),  # wrong
    ("humaneval_plus", 3, "def rotate_left(s, k):\n    return s[k:] + s[:k]", False),  # unparsable: no code block
    ("humaneval_plus", 3, _block("def rotate_left(s, k):\n    while True:\n        pass"), False),  # timeout
    ("humaneval_plus", 0, _block("import os\ndef running_max(n):\n    os._exit(0)"), False),  # exit 0 before the tests
    ("mbpp_plus", 0, _block(MP_SECOND) + "\nUsage:\n```\nsecond_largest([1, 2])\n```", True),  # python block wins
    ("mbpp_plus", 2, _block("def ring_area(r, R):\n    return 0.0") + _block(MP_RING), True),  # last block, floats
    ("mbpp_plus", 1, _block("def is_digit_palindrome(n):\n    return True"), False),  # base test passes, plus fails
    ("mbpp_plus", 3, "The answer is shared_items.", False),  # unparsable
    ("mbpp_plus", 3, _block("def shared_items(a, b):\n    while True:\n        pass"), False),  # timeout
    ("livecodebench", 0, _block("print(0)") + "\nThe real one:\n" + _block(LCB_SUM_TWO), True),  # stdin, decoy first
    ("livecodebench", 1, _block(LCB_AVERAGES), True),  # stdin, `1.5` vs `1.50`: equal as Decimals (LCB)
    (  # iterating sys.stdin; sys.exit() ends the run, not the test (LCB's call_method)
        "livecodebench",
        0,
        _block("import sys\nrows = list(sys.stdin)\nprint(sum(sorted(map(int, rows[1].split()))[-2:]))\nsys.exit(0)"),
        True,
    ),
    ("livecodebench", 1, _block("print('1.50')\nprint('3.33')"), False),  # passes the public test only
    ("livecodebench", 0, _block("import os\nprint(9)\nos._exit(0)"), False),  # right first output, then exit 0
    ("livecodebench", 0, "I would sort the numbers.", False),  # unparsable
    ("livecodebench", 0, _block("while True:\n    pass"), False),  # stdin timeout
    ("livecodebench", 2, "<think>" + _block("class Solution: pass") + "</think>" + _block(LCB_PAIRS), True),
    ("livecodebench", 3, _block(LCB_SPLIT), True),  # functional; a tuple for the expected list is accepted
    ("livecodebench", 2, _block("class Solution:\n    def countPairs(self, nums, target):\n        return 2"), False),
    ("livecodebench", 3, _block("class Solution:\n    def splitWords(self, s):\n        while True: pass"), False),
]


def test_evalplus_and_livecodebench_are_scored_in_the_sandbox():
    sets = {name: load_benchmark(name, source="fixtures") for name in ("humaneval_plus", "mbpp_plus", "livecodebench")}
    problems = [sets[name][i] for name, i, _, _ in NEW_CASES]
    scored, counts = code_benchmarks.score_batch(
        problems, [c for _, _, c, _ in NEW_CASES], timeout_s=1.5, max_workers=8
    )
    assert [correct for correct, _ in scored] == [expected for *_, expected in NEW_CASES]
    assert counts["timeout"] == 4 and counts["pass"] == 9  # the os._exit(0) programs exit 0: counted as fail
    assert scored[1][1] == HE_MEAN  # the extracted program is the sanitized final block
    assert scored[3][1] is None and scored[9][1] is None and scored[16][1] is None
    assert scored[11][1] == LCB_SUM_TWO


def test_the_lcb_program_runs_the_tests_itself():
    problem = load_benchmark("livecodebench", source="fixtures")[0]
    program, extracted = code_benchmarks.build_program(problem, _block(LCB_SUM_TWO))
    assert extracted == LCB_SUM_TWO and program.isascii() and "_lcb_main(" in program
    n_tests, blob = livecodebench.tests_blob(problem)
    assert n_tests == 5 and blob.count(b"\n") == 6  # a header, then one JSON line per test (2 public + 3 private)
    stdin, limit = livecodebench.run_stdin(problem, "t0k", timeout_s=10)
    assert json.loads(stdin.split(b"\n")[0]) == {"token": "t0k", "limit": 6.0}  # LCB's 6 s per test
    assert limit == (6 + 1) * 5 + 5  # LCB's global limit


def test_numpy_stand_in_matches_allclose_where_numpy_is_missing():
    from evaluation.sandbox import run_program

    program = (
        "import sys\nsys.modules['numpy'] = None  # import numpy now raises ImportError\n"
        + code_benchmarks.EVALPLUS_HARNESS
        + "\n_evalplus_numpy()\nimport numpy as np\nimport math\n"
        "assert np.allclose(1.0, 1.0 + 1e-9, rtol=1e-07, atol=1e-6)\n"
        "assert np.allclose([0.1, (0.2, 0.3)][:1], [0.1 + 1e-7], rtol=1e-07, atol=1e-6)\n"
        "assert np.allclose([[1.0, 2.0], [3.0, 4.0]], [[1.0, 2.0], [3.0, 4.0000001]], rtol=1e-07, atol=1e-6)\n"
        "assert not np.allclose([1.0, 2.0], [1.0, 2.1], rtol=1e-07, atol=1e-6)\n"
        "assert not np.allclose(float('nan'), float('nan')) and np.allclose(math.inf, math.inf)\n"
        "assert np.allclose(2.0, [2.0, 2.0]) and np.allclose(True, 1.0) and np.allclose([], [])\n"
        "for bad in (([1.0], [1.0, 2.0]), ('a', 'a'), (None, 1.0)):\n"
        "    try:\n        np.allclose(*bad)\n    except (TypeError, ValueError):\n        pass\n"
        "    else:\n        raise AssertionError(bad)\n"
        "assert not isinstance(1.0, np.ndarray)\n"
    )
    result = run_program(program, timeout_s=10)
    assert result.status == "pass", result.stderr


def test_table_two_shows_one_evalplus_row_the_mean_of_humaneval_plus_and_mbpp_plus():
    from evaluation.report import ood_markdown_table

    def summary(name, values):
        benchmarks = {
            bench: {
                "display_name": get_benchmark(bench).display_name,
                "in_domain": False,
                "scores": {"mv": {"pass@1": v}},
            }
            for bench, v in values.items()
        }
        return {"run_name": name, "primary_scorer": "mv", "scorers": {"mv": ""}, "benchmarks": benchmarks}

    grpo = summary(
        "GRPO", {"mbpp": 0.5, "cruxeval_o": 0.3, "humaneval_plus": 0.8, "mbpp_plus": 0.6, "livecodebench": 0.2}
    )
    masa = summary("MASA", {"mbpp": 0.5, "cruxeval_o": 0.4, "humaneval_plus": 0.9, "livecodebench": 0.3})
    lines = ood_markdown_table([grpo, masa]).splitlines()
    assert "|  | EvalPlus | 70.00 | – | – |" in lines  # (80 + 60) / 2; MASA lacks MBPP+: no EvalPlus number
    assert not any("HumanEval+" in line or "MBPP+" in line for line in lines)
    assert (
        "| Coding | MBPP | 50.00 | 50.00 | +0.0% |" in lines
        and "|  | LiveCodeBench | 20.00 | 30.00 | +50.0% |" in lines
    )
    assert "|  | **Avg.** | 42.50 | – | – |" in lines  # (50 + 30 + 70 + 20) / 4: EvalPlus counts once
    rows = [line.split(" | ")[1] for line in lines[4:]]
    assert rows == ["MBPP", "CRUX-O", "EvalPlus", "LiveCodeBench", "**Avg.**"]
    only_he = ood_markdown_table([summary("A", {"humaneval_plus": 0.9, "mbpp": 0.5})]).splitlines()
    assert "|  | HumanEval+ | 90.00 |" in only_he and "|  | **Avg.** | 70.00 |" in only_he  # alone: its own row


def _right_answer(problem):
    if problem.benchmark == "humaneval_plus":
        return _block(problem.problem.split("```\n")[1].rsplit("\n```", 1)[0] + "\n" + problem.answer)
    if problem.benchmark == "mbpp_plus":
        return _block(problem.answer)
    solutions = {"abc901_a": LCB_SUM_TWO, "1901A": LCB_AVERAGES, "3901": LCB_PAIRS, "3902": LCB_SPLIT}
    return _block(solutions[problem.problem_id])


def test_cli_scores_right_and_wrong_answers_on_the_new_fixtures(tmp_path, monkeypatch):
    from test_evaluation_run import ScriptedBackend, _all_problems

    from evaluation import runner
    from evaluation.report import ood_markdown_table

    def script(problem, idx, prompt):  # sample 0 right, sample 1 a wrong program
        return (_right_answer(problem) if idx == 0 else _block("def nothing():\n    return None")), "stop"

    names = ("humaneval_plus", "mbpp_plus", "livecodebench")
    backend = ScriptedBackend(_all_problems(*names), script)
    real_run = runner.run_evaluation
    monkeypatch.setattr(runner, "run_evaluation", lambda config: real_run(config, backend=backend))
    args = ["--model", "scripted-model", "--benchmarks", "evalplus,lcb", "--fixtures", "--n", "2", "--k", "1"]
    args += ["--output-dir", str(tmp_path), "--no-progress", "--code-timeout", "5"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "scripted-model" / "summary.json").read_text())
    assert list(summary["benchmarks"]) == list(names)
    for name in names:
        scores = summary["benchmarks"][name]["scores"]["math_verify"]
        assert scores["pass@1"] == 0.5, (name, scores)
    assert "| Coding | EvalPlus | 50.00 |" in ood_markdown_table([summary]).splitlines()
