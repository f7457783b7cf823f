r"""The paper's out-of-domain LOGIC and SCIENCE benchmarks (Table 2), each scored the way its own harness scores it.

Logic (Logic-LM data, Pan et al. 2023, `github.com/teacherpeterpan/Logic-LLM`, `data/<Set>/dev.json`; AR-LSAT also
`test.json`): ProntoQA (500 dev items), ProofWriter (600), FOLIO (204), LogicalDeduction (300), AR-LSAT (231 dev,
230 test). Each item is `{id, context, question, options, answer}`: `options` a list of `"A) text"` strings, `answer`
the correct letter. Logic-LM scores the option letter by exact match. The sets are JSON files in the Logic-LM
repository, not Hub datasets: pass `--data-file prontoqa=PATH/dev.json` (the MASA authors also read them locally).

Science: R-Bench (`R-Bench/R-Bench`, config `rbench-t_en`, split `test`, 1,094 text items, options A-F; letter),
ARC-Challenge (`allenai/ai2_arc`, `ARC-Challenge`, `test`; `choices.{label,text}`, `answerKey`; a few items use the
labels 1-4, which are shown and scored as A-D), SciBench (`xw27/scibench`; `problem_text`, `answer_number`, `unit`;
numeric, relative tolerance 5%). GPQA-Diamond is registered in `evaluation.benchmarks` (its own loader, the per-item
option shuffle); its `math_verify` scorer reads the letter with `extract_letter` below over its options A-D, its
`paper` scorer keeps the authors' `get_choice` (`evaluation.scoring`'s module doc says why).

Sampling settings are not part of a spec (as for the math sets): the paper's n = 32, T = 0.6, top-p 1.0, 16,384 new
tokens, pass@1 and pass@32 are `EvalConfig`'s defaults.

Answer extraction (`score_completion`) reads only an explicit final answer, never a first standalone letter:

* letter sets: the LAST explicit answer among `\boxed{X}` (also `\boxed{\text{X}}`, `\boxed{(X)}`, `\boxed{X) text}`)
  and "the answer is X" / "answer: X" / "correct option is X", restricted to the item's own letters (A-B ProntoQA,
  A-C ProofWriter / FOLIO, A-E AR-LSAT, up to A-G LogicalDeduction, A-F R-Bench, A-D/E ARC). After a `</think>`,
  only the text after it counts when it holds an answer. A lowercase letter counts only inside a box or brackets
  (`\boxed{b}`, "answer is (b)"), so the article in "the answer is a bit subtle" is no answer.
* SciBench: the last `\boxed{}` (its right-hand side after `=`, as SciBench's `remove_boxed`), else the last "the
  answer is <number>"; the number is read with LaTeX scientific notation (`1.2 \times 10^{-3}`, `1.2e-3`), thousands
  commas and a trailing unit; correct when `math.isclose(pred, answer_number, rel_tol=0.05)`. When the unit carries a
  power of ten (`10^{-47} kg m^2`) a value written in the base unit (`1.2 \times 10^{-47}`) is accepted as well.

The coding sets (MBPP, CRUX-O) live in `evaluation.code_benchmarks`; the group `ood` here is logic + science + code.

The registry hook is in `evaluation.benchmarks` (the specs of `SPEC_ARGS`, the groups `logic`, `science`, `ood`, and
`rows_to_problems` for the `letter` / `logiclm` / `scibench` answer formats).
"""

import math
import re
from collections.abc import Iterable, Iterator
from typing import Any

from evaluation.code_benchmarks import CODE_BENCHMARKS  # code_benchmarks imports nothing of ours at module level


LETTERS = "ABCDEFGHIJ"
# Answer formats handled here (`BenchmarkSpec.answer_format`).
LOGICLM, LETTER, SCIBENCH = "logiclm", "letter", "scibench"
ANSWER_FORMATS = (LOGICLM, LETTER, SCIBENCH)

