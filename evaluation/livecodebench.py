r"""LiveCodeBench code generation (Table 2's coding domain), scored by running every test in `evaluation.sandbox`.

Data: `livecodebench/code_generation_lite`, config = the release tag (`version_tag`; `release_v5` = 880 problems from
May 2023 to Jan 2025, LCB's README), split `test`. Columns (as LCB's `lcb_runner/benchmarks/code_generation.py`
`CodeGenerationProblem` reads them): `question_title`, `question_content`, `platform`, `question_id`, `contest_id`,
`contest_date` (ISO), `starter_code`, `difficulty`, `public_test_cases` (a JSON list of `{input, output, testtype}`),
`private_test_cases` (the same list as JSON, or, where `json.loads` fails, base64 of zlib of a pickled JSON string),
`metadata` (JSON; `func_name` for LeetCode's functional problems). Verified against that file (and the loader's
`load_dataset(..., split="test", version_tag=release_version)`), a copy of the dataset's loading script (builder
configs made from the version tags) and the file tree of the Hub's parquet conversion (refs/pr/7: one folder per
tag, `release_v1` ... `release_v6`, `v1_v5`, ...). NOT verified (no Hub access): the rows themselves, and whether the
Hub's main branch is still script-only; `datasets` >= 4 runs no loading scripts, so then pass a local export with
`--data-file livecodebench=PATH` (JSONL / parquet with the columns above).

Decoding the private tests never calls `pickle.loads` on downloaded data: `decode_private_tests` uses an Unpickler
whose `find_class` refuses every global (the payload is a pickled `str`, which needs none), so a pickle that would
import or call anything is an error, and inflating stops at `MAX_DECODED_BYTES`.

Prompt: LCB's chat prompt (`lcb_runner/prompts/code_generation.py`): `SYSTEM_MESSAGE_GENERIC` and
`get_generic_question_template_answer` (`### Question:` / `### Format:` with the starter code, or with the
stdin/stdout instruction and a `# YOUR CODE HERE` block / `### Answer: ...`), sent as ONE user message "system text +
blank line + question", as LCB does for the chat models that take no system role (`OpenAIReasonPreview`); the
runner's `--system-prompt` stays free.

Date window: LCB filters by `contest_date` (`load_code_generation_dataset(start_date, end_date)`, both ends included,
dates at midnight); the registry has no per-benchmark options, so `filter_by_contest_date(problems, start, end)` does
it on loaded problems, and the CLI evaluates the whole release.

Scoring (`lcb_runner/evaluation/testing_util.py`, `run_test`): public then private tests, stop at the first failure,
correct = every test passes. ONE sandboxed program per (problem, completion) runs them all itself (`HARNESS`); the
candidate code is `exec`ed only inside that sandboxed process. The tests reach it through stdin, one JSON line per
test (read lazily, so the program holds one test at a time), preceded by a per-run random token that the program
writes to stdout only after the last test passed; a program counts as passing only when it exits 0 AND printed the
token, so `os._exit(0)` in a solution is a failure, not a pass. Like LCB, every test run starts from LCB's
`import_string` (`from math import *`, `collections`, `heapq`, ..., `sys.setrecursionlimit(50000)`) and big ints
print with `sys.set_int_max_str_digits(50000)`.

* Functional (LeetCode, `func_name` set): the code is run once (as module `tmp_sol`, so an `if __name__ ==
  "__main__"` block does not run), `Solution()` is made once when the code contains `class Solution` (else the
  function is looked up in the module), then per test `method(*[json.loads(line) for line in input.split("\n")])`;
  a tuple result becomes a list; correct = `result == json.loads(output)` (no float tolerance, as LCB).
* Stdin (AtCoder / Codeforces): per test the code runs as `__main__` in a fresh namespace with `sys.stdin` replaced by
  the test's input and `sys.stdout` captured; `SystemExit` ends the run, not the test (LCB's `call_method`). As LCB's
  patches: `sys.stdin.read()` returns the whole input, `readline()` the next line of `input.split("\n")` WITHOUT its
  newline (also through `input = sys.stdin.readline`), `readlines()` `input.split("\n")`; past the end `readline()`
  returns "" (LCB's raises StopIteration). Lenient where LCB's mock is broken: iterating `sys.stdin` works (LCB's
  current mock object is not iterable; its older StringIO was), `sys.stdin.buffer` is a real byte stream (LCB's
  `buffer.readline()` always returns the first line), `sys.stdout.buffer` works (LCB captures into a StringIO,
  which has none), and threads the code starts are joined before its output is read. The code runs as a module,
  not wrapped in a function as LCB's `make_function` does, so `global` works. `open(0)` reads nothing, not the test
  input (in LCB it reads the evaluator's own stdin: `import_string` binds a module-level `open` first). Output check
  exactly as `grade_stdio`: both sides `strip()`ed and split at "\n", every line `strip()`ed, same number of lines,
  each line equal, or else equal as lists of `Decimal`s of its whitespace-separated tokens (so `2.5` = `2.50`, but
  `0.333` != `0.3333`: no tolerance beyond that).

Time: per test LCB's `timeout` (`--timeout`, default 6 s, `LCB_TEST_TIMEOUT_S`), or the scorer's per-program
`timeout_s` when that is smaller; measured with `signal.setitimer` in the program (wall clock, like LCB's
`signal.alarm`), including running the code for a stdin test. A test past it ends the program with SIGXCPU, which the
sandbox reports as "timeout". The whole program gets LCB's global limit `(limit + 1) * tests + 5` s. Memory: LCB sets
no limit in `run_test`; the sandbox's address-space limit here is `LCB_MEMORY_MB` (4 GiB, the figure in the comment
above `run_test`'s `reliability_guard()` call) unless the caller passes `memory_mb`. Only the sandbox
interpreter's packages can be imported (as root that may be `/usr/bin/python3`, without numpy; see
`evaluation.sandbox`).
"""

