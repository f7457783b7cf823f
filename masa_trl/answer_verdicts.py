r"""In-process answer verdicts: the cases [`masa_trl.math_reward`] settles without sympy or a worker process.

Each verdict returns 1.0 or 0.0 only where that is the verdict math-verify would give, and `None` (defer to
math-verify) otherwise; `tests/test_math_reward.py` checks this against math-verify itself on a corpus of tricky
pairs (`tests/data/math_answer_pairs.txt`) and the benchmark's answers.

- [`fast_verdict`]: plain integers, simple fractions and short decimals, compared exactly with `Fraction`;
- [`identical_verdict`]: answers identical up to spacing, `\left`/`\right` and `\dfrac`;
- [`algebraic_verdict`]: numbers, surds, multiples of pi and polynomials by exact arithmetic on a LaTeX subset
  that reads them the way latex2sympy does (mixed numbers, function calls, dropped units are deferred);
- [`quick_verdict`]: the first of the three that decides.
"""

from __future__ import annotations

import functools
import math
import re
import string
from fractions import Fraction


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