# SciBench's numeric comparison: `math.isclose(rel_tol=0.05)` ("a relative tolerance of 5%", SciBench paper, Wang et
# al. 2024, §4). NB the stored snapshot of the official repository (mandyyyyii/scibench@d0efdac, eval/eval_zero.py and
# eval/eval_few.py, `equiv`) uses `abs_tol=0.1`, and eval_zeroCot.py@04d4b63 `abs_tol=0.1` for |answer| >= 1 else
# `rel_tol=0.1`; the 5% version is the one reimplemented by the common harnesses. UNVERIFIED which one the MASA
# authors ran (their eval code reads `xw27/scibench`, official_code_notes.md §7, scoring not described).
SCIBENCH_REL_TOL = 0.05

LOGIC_TEMPLATE = "Context:\n{context}\n\nQuestion: {question}\n\nOptions:\n{options}"
CHOICE_TEMPLATE = "{question}\n\n{options}"
# As SciBench's eval_zero.py: `problem_text + " The unit of the answer is " + unit + "."` (the unit IS given).
SCIBENCH_TEMPLATE = "{problem_text} The unit of the answer is {unit}."

_LOGICLM_URL = "https://github.com/teacherpeterpan/Logic-LLM (data/{folder}/{split}.json)"


def _logic(name, display, folder, aliases, count, split="dev"):
    return dict(
        name=name,
        display_name=display,
        problem_column="question",
        answer_column="answer",
        choice_columns=("context", "options"),
        id_column="id",
        split=split,
        answer_format=LOGICLM,
        in_domain=False,
        aliases=aliases,
        notes=(
            f"Logic-LM {folder} {split} ({count} items), a local JSON file: pass --data-file {name}=PATH; source "
            + _LOGICLM_URL.format(folder=folder, split=split)
            + f". Prompt: {LOGIC_TEMPLATE!r} + the choice instruction; scored: last explicit option letter, exact."
        ),
    )


# The keyword arguments of the `BenchmarkSpec`s registered by `evaluation.benchmarks` (plain dicts, so that this module
# imports nothing from the registry at import time).
SPEC_ARGS: tuple[dict[str, Any], ...] = (
    _logic("prontoqa", "ProntoQA", "ProntoQA", ("pronto_qa",), 500),
    _logic("proofwriter", "ProofWriter", "ProofWriter", ("proof_writer",), 600),
    _logic("folio", "FOLIO", "FOLIO", (), 204),
    _logic("logicaldeduction", "LogicalDed.", "LogicalDeduction", ("logical_deduction", "logideduction"), 300),
    _logic("ar_lsat", "AR-LSAT", "AR-LSAT", ("arlsat", "ar-lsat", "lsat"), 231),  # the paper: dev; test has 230
    dict(
        name="rbench",
        display_name="R-Bench",
        hf_id="R-Bench/R-Bench",
        config="rbench-t_en",
        split="test",
        # UNVERIFIED column names (the Hub was unreachable): a `question`, the options either in a list column
        # `options` or in columns `A`..`F`, the correct letter in `answer`, an `index` id.
        problem_column="question",
        answer_column="answer",
        id_column="index",
        answer_format=LETTER,
        in_domain=False,
        aliases=("r_bench", "r-bench", "rbench_t", "rbench-t"),
        notes=(
            "R-Bench-T (English, 1,094 text items, options A-F). Columns unverified: question, options or A..F, answer. "
            f"Prompt: {CHOICE_TEMPLATE!r} (options lettered) + the choice instruction; scored: last explicit letter."
        ),
    ),
    dict(
        name="arc_challenge",
        display_name="ARC-C",
        hf_id="allenai/ai2_arc",
        config="ARC-Challenge",
        split="test",
        problem_column="question",
        answer_column="answerKey",
        choice_columns=("choices",),
        id_column="id",
        answer_format=LETTER,
        in_domain=False,
        aliases=("arc", "arc_c", "arc-challenge", "ai2_arc"),
        notes=(
            "ARC-Challenge test (1,172 items); choices = {label, text}; labels 1-4 are shown and scored as A-D. "
            f"Prompt: {CHOICE_TEMPLATE!r} + the choice instruction; scored: last explicit letter."
        ),
    ),
    dict(
        name="scibench",
        display_name="SciBench",
        hf_id="xw27/scibench",
        split="train",  # UNVERIFIED: the dataset card lists one split (`train`)
        problem_column="problem_text",
        answer_column="answer_number",
        choice_columns=("unit",),
        id_column="problemid",  # UNVERIFIED; `problemid` repeats across sources, duplicates get a `#index` suffix
        answer_format=SCIBENCH,
        in_domain=False,
        aliases=("sci_bench",),
        notes=(
            f"The unit is given in the prompt ({SCIBENCH_TEMPLATE!r}, as SciBench's eval_zero.py) + the boxed "
            f"instruction; scored: last boxed number, math.isclose(rel_tol={SCIBENCH_REL_TOL})."
        ),
    ),
)