import base64
import io
import json
import pickle
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any


LIVECODEBENCH = "livecodebench"
DEFAULT_RELEASE = "release_v5"
LCB_TEST_TIMEOUT_S = 6.0  # lcb_runner/runner/parser.py: --timeout default 6 (seconds per test)
LCB_MEMORY_MB = 4096
MAX_DECODED_BYTES = 1 << 30  # a zlib bomb in the downloaded test data stops here

# lcb_runner/prompts/code_generation.py, PromptConstants.
SYSTEM_MESSAGE_GENERIC = (
    "You are an expert Python programmer. You will be given a question (problem specification) and will generate a "
    "correct Python program that matches the specification and passes all tests."
)
FORMATTING_MESSAGE_WITH_STARTER_CODE = (
    "You will use the following starter code to write the solution to the problem and enclose your code within "
    "delimiters."
)
FORMATTING_WITHOUT_STARTER_CODE = (
    "Read the inputs from stdin solve the problem and write the answer to stdout (do not directly test on the sample "
    "inputs). Enclose your code within delimiters as follows. Ensure that when the python program runs, it reads the "
    "inputs, runs the algorithm and writes output to STDOUT."
)

# lcb_runner/evaluation/testing_util.py, `import_string`: run before the code of every test, as LCB does.
IMPORT_STRING = (
    "from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\nfrom heapq import *\n"
    "from bisect import *\nfrom copy import *\nfrom math import *\nfrom random import *\nfrom statistics import *\n"
    "from itertools import *\nfrom functools import *\nfrom operator import *\nfrom io import *\nfrom sys import *\n"
    "from json import *\nfrom builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
    "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\nimport statistics\n"
    "import itertools\nimport functools\nimport operator\nimport io\nimport sys\nimport json\n"
    "sys.setrecursionlimit(50000)\n"
)


def question_prompt(question_content: str, starter_code: str | None) -> str:
    """LCB's `get_generic_question_template_answer`."""
    prompt = f"### Question:\n{question_content}\n\n"
    if starter_code:
        prompt += f"### Format: {FORMATTING_MESSAGE_WITH_STARTER_CODE}\n"
        prompt += f"```python\n{starter_code}\n```\n\n"
    else:
        prompt += f"### Format: {FORMATTING_WITHOUT_STARTER_CODE}\n"
        prompt += "```python\n# YOUR CODE HERE\n```\n\n"
    prompt += "### Answer: (use the provided format with backticks)\n\n"
    return prompt


def chat_prompt(question_content: str, starter_code: str | None) -> str:
    """The single user message: LCB's system message, a blank line, the question (LCB's `OpenAIReasonPreview`)."""
    return SYSTEM_MESSAGE_GENERIC + "\n\n" + question_prompt(question_content, starter_code)


