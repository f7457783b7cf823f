"""A paper-compatible math grader: the semantics the MASA authors' tables were produced with, reimplemented.

The authors scored with the ToRA / Qwen-Math style grader of their verl fork (`extract_answer_math` plus
`math_equal`, see `shared/reference/eval_data.md` §3.4). This module is written from that description, not copied:

* **extraction** ([`extract_answer`]): the content of the last `boxed` (brace-matched), else what follows the last
  "the answer is", else the last number in the text; then [`strip_string`] normalisation (units in `\\text{}`,
  degrees, `$`, `%`, `\\left`/`\\right`, `\\dfrac`, `x =` prefixes, `\\sqrt3`/`\\frac12` shorthand, `a/b`, trailing
  decimal zeros, ...);
* **comparison** ([`math_equal`]): string equality, then numeric equality with relative tolerance 1e-4 that also
  accepts the reference x100 and /100 (percentages), then tuples / intervals / matrices element by element, then
  equations, then a symbolic check (latex2sympy or sympy's parser, `simplify(a - b) == 0`, numeric evaluation) run
  in a separate worker process killed after `timeout` seconds ([`SymbolicChecker`]); a killed check counts as a
  timeout and as "not equal".

It is deliberately more lenient than math-verify (any last number counts as an answer), which is why the paper's
numbers and the project's math-verify numbers differ; the report states which scorer produced a table.
"""

import json
import math
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


# ---------------------------------------------------------------------------------------------------------------
# Extraction


