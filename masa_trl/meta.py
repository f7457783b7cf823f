"""Parsing and writing of MASA meta predictions.

A meta rollout answers the meta prompt (see [`~masa_trl.templates.meta_prompt`]) with reasoning between `<meta>` and
`</meta>`, followed by a JSON object such as `{"math_notion": ["modular arithmetic"], "pass_rate": 5,
"solution_length": 900}`. [`parse_meta_prediction`] turns that text into a [`MetaPrediction`];
[`format_meta_prediction`] writes the canonical text, e.g. for expert trajectories.

The parser is tolerant about layout and strict about content: any valid JSON object is found, compact or
pretty-printed, fenced or not, but values are never salvaged from broken JSON. A lenient parser lets the policy
drift towards broken output, because broken output is still rewarded.

>>> prediction = parse_meta_prediction('<meta>{x} is odd</meta>\\n{"math_notion": ["parity"], "pass_rate": 6, '
...                                    '"solution_length": 512}')
>>> prediction.notions, prediction.pass_rate, prediction.length, prediction.reasoning
(('parity',), 0.75, 512, '{x} is odd')
"""

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass


META_OPEN_TAG = "<meta>"
META_CLOSE_TAG = "</meta>"
NOTION_KEY = "math_notion"
PASS_RATE_KEY = "pass_rate"
LENGTH_KEY = "solution_length"
_REQUIRED_KEYS = (NOTION_KEY, PASS_RATE_KEY, LENGTH_KEY)

# Levels of containers (objects or arrays) allowed inside the top-level object. The meta object needs one, for the
# notion list. An object holding deeper values (an extra key with a list inside an object, say) is not recognised:
# the prompt asks for three flat keys, and every level adds about half of the scan's cost on nested junk.
_MAX_NESTING = 1


def _json_object_pattern(max_nesting: int) -> re.Pattern:
    """
    A regex that matches a JSON object with containers nested at most `max_nesting` levels below it.

    It follows the JSON grammar as `json.loads` accepts it (including `NaN` and `Infinity`). Every quantifier is
    possessive and every alternation atomic, with alternatives that start with different characters, so the engine
    never backtracks, and junk such as `{{{{` or `{"{"{"` fails after a few characters. Attempts overlap where objects
    nest, at most `max_nesting` levels deep, or where a `{` inside a string starts an attempt, which fails almost at
    once: the scan is linear. `json.JSONDecoder.raw_decode` at every `{` is quadratic on nested junk instead.
    """
    ws = r"[ \t\n\r]*+"
    string = r'"(?:[^"\\\x00-\x1f]++|\\(?:["\\/bfnrt]|u[0-9a-fA-F]{4}))*+"'
    number = r"-?+(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+"
    literal = r"true|false|null|NaN|Infinity|-Infinity"
    value = f"(?>{string}|{number}|{literal})"
    for _ in range(max_nesting + 1):
        # A member or an element is followed either by a comma and the start of the next one, or by the closing
        # bracket: trailing commas fail without backtracking. Objects and arrays both embed the previous `value`, so
        # the pattern doubles in size per level.
        members = f'(?:{string}{ws}:{ws}{value}{ws}(?:,{ws}(?=")|(?=\\}})))*+'
        elements = f"(?:{value}{ws}(?:,{ws}(?=[^\\]])|(?=\\])))*+"
        obj = rf"\{{{ws}{members}\}}"
        array = rf"\[{ws}{elements}\]"
        value = f"(?>{string}|{number}|{literal}|{obj}|{array})"
    # The last `obj` is the top-level object, with `max_nesting` container levels below it. The lookahead skips empty
    # objects, so that junk such as `{}{}{}` yields no candidates at all.
    return re.compile(rf'(?=\{{{ws}"){obj}')


_JSON_OBJECT = _json_object_pattern(_MAX_NESTING)
_HAS_LENGTH_KEY = re.compile(f'"{LENGTH_KEY}"').search
_INTEGER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NUMBER_TEXT = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


