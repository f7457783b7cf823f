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

* MBPP (also EvalPlus and LiveCodeBench): the LAST fenced ```python (also ```py / ```python3) block, else the last
  fenced block of any language, else no answer (an unclosed fence is no block). The text after the last `</think>`
  is searched first; only when it has no block at all is the whole completion searched. (DeepSeek-Coder's own code
  took the FIRST ```python block, which on reasoning traces picks a draft; LCB's `extract_code` takes the last.)
* CRUX-O: the last `[ANSWER]...[/ANSWER]` block, else the last fenced block, else the last `assert f(...) == X`
  line (same `</think>` rule). Inside a block, the right-hand side of its last `assert f(...) == X` line, else the
  whole block. The prediction must parse as ONE expression made of literals (constants, tuples, lists, sets, dicts,
  unary/binary operators, as the prompt's "a literal, no function calls" asks): it is parsed with `ast` here, never
  evaluated, and only then inserted into the sandboxed program. Anything else (`1 or True`, calls, two statements)
  counts as no answer; this is stricter than CRUXEval's `exec`, which would accept `1 or True`.

EvalPlus (HumanEval+, 164 tasks; MBPP+, 378 tasks). Data: the Hub copies `evalplus/humanevalplus` (split `test`;
`task_id`, `prompt`, `canonical_solution`, `entry_point`, `test`) and `evalplus/mbppplus` (split `test`; `task_id`
(int), `code`, `prompt`, `source_file`, `test_imports`, `test_list`, `test`). Verified: the column names, types and
row counts against the dataset cards (HumanEval+: its own card, 164 rows; MBPP+: the card of a mirror,
`claudios/evalplus__mbppplus`, and the Hub viewer's 378 `test` rows), and
what `test` holds against the evalplus scripts that write these files (`tools/humaneval/to_original_fmt.py`,
`tools/mbpp/to_original_fmt.py`): HumanEval+ `test` defines `check(candidate)` that runs the candidate on every base +
plus input (deduplicated) and compares with the ground-truth outputs (`assertion(out, exp, atol)`: exact, or
`np.allclose(rtol=1e-07, atol)` for floats; a few tasks cross-check against the reference solution or use a special
oracle), so the program is `solution + test + check(entry_point)`; MBPP+ `test` is a module-level script that calls
the entry point by name on every input itself, so the program is `solution + test_imports + test`. NOT verified
(no Hub access): the row contents themselves, and which EvalPlus release (v0.1.x / v0.2.0) the Hub copies were made
from; the Hub's MBPP+ `prompt` is sanitized MBPP's original text (`to_original_fmt.py`), which for about 18 tasks
still holds a source URL that EvalPlus v0.1.0 removed from its own prompts (`tools/mbpp/fix_v010.py`). The oracles
of `evalplus/eval/__init__.py` that the Hub `test` code lacks (Mbpp/164 and Mbpp/295 special cases, the
`type(out) == type(exp)` check before `np.allclose`) are not added: the Hub code is run as written.

EvalPlus prompt (`evalplus/codegen.py`, `evalplus/provider/utility.py:make_raw_chat_prompt`, the vLLM/HF chat path):
the user message `"Please provide a self-contained Python script that solves the following problem in a markdown
code block:\n```\n" + task_prompt.strip() + "\n```\n"`, where the task prompt is HumanEval+'s `prompt` (signature +
docstring) and for MBPP+ the lines `prompt` and `test_list[0]` between two lines of three double quotes, as
`tools/mbpp/init_plus.py` builds EvalPlus's own MBPP+ prompts. EvalPlus also pre-fills the assistant turn with its
response prefix and an open ```python fence; that is left out here (the runner has no pre-filled turn, and it would
cut the reasoning trace short).

EvalPlus extraction and scoring: the program is `extract_program`'s block (above), then EvalPlus's `sanitize` step
(`evalplus/sanitize.py`, there with tree-sitter, here with `ast`, parsing only): only top-level imports, function and
class definitions and assignments are kept, so a model's own demo calls, prints, asserts, `input()` or `if __name__
== "__main__":` blocks do not run (an unparsable block is run as it is and fails). Differences from EvalPlus's
sanitizer, all in the model's favour: decorated definitions and functions without a `return` are kept, a name
defined twice keeps its last definition (Python's rule, not the first), unreachable helpers are not pruned. The test
code runs in a copy of the solution's namespace, so its own names (`inputs`, `results`, `assertion`) cannot overwrite
the solution's globals. Correct = exit 0 AND a per-run random token (sent on stdin, echoed only after the tests) on
stdout, so `os._exit(0)` in a solution is not a pass. Time: EvalPlus gives every input its own limit
`max(4 s, 4 x the ground truth's time)` (`DEFAULT_MIN_TIME_LIMIT`, `DEFAULT_GT_TIME_LIMIT_FACTOR`) and a task at most
`min(60, sum) + 1` s, and runs base and plus inputs as two calls; here the whole program (definitions and all base +
plus inputs) gets the one per-program `timeout_s` (default 10 s), so a solution much slower than the reference but
inside EvalPlus's per-input limits can time out here on tasks with many inputs, and one that is fast on most inputs
but slower than 4x on one is not failed for it. The Hub test code imports numpy; when the sandbox interpreter has
none (as root the sandbox may run `/usr/bin/python3`), a minimal stand-in (`ndarray`, `float32`/`float64`,
`allclose` on scalars and equal-shaped nested lists, NaN unequal) is installed after the solution's own top-level
code has run, for the test code. BLAS threads are capped at 1 (the sandbox's process limit counts threads).

LiveCodeBench (`livecodebench/code_generation_lite`, release `release_v5`): see `evaluation.livecodebench` (prompt,
restricted decoding of the private tests, the stdin / functional harness, per-test limits).

Groups: `code` = all five coding sets, `evalplus` = HumanEval+ and MBPP+. The paper's Table 2 has a single "EvalPlus"
number; it is taken to be the unweighted mean of HumanEval+ and MBPP+ pass rates (EvalPlus's own leaderboard reports
the two separately; the paper does not say how they were combined), and `evaluation.report.ood_markdown_table` shows
that mean as one "EvalPlus" row.

Model output is executed only inside `evaluation.sandbox.run_program` (fresh interpreter, rlimits, no network, a
dropped uid as root), with `timeout_s` (default 10 s) per program (LiveCodeBench: per test, see there).
"""

import ast
import re
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from evaluation import livecodebench


MBPP, CRUXEVAL_O = "mbpp", "cruxeval_o"
HUMANEVAL_PLUS, MBPP_PLUS, LIVECODEBENCH = "humaneval_plus", "mbpp_plus", livecodebench.LIVECODEBENCH
ANSWER_FORMATS = (MBPP, CRUXEVAL_O, HUMANEVAL_PLUS, MBPP_PLUS, LIVECODEBENCH)
_TOKEN_FORMATS = (HUMANEVAL_PLUS, MBPP_PLUS, LIVECODEBENCH)  # programs that must print the run's token to pass
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

# evalplus/codegen.py (`instruction_prefix`) and provider/utility.py `make_raw_chat_prompt` (the user turn).
EVALPLUS_INSTRUCTION = (
    "Please provide a self-contained Python script that solves the following problem in a markdown code block:"
)


def evalplus_prompt(task_prompt: str) -> str:
    return f"{EVALPLUS_INSTRUCTION}\n```\n{task_prompt.strip()}\n```\n"


def mbpp_plus_task_prompt(prompt: str, first_test: str) -> str:
    """EvalPlus's MBPP+ task prompt (tools/mbpp/init_plus.py): the text and the first assert in a docstring."""
    quotes = '"' * 3
    return f"{quotes}\n{prompt}\n{first_test}\n{quotes}\n"


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
    dict(
        name="humaneval_plus",
        display_name="HumanEval+",
        hf_id="evalplus/humanevalplus",
        split="test",
        problem_column="prompt",
        answer_column="canonical_solution",
        choice_columns=("entry_point", "test"),
        id_column="task_id",
        answer_format=HUMANEVAL_PLUS,
        in_domain=False,
        aliases=("humaneval+", "humanevalplus", "humaneval_p", "he_plus", "he+"),
        notes=(
            "EvalPlus HumanEval+ (164 tasks, base + plus tests), EvalPlus's instruction prompt; scored: last "
            "```python block, sanitized to its definitions, + the `test` column + check(entry_point) in the sandbox."
        ),
    ),
    dict(
        name="mbpp_plus",
        display_name="MBPP+",
        hf_id="evalplus/mbppplus",
        split="test",
        problem_column="prompt",
        answer_column="code",
        choice_columns=("test_list", "test"),
        id_column="task_id",
        answer_format=MBPP_PLUS,
        in_domain=False,
        aliases=("mbpp+", "mbppplus", "mbpp_p"),
        notes=(
            "EvalPlus MBPP+ (378 tasks, base + plus tests), EvalPlus's instruction prompt (text + first assert); "
            "scored: last ```python block, sanitized to its definitions, + test_imports + the `test` column."
        ),
    ),
    dict(
        name="livecodebench",
        display_name="LiveCodeBench",
        hf_id="livecodebench/code_generation_lite",
        config=livecodebench.DEFAULT_RELEASE,  # LCB's `version_tag`
        split="test",
        problem_column="question_content",
        answer_column="private_test_cases",
        choice_columns=("public_test_cases", "starter_code", "metadata", "contest_date"),
        id_column="question_id",
        answer_format=LIVECODEBENCH,
        in_domain=False,
        aliases=("lcb", "live_code_bench", "livecodebench_v5", "lcb_v5", "code_generation_lite"),
        notes=(
            f"LiveCodeBench code generation, {livecodebench.DEFAULT_RELEASE} (880 problems, May 2023 - Jan 2025), "
            "LCB's chat prompt; scored: last ```python block run on the public + private tests (stdin/stdout or "
            f"Solution().func_name) in the sandbox, {livecodebench.LCB_TEST_TIMEOUT_S:g} s per test. Script-only Hub "
            "copies need --data-file livecodebench=PATH with datasets >= 4."
        ),
    ),
)

EVALPLUS_BENCHMARKS = ("humaneval_plus", "mbpp_plus")
CODE_BENCHMARKS = ("mbpp", "cruxeval_o", *EVALPLUS_BENCHMARKS, "livecodebench")
GROUPS = {"code": CODE_BENCHMARKS, "evalplus": EVALPLUS_BENCHMARKS}
# Table 2 shows one "EvalPlus" number: the unweighted mean of these (module docstring; evaluation.report).
TABLE_ROWS = {"EvalPlus": EVALPLUS_BENCHMARKS}


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
        elif spec.answer_format == HUMANEVAL_PLUS:
            metadata.update(entry_point=str(row["entry_point"]).strip(), test=str(row["test"]))
            text = evalplus_prompt(str(row["prompt"]))
            reference = str(row["canonical_solution"])
        elif spec.answer_format == MBPP_PLUS:
            tests = [str(t) for t in row["test_list"]]
            imports = "\n".join(str(line) for line in row.get("test_imports") or ())
            metadata.update(test=str(row["test"]), test_imports=imports)
            text = evalplus_prompt(mbpp_plus_task_prompt(str(row["prompt"]), tests[0] if tests else ""))
            reference = str(row["code"])
        elif spec.answer_format == LIVECODEBENCH:
            metadata.update(livecodebench.problem_metadata(row))
            text = livecodebench.chat_prompt(str(row["question_content"]), metadata["starter_code"])
            reference = livecodebench.gold_description(metadata)
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


# EvalPlus's sanitize keeps these top-level statements (evalplus/sanitize.py: imports, class / function definitions,
# assignments); everything else a model writes at top level (demo calls, prints, asserts) is dropped.
_DEFINITIONS = (
    ast.Import,
    ast.ImportFrom,
    ast.FunctionDef,
    ast.AsyncFunctionDef,
    ast.ClassDef,
    ast.Assign,
    ast.AnnAssign,
)


def evalplus_sanitize(code: str) -> str:
    """The top-level imports, definitions and assignments of `code` in source order (parsed, never run)."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return code  # runs and fails in the sandbox, as EvalPlus's unparsable output does
    kept = []
    for node in tree.body:
        if not isinstance(node, _DEFINITIONS):
            continue
        # A decorated node's own position starts at `def` / `class`: its decorators are put back in front.
        decorators = [f"@{ast.get_source_segment(code, d)}\n" for d in getattr(node, "decorator_list", ())]
        kept.append("".join(decorators) + (ast.get_source_segment(code, node) or ""))
    return "\n".join(kept) if kept else code


# Trusted code run after the solution in the sandboxed process (module docstring): numpy for the Hub test code (a
# stand-in where the interpreter has none), the test code in a copy of the solution's namespace, then the token echo.
EVALPLUS_HARNESS = r"""

def _evalplus_numpy():
    import sys
    try:
        import numpy  # noqa: F401
        return
    except ImportError:
        pass
    import math
    import types

    np = types.ModuleType("numpy")
    np.__doc__ = "evaluation.code_benchmarks: a stand-in for the EvalPlus test code's np.allclose / np.ndarray"

    class ndarray:
        pass

    def _flat(x):
        if isinstance(x, (list, tuple)):
            parts = [_flat(v) for v in x]
            shapes = {shape for shape, _ in parts}
            if len(shapes) > 1:
                raise ValueError("setting an array element with a sequence: inhomogeneous shape")
            inner = parts[0][0] if parts else ()
            return (len(x),) + inner, [value for _, values in parts for value in values]
        if isinstance(x, bool):
            return (), [int(x)]
        if isinstance(x, (int, float, complex)):
            return (), [x]
        raise TypeError("ufunc 'isfinite' not supported for the input types (%r)" % type(x).__name__)

    def _close(a, b, rtol, atol):
        if isinstance(a, complex) or isinstance(b, complex):
            a, b = complex(a), complex(b)
            if any(math.isnan(v) for v in (a.real, a.imag, b.real, b.imag)):
                return False
            if any(math.isinf(v) for v in (a.real, a.imag, b.real, b.imag)):
                return a == b
            return abs(a - b) <= atol + rtol * abs(b)
        a, b = float(a), float(b)
        if math.isnan(a) or math.isnan(b):
            return False
        if math.isinf(a) or math.isinf(b):
            return a == b
        return abs(a - b) <= atol + rtol * abs(b)

    def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
        shape_a, xs = _flat(a)
        shape_b, ys = _flat(b)
        if shape_a != shape_b:
            if shape_a == ():
                xs = xs * len(ys)
            elif shape_b == ():
                ys = ys * len(xs)
            else:
                raise ValueError("operands could not be broadcast together with shapes %r %r" % (shape_a, shape_b))
        return all(_close(x, y, rtol, atol) for x, y in zip(xs, ys))

    np.ndarray, np.float64, np.float32, np.allclose = ndarray, float, type("float32", (), {}), allclose
    sys.modules["numpy"] = np


def _evalplus_run(test, entry_point):
    _evalplus_numpy()
    namespace = dict(globals())  # the solution's names; its functions keep their own globals
    exec(compile(test, "evalplus_test.py", "exec"), namespace)
    if entry_point is not None:
        namespace["check"](namespace[entry_point])
"""
_EVALPLUS_PRELUDE = (
    "__import__('os').environ.update(OPENBLAS_NUM_THREADS='1', OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')\n"
)
# Echo the token that the evaluator sent on stdin: only a program that got here prints it.
_TOKEN_ECHO = "__import__('os').write(1, b'\\n' + __import__('os').read(0, 256))\n"


def _evalplus_program(problem, program: str) -> str:
    meta = problem.metadata
    if meta["scoring"] == HUMANEVAL_PLUS:
        test, entry = meta["test"], meta["entry_point"]
    else:
        test, entry = f"{meta.get('test_imports') or ''}\n{meta['test']}", None
    call = f"_evalplus_run({test!a}, {entry!a})\n"
    return f"{_EVALPLUS_PRELUDE}{program}\n\n{EVALPLUS_HARNESS}\n{call}{_TOKEN_ECHO}"


def _extract(problem, text: str) -> tuple[str | None, str | None]:
    """`(what the program is built from, extracted answer)`: cheap, parsing only; None when there is no answer."""
    scoring = problem.metadata.get("scoring")
    if scoring in (MBPP, LIVECODEBENCH):
        program = extract_program(text)
        return program, program
    if scoring in (HUMANEVAL_PLUS, MBPP_PLUS):
        program = extract_program(text)
        if program is None:
            return None, None
        program = evalplus_sanitize(program)
        return program, program
    if scoring == CRUXEVAL_O:
        raw = extract_output_prediction(text)
        prediction = literal_prediction(raw)
        return prediction, (raw if prediction is None else prediction)
    raise ValueError(f"problem {problem.benchmark}/{problem.problem_id} is not scored by evaluation.code_benchmarks")


def _assemble(problem, answer: str) -> str:
    scoring = problem.metadata["scoring"]
    meta = problem.metadata
    if scoring == MBPP:
        tests = "\n".join(meta.get("tests") or ())
        return f"{meta.get('setup') or ''}\n{answer}\n\n{tests}\n"
    if scoring == CRUXEVAL_O:
        return f"{meta['code']}\n\nassert f({meta['input']}) == (\n{answer}\n)\n"
    if scoring == LIVECODEBENCH:
        return livecodebench.build_program(answer)
    return _evalplus_program(problem, answer)


def build_program(problem, text: str) -> tuple[str | None, str | None]:
    """`(program to run in the sandbox, extracted answer)`; the program is None when there is no usable answer.

    EvalPlus and LiveCodeBench programs also need their stdin (the run's token, LCB's tests): see `score_batch`.
    """
    answer, extracted = _extract(problem, text)
    return (None if answer is None else _assemble(problem, answer)), extracted


def _run_one(problem, answer: str, timeout_s: float, sandbox_kwargs: dict[str, Any]) -> str:
    """Build and run one program (built here, in the worker, so that only running programs are held in memory)."""
    from evaluation.sandbox import run_program

    scoring = problem.metadata["scoring"]
    kwargs = dict(sandbox_kwargs)
    token = secrets.token_hex(16) if scoring in _TOKEN_FORMATS else None
    stdin, limit = None, timeout_s
    if scoring == LIVECODEBENCH:
        stdin, limit = livecodebench.run_stdin(problem, token, timeout_s)
        kwargs.setdefault("memory_mb", livecodebench.LCB_MEMORY_MB)
    elif token is not None:
        stdin = token + "\n"
    result = run_program(_assemble(problem, answer), stdin=stdin, timeout_s=limit, **kwargs)
    if result.status == "pass" and token is not None and token not in result.stdout:
        return "fail"  # exited 0 without reaching the end of the tests (os._exit(0) in the solution)
    return result.status


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
    `max_workers` sandboxed programs run at a time (default os.cpu_count()); `sandbox_kwargs` go to `run_program`.
    """
    import os

    from evaluation.sandbox import STATUSES

    prepared = [_extract(p, t) for p, t in zip(problems, completions, strict=True)]
    runnable = [i for i, (answer, _) in enumerate(prepared) if answer is not None]
    out = [(False, extracted) for _, extracted in prepared]
    counts: dict[str, int] = {}
    if runnable:

        def one(i: int) -> str:
            return _run_one(problems[i], prepared[i][0], timeout_s, sandbox_kwargs)

        workers = max(1, max_workers or os.cpu_count() or 1)
        if workers == 1 or len(runnable) == 1:
            statuses = [one(i) for i in runnable]
        else:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="code-sandbox") as pool:
                statuses = list(pool.map(one, runnable))
        tally = Counter(dict.fromkeys(STATUSES, 0))
        tally.update(statuses)
        counts = dict(tally)
        for i, status in zip(runnable, statuses, strict=True):
            out[i] = (status == "pass", prepared[i][1])
    return out, counts


def handles(problem) -> bool:
    return problem.metadata.get("scoring") in ANSWER_FORMATS
