"""Benchmark registry: where each evaluation set lives, which columns hold what, and how answers are normalised.

The six math sets of the paper's Table 1 plus GPQA-Diamond as an optional out-of-domain set. Any local
JSON / JSONL / CSV / parquet file can be evaluated too, with its columns mapped ([`local_benchmark`]), and each
registered benchmark has a small self-written fixture in `evaluation/fixtures/<name>.jsonl` with the real column
names of its Hub schema (`source="fixtures"`), for offline smoke runs and tests.

Dataset ids, splits and columns follow the research note `shared/reference/eval_data.md` §1: the ids the MASA
authors load from the Hub where they do, and lighteval's choices for AIME 2025 and AMC 2023, whose parquet files the
authors never published.
"""

import csv
import hashlib
import json
import math
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from evaluation import code_benchmarks, ood
from masa_trl.templates import SOLUTION_INSTRUCTION


FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

# The instruction MASA appends to every training prompt (`masa_trl.templates.solution_prompt`, as the authors'
# `data_preprocess.py`); the authors' evaluation left it out (`--prompt-style raw` reproduces that).
BOXED_INSTRUCTION = SOLUTION_INSTRUCTION
CHOICE_INSTRUCTION = "Let's think step by step and output the letter of the correct option within \\boxed{}."
CHOICE_LETTERS = "ABCD"
GPQA_SHUFFLES = ("item", "paper")


class BenchmarkError(ValueError):
    """Base class of the errors raised while resolving or loading a benchmark."""


class UnknownBenchmarkError(BenchmarkError):
    pass


class MissingColumnError(BenchmarkError):
    pass


class DatasetUnavailableError(BenchmarkError):
    pass


@dataclass(frozen=True)
class BenchmarkSpec:
    """Where a benchmark lives and how to read it.

    `answer_format` selects the answer normalisation: `"string"` (LaTeX, stripped of enclosing `$`), `"integer"`
    (AIME: `"033"` -> `"33"`), `"number"` (AMC: float `27.0` -> `"27"`), `"list"` (OlympiadBench `final_answer`:
    a list of `$...$` strings) or `"choice"` (GPQA: the answer column holds the correct option's text and
    `choice_columns` the distractors; the loader shuffles the options and the gold becomes a letter, A-D; the
    scorers read the completion's letter as `evaluation.scoring`'s module doc says, per scorer).
    """

    name: str
    display_name: str
    problem_column: str
    answer_column: str
    hf_id: str | None = None
    config: str | None = None
    split: str = "test"
    id_column: str | None = None
    answer_format: str = "string"
    choice_columns: tuple[str, ...] = ()
    in_domain: bool = True
    aliases: tuple[str, ...] = ()
    data_file: str | None = None
    notes: str = ""

    @property
    def kind(self) -> str:
        if self.answer_format in code_benchmarks.ANSWER_FORMATS:
            return "code"
        return "choice" if self.answer_format in ("choice", ood.LOGICLM, ood.LETTER) else "math"

    @property
    def fixture_path(self) -> Path:
        return FIXTURES_DIR / f"{self.name}.jsonl"

    @property
    def required_columns(self) -> tuple[str, ...]:
        return (self.problem_column, self.answer_column, *self.choice_columns)

    def source_description(self) -> str:
        if self.data_file:
            return self.data_file
        parts = [self.hf_id or "?"]
        if self.config:
            parts.append(f"config={self.config}")
        parts.append(f"split={self.split}")
        return " ".join(parts)


@dataclass(frozen=True)
class Problem:
    """One evaluation item, with its gold answer(s) normalised to strings."""

    benchmark: str
    problem_id: str
    problem: str
    answer: str
    answers: tuple[str, ...] = ()
    kind: str = "math"
    choices: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict, compare=False)

    def messages(self, prompt_style: str = "instruct") -> list[dict[str, str]]:
        """The chat messages for the solution prompt: `instruct` adds the training instruction, `raw` does not."""
        if prompt_style not in PROMPT_STYLES:
            raise ValueError(f"unknown prompt style {prompt_style!r}; choose one of {', '.join(PROMPT_STYLES)}")
        text = self.problem
        if prompt_style == "instruct" and self.kind != "code":  # a coding prompt carries its own instructions
            text = f"{text} {CHOICE_INSTRUCTION if self.kind == 'choice' else BOXED_INSTRUCTION}"
        return [{"role": "user", "content": text}]