LOGIC_BENCHMARKS = ("prontoqa", "proofwriter", "folio", "logicaldeduction", "ar_lsat")
SCIENCE_BENCHMARKS = ("gpqa_diamond", "rbench", "arc_challenge", "scibench")
OOD_BENCHMARKS = (*LOGIC_BENCHMARKS, *SCIENCE_BENCHMARKS, *CODE_BENCHMARKS)
GROUPS = {"logic": LOGIC_BENCHMARKS, "science": SCIENCE_BENCHMARKS, "code": CODE_BENCHMARKS, "ood": OOD_BENCHMARKS}


# ---------------------------------------------------------------------------------------------------------------
# Rows -> problems


_PREFIXED_OPTION = re.compile(r"^\s*\(?([A-Ja-j])\s*[).:]\s*(.*)$", re.DOTALL)


def _split_options(raw: Any) -> list[tuple[str, str]]:
    """`["A) True", "B) False"]` (Logic-LM) or plain texts -> `[(letter, text), ...]`, lettered A, B, ... in order."""
    if isinstance(raw, str):
        raw = [line for line in raw.splitlines() if line.strip()]
    out = []
    for i, option in enumerate(raw or []):
        text = str(option).strip()
        match = _PREFIXED_OPTION.match(text)
        if match and match.group(1).upper() == LETTERS[i]:
            text = match.group(2).strip()
        out.append((LETTERS[i], text))
    return out


def _options_block(options: list[tuple[str, str]]) -> str:
    return "\n".join(f"{letter}) {text}" for letter, text in options)


def _row_options(spec, row: dict[str, Any]) -> tuple[list[tuple[str, str]], str]:
    """The lettered options of a row and its gold letter (ARC `1`-`4` labels become `A`-`D`)."""
    gold = str(row.get(spec.answer_column, "")).strip()
    choices = row.get("choices")
    if isinstance(choices, dict):  # ARC: {"label": [...], "text": [...]}
        labels = [str(label).strip() for label in choices.get("label", [])]
        texts = [str(text).strip() for text in choices.get("text", [])]
        options = [(LETTERS[i], text) for i, text in enumerate(texts)]
        if gold in labels:
            gold = LETTERS[labels.index(gold)]
        return options, gold.upper()
    if row.get("options") is not None:
        options = _split_options(row["options"])
    else:  # one column per letter (R-Bench layout, unverified)
        options = [(letter, str(row[letter]).strip()) for letter in LETTERS if row.get(letter) not in (None, "")]
    gold = gold.strip("()").strip()
    if gold.isdigit() and 1 <= int(gold) <= len(options):
        gold = LETTERS[int(gold) - 1]
    return options, gold.upper()


