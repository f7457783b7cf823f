"""Benchmark registry, loading from fixtures and local files, answer normalisation, GPQA option shuffling."""

import json
import sys
import types

import pytest

from evaluation.benchmarks import (
    BENCHMARKS,
    MATH_BENCHMARKS,
    DatasetUnavailableError,
    MissingColumnError,
    UnknownBenchmarkError,
    get_benchmark,
    load_benchmark,
    local_benchmark,
    normalise_answer,
    resolve_benchmarks,
    shuffle_choices,
)


def test_registry_matches_the_research_note():
    expected = {
        "aime24": ("HuggingFaceH4/aime_2024", None, "train", "problem", "answer"),
        "aime25": ("yentinglin/aime_2025", None, "train", "problem", "answer"),
        "amc23": ("math-ai/amc23", None, "test", "question", "answer"),
        "math500": ("HuggingFaceH4/MATH-500", None, "test", "problem", "answer"),
        "minerva": ("math-ai/minervamath", None, "test", "question", "answer"),
        "olympiadbench": ("math-ai/olympiadbench", None, "test", "question", "final_answer"),
        "gpqa_diamond": ("Idavidrein/gpqa", "gpqa_diamond", "train", "Question", "Correct Answer"),
    }
    for name, row in expected.items():
        spec = BENCHMARKS[name]
        assert (spec.hf_id, spec.config, spec.split, spec.problem_column, spec.answer_column) == row
    assert not BENCHMARKS["gpqa_diamond"].in_domain
    assert all(BENCHMARKS[name].in_domain for name in MATH_BENCHMARKS)


def test_resolve_names_aliases_and_groups():
    assert [s.name for s in resolve_benchmarks("AIME2024, math-500,aime24")] == ["aime24", "math500"]
    assert [s.name for s in resolve_benchmarks("math")] == list(MATH_BENCHMARKS)
    assert [s.name for s in resolve_benchmarks("all")][-1] == "gpqa_diamond"
    assert get_benchmark("olympiad_math").name == "olympiadbench"


def test_unknown_benchmark_lists_the_known_ones():
    with pytest.raises(UnknownBenchmarkError) as err:
        resolve_benchmarks("aime24,aime99")
    message = str(err.value)
    assert "'aime99'" in message
    for name in BENCHMARKS:
        assert name in message


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_fixtures_load_with_the_hub_schema(name):
    spec = BENCHMARKS[name]
    rows = [json.loads(line) for line in spec.fixture_path.read_text().splitlines()]
    assert len(rows) >= 4
    for row in rows:  # the real column names of the Hub data set
        for column in spec.required_columns:
            assert column in row
    problems = load_benchmark(spec, source="fixtures")
    assert len(problems) == len(rows)
    assert len({p.problem_id for p in problems}) == len(problems)
    for problem in problems:
        assert problem.problem and problem.answer and problem.answers
        assert problem.benchmark == name


def test_answer_normalisation():
    assert normalise_answer("033", "integer") == ("33", ("33",))
    assert normalise_answer(27.0, "number") == ("27", ("27",))
    assert normalise_answer("27.0", "number") == ("27", ("27",))
    assert normalise_answer(1.1, "number") == ("1.1", ("1.1",))
    assert normalise_answer(["$\\frac{1}{2}$"], "list") == ("\\frac{1}{2}", ("\\frac{1}{2}",))
    assert normalise_answer(["$0$", "$2$"], "list") == ("0, 2", ("0", "2"))
    assert normalise_answer('["$3$"]', "list") == ("3", ("3",))  # a stringified list (CSV copies)
    assert normalise_answer(" $x^2$ ", "string") == ("x^2", ("x^2",))
    amc = {p.problem_id: p.answer for p in load_benchmark("amc23", source="fixtures")}
    assert amc["1"] == "17" and amc["0"] == "1.1"
    aime = {p.problem_id: p.answer for p in load_benchmark("aime24", source="fixtures")}
    assert aime["4"] == "1"  # "001"