PROMPT_STYLES = ("instruct", "raw")

_GPQA_CHOICES = ("Incorrect Answer 1", "Incorrect Answer 2", "Incorrect Answer 3")

BENCHMARKS: dict[str, BenchmarkSpec] = {
    spec.name: spec
    for spec in (
        BenchmarkSpec(
            "aime24",
            "AIME24",
            hf_id="HuggingFaceH4/aime_2024",
            split="train",
            problem_column="problem",
            answer_column="answer",
            id_column="id",
            answer_format="integer",
            aliases=("aime2024", "aime_2024"),
        ),
        BenchmarkSpec(
            "aime25",
            "AIME25",
            hf_id="yentinglin/aime_2025",
            split="train",
            problem_column="problem",
            answer_column="answer",
            id_column="id",
            answer_format="integer",
            aliases=("aime2025", "aime_2025"),
            notes="MASA read an unpublished parquet (TianHongZXY/AIME2025); this is lighteval's aime25.",
        ),
        BenchmarkSpec(
            "amc23",
            "AMC23",
            hf_id="math-ai/amc23",
            split="test",
            problem_column="question",
            answer_column="answer",
            id_column="id",
            answer_format="number",
            aliases=("amc2023", "amc_2023", "amc"),
            notes="MASA read an unpublished parquet (TianHongZXY/amc23); this is lighteval's amc23.",
        ),
        BenchmarkSpec(
            "math500",
            "MATH500",
            hf_id="HuggingFaceH4/MATH-500",
            split="test",
            problem_column="problem",
            answer_column="answer",
            id_column="unique_id",
            aliases=("math_500", "math-500"),
        ),
        BenchmarkSpec(
            "minerva",
            "Minerva",
            hf_id="math-ai/minervamath",
            split="test",
            problem_column="question",
            answer_column="answer",
            aliases=("minervamath", "minerva_math"),
        ),
        BenchmarkSpec(
            "olympiadbench",
            "Olympiad.",
            hf_id="math-ai/olympiadbench",
            split="test",
            problem_column="question",
            answer_column="final_answer",
            id_column="id",
            answer_format="list",
            aliases=("olympiad", "olympiad_math", "olympiad_bench", "olympiadbench_math_en"),
        ),
        BenchmarkSpec(
            "gpqa_diamond",
            "GPQA-D",
            hf_id="Idavidrein/gpqa",
            config="gpqa_diamond",
            split="train",
            problem_column="Question",
            answer_column="Correct Answer",
            choice_columns=_GPQA_CHOICES,
            id_column="Record ID",
            answer_format="choice",
            in_domain=False,
            aliases=("gpqa", "gpqa-diamond", "gpqa_d"),
            notes=(
                "Gated on the Hub: accept the terms and log in, or pass the CSV with --data-file. Scored by letter: "
                "math_verify the last explicit option letter A-D (evaluation.ood's letter rules), paper the authors' "
                "get_choice (first standalone letter fallback; see evaluation.scoring)."
            ),
        ),
    )
}

# The out-of-domain logic and science sets of the paper's Table 2 (evaluation/ood.py).
BENCHMARKS.update({args["name"]: BenchmarkSpec(**args) for args in ood.SPEC_ARGS})
# The coding sets of Table 2 (evaluation/code_benchmarks.py), scored by execution in evaluation.sandbox.
BENCHMARKS.update({args["name"]: BenchmarkSpec(**args) for args in code_benchmarks.SPEC_ARGS})