def rows_to_problems(spec, rows: Iterable[dict[str, Any]]) -> Iterator[Any]:
    """The problems of a `logiclm` / `letter` / `scibench` benchmark (called by `evaluation.benchmarks`)."""
    from evaluation.benchmarks import Problem, format_number, numbered_rows

    for index, problem_id, row in numbered_rows(spec, rows):
        metadata: dict[str, Any] = {"index": index, "scoring": spec.answer_format}
        if spec.answer_format == SCIBENCH:
            unit = str(row.get("unit") or "").strip()
            text = str(row[spec.problem_column]).strip()
            if unit:  # unitless items (blank `unit`) get no unit sentence
                text = SCIBENCH_TEMPLATE.format(problem_text=text, unit=unit)
            answer = row[spec.answer_column]
            answer = format_number(answer) if isinstance(answer, (int, float)) else str(answer).strip()
            metadata["unit"] = unit
            yield Problem(spec.name, problem_id, text, answer, (answer,), kind="math", metadata=metadata)
            continue
        options, gold = _row_options(spec, row)
        question = str(row[spec.problem_column] or "").strip()
        if spec.answer_format == LOGICLM:
            text = LOGIC_TEMPLATE.format(
                context=str(row.get("context") or "").strip(), question=question, options=_options_block(options)
            )
        else:
            text = CHOICE_TEMPLATE.format(question=question, options=_options_block(options))
        metadata["letters"] = "".join(letter for letter, _ in options)
        yield Problem(
            spec.name,
            problem_id,
            text,
            gold,
            (gold,),
            kind="choice",
            choices=tuple(t for _, t in options),
            metadata=metadata,
        )


# ---------------------------------------------------------------------------------------------------------------
# Extraction


def _boxed_contents(text: str) -> list[tuple[int, str]]:
    r"""`(position, content)` of every closed `\boxed{...}` / `\fbox{...}`, nested braces matched."""
    out = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in "{}":
                i += 2
                continue
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            out.append((match.start(), text[match.end() : i - 1].strip()))
    return out


def _final_part(text: str) -> str:
    """The text after the last `</think>` when there is one (the answer after the reasoning trace)."""
    _head, sep, tail = (text or "").rpartition("</think>")
    return tail if sep else text or ""


_TEXT_WRAPPER = re.compile(r"\\(?:text|textbf|mathrm|mathbf|textsf|texttt)\s*\{([^{}]*)\}")
_BOX_LETTER = re.compile(r"^[\s(\[*]*([A-Ja-j])\s*(?:$|[)\].:,]|\s)")
# "the answer is (B)", "Answer: **C**", "the correct option is: D", "final answer: E". Uppercase bare letters only; a
# lowercase letter only in brackets.
_PHRASE_LETTER = re.compile(
    r"(?i:answer\s+is|answer\s*:|correct\s+(?:option|choice)\s+is|option\s+is|choice\s+is)\s*:?\s*[*_]*\s*"
    r"(?:\(([A-Ja-j])\)|\[([A-Ja-j])\]|([A-J]))(?![A-Za-z0-9])"
)


def _box_letter(content: str, letters: str) -> str | None:
    for _ in range(3):
        content = _TEXT_WRAPPER.sub(r"\1", content)
    match = _BOX_LETTER.match(content.replace("$", ""))
    if match and match.group(1).upper() in letters:
        return match.group(1).upper()
    return None


def _letters_in(text: str, letters: str) -> list[tuple[int, str]]:
    found = [(pos, letter) for pos, content in _boxed_contents(text) if (letter := _box_letter(content, letters))]
    for match in _PHRASE_LETTER.finditer(text):
        letter = next(g for g in match.groups() if g).upper()
        if letter in letters:
            found.append((match.start(), letter))
    return sorted(found)


def extract_letter(text: str, letters: str = LETTERS) -> str | None:
    """The last explicit answer letter (boxed or "the answer is X") among `letters`, or None; see the module doc."""
    letters = letters or LETTERS
    for part in (_final_part(text), text or ""):
        found = _letters_in(part, letters)
        if found:
            return found[-1][1]
    return None


_SCI = r"(?:\\times|\\cdot|\*|×|x)\s*10\s*\^\s*\{?\s*([-+−]?\s*\d+)\s*\}?"
_NUMBER = re.compile(r"[-+−]?\s*(?:\d+(?:\.\d*)?|\.\d+)(?:\s*[eE]\s*[+-]?\d+)?")
_NUMERIC_PHRASE = re.compile(r"(?i:answer\s+is)\s*(?:therefore\s*)?:?\s*\$?\s*([-+−]?\s*\.?\d[^\n]*)")


