r"""The paper's out-of-domain CODING benchmarks (Table 2), scored by executing model output in `evaluation.sandbox`.

MBPP (`google-research-datasets/mbpp`, config `full`, split `test`: the 500 tasks 11-510; columns `task_id`, `text`,
`code`, `test_list`, `test_setup_code`, `challenge_test_list`). Prompted 3-shot as DeepSeek-Coder's
`Evaluation/MBPP/mbpp.py`: tasks 2, 3, 4 of the prompt split as examples (`MBPP_FEW_SHOT`, written out here), each as
`>>> Problem:` / `>>> Test Cases:` (the asserts) / `>>> Code:` (a ```python block), then the task's problem and
asserts. Scored: `test_setup_code + program + test_list` run in the sandbox; correct = status "pass".

CRUX-O (`cruxeval-org/cruxeval`, split `test`, 800 items: `code`, `input`, `output`): predict the output of
`f(input)`. Prompted with CRUXEval's direct output-prediction prompt (`make_direct_output_prompt`, two shots; the
trailing `[ANSWER]` that a base model continues is left out of this chat prompt). Scored: `code` +
`assert f(input) == (prediction)` run in the sandbox.

Extraction (`extract_program`, `extract_output_prediction`) reads only the final answer, after the reasoning:

* MBPP: the LAST fenced ```python (also ```py / ```python3) block, else the last fenced block of any language, else
  no answer (an unclosed fence is no block). The text after the last `</think>` is searched first; only when it has
  no block at all is the whole completion searched. (DeepSeek-Coder's own code took the FIRST ```python block, which
  on reasoning traces picks a draft.)
* CRUX-O: the last `[ANSWER]...[/ANSWER]` block, else the last fenced block, else the last `assert f(...) == X`
  line (same `</think>` rule). Inside a block, the right-hand side of its last `assert f(...) == X` line, else the
  whole block. The prediction must parse as ONE expression made of literals (constants, tuples, lists, sets, dicts,
  unary/binary operators, as the prompt's "a literal, no function calls" asks): it is parsed with `ast` here, never
  evaluated, and only then inserted into the sandboxed program. Anything else (`1 or True`, calls, two statements)
  counts as no answer; this is stricter than CRUXEval's `exec`, which would accept `1 or True`.

Model output is executed only inside `evaluation.sandbox.run_programs` (fresh interpreter, rlimits, no network, a
dropped uid as root), with `timeout_s` (default 10 s) per program.
"""

import ast
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any


MBPP, CRUXEVAL_O = "mbpp", "cruxeval_o"
ANSWER_FORMATS = (MBPP, CRUXEVAL_O)
DEFAULT_TIMEOUT_S = 10.0

# MBPP prompt-split tasks 2, 3, 4 (DeepSeek-Coder reads examples[1:4] of mbpp.jsonl), as DeepSeek-Coder shows them
# (`\r` removed, tabs as four spaces). Texts and code checked against a copy of DeepSeek-Coder's rendered prompt;
# trailing whitespace of the original cells may differ.
MBPP_FEW_SHOT: tuple[dict[str, Any], ...] = (
    dict(
        task_id=2,
        text="Write a function to find the similar elements from the given two tuple lists.",
        code="def similar_elements(test_tup1, test_tup2):\n  res = tuple(set(test_tup1) & set(test_tup2))\n  return (res)",
        test_list=[
            "assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
            "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
            "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)",
        ],
    ),
    dict(
        task_id=3,
        text="Write a python function to identify non-prime numbers.",
        code=(
            "import math\ndef is_not_prime(n):\n    result = False\n    for i in range(2,int(math.sqrt(n)) + 1):\n"
            "        if n % i == 0:\n            result = True\n    return result"
        ),
        test_list=[
            "assert is_not_prime(2) == False",
            "assert is_not_prime(10) == True",
            "assert is_not_prime(35) == True",
        ],
    ),
    dict(
        task_id=4,
        text="Write a function to find the largest integers from a given list of numbers using heap queue algorithm.",
        code="import heapq as hq\ndef heap_queue_largest(nums,n):\n  largest_nums = hq.nlargest(n, nums)\n  return largest_nums",
        test_list=[
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65]",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75]",
            "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]",
        ],
    ),
)


def _mbpp_block(text: str, tests: Sequence[str], code: str | None = None) -> str:
    """DeepSeek-Coder's `format_test_example`."""
    prompt = ">>> Problem:\n{}\n>>> Test Cases:\n{}\n".format(text.strip(), "\n".join(tests))
    if code:
        code = code.replace("\r", "").replace("\t", "    ")
        prompt += f"\n>>> Code:\n```python\n{code}\n```"
    return prompt