MATH_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")
BENCHMARK_GROUPS = {"math": MATH_BENCHMARKS, "paper": MATH_BENCHMARKS, "all": (*MATH_BENCHMARKS, "gpqa_diamond")}
BENCHMARK_GROUPS.update(ood.GROUPS)  # logic, science (with GPQA-Diamond), code, ood = logic + science + code
BENCHMARK_GROUPS.update(code_benchmarks.GROUPS)  # code (the same five sets), evalplus = HumanEval+ and MBPP+


def _key(name: str) -> str:
    return name.strip().lower().replace("-", "_")


_ALIASES = {_key(alias): spec.name for spec in BENCHMARKS.values() for alias in (spec.name, *spec.aliases)}


def known_benchmarks() -> str:
    groups = ", ".join(f"{g} ({'+'.join(names)})" for g, names in BENCHMARK_GROUPS.items() if g != "paper")
    return f"{', '.join(BENCHMARKS)}; groups: {groups}"


def get_benchmark(name: str) -> BenchmarkSpec:
    """The registered spec of `name` (case-insensitive; aliases such as `aime2024` or `math-500` work)."""
    try:
        return BENCHMARKS[_ALIASES[_key(name)]]
    except KeyError:
        raise UnknownBenchmarkError(
            f"unknown benchmark {name!r}. Known benchmarks: {known_benchmarks()}. "
            "To evaluate another data set, pass --data-file PATH with --problem-column/--answer-column."
        ) from None


def resolve_benchmarks(names: str | Iterable[str]) -> list[BenchmarkSpec]:
    """Resolve a comma-separated list (or an iterable) of benchmark names and groups to specs, in order."""
    if isinstance(names, str):
        names = names.split(",")
    specs: dict[str, BenchmarkSpec] = {}
    for name in names:
        if not name.strip():
            continue
        group = BENCHMARK_GROUPS.get(_key(name))
        for member in group or (name,):
            spec = get_benchmark(member)
            specs.setdefault(spec.name, spec)
    return list(specs.values())


def local_benchmark(
    path: str | Path,
    *,
    name: str | None = None,
    problem_column: str = "problem",
    answer_column: str = "answer",
    id_column: str | None = None,
    answer_format: str = "string",
    base: BenchmarkSpec | None = None,
) -> BenchmarkSpec:
    """A spec for a local JSON / JSONL / CSV / parquet file; with `base`, a registered benchmark read from a file."""
    path = Path(path)
    if base is not None:
        return replace(base, data_file=str(path))
    if answer_format not in ANSWER_FORMATS:
        raise BenchmarkError(f"unknown answer format {answer_format!r}; choose one of {', '.join(ANSWER_FORMATS)}")
    stem = path.name.split(".")[0]
    return BenchmarkSpec(
        name=name or stem,
        display_name=name or stem,
        problem_column=problem_column,
        answer_column=answer_column,
        id_column=id_column,
        answer_format=answer_format,
        data_file=str(path),
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a local `.jsonl`, `.json` (a list of objects, or `{"data": [...]}`), `.csv` or `.parquet` file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetUnavailableError(f"data file {str(path)!r} does not exist")
    suffix = "".join(path.suffixes[-1:]).lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    if suffix == ".json":
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:  # JSON lines under a .json name
            return [json.loads(line) for line in text.split("\n") if line.strip()]  # not at U+2028 etc.
        if isinstance(data, dict):
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise BenchmarkError(f"{path}: expected a list of records or an object holding one list")
            data = lists[0]
        return list(data)
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise BenchmarkError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json, .csv or .parquet)")


def _load_hub_rows(spec: BenchmarkSpec) -> tuple[Iterable[dict[str, Any]], list[str]]:
    try:
        import datasets

        dataset = datasets.load_dataset(spec.hf_id, spec.config, split=spec.split)
    except Exception as err:  # datasets / huggingface_hub raise many types here (offline, gated, not found)
        raise DatasetUnavailableError(
            f"could not load benchmark {spec.name!r} from the Hugging Face Hub ({spec.source_description()}): "
            f"{type(err).__name__}: {err}\nOffline, gated or unreachable Hub? Pass a local file with "
            f"--data-file {spec.name}=PATH (.jsonl/.json/.csv/.parquet with columns "
            f"{', '.join(repr(c) for c in spec.required_columns)}), or --fixtures for the bundled smoke-test items."
        ) from err
    return dataset, list(dataset.column_names)