@dataclass(frozen=True)
class MetaPrediction:
    """
    A parsed meta prediction.

    Args:
        notions (`tuple[str, ...]`):
            The predicted notions, stripped, without empty strings, in the order given. A tuple, so the prediction
            stays immutable and hashable. Duplicates are kept; the notion reward counts them once.
        pass_rate (`float`):
            The predicted pass rate in [0, 1]: the predicted integer divided by the scale S.
        length (`int`):
            The predicted solution length in tokens, positive, within `min_length..max_length` when the parser got
            them (a length outside them gives no prediction at all).
        reasoning (`str` or `None`):
            The text between the first `<meta>` and the last `</meta>`, unmodified; `None` without both tags.
    """

    notions: tuple[str, ...]
    pass_rate: float
    length: int
    reasoning: str | None = None


def _as_integer(value) -> int | None:
    """Read an integer written as a JSON integer, a whole float (`5.0`) or a numeric string (`"5"`)."""
    # `bool` is a subclass of `int`: `true` is not a number here.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        try:
            if _INTEGER_TEXT.fullmatch(text):
                return int(text)
            if _NUMBER_TEXT.fullmatch(text):
                return _as_integer(float(text))
        except ValueError:  # more digits than `sys.get_int_max_str_digits()` allows
            return None
    return None


def _as_notions(value) -> tuple[str, ...] | None:
    if isinstance(value, str):
        value = value.split(",")
    elif not isinstance(value, list) or not all(isinstance(notion, str) for notion in value):
        return None
    return tuple(notion.strip() for notion in value if notion.strip())


def _extract_reasoning(text: str, close: int) -> str | None:
    start = text.find(META_OPEN_TAG, 0, close)
    return text[start + len(META_OPEN_TAG) : close] if start >= 0 else None


def _find_keyed(value) -> dict | None:
    """The object with the three keys in a decoded JSON value: the value itself, else the last one nested in it."""
    if isinstance(value, dict):
        if all(key in value for key in _REQUIRED_KEYS):
            return value
        value = list(value.values())
    if isinstance(value, list):
        # Nesting is at most `_MAX_NESTING` deep here, so the recursion is shallow.
        for child in reversed(value):
            found = _find_keyed(child)
            if found is not None:
                return found
    return None


def _first_keyed(spans: list[str]) -> dict | None:
    """The keyed object of the last span (matches of `_JSON_OBJECT`, in order) that holds one, else `None`."""
    # `filter` with a C-level predicate keeps the cost per junk object low when there are very many of them.
    for span in filter(_HAS_LENGTH_KEY, reversed(spans)):
        if not all(f'"{key}"' in span for key in _REQUIRED_KEYS):
            continue
        try:
            obj = _find_keyed(json.loads(span))
        except (ValueError, RecursionError):  # e.g. an integer with more digits than Python converts
            continue
        if obj is not None:
            return obj
    return None


# Scanning a long region with `_JSON_OBJECT.findall` costs the regex engine a few hundred ns at every `{` that starts
# an attempt, ~140 ms for 1 MB of `{":{":...`. A long region is therefore scanned in chunks from its end, each around
# an occurrence of `"solution_length"`, between *cut points*: positions x that no match of `_JSON_OBJECT` starting
# before x can contain (start < x < end). The findall scan, which resumes after each match, tries every cut point, so
# `_JSON_OBJECT.findall(region, x, y)` between cut points x < y yields exactly the matches of the whole scan that lie
# in [x, y): the matches before x end by x, none spans y, and a match ending by y reads no character at or after y.
# Only matches holding `"solution_length"` count, so chunks without one are skipped: the result is the same as
# scanning the whole region, the way it is done below `_SCAN_WHOLE_BELOW` characters.
_SCAN_WHOLE_BELOW = 20_000
# Characters before a candidate cut point that `_is_cut_point` inspects.
_CUT_WINDOW = 64
# Chunks before the rest of the region is scanned in one go: bounds the overhead when the key occurs very often.
_MAX_CHUNKS = 32
# A run of characters between two string delimiters: escapes pair a backslash with the next character.
_UNQUOTED_RUN = re.compile(r'(?:[^"\\]++|\\[\s\S]?)*+')
_CONTROL = re.compile(r"[\x00-\x1f]").search
# The tokens outside strings, as `_JSON_OBJECT` reads them (numbers and literals are "V").
_STRUCTURAL_TOKEN = re.compile(
    r"([ \t\n\r]++)|([{}\[\],:])|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null|NaN|-?Infinity"
)
_TOKEN_CHARS = "0123456789.+-abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