MBPP_TEMPLATE = (
    "Please refer the given examples and generate a python function for my problem.\n"
    "Examples are listed as follows:\n{examples}\n\nHere is my problem:\n{problem}"
)


def mbpp_prompt(text: str, tests: Sequence[str]) -> str:
    examples = "\n\n".join(
        f"- Example {i}:\n" + _mbpp_block(ex["text"], ex["test_list"], ex["code"])
        for i, ex in enumerate(MBPP_FEW_SHOT, 1)
    )
    return MBPP_TEMPLATE.format(examples=examples, problem=_mbpp_block(text, tests))


# CRUXEval `prompts.make_direct_output_prompt` (the final "[ANSWER]" line dropped: this is a chat prompt).
CRUX_O_TEMPLATE = """You are given a Python function and an assertion containing an input to the function. Complete the \
assertion with a literal (no unsimplified expressions, no function calls) containing the output when executing the \
provided code on the given input, even if the function is incorrect or incomplete. Do NOT output any extra \
information. Provide the full assertion with the correct output in [ANSWER] and [/ANSWER] tags, following the examples.

[PYTHON]
def f(n):
    return n
assert f(17) == ??
[/PYTHON]
[ANSWER]
assert f(17) == 17
[/ANSWER]

[PYTHON]
def f(s):
    return s + "a"
assert f("x9j") == ??
[/PYTHON]
[ANSWER]
assert f("x9j") == "x9ja"
[/ANSWER]

[PYTHON]
{code}
assert f({input}) == ??
[/PYTHON]"""


SPEC_ARGS: tuple[dict[str, Any], ...] = (
    dict(
        name="mbpp",
        display_name="MBPP",
        hf_id="google-research-datasets/mbpp",
        config="full",
        split="test",
        problem_column="text",
        answer_column="code",
        choice_columns=("test_list",),
        id_column="task_id",
        answer_format=MBPP,
        in_domain=False,
        aliases=("mbpp_full",),
        notes=(
            "MBPP full test (500 tasks, 11-510), 3-shot DeepSeek-Coder prompt (tasks 2-4) with the asserts shown; "
            "scored: last ```python block, test_setup_code + program + test_list run in the sandbox (pass = correct)."
        ),
    ),
    dict(
        name="cruxeval_o",
        display_name="CRUX-O",
        hf_id="cruxeval-org/cruxeval",
        split="test",
        problem_column="code",
        answer_column="output",
        choice_columns=("input",),
        id_column="id",
        answer_format=CRUXEVAL_O,
        in_domain=False,
        aliases=("crux_o", "crux-o", "cruxeval", "cruxeval-o", "cruxevalo"),
        notes=(
            "CRUXEval output prediction (800 items), CRUXEval's 2-shot direct prompt; scored: last [ANSWER] block "
            "(a literal), code + `assert f(input) == prediction` run in the sandbox."
        ),
    ),
)

CODE_BENCHMARKS = ("mbpp", "cruxeval_o")
GROUPS = {"code": CODE_BENCHMARKS}


# ---------------------------------------------------------------------------------------------------------------
# Rows -> problems


def rows_to_problems(spec, rows: Iterable[dict[str, Any]]) -> Iterator[Any]:
    from evaluation.benchmarks import Problem, numbered_rows

    for index, problem_id, row in numbered_rows(spec, rows):
        metadata: dict[str, Any] = {"index": index, "scoring": spec.answer_format}
        if spec.answer_format == MBPP:
            tests = [str(t) for t in row["test_list"]]
            metadata.update(tests=tests, setup=str(row.get("test_setup_code") or ""))
            text = mbpp_prompt(str(row["text"]), tests)
            reference = str(row["code"])
        else:
            code, given = str(row["code"]).rstrip(), str(row["input"]).strip()
            metadata.update(code=code, input=given)
            text = CRUX_O_TEMPLATE.format(code=code, input=given)
            reference = str(row["output"]).strip()
        yield Problem(spec.name, problem_id, text, reference, (reference,), kind="code", metadata=metadata)


# ---------------------------------------------------------------------------------------------------------------
# Extraction


_FENCE = re.compile(r"```[ \t]*([\w+.#-]*)[^\n]*\n(.*?)```", re.DOTALL)
_PYTHON_TAGS = ("python", "py", "python3", "py3")


def _parts(text: str) -> tuple[str, ...]:
    """The text after the last `</think>` (if any), then the whole text."""
    text = text or ""
    _head, sep, tail = text.rpartition("</think>")
    return (tail, text) if sep else (text,)


def _fenced(text: str) -> list[tuple[str, str]]:
    return [(m.group(1).lower(), m.group(2)) for m in _FENCE.finditer(text)]