def _match_braces(text: str, start: int) -> str | None:
    """The content of the brace group opening at `text[start] == "{"`, or None if it never closes."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return None


_NUMBER = re.compile(r"-?\d*\.?\d+")


def extract_raw_answer(text: str) -> str:
    """The raw final answer: last `boxed{...}`, else after the last "the answer is", else the last number."""
    if "boxed" in text:
        tail = text.rsplit("boxed", 1)[1]
        if tail.startswith("{"):
            content = _match_braces(tail, 0)
            answer = content if content is not None else tail[1:]
        else:  # "\boxed 5$"
            answer = tail.split("$")[0]
    elif "he answer is" in text:
        answer = text.rsplit("he answer is", 1)[1]
        answer = next((line for line in answer.splitlines() if line.strip()), "")
    else:
        numbers = _NUMBER.findall(text.replace(",", ""))
        answer = numbers[-1] if numbers else ""
    answer = re.sub(r"\n\s*", "", answer).strip()
    if answer.startswith(":"):
        answer = answer[1:].strip()
    answer = answer.rstrip(".").rstrip("/").strip()
    return answer


def extract_answer(text: str) -> str:
    """[`extract_raw_answer`] followed by [`strip_string`]; `""` when the text holds no candidate answer."""
    return strip_string(extract_raw_answer(text or ""))


# ---------------------------------------------------------------------------------------------------------------
# Normalisation


def _fix_fracs(text: str) -> str:
    # \frac12 -> \frac{1}{2}, \frac1{2} -> \frac{1}{2}, \frac{1}2 -> \frac{1}{2}
    text = re.sub(r"\\frac\s*(\d)\s*(\d)", r"\\frac{\1}{\2}", text)
    text = re.sub(r"\\frac\s*(\d)\s*\{", r"\\frac{\1}{", text)
    text = re.sub(r"\\frac\s*(\{[^{}]*\})\s*(\d)", r"\\frac\1{\2}", text)
    return text


def _fix_sqrt(text: str) -> str:
    return re.sub(r"\\sqrt\s*([0-9a-zA-Z])", r"\\sqrt{\1}", text)


_UNIT_SUFFIX = re.compile(r"^(.*?\S)\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z\s./^\-\d]*\}\s*$")
_TEXT_WRAP = re.compile(r"\\(?:text|mbox|mathrm|textbf|mathbf)\s*\{([^{}]*)\}")


def strip_string(text: Any) -> str:
    """Normalise an answer string (the paper-compatible grader's `strip_string` semantics)."""
    s = str(text).replace("\n", "").strip()
    s = s.rstrip(".").strip()
    for thin_space in ("\\!", "\\,", "\\;", "\\:"):
        s = s.replace(thin_space, "")
    s = s.replace("\\\\", "\\") if "matrix" not in s and "array" not in s else s
    s = s.replace("tfrac", "frac").replace("dfrac", "frac")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\displaystyle", "")
    # Units: a trailing \text{...} after a value, then unwrap remaining \text{X}.
    for _ in range(2):
        match = _UNIT_SUFFIX.match(s)
        if match:
            s = match.group(1)
    s = _TEXT_WRAP.sub(r"\1", s)
    # Degrees, dollars, percent.
    s = s.replace("^{\\circ}", "").replace("^\\circ", "").replace("°", "")
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    # Infinity, "and", complex j.
    s = re.sub(r"(?<![\\a-zA-Z])inf(?:inity)?(?![a-zA-Z])", r"\\infty", s)
    s = re.sub(r"\s+and\s+", ",", s)
    if "j" in s and "i" not in s and re.search(r"\dj|\bj\b", s):
        s = s.replace("j", "i")
    # "x = 5" -> "5" when the left side is a short name.
    if s.count("=") == 1:
        lhs, rhs = s.split("=")
        if len(lhs.strip()) <= 2 and rhs.strip():
            s = rhs
    s = _fix_sqrt(_fix_fracs(s))
    s = s.replace(" ", "")
    # Leading-dot decimals and trailing zeros.
    s = re.sub(r"(^|[^\d])\.(\d)", r"\g<1>0.\2", s)
    s = re.sub(r"(\d+\.\d*?)0+(?=$|[^\d])", r"\1", s)
    s = re.sub(r"(\d+)\.(?=$|[^\d])", r"\1", s)
    # Thousands separators: 1,000 -> 1000 (only when the whole answer is such a number).
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    # a/b with integers -> \frac{a}{b}
    match = re.fullmatch(r"(-?)(\d+)/(\d+)", s)
    if match:
        s = f"{match.group(1)}\\frac{{{match.group(2)}}}{{{match.group(3)}}}"
    return s


# ---------------------------------------------------------------------------------------------------------------
# Numbers


_PLAIN_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def _plain_number(s: str) -> float | None:
    s = s.replace(",", "")
    if _PLAIN_NUMBER.fullmatch(s):
        try:
            value = float(s)
        except (ValueError, OverflowError):
            return None
        return value if math.isfinite(value) else None
    return None


def _simple_value(s: str) -> float | None:
    """Numbers that need no sympy: `\\frac{a}{b}`, `-\\frac{a}{b}`, `a\\times10^{b}`, `a\\cdot10^b`."""
    value = _plain_number(s)
    if value is not None:
        return value
    match = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if match:
        num, den = int(match.group(2)), int(match.group(3))
        return None if den == 0 else (-1 if match.group(1) else 1) * num / den
    match = re.fullmatch(r"(-?\d+\.?\d*)(?:\\times|\\cdot|\*)10\^\{?(-?\d+)\}?", s)
    if match:
        try:
            return float(match.group(1)) * 10.0 ** int(match.group(2))
        except OverflowError:
            return None
    return None


def numeric_equal(prediction: float, reference: float, rel_tol: float = 1e-4) -> bool:
    return math.isclose(prediction, reference, rel_tol=rel_tol)


# ---------------------------------------------------------------------------------------------------------------
# Structure


def _split_top_level(s: str, sep: str = ",") -> list[str]:
    parts, depth, current = [], 0, []
    for ch in s:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    return parts


def _is_bracketed(s: str) -> bool:
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return False
    depth = 0
    for i, ch in enumerate(s):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if depth == 0 and i < len(s) - 1:
            return False
    return True


_MATRIX = re.compile(r"\\begin\{[pbv]?matrix\}(.*)\\end\{[pbv]?matrix\}", re.DOTALL)


def _matrix_cells(s: str) -> list[list[str]] | None:
    match = _MATRIX.fullmatch(s.strip())
    if not match:
        return None
    rows = [row for row in re.split(r"\\\\", match.group(1)) if row.strip()]
    return [[cell.strip() for cell in row.split("&")] for row in rows]


# ---------------------------------------------------------------------------------------------------------------
# Comparison


def math_equal(
    prediction: str | None,
    reference: str,
    *,
    symbolic: "SymbolicChecker | None" = None,
    include_percentage: bool = True,
    rel_tol: float = 1e-4,
    _depth: int = 0,
) -> bool:
    """Whether two *normalised* answers are equal under the paper-compatible rules (see the module docstring).

    Without a `symbolic` checker the symbolic step is skipped (pure string / numeric / structural comparison).
    """
    if prediction is None or reference is None:
        return False
    pred, ref = str(prediction).strip(), str(reference).strip()
    if not pred or not ref:
        return False
    if pred == ref or pred.lower() == ref.lower():
        return True
    if _depth > 4:
        return False

    def recurse(a: str, b: str) -> bool:
        return math_equal(
            strip_string(a), strip_string(b), symbolic=symbolic, include_percentage=include_percentage,
            rel_tol=rel_tol, _depth=_depth + 1,
        )  # fmt: skip

    # Plain numbers: the percentage-tolerant comparison, and a mismatch is final.
    pred_num, ref_num = _plain_number(pred), _plain_number(ref)
    if pred_num is not None and ref_num is not None:
        candidates = [ref_num, ref_num / 100, ref_num * 100] if include_percentage else [ref_num]
        return any(numeric_equal(pred_num, c, rel_tol) for c in candidates)
    # Simple closed forms (fractions, scientific notation) evaluate without sympy.
    pred_val, ref_val = _simple_value(pred), _simple_value(ref)
    if pred_val is not None and ref_val is not None:
        return numeric_equal(pred_val, ref_val, rel_tol)

    # Tuples, intervals, lists: element by element (bracket types are not compared, as in the original grader).
    pred_inner = pred[1:-1] if _is_bracketed(pred) else pred
    ref_inner = ref[1:-1] if _is_bracketed(ref) else ref
    if (pred_inner != pred or ref_inner != ref) and pred_inner.lower() == ref_inner.lower():
        return True
    pred_parts, ref_parts = _split_top_level(pred_inner), _split_top_level(ref_inner)
    if len(ref_parts) > 1 or len(pred_parts) > 1:
        if len(pred_parts) != len(ref_parts):
            return False
        return all(recurse(p, r) for p, r in zip(pred_parts, ref_parts, strict=True))

    # Matrices: cell by cell.
    pred_cells, ref_cells = _matrix_cells(pred), _matrix_cells(ref)
    if pred_cells is not None and ref_cells is not None:
        if [len(r) for r in pred_cells] != [len(r) for r in ref_cells]:
            return False
        return all(
            recurse(p, r) for pr, rr in zip(pred_cells, ref_cells, strict=True) for p, r in zip(pr, rr, strict=True)
        )

    # Equations: compare lhs - rhs up to sign; "y = 5" against "5" compares the right-hand side.
    if pred.count("=") == 1 and ref.count("=") == 1:
        pl, pr = pred.split("=")
        rl, rr = ref.split("=")
        if symbolic is not None:
            a, b = f"{pl}-({pr})", f"{rl}-({rr})"
            return bool(symbolic.equal(a, b) or symbolic.equal(f"-({a})", b))
        return False
    if pred.count("=") == 1 and "=" not in ref:
        lhs, rhs = pred.split("=")
        if len(lhs.strip()) <= 2:
            return recurse(rhs, ref)
    if ref.count("=") == 1 and "=" not in pred:
        lhs, rhs = ref.split("=")
        if len(lhs.strip()) <= 2:
            return recurse(pred, rhs)

    if symbolic is not None:
        return bool(symbolic.equal(pred, ref))
    return False


# ---------------------------------------------------------------------------------------------------------------
# Symbolic check in a worker process with a hard timeout


def _attempt(fn, default=None):
    """`fn()`, or `default` when it raises: sympy and the LaTeX parsers raise almost anything on odd input."""
    try:
        return fn()
    except Exception:  # noqa: BLE001
        return default


def _parse_expression(text: str):
    from latex2sympy2_extended import latex2sympy
    from sympy.parsing.sympy_parser import (
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    transformations = (*standard_transformations, implicit_multiplication_application)
    parsed = _attempt(lambda: latex2sympy(text))
    if parsed is None:
        parsed = _attempt(lambda: parse_expr(text.replace("^", "**"), transformations=transformations))
    return parsed


def symbolic_equal(a: str, b: str, rel_tol: float = 1e-4) -> bool:
    """Sympy equality of two answer strings (runs in the worker; may be slow or hang on adversarial input)."""
    import sympy

    x, y = _parse_expression(a), _parse_expression(b)
    if x is None or y is None:
        return False
    if _attempt(lambda: x == y or str(x) == str(y), False):
        return True
    if isinstance(x, sympy.MatrixBase) or isinstance(y, sympy.MatrixBase):
        return bool(_attempt(lambda: x.shape == y.shape and sympy.simplify(x - y).is_zero_matrix, False))
    if _attempt(lambda: sympy.simplify(x - y) == 0, False):
        return True
    return bool(_attempt(lambda: numeric_equal(float(sympy.N(x)), float(sympy.N(y)), rel_tol), False))


def _worker_main() -> None:  # pragma: no cover - runs in the child process (`python -m evaluation.compat_grader`)
    """Serve symbolic checks: one JSON `[a, b]` per stdin line, one JSON verdict per stdout line."""
    import json
    import os
    import sys

    memory_limit_mb = int(os.environ.get("MASA_EVAL_SYMBOLIC_MEMORY_MB", "0") or 0)
    if memory_limit_mb:
        try:
            import resource

            limit = memory_limit_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        except (ImportError, ValueError, OSError):
            pass
    import sympy  # noqa: F401 - warm the imports before announcing readiness
    from latex2sympy2_extended import latex2sympy  # noqa: F401

    out = sys.stdout
    out.write('"ready"\n')
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        a, b = json.loads(line)
        try:
            result = bool(symbolic_equal(a, b))
        except BaseException:  # noqa: BLE001 - a crash in sympy is a "not equal", never a dead worker
            result = False
        out.write("true\n" if result else "false\n")
        out.flush()


class SymbolicChecker:
    """Runs [`symbolic_equal`] in a persistent worker process and kills it when a check exceeds `timeout` seconds.

    The worker is a plain `python -m evaluation.compat_grader` subprocess talking JSON lines over pipes (no
    `multiprocessing`, so callers need no `if __name__ == "__main__"` guard). A killed check returns False and
    increments `timeouts`; the next check starts a fresh worker. Verdicts are cached per `(a, b)`. Not thread-safe.
    """

    def __init__(self, timeout: float = 1.0, *, memory_limit_mb: int | None = 4096, start_timeout: float = 120.0):
        self.timeout = timeout
        self.memory_limit_mb = memory_limit_mb
        self.start_timeout = start_timeout
        self.timeouts = 0
        self.calls = 0
        self.restarts = 0
        self._cache: dict[tuple[str, str], bool] = {}
        self._process: subprocess.Popen | None = None
        self._buffer = b""

    def _readline(self, timeout: float) -> bytes | None:
        """One line from the worker's stdout, or None after `timeout` seconds or at end of file."""
        deadline = time.monotonic() + timeout
        fd = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _start(self) -> None:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        env["MASA_EVAL_SYMBOLIC_MEMORY_MB"] = str(self.memory_limit_mb or 0)
        self._buffer = b""
        self._process = subprocess.Popen(
            [sys.executable, "-m", "evaluation.compat_grader"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        if self._readline(self.start_timeout) != b'"ready"':
            self._stop()
            raise RuntimeError("the symbolic-check worker (python -m evaluation.compat_grader) did not start")

    def _stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.kill()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        for stream in (process.stdin, process.stdout):
            try:
                stream.close()
            except OSError:
                pass

    def equal(self, a: str, b: str) -> bool:
        key = (a, b)
        if key in self._cache:
            return self._cache[key]
        self.calls += 1
        if self._process is None or self._process.poll() is not None:
            self._stop()
            self._start()
        try:
            self._process.stdin.write((json.dumps([a, b]) + "\n").encode("utf-8"))
            self._process.stdin.flush()
            line = self._readline(self.timeout)
        except (BrokenPipeError, OSError):  # the worker died (e.g. out of memory)
            line = None
        if line is None:
            if self._process is not None and self._process.poll() is None:
                self.timeouts += 1
            self.restarts += 1
            self._stop()
            result = False
        else:
            result = line.strip() == b"true"
        self._cache[key] = result
        return result

    def close(self) -> None:
        if self._process is not None and self._process.poll() is None:
            try:
                self._process.stdin.close()
                self._process.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self._stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        _attempt(self._stop)


def grade(completion: str, reference: str, *, symbolic: SymbolicChecker | None = None) -> tuple[bool, str]:
    """Score one completion against one reference answer; returns `(correct, extracted_answer)`."""
    extracted = extract_answer(completion)
    return math_equal(extracted, strip_string(reference), symbolic=symbolic), extracted


if __name__ == "__main__":
    _worker_main()
