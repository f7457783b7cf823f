r"""Answer-correctness reward: the last `\boxed{}` answer checked against the gold answer with math-verify.

[`math_accuracy_reward`] is a TRL reward callable: 1.0 for a correct answer, 0.0 for a wrong or missing one, and
`None` when the gold answer itself cannot be parsed (TRL then leaves the row out of the group baseline).

It is built so that it can neither hang nor crash a training run:

- a fast path settles most answers in process, and only where its verdict is the one math-verify would give:
  plain integers, simple fractions and short decimals with [`fractions.Fraction`] ([`fast_verdict`]), answers
  identical up to spacing ([`identical_verdict`]), and numbers, surds, multiples of pi and polynomials by exact
  arithmetic on a small LaTeX subset ([`algebraic_verdict`]);
- everything else runs in a small pool of worker processes owned by a [`MathVerifier`]. Each worker calls
  math-verify in its main thread, so math-verify's own signal-based timeouts work, and the parent enforces a hard
  wall-clock deadline per item on top: a worker that does not answer in time is killed and replaced, its item
  scores 0.0, and the rest of the batch carries on with the other workers;
- verdicts are cached by (gold, extracted answer), and timeouts and parse failures are counted ([`MathVerifier.stats`])
  and, inside a trainer, logged through TRL's `log_metric` as `math_reward/*`.

Workers are forked by default: they start in milliseconds and import nothing (measured: 0.01 s for two workers and
for a replacement, against about 0.45 s per worker with "spawn" or "forkserver", which also re-import the main
script). They only run math-verify, never torch, so forking a trainer that has torch threads is safe in practice.
In the workers, latex2sympy parses with ANTLR's two-stage (SLL, then LL) strategy, which gives the same results and
is several times faster on tuples and intervals (see [`_enable_two_stage_parsing`]).

>>> from masa_trl.math_reward import math_accuracy_reward
>>> completions = [[{"role": "assistant", "content": r"So the answer is \boxed{\frac{1}{2}}."}], "I think \\boxed{3}"]
>>> math_accuracy_reward(completions, answer=["0.5", "4"])  # doctest: +SKIP
[1.0, 0.0]
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import multiprocessing
import os
import re
import signal
import string
import threading
import time
import weakref
from collections import Counter, OrderedDict, deque
from fractions import Fraction
from multiprocessing.connection import wait
from typing import Self


logger = logging.getLogger(__name__)

# Result codes sent back by the workers, alongside the score.
_OK, _GOLD_UNPARSABLE, _PRED_UNPARSABLE, _TIMEOUT, _ERROR = range(5)
_CODE_NAMES = {_GOLD_UNPARSABLE: "gold_unparsable", _PRED_UNPARSABLE: "pred_unparsable"}

# ---------------------------------------------------------------------------------------------------------------------
# Answer extraction
# ---------------------------------------------------------------------------------------------------------------------

_BRACE_OR_ESCAPE = re.compile(r"\\.|[{}]", re.DOTALL)
_BARE_ARGUMENT = re.compile(r"\s+([^\s$]+)")


def extract_boxed_answer(text: str | None) -> str | None:
    r"""The content of the last `\boxed{...}` or `\fbox{...}` in `text`, or `None` when there is none.

    Nested braces are matched (escaped braces such as `\{` do not count) in time linear in the length of the text.
    The argument-less form `\boxed 5` is also read. A last box that is never closed (a truncated completion) or that
    is empty gives `None`.

    >>> extract_boxed_answer(r"first \boxed{1}, then \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    >>> extract_boxed_answer("no answer") is None
    True
    """
    if not text:
        return None
    start = -1
    for keyword in ("\\boxed", "\\fbox"):
        position = text.rfind(keyword)
        if position > start:
            start, end = position, position + len(keyword)
    if start < 0:
        return None
    if text.startswith("{", end):
        depth = 0
        for match in _BRACE_OR_ESCAPE.finditer(text, end):
            token = match.group()
            if token == "{":
                depth += 1
            elif token == "}":
                depth -= 1
                if depth == 0:
                    return text[end + 1 : match.start()].strip() or None
        return None
    bare = _BARE_ARGUMENT.match(text, end)
    return bare.group(1) if bare else None


def completion_text(completion) -> str:
    """The text of a completion: a plain string, or the last message of a conversational completion."""
    if isinstance(completion, str):
        return completion
    if not completion:
        return ""
    content = completion[-1]["content"]
    if isinstance(content, str):
        return content
    # Multimodal content: a list of typed parts.
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


# ---------------------------------------------------------------------------------------------------------------------
# Fast path: plain integers, simple fractions and short decimals, compared exactly without sympy
# ---------------------------------------------------------------------------------------------------------------------

_INT = r"-?(?:0|[1-9]\d{0,59})"
_THOUSANDS = r"-?[1-9]\d{0,2}(?:,\d{3}){1,6}"
_DECIMAL = r"-?(?:0|[1-9]\d{0,5})\.\d{1,6}"
_POSITIVE = r"[1-9]\d{0,59}"
_INT_RE = re.compile(rf"{_INT}|{_THOUSANDS}")
_DECIMAL_RE = re.compile(_DECIMAL)
_SLASH_RE = re.compile(rf"({_INT})/({_POSITIVE})")
_FRAC_RE = re.compile(rf"(-?)\\[dt]?frac\{{({_INT})\}}\{{({_POSITIVE})\}}")
# Rounding to 6 decimals (math-verify's `float_rounding`) can make two numbers this close compare equal.
_DECIMAL_MARGIN = Fraction(2, 10**6)


def _fast_number(text: str) -> tuple[Fraction, bool] | None:
    """(value, written as a decimal) for the number forms the fast path accepts, else `None`."""
    if _INT_RE.fullmatch(text):
        return Fraction(text.replace(",", "")), False
    if _DECIMAL_RE.fullmatch(text):
        return Fraction(text), True
    if match := _SLASH_RE.fullmatch(text):
        return Fraction(int(match.group(1)), int(match.group(2))), False
    if match := _FRAC_RE.fullmatch(text):
        value = Fraction(int(match.group(2)), int(match.group(3)))
        return (-value if match.group(1) else value), False
    return None


def fast_verdict(gold: str, prediction: str | None) -> float | None:
    """1.0 / 0.0 when both sides are plain numbers and the verdict is certain, `None` to defer to math-verify.

    Percentages, units, LaTeX other than `\\frac`, and decimals within rounding distance of each other are deferred:
    math-verify rounds to 6 decimals, so `0.333333` equals `1/3` there.
    """
    gold_number = _fast_number(gold)
    if gold_number is None:
        return None
    if prediction is None:
        return 0.0
    pred_number = _fast_number(prediction)
    if pred_number is None:
        return None
    (gold_value, gold_decimal), (pred_value, pred_decimal) = gold_number, pred_number
    if gold_value == pred_value:
        return 1.0
    if not (gold_decimal or pred_decimal) or abs(gold_value - pred_value) > _DECIMAL_MARGIN:
        return 0.0
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Fast path, continued: identical answers, and exact arithmetic on a small LaTeX subset (surds, pi, polynomials)
# ---------------------------------------------------------------------------------------------------------------------
#
# Everything here must give math-verify's verdict or `None`; tests/test_math_reward.py checks it against math-verify
# on a corpus of tricky pairs. What the subset leaves out, and why, is mostly latex2sympy's reading of LaTeX:
# `2(3)` and `2\frac{1}{2}` are mixed numbers (5 and 5/2), `x(3)` and `\pi(2)` are function calls, `2^10` is 2^10,
# `2 3` is 6, and math-verify drops a trailing unit (`x+3t` is read as `x+3`), so only letters that are no unit
# are variables. Decimals are floats there and compared after rounding, so equalities involving them are left to
# math-verify, and a difference only counts when it is far above the rounding.

_IDENTITY_COMMANDS = frozenset(
    ["frac", "sqrt", "pi", "cdot", "times", "div", "infty", "cup", "circ", "text", "%", "{", "}"]
)
_IDENTITY_TOKEN = re.compile(r"\\(left|right)?([a-zA-Z]+|[^a-zA-Z])|[^\\]")
# No `!`, `_`, `|` or quotes: factorials can be slow to evaluate, and math-verify rewrites `(n)_{k}` and drops quotes.
_IDENTITY_CHARS = frozenset(string.ascii_letters + string.digits + " +-*/=<>()[],.^{}")
_SPACE_RUN = re.compile(r" +")
# Spaces next to these characters carry no meaning for math-verify (its normalisation and latex2sympy's lexer).
_SPACE_NEUTRAL = frozenset(",()[]+-=")
_SPACE_BLOCKING = frozenset("\\.^_{}")
_BARE_POWER = re.compile(r"\^(?:\{-?[0-9a-z]{1,2}\}|[0-9a-z](?![0-9])|\\circ)")
_COMMA_NUMBER = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")  # latex2sympy reads these as one number, not a set


def _normalized_answer(text: str) -> str | None:
    r"""`text` with spaces around punctuation removed, `\left(`/`\right)` unwrapped and `\dfrac` written `\frac`,
    or `None` when it is not plainly harmless for math-verify: commands other than a few arithmetic ones, `$`, `!`,
    powers other than short ones (`x^2`, `10^{12}`), no digit or letter outside command names, or over 120
    characters.

    The changes are ones that math-verify makes itself (`\left`, `\dfrac`) or spaces that its parser skips, so two
    answers with the same normalized form parse to the same object there, cheaply, and math-verify calls them
    equal."""
    if len(text) > 120 or "$" in text or not text.isascii() or not text.isprintable():
        return None
    if "^" in text and text.count("^") != len(_BARE_POWER.findall(text)):
        return None
    parts, content = [], False
    for match in _IDENTITY_TOKEN.finditer(text):
        token = match.group()
        if token[0] != "\\":
            if token not in _IDENTITY_CHARS:
                return None
            content = content or token.isalnum()
            parts.append(token)
            continue
        wrapper, name = match.groups()
        if wrapper:  # math-verify removes `\left` and `\right` before a delimiter
            if name not in ("(", ")", "[", "]"):
                return None
            parts.append(name)
            continue
        name = "frac" if name in ("dfrac", "tfrac") else name
        if name not in _IDENTITY_COMMANDS:
            return None
        parts.append("\\" + name)
    if not content or text.count("{") != text.count("}"):
        return None
    joined = "".join(parts).strip()

    def squeeze(space: re.Match) -> str:
        left, right = joined[space.start() - 1], joined[space.end()]
        if (left in _SPACE_NEUTRAL or right in _SPACE_NEUTRAL) and not (
            left in _SPACE_BLOCKING or right in _SPACE_BLOCKING or left.isalpha() or right.isalpha()
        ):
            return ""
        return space.group()

    # Inside `\text{}` spaces are part of a name.
    normalized = joined if "\\text" in joined else _SPACE_RUN.sub(squeeze, joined)
    if normalized != joined and _COMMA_NUMBER.fullmatch(normalized):
        return None  # `1, 000` is a set, `1,000` a number
    return normalized


def identical_verdict(gold: str, prediction: str | None) -> float | None:
    r"""1.0 when the prediction is the gold answer up to spacing, `\left`/`\right` and `\dfrac`, else `None`.

    Such answers parse to the same object in math-verify, which then finds them equal; [`_normalized_answer`]
    only accepts short answers made of cheap LaTeX, so that both parse, and in time.

    >>> identical_verdict("(1, 2)", r"\left(1,2\right)")
    1.0
    """
    if prediction is None:
        return None
    normalized = _normalized_answer(gold)
    return 1.0 if normalized is not None and normalized == _normalized_answer(prediction) else None


class _Unsupported(Exception):
    """Raised by the evaluator outside its LaTeX subset; the pair then goes to math-verify."""


# A value is a sum of terms coefficient * pi^k * sqrt(radicand) * monomial, as {(k, radicand, monomial): Fraction},
# with a square-free radicand and the monomial a sorted tuple of (variable, exponent). Square roots of distinct
# square-free integers, powers of pi and monomials are linearly independent over the rationals, so this form is
# unique: two values are equal exactly when their dicts are.
_Term = tuple[int, int, tuple]
_ONE: _Term = (0, 1, ())
_VARIABLES = frozenset("abknpqruvwxyz")  # not e, i (constants) nor a unit that math-verify would drop
_COMMANDS = {"frac": "frac", "dfrac": "frac", "tfrac": "frac", "sqrt": "sqrt", "pi": "pi"}
_COMMANDS |= {"cdot": "*", "times": "*", "div": "/", "left(": "(", "right)": ")"}
_TOKEN_RE = re.compile(r" *(?:(\d+(?:\.\d+)?)|\\(left\(|right\)|[a-zA-Z]+)|([a-zA-Z])|([-+*/^(){}]))")
_MAX_TERMS, _MAX_BITS, _MAX_PI, _MAX_RADICAND, _MAX_DEGREE = 32, 600, 8, 10**12, 8


def _tokenize(text: str) -> list[tuple[str, str]]:
    """(kind, text) tokens: "num", "var", or an operator, bracket or command name as kind."""
    tokens, position, end = [], 0, len(text.rstrip(" "))
    while position < end:
        match = _TOKEN_RE.match(text, position)
        if match is None:
            raise _Unsupported
        number, command, letter, char = match.groups()
        if number is not None:
            tokens.append(("num", number))
        elif command is not None:
            if command not in _COMMANDS:
                raise _Unsupported
            tokens.append((_COMMANDS[command], command))
        elif letter is not None:
            if letter not in _VARIABLES:
                raise _Unsupported
            tokens.append(("var", letter))
        else:
            tokens.append((char, char))
        position = match.end()
    return tokens


@functools.lru_cache(maxsize=4096)
def _split_square(n: int) -> tuple[int, int]:
    """(a, b) with n = a^2 * b and b square-free, for 0 < n <= _MAX_RADICAND."""
    outside, core, p = 1, 1, 2
    while p * p * p <= n:  # after this, n has at most two prime factors, each above its cube root
        while n % (p * p) == 0:
            n //= p * p
            outside *= p
        if n % p == 0:
            n //= p
            core *= p
        p += 1 if p == 2 else 2
    root = math.isqrt(n)
    if root * root == n:
        return outside * root, core
    return outside, core * n


def _check(value: dict) -> dict:
    """`value`, unless it outgrows the bounds that keep this evaluator (and math-verify on it) cheap."""
    if len(value) > _MAX_TERMS:
        raise _Unsupported
    for (pi_power, radicand, monomial), coefficient in value.items():
        if (
            abs(pi_power) > _MAX_PI
            or radicand > _MAX_RADICAND
            or sum(exponent for _, exponent in monomial) > _MAX_DEGREE
            or abs(coefficient.numerator).bit_length() > _MAX_BITS
            or coefficient.denominator.bit_length() > _MAX_BITS
        ):
            raise _Unsupported
    return value


def _add(a: dict, b: dict, sign: int = 1) -> dict:
    total = dict(a)
    for term, coefficient in b.items():
        coefficient = total.get(term, 0) + sign * coefficient
        if coefficient:
            total[term] = coefficient
        else:
            total.pop(term, None)
    return _check(total)


def _multiply(a: dict, b: dict) -> dict:
    product: dict = {}
    for (pi_a, root_a, mono_a), coef_a in a.items():
        for (pi_b, root_b, mono_b), coef_b in b.items():
            common = math.gcd(root_a, root_b)  # sqrt(a) sqrt(b) = g sqrt(a/g * b/g), square-free again
            exponents = dict(mono_a)
            for variable, exponent in mono_b:
                exponents[variable] = exponents.get(variable, 0) + exponent
            term = (pi_a + pi_b, (root_a // common) * (root_b // common), tuple(sorted(exponents.items())))
            coefficient = product.get(term, 0) + coef_a * coef_b * common
            if coefficient:
                product[term] = coefficient
            else:
                product.pop(term, None)
        _check(product)
    return product


def _constant(value: dict) -> bool:
    return all(not monomial for _, _, monomial in value)


def _rational(value: dict) -> bool:
    return all(term == _ONE for term in value)


def _inverse(value: dict) -> dict:
    """1 / value for a single non-zero constant term; anything else is left to math-verify."""
    if len(value) != 1 or not _constant(value):
        raise _Unsupported
    (((pi_power, radicand, _), coefficient),) = value.items()
    return _check({(-pi_power, radicand, ()): 1 / (coefficient * radicand)})


def _sqrt(value: dict) -> dict:
    """Square root of a non-negative rational."""
    if not value:
        return {}
    if not _rational(value) or value[_ONE] < 0:
        raise _Unsupported
    number = value[_ONE]
    radicand = number.numerator * number.denominator  # sqrt(p/q) = sqrt(pq) / q
    if radicand > _MAX_RADICAND:
        raise _Unsupported
    outside, core = _split_square(radicand)
    return {(0, core, ()): Fraction(outside, number.denominator)}


def _power(base: dict, exponent: dict) -> dict:
    if not _rational(exponent) or (exponent and exponent[_ONE].denominator != 1):
        raise _Unsupported
    n = int(exponent.get(_ONE, 0))
    if n < 0:
        base, n = _inverse(base), -n
    if n == 0 and not base or n > (64 if len(base) == 1 else 6):
        raise _Unsupported
    result = {_ONE: Fraction(1)}
    for _ in range(n):
        result = _multiply(result, base)
    return result


class _Evaluator:
    """Recursive-descent reader of the subset, mirroring latex2sympy's grammar: `expr` is a sum, `product` joins
    with `*`, `\\cdot`, `\\times`, `/`, `\\div`, and implicit multiplication binds tighter (`1/2\\pi` is 1/(2 pi)).
    A sign is only read at the start of an expression; `decimal` records whether a decimal number was read."""

    def __init__(self, text: str):
        self.tokens = _tokenize(text)
        self.position = 0
        self.decimal = False

    def value(self) -> dict:
        value = self.expr()
        if self.position != len(self.tokens):
            raise _Unsupported
        return value

    def peek(self) -> str | None:
        return self.tokens[self.position][0] if self.position < len(self.tokens) else None

    def take(self, kind: str) -> str:
        if self.peek() != kind:
            raise _Unsupported
        self.position += 1
        return self.tokens[self.position - 1][1]

    def expr(self) -> dict:
        sign = -1 if self.peek() == "-" else 1
        if self.peek() in ("+", "-"):
            self.position += 1
        value = self.product()
        if sign < 0:
            value = {term: -coefficient for term, coefficient in value.items()}
        while self.peek() in ("+", "-"):
            sign = 1 if self.take(self.peek()) == "+" else -1
            value = _add(value, self.product(), sign)
        return value

    def product(self) -> dict:
        value = self.implicit_product()[0]
        while (operator := self.peek()) in ("*", "/"):
            self.position += 1
            if operator == "*":
                value = _multiply(value, self.implicit_product()[0])
                continue
            divisor, factors = self.implicit_product()
            if factors > 1:  # `a/2\pi`: latex2sympy divides by the whole product, readers often do not
                raise _Unsupported
            value = _multiply(value, _inverse(divisor))
        return value

    def implicit_product(self) -> tuple[dict, int]:
        factors = [self.postfix()]
        while True:
            kind, previous = self.peek(), factors[-1][1]
            if kind in ("num", "{") or kind == "var" and previous == "var":
                raise _Unsupported  # `2 3` is 6 and `xy` may be one name in math-verify
            if kind == "(" and previous in ("var", "pi"):
                raise _Unsupported  # `x(3)` and `\pi(2)` are function calls
            if kind not in ("var", "(", "frac", "sqrt", "pi"):
                break
            factors.append(self.postfix())
        values = [value for value, _ in factors]
        rest = values[-1]
        for value in reversed(values[:-1]):
            # latex2sympy reads an integer followed by a positive rational as a mixed number: `2(3)` is 5.
            if _rational(value) and _rational(rest):
                raise _Unsupported
            rest = _multiply(value, rest)
        return rest, len(values)

    def postfix(self) -> tuple[dict, str]:
        """(value, how it ends: "var", "pi" or "other") of a primary with an optional integer power."""
        value, ending = self.primary()
        if self.peek() == "^":
            self.position += 1
            if self.peek() == "{":
                exponent = self.group()
            else:
                digit = self.take("num")
                if len(digit) != 1:  # `2^10` is 2^10 in latex2sympy, 2^1 * 0 in TeX
                    raise _Unsupported
                exponent = {_ONE: Fraction(int(digit))} if digit != "0" else {}
            value, ending = _power(value, exponent), "other"
            if self.peek() == "^":
                raise _Unsupported
        return value, ending

    def group(self) -> dict:
        self.take("{")
        value = self.expr()
        self.take("}")
        return value

    def primary(self) -> tuple[dict, str]:
        kind = self.peek()
        if kind == "num":
            return self.number(self.take("num")), "other"
        if kind == "var":
            return {(0, 1, ((self.take("var"), 1),)): Fraction(1)}, "var"
        if kind == "(":
            self.position += 1
            value = self.expr()
            self.take(")")
            return value, "other"
        if kind == "{":
            return self.group(), "other"
        self.position += 1
        if kind == "pi":
            return {(1, 1, ()): Fraction(1)}, "pi"
        if kind == "frac":
            numerator = self.group()
            return _multiply(numerator, _inverse(self.group())), "other"
        if kind == "sqrt":
            if self.peek() == "{":
                return _sqrt(self.group()), "other"
            digit = self.take("num")  # math-verify reads `\sqrt23` as sqrt(2) * 3
            if len(digit) != 1:
                raise _Unsupported
            return _sqrt({_ONE: Fraction(int(digit))} if digit != "0" else {}), "other"
        raise _Unsupported

    def number(self, text: str) -> dict:
        whole, _, decimals = text.partition(".")
        if len(whole) > 60 or whole.startswith("0") and len(whole) > 1:
            raise _Unsupported
        if decimals:
            if len(whole.lstrip("0")) + len(decimals) > 15:  # beyond a float's precision
                raise _Unsupported
            self.decimal = True
        value = Fraction(text)
        return {_ONE: value} if value else {}


def _evaluate(text: str) -> tuple[dict, bool] | None:
    """(exact value, whether a decimal was read) of `text`, or `None` outside the subset."""
    if len(text) > 200 or text.count("(") + text.count("{") > 24:  # keeps the recursion shallow
        return None
    try:
        evaluator = _Evaluator(text)
        return evaluator.value(), evaluator.decimal
    except (_Unsupported, ZeroDivisionError, OverflowError, RecursionError):
        return None


def _magnitudes(value: dict) -> list[float]:
    """Absolute values of the terms of a value, as floats."""
    return [abs(float(c)) * math.sqrt(radicand) * math.pi**k for (k, radicand, _), c in value.items()]


def _numeric(value: dict) -> float:
    """A constant value as a float."""
    return sum(float(c) * math.sqrt(radicand) * math.pi**k for (k, radicand, _), c in value.items())


def _lone_variable(value: dict) -> bool:
    """Whether the value is a single variable, which math-verify compares by name rather than by value."""
    if len(value) != 1:
        return False
    (((pi_power, radicand, monomial), coefficient),) = value.items()
    return (pi_power, radicand, coefficient) == (0, 1, 1) and len(monomial) == 1 and monomial[0][1] == 1


def algebraic_verdict(gold: str, prediction: str | None) -> float | None:
    r"""1.0 / 0.0 where both answers are in the evaluator's subset (numbers, `\frac`, `\sqrt`, `\pi`, + - * / ^,
    brackets, implicit multiplication, polynomials in a few variables) and math-verify's verdict is certain; `None`
    to defer to math-verify.

    Equal values give 1.0, except with decimals (floats in math-verify) or where one side is a lone variable
    (math-verify compares symbols by name). Different values give 0.0 where the difference is far above the
    6-decimal rounding and the 15-digit `evalf` of math-verify, and polynomials only with coefficients that
    `evalf` does not round to zero.

    >>> algebraic_verdict(r"2\sqrt{2}", r"\sqrt{8}"), algebraic_verdict(r"\frac{\pi}{3}", "1.05")
    (1.0, 0.0)
    """
    if (gold_result := _evaluate(gold)) is None:
        return None
    if prediction is None:
        return 0.0  # the gold answer is in the subset, so math-verify parses it
    if (pred_result := _evaluate(prediction)) is None:
        return None
    (gold_value, gold_decimal), (pred_value, pred_decimal) = gold_result, pred_result
    decimal = gold_decimal or pred_decimal
    try:
        difference = _add(gold_value, pred_value, -1)
    except _Unsupported:
        return None
    if not difference:
        return None if decimal or _lone_variable(gold_value) or _lone_variable(pred_value) else 1.0
    if not (_constant(gold_value) and _constant(pred_value)):
        if decimal:
            return None
        sizes = _magnitudes(gold_value) + _magnitudes(pred_value) + _magnitudes(difference)
        return 0.0 if all(1e-6 <= size <= 1e30 for size in sizes) else None
    # Floats carry 16 digits: `error` bounds what the sums below lose to rounding and cancellation.
    error = 1e-12 * sum(_magnitudes(gold_value) + _magnitudes(pred_value))
    scale = max(1.0, abs(_numeric(gold_value)), abs(_numeric(pred_value)))
    return 0.0 if abs(_numeric(difference)) - error > 1e-5 * scale else None


def quick_verdict(gold: str, prediction: str | None) -> float | None:
    """The in-process verdict of [`fast_verdict`], [`identical_verdict`] or [`algebraic_verdict`], first that
    decides; `None` to defer to math-verify."""
    for verdict in (fast_verdict, identical_verdict, algebraic_verdict):
        if (result := verdict(gold, prediction)) is not None:
            return result
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Worker process: math-verify only
# ---------------------------------------------------------------------------------------------------------------------


def _prepare_gold(gold) -> str | None:
    r"""The gold answer as a bare string; a `\boxed{}` inside it is unwrapped."""
    if gold is None:
        return None
    gold = str(gold).strip()
    if "\\boxed" in gold or "\\fbox" in gold:
        gold = extract_boxed_answer(gold) or gold
    return gold or None


class _MathVerifyRunner:
    """Calls math-verify for one (gold, prediction) pair at a time; lives in a worker process."""

    def __init__(self, signal_timeout: int):
        from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
        from math_verify.errors import TimeoutException

        self.parse, self.verify, self.timeout_exception = parse, verify, TimeoutException
        self.signal_timeout = signal_timeout
        # Predictions are boxed answers: LaTeX only, read from the box, with math-verify's default normalisation
        # (units dropped, shorthand such as `\frac12` fixed). Bare golds are boxed the same way, so both sides go
        # through the same normalisation.
        self.boxed_config = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
        self.text_config = [LatexExtractionConfig(), ExprExtractionConfig()]
        self.gold_cache: dict[str, list] = {}
        self.timed_out = False

        runner = self

        class _TimeoutFlag(logging.Filter):
            """Turns math-verify's "Timeout during ..." warnings into a flag, and drops all its log records."""

            def filter(self, record):
                if str(record.msg).startswith("Timeout"):
                    runner.timed_out = True
                return False

        for name in ("math_verify.parser", "math_verify.grader"):
            logging.getLogger(name).setLevel(logging.WARNING)  # the filter only sees records that are created
            logging.getLogger(name).addFilter(_TimeoutFlag())
        logging.getLogger("latex2sympy2_extended").setLevel(logging.CRITICAL)

    def _parse(self, text: str, config) -> list:
        # math-verify returns [] on errors and logs (then flags, see above) its timeouts.
        return self.parse(text, extraction_config=config, parsing_timeout=self.signal_timeout)

    def __call__(self, gold: str, prediction: str | None) -> tuple[float | None, int]:
        self.timed_out = False
        try:
            gold_parsed = self.gold_cache.get(gold)
            if gold_parsed is None:
                if "$" in gold or "\\(" in gold or "\\[" in gold:
                    gold_parsed = self._parse(gold, self.text_config)
                else:
                    gold_parsed = self._parse(f"$\\boxed{{{gold}}}$", self.boxed_config)
                if self.timed_out:
                    return 0.0, _TIMEOUT
                if len(self.gold_cache) >= 4096:
                    self.gold_cache.clear()
                self.gold_cache[gold] = gold_parsed
            if not gold_parsed:
                return None, _GOLD_UNPARSABLE
            if prediction is None:
                return 0.0, _OK
            pred_parsed = self._parse(f"$\\boxed{{{prediction}}}$", self.boxed_config)
            if not pred_parsed:
                return 0.0, _TIMEOUT if self.timed_out else _PRED_UNPARSABLE
            correct = self.verify(gold_parsed, pred_parsed, timeout_seconds=self.signal_timeout)
            if self.timed_out:
                return 0.0, _TIMEOUT
            return (1.0 if correct else 0.0), _OK
        except self.timeout_exception:  # derives from BaseException; an alarm that fired outside math-verify's guards
            return 0.0, _TIMEOUT
        except Exception:  # noqa: BLE001  (sympy can raise anything; the worker must survive and answer)
            return 0.0, _ERROR