def _clean_number_text(text: str) -> str:
    text = _TEXT_WRAPPER.sub(r" \1", text)
    text = text.replace("\\left", "").replace("\\right", "").replace("$", " ").replace("\\!", "")
    text = re.sub(r"\\[,;: ]|~", " ", text)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)  # thousands separators
    text = text.replace("\\approx", "=").replace("\\simeq", "=")
    return text.replace("−", "-").strip()


def parse_number(text: str | None) -> float | None:
    r"""The number at the start of an answer: `-1.2 \times 10^{-3} \mathrm{~J}` -> -0.0012; `1.5e4 m/s` -> 15000."""
    if not text:
        return None
    text = _clean_number_text(text)
    frac = re.match(r"^\\[dt]?frac\s*\{\s*([^{}]+)\}\s*\{\s*([^{}]+)\}", text)
    if frac:
        num, den = parse_number(frac.group(1)), parse_number(frac.group(2))
        return num / den if num is not None and den not in (None, 0) else None
    only_power = re.match(r"^10\s*\^\s*\{?\s*([+-]?\s*\d+)\s*\}?", text)
    if only_power:
        return 10.0 ** int(only_power.group(1).replace(" ", ""))
    match = _NUMBER.match(text)
    if not match:
        return None
    try:
        value = float(match.group().replace(" ", "").replace("−", "-"))
    except ValueError:
        return None
    rest = text[match.end() :].lstrip()
    slash = re.match(r"^/\s*(\d+(?:\.\d*)?)(?![\w.])", rest)
    if slash and float(slash.group(1)) != 0:
        value /= float(slash.group(1))
        rest = rest[slash.end() :].lstrip()
    power = re.match(_SCI, rest)
    if power:
        value *= 10.0 ** int(power.group(1).replace(" ", "").replace("−", "-"))
    return value


def extract_scibench(text: str) -> str | None:
    """The last boxed answer (its right-hand side after `=`), else the last "the answer is <number>"."""
    for part in (_final_part(text), text or ""):
        boxed = _boxed_contents(part)
        if boxed:
            content = boxed[-1][1]
            return content.split("=")[-1].strip() if "=" in content else content
        phrases = _NUMERIC_PHRASE.findall(part)
        if phrases:
            return phrases[-1].strip().rstrip(".")
    return None


def unit_power(unit: str) -> int | None:
    r"""The power of ten a SciBench unit starts with (`$10^{-47} \mathrm{~kg}$` -> -47), else None."""
    match = re.match(r"^\s*\$?\s*10\s*\^\s*\{?\s*([-+−]?\s*\d+)\s*\}?", unit or "")
    return int(match.group(1).replace(" ", "").replace("−", "-")) if match else None


def scibench_equal(prediction: str | None, answer: str, unit: str = "", rel_tol: float = SCIBENCH_REL_TOL) -> bool:
    """SciBench's comparison: `isclose(pred, answer_number, rel_tol)`; a base-unit value is accepted when the unit
    carries a power of ten (see the module doc)."""
    value, gold = parse_number(prediction), parse_number(str(answer))
    if value is None or gold is None or not math.isfinite(value):
        return False
    if math.isclose(value, gold, rel_tol=rel_tol):
        return True
    power = unit_power(unit)
    return power is not None and math.isclose(value, gold * 10.0**power, rel_tol=rel_tol)


def score_completion(problem, text: str) -> tuple[bool, str | None]:
    """`(correct, extracted)` for a problem of a benchmark registered here (its `metadata["scoring"]` format)."""
    scoring = problem.metadata.get("scoring")
    if scoring == SCIBENCH:
        extracted = extract_scibench(text)
        return scibench_equal(extracted, problem.answer, problem.metadata.get("unit", "")), extracted
    if scoring in (LOGICLM, LETTER):
        letter = extract_letter(text, problem.metadata.get("letters") or LETTERS)
        return letter is not None and letter == problem.answer, letter
    raise ValueError(f"problem {problem.benchmark}/{problem.problem_id} is not scored by evaluation.ood")


def handles(problem) -> bool:
    """Whether `score_completion` scores this problem (the hook a scorer can call before its own rules)."""
    return problem.metadata.get("scoring") in ANSWER_FORMATS