def _grammar() -> dict[tuple[str, str], str]:
    """
    The transitions between the places inside a top-level `_JSON_OBJECT` match, on its tokens (`S` a string).

    Places are a container (`O1` the top-level object, `O2` an object in it, `A2` an array in it) and what comes next:
    `K0` a key or `}`, `K` a key, `C` a colon, `V` a value, `A` a comma or the closing bracket, `E0` an element or `]`,
    `E` an element. The top-level object cannot close: the window lies inside it.
    """
    table = {}
    for box in ("O1", "O2"):
        close = {"O2": "O1A"}.get(box)
        table |= {(box + "K0", "S"): box + "C", (box + "K", "S"): box + "C", (box + "C", ":"): box + "V"}
        table |= {(box + "V", "S"): box + "A", (box + "V", "V"): box + "A", (box + "A", ","): box + "K"}
        if close:
            table |= {(box + "K0", "}"): close, (box + "A", "}"): close}
    table |= {("O1V", "{"): "O2K0", ("O1V", "["): "A2E0"}
    for place in ("A2E0", "A2E"):
        table |= {(place, "S"): "A2A", (place, "V"): "A2A"}
    table |= {("A2E0", "]"): "O1A", ("A2A", ","): "A2E", ("A2A", "]"): "O1A"}
    return table


_GRAMMAR = _grammar()
_PLACES = frozenset(place for place, _ in _GRAMMAR)


def _impossible_inside(runs: list[str], outside: int) -> bool:
    """
    Whether `runs`, the text between string delimiters, cannot lie inside a match with the runs of parity `outside`
    outside strings and the others inside. Cheap and conservative: `False` when in doubt.
    """
    places = _PLACES
    last = len(runs) - 1
    for i, run in enumerate(runs):
        if i % 2 != outside:
            if _CONTROL(run):  # raw control characters are never part of a JSON string
                return True
            tokens = ("S",)
        else:
            # The first and last runs may hold part of a number or literal that the window cuts.
            if i == 0:
                run = run.lstrip(_TOKEN_CHARS)
            if i == last:
                run = run.rstrip(_TOKEN_CHARS)
            tokens = []
            pos = 0
            while pos < len(run):
                token = _STRUCTURAL_TOKEN.match(run, pos)
                if token is None:
                    return True
                pos = token.end()
                if token.group(1) is None:
                    tokens.append(token.group(2) or "V")
        for token in tokens:
            places = {_GRAMMAR[place, token] for place in places if (place, token) in _GRAMMAR}
            if not places:
                return True
    return False


def _is_cut_point(region: str, x: int, window: int = _CUT_WINDOW) -> bool:
    """
    Whether no match of `_JSON_OBJECT` starting before `x` can end after `x`; `False` when in doubt.

    Matches starting in the `window` characters before `x` are tried directly. A match starting earlier would hold
    those characters inside its top-level object. In it, a `"` after an even run of backslashes delimits a string and
    any other `"` is escaped, so the window's string delimiters are known, but not which of the runs between them are
    strings: both parities are checked against the grammar of `_JSON_OBJECT` (one container level below the top).
    """
    if x <= 0 or x >= len(region):
        return True
    start = max(0, x - window)
    brace = region.find("{", start, x)
    while brace >= 0:
        match = _JSON_OBJECT.match(region, brace)
        if match is not None and match.end() > x:
            return False
        brace = region.find("{", brace + 1, x)
    if start == 0:
        return True
    # Start after any backslashes, so that escapes pair up from the first character on.
    while start < x and region[start - 1] == "\\":
        start += 1
    text = region[start:x]
    runs = []
    pos = 0
    while True:
        end = _UNQUOTED_RUN.match(text, pos).end()
        runs.append(text[pos:end])
        if end == len(text):
            break
        pos = end + 1  # past the delimiter
    return _impossible_inside(runs, 0) and _impossible_inside(runs, 1)