# ---------------------------------------------------------------------------------------------------------------
# Test data


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Unpickles plain data only: every global (class, function, module attribute) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"refusing to load the global {module}.{name} from LiveCodeBench test data (a pickled str needs none)"
        )

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refusing a persistent id in LiveCodeBench test data")


def restricted_unpickle(data: bytes) -> Any:
    """`pickle.loads` for untrusted bytes that may hold only plain values (no global is ever imported or called)."""
    return _NoGlobalsUnpickler(io.BytesIO(data)).load()


def _inflate(blob: bytes) -> bytes:
    inflater = zlib.decompressobj()
    data = inflater.decompress(blob, MAX_DECODED_BYTES)
    if inflater.unconsumed_tail:
        raise ValueError(f"LiveCodeBench test data inflates past {MAX_DECODED_BYTES} bytes; refusing it")
    return data


def _as_tests(value: Any, what: str) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, list) or not all(isinstance(t, dict) and "input" in t and "output" in t for t in value):
        raise ValueError(f"LiveCodeBench {what}: expected a list of {{input, output, testtype}} objects")
    return value


def decode_public_tests(raw: Any) -> list[dict[str, Any]]:
    """`public_test_cases`: a JSON string (or an already decoded list, as a local copy may hold)."""
    return _as_tests(raw if raw not in (None, "") else "[]", "public_test_cases")


def decode_private_tests(raw: Any) -> list[dict[str, Any]]:
    """`private_test_cases`: JSON, else base64(zlib(pickle(JSON string))), as `CodeGenerationProblem` reads it.

    The pickle is read by `restricted_unpickle`: a payload that names any global raises `pickle.UnpicklingError`.
    """
    if raw in (None, ""):
        return []
    if not isinstance(raw, str):
        return _as_tests(raw, "private_test_cases")
    try:
        return _as_tests(json.loads(raw), "private_test_cases")
    except json.JSONDecodeError:
        pass  # the encoded form, as LCB's own loader falls back to it
    value = restricted_unpickle(_inflate(base64.b64decode(raw.encode("ascii"))))
    if not isinstance(value, str):
        raise TypeError(f"LiveCodeBench private_test_cases: the pickle holds a {type(value).__name__}, not a str")
    return _as_tests(value, "private_test_cases")


def encode_private_tests(tests: Sequence[dict[str, Any]]) -> str:
    """The Hub's encoding of `private_test_cases` (for fixtures and tests): base64(zlib(pickle(json.dumps(tests))))."""
    return base64.b64encode(zlib.compress(pickle.dumps(json.dumps(list(tests))))).decode("ascii")


def parse_metadata(raw: Any) -> dict[str, Any]:
    if isinstance(raw, dict):
        return raw
    if raw in (None, ""):
        return {}
    value = json.loads(raw)
    return value if isinstance(value, dict) else {}


def filter_by_contest_date(
    problems: Iterable[Any], start_date: str | None = None, end_date: str | None = None
) -> list:
    """Problems with `start_date <= contest_date <= end_date` (`YYYY-MM-DD`, midnight), as LCB's loader filters."""
    start = datetime.strptime(start_date, "%Y-%m-%d") if start_date else None
    end = datetime.strptime(end_date, "%Y-%m-%d") if end_date else None
    out = []
    for problem in problems:
        date = datetime.fromisoformat(str(problem.metadata["contest_date"]))
        if (start is None or start <= date) and (end is None or date <= end):
            out.append(problem)
    return out


def problem_metadata(row: dict[str, Any]) -> dict[str, Any]:
    """What the scorer needs from a row; the private tests stay encoded until a program is run (they are large)."""
    meta = parse_metadata(row.get("metadata"))
    public = decode_public_tests(row.get("public_test_cases"))
    return {
        "fn_name": meta.get("func_name") or None,
        "starter_code": str(row.get("starter_code") or ""),
        "public_tests": public,
        "private_tests": row.get("private_test_cases"),
        "contest_date": str(row.get("contest_date") or ""),
        "platform": str(row.get("platform") or ""),
        "difficulty": str(row.get("difficulty") or ""),
    }


def gold_description(metadata: dict[str, Any]) -> str:
    """A short stand-in for the gold answer in the records (LCB has no reference solution; the tests are the gold)."""
    n = len(metadata["public_tests"])
    if metadata["fn_name"]:
        return f"functional tests of {metadata['fn_name']}() ({n} public + private)"
    return f"stdin/stdout tests ({n} public + private)"