def test_gpqa_shuffle_is_per_item_and_deterministic():
    first = load_benchmark("gpqa_diamond", source="fixtures")
    again = load_benchmark("gpqa_diamond", source="fixtures")
    letters = [p.answer for p in first]
    assert len(set(letters)) > 1, "every answer at the same letter"
    assert [(p.answer, p.choices) for p in first] == [(p.answer, p.choices) for p in again]
    for problem in first:
        assert problem.kind == "choice"
        correct = problem.metadata["answer_text"]
        assert problem.choices["ABCD".index(problem.answer)] == correct
        assert f"{problem.answer}) {correct}" in problem.problem
    # Another seed gives other orders; the authors' order puts every answer at D.
    other = load_benchmark("gpqa_diamond", source="fixtures", seed=1)
    assert [p.choices for p in other] != [p.choices for p in first]
    paper = load_benchmark("gpqa_diamond", source="fixtures", gpqa_shuffle="paper")
    assert {p.answer for p in paper} == {"D"}
    # Many items: all four letters appear, roughly uniformly.
    counts = dict.fromkeys("ABCD", 0)
    for i in range(400):
        counts[shuffle_choices("c", ["x", "y", "z"], key=f"rec{i}")[1]] += 1
    assert min(counts.values()) > 60
    # Duplicate option texts: the correct position is still found.
    options, letter = shuffle_choices("same", ["same", "other", "x"], key="dup")
    assert options["ABCD".index(letter)] == "same"


def test_local_files_with_mapped_columns(tmp_path):
    rows = [{"q": "What is $1+1$?", "target": 2.0, "uid": "a"}, {"q": "What is $2+2$?", "target": 4, "uid": "b"}]
    (tmp_path / "set.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "set.json").write_text(json.dumps({"data": rows}))
    with open(tmp_path / "set.csv", "w") as f:
        f.write("q,target,uid\n" + "".join(f'"{r["q"]}",{r["target"]},{r["uid"]}\n' for r in rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "set.parquet")
    for suffix in ("jsonl", "json", "csv", "parquet"):
        spec = local_benchmark(
            tmp_path / f"set.{suffix}", problem_column="q", answer_column="target", id_column="uid",
            answer_format="number",
        )  # fmt: skip
        problems = load_benchmark(spec)
        assert spec.name == "set"
        assert [(p.problem_id, p.answer) for p in problems] == [("a", "2"), ("b", "4")], suffix
    # A registered benchmark read from a local file keeps its columns.
    fixture = BENCHMARKS["math500"].fixture_path
    assert len(load_benchmark("math500", source=str(fixture))) == 5


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"question": "x", "solution": "y"}) + "\n")
    with pytest.raises(MissingColumnError) as err:
        load_benchmark(local_benchmark(path))
    message = str(err.value)
    assert "'problem'" in message and "'answer'" in message
    assert "'question'" in message and "'solution'" in message  # the available ones
    with pytest.raises(MissingColumnError, match="'final_answer'"):
        load_benchmark("olympiadbench", source=str(BENCHMARKS["aime24"].fixture_path))


def test_missing_file():
    with pytest.raises(DatasetUnavailableError, match="does not exist"):
        load_benchmark("aime24", source="/nonexistent/aime.jsonl")


def test_unreachable_hub_says_what_to_do(monkeypatch):
    fake = types.ModuleType("datasets")

    def load_dataset(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'HuggingFaceH4/aime_2024' on the Hub (LocalEntryNotFoundError)")

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DatasetUnavailableError) as err:
        load_benchmark("aime24")
    message = str(err.value)
    assert "HuggingFaceH4/aime_2024" in message and "split=train" in message
    assert "Offline" in message and "--data-file aime24=PATH" in message and "'problem'" in message
    assert isinstance(err.value.__cause__, ConnectionError)


def test_prompt_styles():
    problem = load_benchmark("aime24", source="fixtures")[0]
    raw = problem.messages("raw")
    instruct = problem.messages("instruct")
    assert raw == [{"role": "user", "content": problem.problem}]
    assert instruct[0]["content"].startswith(problem.problem) and "\\boxed{}" in instruct[0]["content"]
    gpqa = load_benchmark("gpqa_diamond", source="fixtures")[0]
    assert "letter" in gpqa.messages("instruct")[0]["content"]
    with pytest.raises(ValueError, match="prompt style"):
        problem.messages("fancy")


def test_offline_hub_error_from_datasets():
    """With HF_HUB_OFFLINE=1 (set by conftest) and no cached copy, the real `datasets` error is wrapped."""
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1", "tests/conftest.py sets HF_HUB_OFFLINE=1 before datasets loads"
    try:
        load_benchmark("aime24")
    except DatasetUnavailableError as err:
        assert "--data-file aime24=PATH" in str(err)
    else:
        pytest.skip("a cached copy of the data set exists")