def extract_program(text: str) -> str | None:
    """The last fenced ```python block of the final answer, else its last fenced block, else None (module doc)."""
    for part in _parts(text):
        blocks = _fenced(part)
        if blocks:
            python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
            body = (python or [body for _, body in blocks])[-1]
            return body.strip("\n") if body.strip() else None
    return None


_ANSWER_BLOCK = re.compile(r"\[ANSWER\](.*?)\[/ANSWER\]", re.DOTALL)
_ASSERT_LINE = re.compile(r"^\s*assert\s+f\s*\(.*$", re.MULTILINE)


def _rhs_of_assert(line: str) -> str | None:
    """The right-hand side of `assert f(...) == X`: after the first `==` outside brackets (parsed, not evaluated)."""
    try:
        tree = ast.parse(line.strip(), mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.Assert):
        return None
    test = tree.body[0].test
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return None
    return ast.get_source_segment(line.strip(), test.comparators[0])


def _prediction_of(block: str) -> str | None:
    lines = _ASSERT_LINE.findall(block)
    if lines:
        return _rhs_of_assert(lines[-1])
    return block.strip() or None


def extract_output_prediction(text: str) -> str | None:
    """The raw predicted output of a CRUX-O completion (not yet checked to be a literal), or None (module doc)."""
    for part in _parts(text):
        answers = _ANSWER_BLOCK.findall(part)
        if answers:
            return _prediction_of(answers[-1])
        blocks = _fenced(part)
        if blocks:
            return _prediction_of(blocks[-1][1])
        lines = _ASSERT_LINE.findall(part)
        if lines:
            return _rhs_of_assert(lines[-1])
    return None


_LITERAL_NODES = (
    ast.Expression,
    ast.Constant,
    ast.Tuple,
    ast.List,
    ast.Set,
    ast.Dict,
    ast.UnaryOp,
    ast.BinOp,
    ast.USub,
    ast.UAdd,
    ast.Not,
    ast.Add,
    ast.Sub,
    ast.Load,
)


def literal_prediction(prediction: str | None) -> str | None:
    """`prediction` when it parses (as `( ... )`) to one expression of literals only, else None. Never evaluates it."""
    if prediction is None or not prediction.strip():
        return None
    try:
        tree = ast.parse(f"(\n{prediction}\n)", mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    if all(isinstance(node, _LITERAL_NODES) for node in ast.walk(tree)):
        return prediction.strip()
    return None


# ---------------------------------------------------------------------------------------------------------------
# Scoring


def build_program(problem, text: str) -> tuple[str | None, str | None]:
    """`(program to run in the sandbox, extracted answer)`; the program is None when there is no usable answer."""
    scoring = problem.metadata.get("scoring")
    if scoring == MBPP:
        program = extract_program(text)
        if program is None:
            return None, None
        setup = problem.metadata.get("setup") or ""
        tests = "\n".join(problem.metadata.get("tests") or ())
        return f"{setup}\n{program}\n\n{tests}\n", program
    if scoring == CRUXEVAL_O:
        raw = extract_output_prediction(text)
        prediction = literal_prediction(raw)
        if prediction is None:
            return None, raw
        meta = problem.metadata
        return f"{meta['code']}\n\nassert f({meta['input']}) == (\n{prediction}\n)\n", prediction
    raise ValueError(f"problem {problem.benchmark}/{problem.problem_id} is not scored by evaluation.code_benchmarks")


def score_batch(
    problems: Sequence[Any],
    completions: Sequence[str],
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    max_workers: int | None = None,
    **sandbox_kwargs,
) -> tuple[list[tuple[bool, str | None]], dict[str, int]]:
    """`([(correct, extracted), ...], sandbox status counts)`: every usable answer run in the sandbox, correct = pass.

    A CRUX-O prediction that is not a literal is kept as the extracted text but scored wrong without being run.
    """
    from evaluation.sandbox import run_programs

    built = [build_program(p, t) for p, t in zip(problems, completions, strict=True)]
    runnable = [i for i, (program, _) in enumerate(built) if program is not None]
    out = [(False, extracted) for _, extracted in built]
    counts: dict[str, int] = {}
    if runnable:
        batch = run_programs(
            [built[i][0] for i in runnable], timeout_s=timeout_s, max_workers=max_workers, **sandbox_kwargs
        )
        counts = dict(batch.counts)
        for i, result in zip(runnable, batch.results, strict=True):
            out[i] = (result.status == "pass", built[i][1])
    return out, counts


def handles(problem) -> bool:
    return problem.metadata.get("scoring") in ANSWER_FORMATS