_cache: OrderedDict[tuple[str, str, int], tuple[int, bytes]] = OrderedDict()
_cache_lock = threading.Lock()
_CACHE_SIZE = 4  # the samples of one problem are scored together: one decode serves them all


def tests_blob(problem) -> tuple[int, bytes]:
    """`(number of tests, stdin bytes after the token line)`: a header line, then a JSON `[input, output]` per test."""
    key = (problem.benchmark, problem.problem_id, id(problem.metadata))
    with _cache_lock:  # decode once even when many sandbox threads ask for the same problem at once
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        meta = problem.metadata
        tests = list(meta["public_tests"]) + decode_private_tests(meta["private_tests"])
        lines = [json.dumps({"n": len(tests), "fn_name": meta["fn_name"]})]
        lines += [json.dumps([str(t["input"]), str(t["output"])]) for t in tests]
        value = (len(tests), ("\n".join(lines) + "\n").encode("utf-8", errors="surrogatepass"))
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
        return value


def test_limit_s(timeout_s: float) -> float:
    return min(float(timeout_s), LCB_TEST_TIMEOUT_S)


def program_limit_s(limit: float, n_tests: int) -> float:
    """LCB's global limit (`check_correctness`): `(timeout + 1) * tests + 5` seconds."""
    return (limit + 1.0) * max(n_tests, 1) + 5.0


def run_stdin(problem, token: str, timeout_s: float) -> tuple[bytes, float]:
    """`(stdin of the program, its wall-clock limit)` for one run."""
    n_tests, blob = tests_blob(problem)
    limit = test_limit_s(timeout_s)
    header = json.dumps({"token": token, "limit": limit}).encode("ascii") + b"\n"
    return header + blob, program_limit_s(limit, n_tests)


# ---------------------------------------------------------------------------------------------------------------
# The sandboxed program