def _check_columns(spec: BenchmarkSpec, columns: Iterable[str]) -> None:
    columns = list(columns)
    missing = [c for c in spec.required_columns if c not in columns]
    if missing:
        raise MissingColumnError(
            f"benchmark {spec.name!r} ({spec.source_description()}) lacks column(s) "
            f"{', '.join(repr(c) for c in missing)}; available columns: {', '.join(repr(c) for c in columns)}. "
            "Map them with --problem-column / --answer-column."
        )


# ---------------------------------------------------------------------------------------------------------------
# Answer normalisation

ANSWER_FORMATS = ("string", "integer", "number", "list", "choice")
_INTEGRAL = re.compile(r"^[+-]?\d+(?:\.0*)?$")


def _strip_dollars(text: str) -> str:
    text = text.strip()
    while len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    return text


def format_number(value: float) -> str:
    """`27.0` -> `"27"`, `0.5` -> `"0.5"`, `1e-05` -> `"1e-05"`: integral floats become integers."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def normalise_answer(value: Any, answer_format: str = "string") -> tuple[str, tuple[str, ...]]:
    """Normalise a gold answer cell to `(answer, answers)`: one string and the tuple of all golds.

    Lists (OlympiadBench) keep every element in `answers` and join them with `", "` in `answer`.
    """
    if value is None:
        return "", ()
    if isinstance(value, (list, tuple)):
        answers = tuple(_strip_dollars(str(v)) for v in value if v is not None and str(v).strip())
        if answer_format in ("integer", "number"):
            answers = tuple(normalise_answer(a, answer_format)[0] for a in answers)
        return ", ".join(answers), answers
    if isinstance(value, (int, float)):
        text = format_number(value)
        return text, (text,)
    text = _strip_dollars(str(value))
    if answer_format == "list" and text.startswith("[") and text.endswith("]"):  # a stringified list (CSV copies)
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError:
            parsed = None
        if isinstance(parsed, list):
            return normalise_answer(parsed, answer_format)
    if answer_format in ("integer", "number"):
        compact = text.replace(",", "").replace(" ", "")
        if _INTEGRAL.match(compact):
            text = str(int(float(compact))) if "." in compact else str(int(compact))
        elif answer_format == "number":
            try:
                text = format_number(float(compact))
            except ValueError:
                pass
    return text, (text,)


# ---------------------------------------------------------------------------------------------------------------
# Multiple choice (GPQA)


def item_seed(*parts: Any) -> int:
    """A 64-bit seed derived from the item (stable across processes and Python versions, unlike `hash`)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


def shuffle_choices(
    correct: str, incorrect: list[str], *, key: str, seed: int = 0, mode: str = "item"
) -> tuple[list[str], str]:
    """Order the options of a multiple-choice item; returns `(options, correct_letter)`.

    `mode="item"` shuffles with a seed derived from `(seed, key)`, so each item gets its own, reproducible order.
    `mode="paper"` reproduces the MASA authors' loader, which re-seeded `random.seed(42)` before shuffling
    `[correct, *incorrect]` for every item: the same permutation each time, which puts the correct option at "D"
    for every item (see `official_code_notes.md` §9.15). Use it only to reproduce the paper's GPQA number.
    """
    order = [correct, *incorrect]
    # Shuffle positions rather than texts, so that the correct option is found even when two options share a text.
    positions = list(range(len(order)))
    if mode == "item":
        random.Random(item_seed("gpqa-shuffle", seed, key)).shuffle(positions)
    elif mode == "paper":
        random.Random(42).shuffle(positions)
    else:
        raise BenchmarkError(f"unknown option shuffle {mode!r}; choose one of {', '.join(GPQA_SHUFFLES)}")
    options = [order[i] for i in positions]
    letter = CHOICE_LETTERS[positions.index(0)]
    return options, letter