def _enable_two_stage_parsing() -> bool:
    """Make latex2sympy's ANTLR parser try the fast SLL prediction mode first, and re-parse in its usual LL mode only
    when that fails (the two-stage strategy of the ANTLR documentation). ANTLR guarantees that an SLL parse that
    succeeds gives the tree LL would give, and latex2sympy raises on any syntax error, so results are unchanged;
    tuples and intervals parse about 20 times faster. Applied in worker processes only; a no-op (False) if the
    internals it relies on are not there."""
    try:
        from antlr4.atn.PredictionMode import PredictionMode
        from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy

        full_parse, create_parser = _Latex2Sympy.parse, _Latex2Sympy.create_parser
    except (ImportError, AttributeError):
        return False
    if getattr(full_parse, "two_stage", False):
        return True

    def create_sll_parser(self, latex_str):
        parser = create_parser(self, latex_str)
        if getattr(self, "_sll_stage", False):
            parser._interp.predictionMode = PredictionMode.SLL
        return parser

    def two_stage_parse(self, latex_str):
        if getattr(self, "_sll_stage", False):  # a nested parse within the SLL stage
            return full_parse(self, latex_str)
        self._sll_stage = True
        try:
            return full_parse(self, latex_str)
        except Exception:  # noqa: BLE001  (a syntax error or a conversion failure: redo it all the usual way)
            self._sll_stage = False
            return full_parse(self, latex_str)
        finally:
            self._sll_stage = False

    two_stage_parse.two_stage = True
    _Latex2Sympy.create_parser, _Latex2Sympy.parse = create_sll_parser, two_stage_parse
    return True