# Trusted code around the candidate's: it runs in the sandboxed process and `exec`s the candidate code there. Exit
# status: 0 + the token on stdout = every test passed; 1 = a wrong answer (or no tests); 3 = the code raised (the
# sandbox's "error"); SIGXCPU = a test ran past its limit (the sandbox's "timeout").
HARNESS = r'''
import builtins as _builtins, io as _io, json as _json, os as _os, signal as _signal, sys as _sys
import threading as _threading, traceback as _traceback
from decimal import Decimal as _Decimal

if hasattr(_sys, "set_int_max_str_digits"):
    _sys.set_int_max_str_digits(50000)  # lcb_runner/evaluation/compute_code_generation_metrics.py

_IMPORTS = compile(%(imports)s, "lcb_imports.py", "exec")


_NOW = {"test": 0, "limit": 0.0}  # the test running, for the time-limit message


def _on_alarm(signum, frame):
    # End the program at once rather than raise into the solution, whose `except:` could swallow an exception.
    _timed_out(_NOW["test"], _NOW["limit"])


class _Stdin(_io.StringIO):
    """One test's input, read the way lcb_runner's call_method patches sys.stdin (read/readline/readlines)."""

    def __init__(self, text):
        _io.StringIO.__init__(self, text)
        self._text = text
        self._lines = iter(text.split("\n"))
        self.buffer = _io.BytesIO(text.encode("utf-8", "surrogatepass"))

    def read(self, *args):
        return self._text

    def readline(self, *args):
        return next(self._lines, "")

    def readlines(self, *args):
        return self._text.split("\n")


class _Sink(_io.BytesIO):
    def close(self):  # a solution may close sys.stdout; what it wrote stays readable
        pass


class _Discard(_Sink):
    def write(self, data):  # a functional solution's prints: dropped, not kept in memory
        return len(data)


def _say(text):
    try:
        _os.write(2, (text.rstrip("\n") + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def _stripped_lines(text):  # lcb_runner get_stripped_lines
    return [line.strip() for line in text.strip().split("\n")]


def _decimals(line):  # lcb_runner convert_line_to_decimals
    try:
        return [_Decimal(token) for token in line.split()]
    except Exception:
        return None


def _same_output(produced, expected):  # lcb_runner grade_stdio
    got, want = _stripped_lines(produced), _stripped_lines(expected)
    if len(got) != len(want):
        return False
    for a, b in zip(got, want):
        if a == b:
            continue
        da, db = _decimals(a), _decimals(b)
        if da is None or db is None:
            return False
        try:
            if da != db:
                return False
        except Exception:
            return False
    return True


def _alarm(seconds):
    _signal.setitimer(_signal.ITIMER_REAL, seconds)


def _timed_out(i, limit):
    _signal.setitimer(_signal.ITIMER_REAL, 0)
    _say("test %%d: time limit of %%g s exceeded" %% (i, limit))
    _signal.signal(_signal.SIGXCPU, _signal.SIG_DFL)
    _os.kill(_os.getpid(), _signal.SIGXCPU)  # the sandbox reports death by SIGXCPU as "timeout"
    _os._exit(1)


def _wrong(i, why):
    _say("test %%d: %%s" %% (i, why))
    _os._exit(1)


def _raised(i):
    _say("test %%d: the solution raised an exception" %% i)
    _say(_traceback.format_exc())
    _os._exit(3)


def _lcb_main(source):
    data = _os.fdopen(_os.dup(0), "rb")
    null = _os.open(_os.devnull, _os.O_RDONLY)
    _os.dup2(null, 0)  # the solution's own fd 0 (open(0), os.read(0)) holds nothing, as in LCB
    _os.close(null)
    run = _json.loads(data.readline())
    head = _json.loads(data.readline())
    token, limit, n_tests, fn_name = run["token"], float(run["limit"]), int(head["n"]), head["fn_name"]
    if n_tests <= 0:
        _wrong(0, "the problem has no tests")
    real_stdin, real_stdout = _sys.stdin, _sys.stdout
    _NOW["limit"] = limit
    _signal.signal(_signal.SIGALRM, _on_alarm)
    try:
        code = compile(source, "solution.py", "exec")
    except BaseException:
        _raised(0)
    if fn_name:
        _sys.stdout = _io.TextIOWrapper(_Discard(), encoding="utf-8", errors="replace", write_through=True)
        namespace = {"__name__": "tmp_sol", "__builtins__": _builtins}
        try:
            _alarm(limit)  # LCB's compile_code runs the code under signal.alarm(timeout) too
            exec(_IMPORTS, namespace)
            exec(code, namespace)
            target = namespace["Solution"]() if "class Solution" in source else None
            _alarm(0)
        except BaseException:
            _alarm(0)
            _raised(0)
        method = getattr(target, fn_name, None) if target is not None else namespace.get(fn_name)
        if method is None:
            _wrong(0, "no function %%r" %% fn_name)
        for i in range(n_tests):
            given, expected = _json.loads(data.readline())
            args = [_json.loads(line) for line in given.split("\n")]
            gold = _json.loads(expected)
            _NOW["test"] = i
            try:
                _alarm(limit)
                result = method(*args)
                _alarm(0)
            except BaseException:
                _alarm(0)
                _raised(i)
            if isinstance(result, tuple):  # LCB: a tuple for a list is no error
                result = list(result)
            try:
                same = bool(result == gold)
            except Exception:
                same = False
            if not same:
                _wrong(i, "wrong answer")
    else:
        for i in range(n_tests):
            given, expected = _json.loads(data.readline())
            sink = _Sink()
            out = _io.TextIOWrapper(sink, encoding="utf-8", errors="replace", write_through=True)
            namespace = {"__name__": "__main__", "__builtins__": _builtins}
            before = set(_threading.enumerate())
            _NOW["test"] = i
            _sys.stdin, _sys.stdout = _Stdin(given), out
            try:
                _alarm(limit)
                try:
                    exec(_IMPORTS, namespace)
                    exec(code, namespace)
                except SystemExit:  # LCB's call_method: exit() ends the program, not the test
                    pass
                for thread in _threading.enumerate():
                    if thread not in before and thread.is_alive() and not thread.daemon:
                        thread.join()
                _alarm(0)
            except BaseException:
                _alarm(0)
                _sys.stdin, _sys.stdout = real_stdin, real_stdout
                _raised(i)
            _sys.stdin, _sys.stdout = real_stdin, real_stdout
            try:
                out.flush()
            except Exception:
                pass
            if not _same_output(sink.getvalue().decode("utf-8", "replace"), expected):
                _wrong(i, "wrong answer")
    try:
        _sys.stdout = real_stdout
        _os.write(1, ("\n" + token + "\n").encode("ascii"))
    finally:
        _os._exit(0)
'''


def build_program(code: str) -> str:
    """The sandboxed program for one candidate `code` (ASCII source: the code travels as an escaped literal)."""
    return HARNESS % {"imports": ascii(IMPORT_STRING)} + f"\n_lcb_main({code!a})\n"