def _last_meta_object(
    region: str, scan_whole_below: int = _SCAN_WHOLE_BELOW, window: int = _CUT_WINDOW
) -> dict | None:
    """
    The keyed object of the last `_JSON_OBJECT` match in `region` that holds one (see `_first_keyed`).

    Long regions are scanned in chunks between cut points (see `_is_cut_point`), from the end; `scan_whole_below` and
    `window` are parameters for the tests.
    """
    # Cheap exit for the common failure and for most junk: the object must spell out all three keys.
    if not all(f'"{key}"' in region for key in _REQUIRED_KEYS):
        return None
    if len(region) < scan_whole_below:
        return _first_keyed(_JSON_OBJECT.findall(region))
    length_key = f'"{LENGTH_KEY}"'
    steps = (0, *(window * 4**k // 4 for k in range(8)))
    end = len(region)  # a cut point; the matches after it hold no keyed object
    for chunk in range(_MAX_CHUNKS):
        # A match that counts lies before `end` and spells out every key, `"solution_length"` last at `key`.
        key = region.rfind(length_key, 0, end)
        if key < 0 or any(region.rfind(f'"{name}"', 0, end) < 0 for name in _REQUIRED_KEYS):
            return None
        start, stop = 0, end
        if chunk < _MAX_CHUNKS - 1:
            starts = (key - step for step in steps if key - step > 0)
            start = next((x for x in starts if _is_cut_point(region, x, window)), 0)
            stops = (key + len(length_key) + step for step in steps if key + len(length_key) + step < end)
            stop = next((y for y in stops if _is_cut_point(region, y, window)), end)
        obj = _first_keyed(_JSON_OBJECT.findall(region, start, stop))
        if obj is not None or start == 0:
            return obj
        end = start
    return None


def _check_length_bound(name: str, value) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"`{name}` must be a positive integer or None, got {value!r}.")


def parse_meta_prediction(
    text: str, pass_rate_scale: int = 8, max_length: int | None = None, *, min_length: int | None = None
) -> MetaPrediction | None:
    """
    Parse a meta rollout into a [`MetaPrediction`].

    The prediction is the last JSON object after the last `</meta>` (or, without `</meta>`, in the whole text) that
    has the keys `math_notion`, `pass_rate` and `solution_length`; an object wrapped in another one
    (`{"prediction": {...}}`) counts too. Extra keys are ignored, but values may hold only one level of containers (a
    list of strings, not a list of lists). The object may be compact or pretty-printed and may sit in a code fence or
    among other text. Only what `json.loads` accepts counts: a
    Python `str(dict)` with single quotes, a truncated object or any other broken JSON gives `None`, and values are
    never read out of it.

    Values:
    - `pass_rate` and `solution_length` are integers, written as JSON integers, whole floats (`5.0`) or numeric
      strings (`"5"`); booleans are not numbers.
    - `pass_rate` must lie in `0..pass_rate_scale` and is returned divided by `pass_rate_scale`.
    - `solution_length` must be positive, and within `min_length..max_length` (bounds included) when they are given.
      A length outside that range is invalid, exactly like a pass rate outside `0..pass_rate_scale`: the prediction
      is `None`, so it scores no meta reward and counts as a parse failure. It is never clamped: the meta prompt asks
      for an integer in that range, and a clamped or out-of-range length would reach MASA-efficient's cutoff (a
      prediction of 10 tokens would cut every solution at 20).
    - `math_notion` is a list of strings or one comma-separated string; notions are stripped and empty ones dropped.
      An empty list is valid.

    Parsing takes linear time in the length of `text`, and never raises on a string.

    Args:
        text (`str`):
            The meta rollout (completion text).
        pass_rate_scale (`int`, *optional*, defaults to `8`):
            The scale S of the predicted pass rate, as given to [`~masa_trl.templates.meta_prompt`].
        max_length (`int` or `None`, *optional*, defaults to `None`):
            If given, a positive integer: predicted lengths above it make the prediction invalid. The trainer passes
            `max_completion_length`.
        min_length (`int` or `None`, *optional*, defaults to `None`):
            If given, a positive integer at most `max_length`: predicted lengths below it make the prediction invalid.
            The trainer passes `meta_min_length`.

    Returns:
        [`MetaPrediction`] or `None`: The prediction, or `None` when there is no valid one.
    """
    if isinstance(pass_rate_scale, bool) or not isinstance(pass_rate_scale, int) or pass_rate_scale < 1:
        raise ValueError(f"`pass_rate_scale` must be a positive integer, got {pass_rate_scale!r}.")
    _check_length_bound("max_length", max_length)
    _check_length_bound("min_length", min_length)
    if min_length is not None and max_length is not None and min_length > max_length:
        raise ValueError(f"`min_length` ({min_length}) must not exceed `max_length` ({max_length}).")
    if not isinstance(text, str):
        return None

    close = text.rfind(META_CLOSE_TAG)
    if close >= 0:
        reasoning = _extract_reasoning(text, close)
        region = text[close + len(META_CLOSE_TAG) :]
    else:
        reasoning = None
        region = text

    obj = _last_meta_object(region)
    if obj is None:
        return None
    notions = _as_notions(obj[NOTION_KEY])
    pass_rate = _as_integer(obj[PASS_RATE_KEY])
    length = _as_integer(obj[LENGTH_KEY])
    if notions is None or pass_rate is None or length is None:
        return None
    if not 0 <= pass_rate <= pass_rate_scale or length < (min_length or 1):
        return None
    if max_length is not None and length > max_length:
        return None
    return MetaPrediction(notions=notions, pass_rate=pass_rate / pass_rate_scale, length=length, reasoning=reasoning)


def format_meta_prediction(
    notions: Sequence[str],
    pass_rate: int,
    length: int,
    reasoning: str | None = None,
    *,
    indent: int | None = None,
) -> str:
    """
    Write a meta prediction in exactly the format the meta prompt asks for: `<meta>{reasoning}</meta>`, a newline,
    then the JSON object with the keys `math_notion`, `pass_rate` and `solution_length`.

    Use it to write expert trajectories with the true statistics substituted: `pass_rate` is the integer on the
    prompt's 0..S scale (not a fraction), and `length` an integer token count.
    `parse_meta_prediction(format_meta_prediction(...))` round-trips, with the pass rate divided by S.

    Args:
        notions (`Sequence[str]`):
            The notions, written as a JSON list.
        pass_rate (`int`):
            The pass rate as an integer on the 0..S scale.
        length (`int`):
            The solution length in tokens, positive.
        reasoning (`str` or `None`, *optional*, defaults to `None`):
            The `<meta>` reasoning, written unchanged. With `None`, only the JSON object is written.
        indent (`int` or `None`, *optional*, defaults to `None`):
            Passed to `json.dumps`; `None` writes compact single-line JSON.

    Returns:
        `str`: The meta completion text.
    """
    if isinstance(notions, str) or not all(isinstance(notion, str) for notion in notions):
        raise TypeError(f"`notions` must be a list of strings, got {notions!r}.")
    for name, value, minimum in (("pass_rate", pass_rate, 0), ("length", length, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}: {value!r}.")
        if value < minimum:
            raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")
    payload = {NOTION_KEY: list(notions), PASS_RATE_KEY: pass_rate, LENGTH_KEY: length}
    # "</meta>" can only occur inside a JSON string, where "<\/meta>" is the same string: the escape keeps a notion
    # that mentions the tag from being taken for the end of the reasoning.
    body = json.dumps(payload, ensure_ascii=False, indent=indent).replace(META_CLOSE_TAG, "<\\/meta>")
    if reasoning is None:
        return body
    return f"{META_OPEN_TAG}{reasoning}{META_CLOSE_TAG}\n{body}"