def _limit_memory(max_memory_mb: int | None) -> None:
    """Cap the worker's address space at its current size plus `max_memory_mb` (Linux), so that a runaway sympy
    computation raises MemoryError instead of calling the OOM killer onto the trainer."""
    if not max_memory_mb:
        return
    try:
        import resource

        with open("/proc/self/statm") as f:
            current = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = current + max_memory_mb * 2**20
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (OSError, ValueError, ImportError):
        pass


def _worker_main(
    conn, signal_timeout: int, max_memory_mb: int | None, two_stage_parsing: bool, inherited_fds: list[int]
) -> None:
    """Worker loop: receive lists of (item id, gold, prediction), answer (item id, (score, code)) per item."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business
    # After a fork, release the parent's ends of all workers' pipes (this one's included), so that each worker sees
    # EOF when the parent dies. They are pointed at /dev/null rather than closed, so that their numbers are not reused.
    if inherited_fds:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in inherited_fds:
            os.dup2(devnull, fd)
        os.close(devnull)
    _limit_memory(max_memory_mb)
    runner = _MathVerifyRunner(signal_timeout)
    if two_stage_parsing:
        _enable_two_stage_parsing()
    conn.send("ready")
    while True:
        try:
            chunk = conn.recv()
        except (EOFError, OSError):
            return
        if chunk is None:
            return
        for item_id, gold, prediction in chunk:
            conn.send((item_id, runner(gold, prediction)))


# ---------------------------------------------------------------------------------------------------------------------
# Parent side: worker pool with per-item deadlines, cache, counters
# ---------------------------------------------------------------------------------------------------------------------

_PARENT_FDS: set[int] = set()  # parent ends of all workers' pipes, closed in forked children


class _WorkerStartError(RuntimeError):
    pass


class _Worker:
    def __init__(self, context, signal_timeout: int, max_memory_mb: int | None, two_stage_parsing: bool):
        self.conn, child_conn = context.Pipe()
        inherited = sorted(_PARENT_FDS | {self.conn.fileno()}) if context.get_start_method() == "fork" else []
        self.process = context.Process(
            target=_worker_main,
            args=(child_conn, signal_timeout, max_memory_mb, two_stage_parsing, inherited),
            name="math-verify-worker",
            daemon=True,
        )
        self.process.start()
        child_conn.close()
        self.owner_pid = os.getpid()  # a process forked from the owner must not stop the owner's workers
        self.fd = self.conn.fileno()
        _PARENT_FDS.add(self.fd)
        self.ready = False
        self.started = time.monotonic()
        self.outstanding: deque = deque()  # items sent and not answered, in order
        self.outstanding_chars = 0
        self.head_started = 0.0  # when the worker started on the first outstanding item

    def kill(self) -> None:
        if os.getpid() != self.owner_pid:
            return
        _PARENT_FDS.discard(self.fd)
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=5)
        self.conn.close()

    def stop(self) -> None:
        if os.getpid() != self.owner_pid:
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(timeout=1)
        self.kill()


class MathVerifier:
    r"""Scores (gold, predicted answer) pairs with math-verify, in a pool of worker processes that cannot hang.

    Args:
        num_workers (`int`, *optional*):
            Worker processes; defaults to `min(2, os.cpu_count())`.
        timeout (`float`, *optional*, defaults to `5.0`):
            Hard wall-clock limit in seconds for one pair. A worker that exceeds it is killed and replaced, and the
            pair scores 0.0. Inside the worker, math-verify's own timeouts are set to about half of it, so that most
            slow pairs give up there and the worker survives.
        cache_size (`int`, *optional*, defaults to `100_000`):
            Verdicts kept in the LRU cache keyed by (gold, prediction); 0 disables the cache.
        fast_path (`bool`, *optional*, defaults to `True`):
            Settle what [`quick_verdict`] can (numbers, surds, multiples of pi, polynomials, identical answers) in
            process, without math-verify.
        chunk_size (`int`, *optional*, defaults to `16`):
            Pairs per message to a worker.
        start_method (`str`, *optional*):
            multiprocessing start method for the workers; defaults to `"fork"` where available (a worker then starts
            in milliseconds and imports nothing), else `"spawn"`. `"forkserver"` and `"spawn"` also work, at about
            a second per (re)start.
        max_memory_mb (`int`, *optional*, defaults to `4096`):
            Extra address space a worker may allocate (Linux), so that a runaway computation fails inside the
            worker; `None` for no limit.
        two_stage_parsing (`bool`, *optional*, defaults to `True`):
            In the workers, let latex2sympy's ANTLR parser try its fast SLL mode before the full LL mode; same
            results, several times faster on tuples, intervals and other ambiguous-looking LaTeX.

    `verify_batch(golds, predictions)` takes bare gold answers and extracted predictions (`None` for a completion
    without an answer) and returns 1.0 / 0.0, or `None` where the gold answer cannot be parsed. The verifier is a
    context manager; [`close`] stops the workers, which also happens at interpreter exit.
    """

    def __init__(
        self,
        num_workers: int | None = None,
        timeout: float = 5.0,
        cache_size: int = 100_000,
        fast_path: bool = True,
        chunk_size: int = 16,
        start_method: str | None = None,
        max_memory_mb: int | None = 4096,
        two_stage_parsing: bool = True,
    ):
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}.")
        self.num_workers = num_workers or min(2, os.cpu_count() or 1)
        self.timeout = float(timeout)
        self.signal_timeout = max(1, int(self.timeout / 2))  # math-verify's alarms take whole seconds
        self.cache_size = cache_size
        self.fast_path = fast_path
        self.chunk_size = max(1, chunk_size)
        if start_method is None:
            start_method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        self.context = multiprocessing.get_context(start_method)
        self.max_memory_mb = max_memory_mb
        self.two_stage_parsing = two_stage_parsing
        self._cache: OrderedDict = OrderedDict()
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        self._stats: Counter = Counter()
        self._pool_events: Counter = Counter()  # kills and restarts during a batch, folded into its counters
        # Stops the workers when the verifier is garbage-collected, and at interpreter exit.
        self._finalizer = weakref.finalize(self, _stop_workers, self._workers)

    # -- public API ---------------------------------------------------------------------------------------------------

    def verify_batch(self, golds: list[str], predictions: list[str | None]) -> list[float | None]:
        """1.0 / 0.0 per pair, `None` where the gold answer cannot be parsed; a `None` prediction scores 0.0."""
        return self._verify_batch(golds, predictions)[0]

    def stats(self) -> dict[str, int]:
        """Cumulative counters: `items`, `fast_path`, `cache_hits`, `verified` (pairs sent to math-verify),
        `timeouts` (math-verify's own plus `hard_timeouts`, the pairs whose worker was killed), `gold_unparsable`,
        `pred_unparsable`, `errors` and `worker_restarts`."""
        keys = ["items", "fast_path", "cache_hits", "verified", "timeouts", "hard_timeouts", "gold_unparsable"]
        keys += ["pred_unparsable", "errors", "worker_restarts"]
        return {key: self._stats[key] for key in keys}

    def clear_cache(self) -> None:
        self._cache.clear()

    def start(self) -> None:
        """Start the workers now rather than on the first batch that needs them, and wait until they are ready."""
        with self._lock:
            self._ensure_workers()
            self._wait_ready()

    def close(self) -> None:
        """Stop the workers. The verifier restarts them if it is used again."""
        with self._lock:
            _stop_workers(self._workers)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- batch logic --------------------------------------------------------------------------------------------------

    def _verify_batch(self, golds, predictions) -> tuple[list[float | None], Counter]:
        """Scores plus this call's counters."""
        if len(golds) != len(predictions):
            raise ValueError(f"Got {len(golds)} gold answers for {len(predictions)} predictions.")
        with self._lock:
            counts: Counter = Counter(items=len(golds))
            scores: list[float | None] = [None] * len(golds)
            todo: dict[tuple, list[int]] = {}  # cache key -> batch positions, first one sent to a worker
            jobs: list[tuple[tuple, str, str | None]] = []
            for index, (raw_gold, prediction) in enumerate(zip(golds, predictions, strict=True)):
                gold = _prepare_gold(raw_gold)
                if gold is None:
                    counts["gold_unparsable"] += 1
                    continue
                if prediction is not None:
                    prediction = prediction.strip() or None
                key = (_key_part(gold), _key_part(prediction))
                if key in todo:
                    todo[key].append(index)
                    continue
                if key in self._cache:
                    self._cache.move_to_end(key)
                    scores[index] = self._cache[key]
                    counts["cache_hits"] += 1
                    counts["gold_unparsable"] += scores[index] is None
                    continue
                verdict = quick_verdict(gold, prediction) if self.fast_path else None
                if verdict is not None:
                    scores[index] = verdict
                    counts["fast_path"] += 1
                    self._remember(key, verdict)
                    continue
                todo[key] = [index]
                jobs.append((key, gold, prediction))

            if jobs:
                counts["verified"] += len(jobs)
                for key, (score, code) in self._run_jobs(jobs).items():
                    if code == _GOLD_UNPARSABLE or code == _PRED_UNPARSABLE:
                        counts[_CODE_NAMES[code]] += len(todo[key])
                    elif code == _TIMEOUT or code == _ERROR:
                        counts["timeouts" if code == _TIMEOUT else "errors"] += 1  # events, not positions
                    for index in todo[key]:
                        scores[index] = score
                    self._remember(key, score)
                counts["cache_hits"] += sum(len(indices) - 1 for indices in todo.values())

            counts.update(self._pool_events)
            self._pool_events.clear()
            self._stats.update(counts)
            if counts["timeouts"] or counts["errors"]:
                logger.warning(
                    "math-verify timed out on %d and failed on %d of %d answers; they score 0.",
                    counts["timeouts"],
                    counts["errors"],
                    len(golds),
                )
            if counts["gold_unparsable"] or counts["pred_unparsable"]:
                logger.debug(
                    "Unparsable: %d gold answers, %d predictions.",
                    counts["gold_unparsable"],
                    counts["pred_unparsable"],
                )
            return scores, counts

    def _remember(self, key, score) -> None:
        if self.cache_size <= 0:
            return
        self._cache[key] = score
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    # -- worker pool --------------------------------------------------------------------------------------------------

    def _ensure_workers(self) -> None:
        # Workers inherited through a fork of the owning process belong to the owner: start our own.
        self._workers[:] = [w for w in self._workers if w.owner_pid == os.getpid() and w.process.is_alive()]
        if self.context.get_start_method() == "fork":
            import math_verify  # noqa: F401  (imported once here, so that forked workers start with it loaded)

        while len(self._workers) < self.num_workers:
            self._workers.append(
                _Worker(self.context, self.signal_timeout, self.max_memory_mb, self.two_stage_parsing)
            )

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self._workers.remove(worker)
        self._workers.append(_Worker(self.context, self.signal_timeout, self.max_memory_mb, self.two_stage_parsing))
        self._pool_events["worker_restarts"] += 1

    def _wait_ready(self, limit: float = 120.0) -> None:
        deadline = time.monotonic() + limit
        while not all(worker.ready for worker in self._workers):
            waiting = [worker for worker in self._workers if not worker.ready]
            ready = wait([worker.conn for worker in waiting], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise _WorkerStartError(f"math-verify workers did not start within {limit:.0f} s.")
            for worker in waiting:
                if worker.conn in ready:
                    self._read_ready(worker)

    def _read_ready(self, worker: _Worker) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            message = None
        if message != "ready":
            worker.process.join(timeout=1)
            raise _WorkerStartError(
                f"A math-verify worker exited during start-up (exit code {worker.process.exitcode}); its traceback is "
                "above. With the 'spawn' or 'forkserver' start method, the main script must guard its entry point "
                "with `if __name__ == '__main__':`."
            )
        worker.ready = True

    def _send(self, worker: _Worker, queue: deque, pending_total: int) -> None:
        """Send `worker` its next chunk. A chunk goes to a busy worker only while the pipe buffer can take it without
        blocking (a hung worker does not read), so the parent never blocks on a send."""
        share = math.ceil(pending_total / self.num_workers)
        size = min(self.chunk_size, max(1, share)) - len(worker.outstanding)
        chunk, chars = [], 0
        while queue and len(chunk) < size:
            job = queue[0]
            job_chars = len(job[1]) + len(job[2] or "")
            if (worker.outstanding or chunk) and worker.outstanding_chars + chars + job_chars > 8192:
                break
            chunk.append(queue.popleft())
            chars += job_chars
        if not chunk:
            return
        try:
            worker.conn.send([(id(job), job[1], job[2]) for job in chunk])
        except OSError:  # the worker died; its chunk goes back to the queue
            queue.extendleft(reversed(chunk))
            raise
        if not worker.outstanding:
            worker.head_started = time.monotonic()
        worker.outstanding.extend(chunk)
        worker.outstanding_chars += chars

    def _run_jobs(self, jobs: list) -> dict:
        """(score, code) per job key, computed by the workers; each job gets at most `timeout` seconds of a worker."""
        self._ensure_workers()
        self._wait_ready()
        queue = deque(jobs)
        results: dict = {}
        while queue or any(worker.outstanding for worker in self._workers):
            for worker in list(self._workers):
                if not worker.ready or len(worker.outstanding) > self.chunk_size // 2 or not queue:
                    continue
                try:
                    self._send(worker, queue, len(queue) + sum(len(w.outstanding) for w in self._workers))
                except OSError:
                    self._crashed(worker, queue, results)
            busy = [worker for worker in self._workers if worker.outstanding or not worker.ready]
            now = time.monotonic()
            deadlines = [worker.head_started + self.timeout for worker in busy if worker.outstanding]
            deadlines += [worker.started + 120.0 for worker in busy if not worker.ready]
            ready = wait([worker.conn for worker in busy], timeout=max(0.0, min(deadlines) - now)) if busy else []
            for worker in busy:
                if worker.conn not in ready:
                    continue
                if not worker.ready:
                    self._read_ready(worker)
                    continue
                try:
                    while worker.conn.poll():
                        item_id, result = worker.conn.recv()
                        job = worker.outstanding.popleft()
                        assert item_id == id(job), "math-verify worker answered out of order"
                        worker.outstanding_chars -= len(job[1]) + len(job[2] or "")
                        worker.head_started = time.monotonic()
                        results[job[0]] = result
                except (EOFError, OSError):
                    self._crashed(worker, queue, results)
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.outstanding and now >= worker.head_started + self.timeout:
                    self._hung(worker, queue, results)
                elif not worker.ready and now >= worker.started + 120.0:
                    raise _WorkerStartError("A math-verify worker did not start within 120 s.")
        return results

    def _give_up_on_head(self, worker: _Worker, queue: deque, results: dict, code: int) -> tuple:
        job = worker.outstanding.popleft()
        results[job[0]] = (0.0, code)
        queue.extendleft(reversed(worker.outstanding))  # the rest of its chunk goes to the front of the queue
        worker.outstanding.clear()
        self._replace(worker)
        return job

    def _hung(self, worker: _Worker, queue: deque, results: dict) -> None:
        job = self._give_up_on_head(worker, queue, results, _TIMEOUT)
        self._pool_events["hard_timeouts"] += 1
        logger.warning(
            "math-verify took more than %.1f s on gold %.80r vs prediction %.200r; its worker was killed, the "
            "prediction scores 0.",
            self.timeout,
            job[1],
            job[2],
        )

    def _crashed(self, worker: _Worker, queue: deque, results: dict) -> None:
        if not worker.outstanding:
            self._replace(worker)
            return
        job = self._give_up_on_head(worker, queue, results, _ERROR)
        logger.warning(
            "A math-verify worker died (exit code %s) on gold %.80r vs prediction %.200r; the prediction scores 0.",
            worker.process.exitcode,
            job[1],
            job[2],
        )


def _key_part(text: str | None):
    """Cache key part; long strings (pathological answers) are stored as a digest."""
    if text is None or len(text) <= 256:
        return text
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _stop_workers(workers: list[_Worker]) -> None:
    for worker in workers:
        worker.stop()
    workers.clear()


# ---------------------------------------------------------------------------------------------------------------------
# Module-level helpers and the TRL reward
# ---------------------------------------------------------------------------------------------------------------------

_default_verifier: MathVerifier | None = None
_default_lock = threading.Lock()


def get_default_verifier() -> MathVerifier:
    """The process-wide [`MathVerifier`] used by [`math_accuracy_reward`] and [`verify_answers`], created on first use."""
    global _default_verifier
    with _default_lock:
        if _default_verifier is None:
            _default_verifier = MathVerifier()
        return _default_verifier


def verify_answers(golds: list[str], completions: list) -> list[float | None]:
    r"""1.0 / 0.0 per completion (string or conversational), `None` where the gold answer cannot be parsed.

    The answer is the last `\boxed{}` of each completion; completions without one score 0.0.
    """
    predictions = [extract_boxed_answer(completion_text(completion)) for completion in completions]
    return get_default_verifier().verify_batch(list(golds), predictions)


def math_accuracy_reward(completions: list, answer: list[str], log_metric=None, **kwargs) -> list[float | None]:
    r"""TRL reward: 1.0 when the last `\boxed{}` answer of a completion equals the `answer` column per math-verify.

    A completion without a boxed answer scores 0.0; a row whose gold answer cannot be parsed gets `None`, which TRL
    leaves out of the group baseline. Inside a trainer, `log_metric` receives, per call, `math_reward/timeouts` and
    `math_reward/gold_unparsable` (counts) and `math_reward/no_boxed` (share of completions without a boxed answer).
    Other keyword arguments (`prompts`, `completion_ids`, `trainer_state`, other dataset columns) are ignored.

    >>> math_accuracy_reward([r"\boxed{\frac{1}{2}}", "no answer"], answer=["0.5", "0.5"])  # doctest: +SKIP
    [1.0, 0.0]
    """
    predictions = [extract_boxed_answer(completion_text(completion)) for completion in completions]
    scores, counts = get_default_verifier()._verify_batch(list(answer), predictions)
    if log_metric is not None:
        no_boxed = sum(prediction is None for prediction in predictions)
        log_metric("math_reward/timeouts", float(counts["timeouts"]))
        log_metric("math_reward/gold_unparsable", float(counts["gold_unparsable"]))
        log_metric("math_reward/no_boxed", no_boxed / max(1, len(predictions)))
    return scores