def format_choice_problem(question: str, options: list[str]) -> str:
    lines = [question.strip(), ""]
    lines += [f"{CHOICE_LETTERS[i]}) {str(option).strip()}" for i, option in enumerate(options)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# Loading


def numbered_rows(spec: BenchmarkSpec, rows: Iterable[dict[str, Any]]) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """`(index, problem_id, row)`: the id column's value (the row index without one), made unique with `#index`."""
    seen: set[str] = set()
    for index, row in enumerate(rows):
        raw_id = row.get(spec.id_column) if spec.id_column else None
        problem_id = str(raw_id) if raw_id not in (None, "") else str(index)
        if problem_id in seen:
            problem_id = f"{problem_id}#{index}"
        seen.add(problem_id)
        yield index, problem_id, row


def _rows_to_problems(
    spec: BenchmarkSpec, rows: Iterable[dict[str, Any]], *, seed: int, gpqa_shuffle: str
) -> Iterator[Problem]:
    if spec.answer_format in ood.ANSWER_FORMATS:
        yield from ood.rows_to_problems(spec, rows)
        return
    if spec.answer_format in code_benchmarks.ANSWER_FORMATS:
        yield from code_benchmarks.rows_to_problems(spec, rows)
        return
    for index, problem_id, row in numbered_rows(spec, rows):
        question = str(row[spec.problem_column] or "").strip()
        metadata = {"index": index}
        if spec.answer_format == "choice":
            correct = str(row[spec.answer_column]).strip()
            incorrect = [str(row[c]).strip() for c in spec.choice_columns]
            options, letter = shuffle_choices(correct, incorrect, key=problem_id, seed=seed, mode=gpqa_shuffle)
            metadata["answer_text"] = correct
            yield Problem(
                spec.name,
                problem_id,
                format_choice_problem(question, options),
                letter,
                (letter,),
                kind="choice",
                choices=tuple(options),
                metadata=metadata,
            )
        else:
            answer, answers = normalise_answer(row[spec.answer_column], spec.answer_format)
            yield Problem(spec.name, problem_id, question, answer, answers, metadata=metadata)


def load_benchmark(
    spec: BenchmarkSpec | str,
    *,
    source: str = "auto",
    limit: int | None = None,
    seed: int = 0,
    gpqa_shuffle: str = "item",
) -> list[Problem]:
    """Load a benchmark's problems.

    Args:
        spec: a spec or a registered name.
        source: `"auto"` (the spec's `data_file` if set, else the Hub), `"hub"`, `"fixtures"` (the bundled
            `evaluation/fixtures/<name>.jsonl`), or a path to a local file.
        limit: keep the first `limit` problems.
        seed: seed of the per-item GPQA option shuffle.
        gpqa_shuffle: `"item"` (per-item shuffle) or `"paper"` (the authors' order: every answer at "D").
    """
    if isinstance(spec, str):
        spec = get_benchmark(spec)
    if gpqa_shuffle not in GPQA_SHUFFLES:
        raise BenchmarkError(f"unknown option shuffle {gpqa_shuffle!r}; choose one of {', '.join(GPQA_SHUFFLES)}")
    if source == "fixtures":
        if not spec.fixture_path.is_file():
            raise DatasetUnavailableError(f"no fixture file for benchmark {spec.name!r} ({spec.fixture_path})")
        spec = replace(spec, data_file=str(spec.fixture_path))
    elif source not in ("auto", "hub"):
        spec = replace(spec, data_file=str(source))
    if spec.data_file and source != "hub":
        rows: Iterable[dict[str, Any]] = read_rows(spec.data_file)
        columns: list[str] = list(dict.fromkeys(k for row in rows for k in row)) if rows else []
    elif spec.hf_id:
        rows, columns = _load_hub_rows(spec)
    else:
        raise DatasetUnavailableError(f"benchmark {spec.name!r} has neither a Hub id nor a data file. {spec.notes}")
    _check_columns(spec, columns)
    problems = list(_rows_to_problems(spec, rows, seed=seed, gpqa_shuffle=gpqa_shuffle))
    return problems[:limit] if limit is not None else problems
