import json
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masa_trl import meta
from masa_trl.meta import MetaPrediction, format_meta_prediction, parse_meta_prediction


COMPACT = '{"math_notion": ["modular arithmetic", "parity"], "pass_rate": 5, "solution_length": 900}'
PRETTY = json.dumps(json.loads(COMPACT), indent=2)
EXPECTED = MetaPrediction(notions=("modular arithmetic", "parity"), pass_rate=5 / 8, length=900)


def _with(**values):
    obj = {"math_notion": ["parity"], "pass_rate": 4, "solution_length": 300}
    obj.update(values)
    return json.dumps({key: value for key, value in obj.items() if value is not ...})


class TestLayouts:
    @pytest.mark.parametrize(
        "text",
        [
            COMPACT,
            PRETTY,
            f"<meta>Reasoning.</meta>\n{COMPACT}",
            f"<meta>Reasoning.</meta>\n{PRETTY}",
            f"<meta>r</meta>\n```json\n{PRETTY}\n```",
            f"<meta>r</meta>```\n{COMPACT}\n```\nDone.",
            f"Here is the JSON: {COMPACT} That is all.",
            COMPACT.replace('{"math_notion"', '{ "math_notion"'),
            json.dumps(json.loads(COMPACT), indent="\t", separators=(" ,", " : ")),
        ],
    )
    def test_valid_layouts_parse(self, text):
        prediction = parse_meta_prediction(text)
        assert (prediction.notions, prediction.pass_rate, prediction.length) == (
            EXPECTED.notions,
            EXPECTED.pass_rate,
            EXPECTED.length,
        )

    def test_reasoning_is_returned_unchanged(self):
        text = '<meta>\nSet {1, 2}; "quoted {x"; \\frac{a}{b}\n</meta>\n' + COMPACT
        assert parse_meta_prediction(text).reasoning == '\nSet {1, 2}; "quoted {x"; \\frac{a}{b}\n'

    def test_no_tags_means_no_reasoning(self):
        assert parse_meta_prediction(COMPACT).reasoning is None
        assert parse_meta_prediction(f"r</meta>{COMPACT}").reasoning is None

    def test_braces_and_json_inside_reasoning_do_not_confuse_the_parser(self):
        decoy = _with(pass_rate=1, solution_length=128)
        text = f'<meta>{{ unbalanced {{"a": 1}} {decoy} "quote</meta>\n{COMPACT}'
        assert parse_meta_prediction(text).pass_rate == 5 / 8

    def test_json_only_inside_reasoning_is_not_accepted(self):
        assert parse_meta_prediction(f"<meta>{COMPACT}</meta>\nNo JSON here.") is None

    def test_stray_braces_before_object_without_meta_tags(self):
        text = 'We have {1, 2, and "x { and \\frac{1}{2} then\n' + PRETTY
        assert parse_meta_prediction(text).length == 900

    def test_last_object_with_the_keys_wins(self):
        text = f'{_with(pass_rate=1)} {_with(pass_rate=2)} {{"answer": 3}}'
        assert parse_meta_prediction(text).pass_rate == 2 / 8

    def test_invalid_last_object_does_not_fall_back_to_earlier_one(self):
        assert parse_meta_prediction(f"{_with(pass_rate=2)} {_with(pass_rate=9)}") is None

    def test_broken_last_object_is_skipped_not_salvaged(self):
        # A truncated copy after a valid object: only the valid JSON counts.
        assert parse_meta_prediction(COMPACT + " " + COMPACT[:-1]).length == 900
        assert parse_meta_prediction(COMPACT[:-1]) is None

    def test_extra_keys_are_ignored(self):
        assert parse_meta_prediction(_with(confidence={"a": 1}, steps=[1, 2], note="x")).pass_rate == 0.5

    def test_values_nested_two_levels_deep_are_not_recognised(self):
        assert parse_meta_prediction(_with(confidence={"a": [1, 2]})) is None
        assert parse_meta_prediction(_with(math_notion=[["a"]])) is None

    @pytest.mark.parametrize("notions", [["a", "b"], "a, b"])
    def test_wrapped_object_counts(self, notions):
        # Both when the wrapper is too deep to be recognised (a list inside) and when it is recognised.
        wrapped = {"prediction": json.loads(_with(math_notion=notions)), "other": 1}
        assert parse_meta_prediction(json.dumps(wrapped)).notions == ("a", "b")

    def test_outer_object_with_the_keys_wins_over_nested_one(self):
        text = _with(pass_rate=1, extra={"math_notion": "a", "pass_rate": 2, "solution_length": 3})
        assert parse_meta_prediction(text).pass_rate == 1 / 8


class TestValues:
    @pytest.mark.parametrize("value, expected", [(5, 5), (5.0, 5), ("5", 5), (" 5 ", 5), ("5.0", 5), (0, 0), (8, 8)])
    def test_pass_rate_forms(self, value, expected):
        assert parse_meta_prediction(_with(pass_rate=value)).pass_rate == expected / 8

    @pytest.mark.parametrize("value, expected", [(900, 900), (900.0, 900), ("900", 900), (1, 1), (1e3, 1000)])
    def test_length_forms(self, value, expected):
        assert parse_meta_prediction(_with(solution_length=value)).length == expected

    def test_pass_rate_scale(self):
        assert parse_meta_prediction(_with(pass_rate=12), pass_rate_scale=16).pass_rate == 0.75
        assert parse_meta_prediction(_with(pass_rate=12)) is None

    def test_length_above_max_length_is_invalid(self):
        # Out of range is unparsable, exactly like an out-of-range pass rate: no clamping.
        assert parse_meta_prediction(_with(solution_length=20000), max_length=8192) is None
        assert parse_meta_prediction(_with(solution_length=8193), max_length=8192) is None
        assert parse_meta_prediction(_with(solution_length=20000)).length == 20000
        assert parse_meta_prediction(_with(solution_length=100), max_length=8192).length == 100

    def test_length_below_min_length_is_invalid(self):
        # A prediction of 10 tokens would make MASA-efficient cut every solution at 20 tokens.
        assert parse_meta_prediction(_with(solution_length=10), min_length=128) is None
        assert parse_meta_prediction(_with(solution_length=127), min_length=128, max_length=8192) is None
        assert parse_meta_prediction(_with(solution_length=10)).length == 10

    @pytest.mark.parametrize("length", [128, 129, 8191, 8192])
    def test_lengths_within_and_at_the_bounds_are_accepted(self, length):
        prediction = parse_meta_prediction(_with(solution_length=length), min_length=128, max_length=8192)
        assert prediction.length == length

    def test_a_single_allowed_length(self):
        assert parse_meta_prediction(_with(solution_length=64), min_length=64, max_length=64).length == 64
        assert parse_meta_prediction(_with(solution_length=63), min_length=64, max_length=64) is None
        assert parse_meta_prediction(_with(solution_length=65), min_length=64, max_length=64) is None

    def test_out_of_range_last_object_does_not_fall_back_to_earlier_one(self):
        text = f"{_with(solution_length=300)} {_with(solution_length=5)}"
        assert parse_meta_prediction(text, min_length=16) is None
        assert parse_meta_prediction(text).length == 5

    @pytest.mark.parametrize(
        "value, expected",
        [
            (["  a ", "", " ", "b"], ("a", "b")),
            ([], ()),
            ("a, b,, c ", ("a", "b", "c")),
            ("", ()),
            (["Primes", "primes"], ("Primes", "primes")),
        ],
    )
    def test_notion_forms(self, value, expected):
        assert parse_meta_prediction(_with(math_notion=value)).notions == expected

    @pytest.mark.parametrize(
        "values",
        [
            {"pass_rate": 9},
            {"pass_rate": -1},
            {"pass_rate": 5.5},
            {"pass_rate": "5.5"},
            {"pass_rate": "five"},
            {"pass_rate": True},
            {"pass_rate": None},
            {"pass_rate": [5]},
            {"pass_rate": float("nan")},
            {"solution_length": 0},
            {"solution_length": -3},
            {"solution_length": 512.5},
            {"solution_length": False},
            {"solution_length": float("inf")},
            {"solution_length": "1e400"},
            {"math_notion": [1, 2]},
            {"math_notion": ["a", None]},
            {"math_notion": None},
            {"math_notion": {"a": 1}},
            {"math_notion": ...},
            {"pass_rate": ...},
            {"solution_length": ...},
        ],
    )
    def test_invalid_values_give_none(self, values):
        assert parse_meta_prediction(_with(**values)) is None

    def test_huge_integer_gives_none(self):
        assert parse_meta_prediction(_with().replace("300", "9" * 5000)) is None
        assert parse_meta_prediction(_with(solution_length="9" * 5000)) is None

    @pytest.mark.parametrize(
        "text",
        [
            "",
            "no json at all",
            '{"math_notion": ["a"], "pass_rate": 1, "solution_length": 2,}',
            '{"math_notion": ["a"], "pass_rate": 1 "solution_length": 2}',
            '{"math_notion": ["a"], // comment\n "pass_rate": 1, "solution_length": 2}',
            '{math_notion: ["a"], pass_rate: 1, solution_length: 2}',
            '"math_notion": ["a"], "pass_rate": 1, "solution_length": 2',
            '{"math_notion": ["a"], "pass_rate": 1, "solution_length": 2',
        ],
    )
    def test_broken_json_gives_none(self, text):
        assert parse_meta_prediction(text) is None

    def test_non_string_input_gives_none(self):
        assert parse_meta_prediction(None) is None
        assert parse_meta_prediction(b'{"math_notion": [], "pass_rate": 1, "solution_length": 2}') is None

    @pytest.mark.parametrize(
        "kwargs, name",
        [
            ({"pass_rate_scale": 0}, "pass_rate_scale"),
            ({"pass_rate_scale": True}, "pass_rate_scale"),
            ({"max_length": 0}, "max_length"),
            ({"max_length": True}, "max_length"),
            ({"max_length": 8.0}, "max_length"),
            ({"min_length": 0}, "min_length"),
            ({"min_length": -1}, "min_length"),
            ({"min_length": True}, "min_length"),
            ({"min_length": 4.0}, "min_length"),
            ({"min_length": "4"}, "min_length"),
            ({"min_length": 129, "max_length": 128}, "min_length"),
        ],
    )
    def test_bad_arguments_raise(self, kwargs, name):
        with pytest.raises(ValueError, match=f"`{name}`"):
            parse_meta_prediction(COMPACT, **kwargs)

    def test_bad_arguments_raise_even_for_non_string_text(self):
        with pytest.raises(ValueError, match="`min_length`"):
            parse_meta_prediction(None, min_length=0)


class TestAuthorsDefects:
    """Regression tests for the parser defects of the authors' implementation."""

    def test_pretty_printed_json_parses(self):
        assert parse_meta_prediction(f"<meta>r</meta>\n{PRETTY}") is not None

    def test_space_after_opening_brace_parses(self):
        assert parse_meta_prediction('{ "math_notion": ["a"], "pass_rate": 1, "solution_length": 200 }') is not None

    def test_python_repr_does_not_parse(self):
        # The authors' expert trajectories were written with str(dict): not JSON, so not a prediction.
        text = "<meta>r</meta>\n" + str({"math_notion": ["a"], "pass_rate": 1, "solution_length": 200})
        assert parse_meta_prediction(text) is None

    def test_numeric_strings_are_integers(self):
        assert parse_meta_prediction(_with(pass_rate="5")).pass_rate == 5 / 8


class TestFormat:
    def test_canonical_text(self):
        text = format_meta_prediction(["parity", "théorème"], 3, 512, "Because.")
        assert (
            text
            == '<meta>Because.</meta>\n{"math_notion": ["parity", "théorème"], "pass_rate": 3, "solution_length": 512}'
        )

    def test_without_reasoning_only_json(self):
        assert format_meta_prediction([], 0, 1) == '{"math_notion": [], "pass_rate": 0, "solution_length": 1}'

    def test_indent(self):
        text = format_meta_prediction(["a"], 3, 512, "r", indent=2)
        assert text == "<meta>r</meta>\n" + json.dumps(
            {"math_notion": ["a"], "pass_rate": 3, "solution_length": 512}, indent=2
        )

    def test_notion_mentioning_the_closing_tag_round_trips(self):
        text = format_meta_prediction(["</meta> tag"], 3, 512, "r")
        assert parse_meta_prediction(text).notions == ("</meta> tag",)

    @pytest.mark.parametrize(
        "args, error",
        [
            (("a", 3, 512), TypeError),
            (([1], 3, 512), TypeError),
            ((["a"], 0.5, 512), TypeError),
            ((["a"], True, 512), TypeError),
            ((["a"], -1, 512), ValueError),
            ((["a"], 3, 0), ValueError),
            ((["a"], 3, "512"), TypeError),
        ],
    )
    def test_bad_values_raise(self, args, error):
        with pytest.raises(error):
            format_meta_prediction(*args)


# Property-based tests.

_notion = st.text(min_size=1, max_size=20).map(str.strip).filter(lambda s: s and "</meta>" not in s)
_surrounding = st.text(max_size=40).filter(lambda s: "meta>" not in s)
# Text after the object holds no other object, and nothing that would close one around it.
_trailing = st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=40).filter(
    lambda s: "</meta>" not in s
)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_any_text(text):
    prediction = parse_meta_prediction(text)
    assert prediction is None or isinstance(prediction, MetaPrediction)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                '{"math_notion":',
                '"pass_rate":',
                '"solution_length":',
                "{",
                "}",
                "[",
                "]",
                '"',
                "\\",
                ",",
                ":",
                " ",
                "\n",
                "1",
                "8.0",
                '"3"',
                "true",
                "null",
                '"a"',
                "<meta>",
                "</meta>",
                "```json",
            ]
        ),
        max_size=60,
    ).map("".join)
)
def test_never_raises_on_json_like_junk(text):
    prediction = parse_meta_prediction(text, max_length=100)
    if prediction is not None:
        assert 0 <= prediction.pass_rate <= 1 and 1 <= prediction.length <= 100
        assert prediction == parse_meta_prediction(text)  # the range only rejects, it never changes a value
    prediction = parse_meta_prediction(text, min_length=3, max_length=5)
    if prediction is not None:
        assert 3 <= prediction.length <= 5
        assert all(isinstance(notion, str) and notion for notion in prediction.notions)


@settings(max_examples=200, deadline=None)
@given(
    notions=st.lists(_notion, max_size=5),
    scale=st.integers(1, 16),
    data=st.data(),
    length=st.integers(1, 10**6),
    key_order=st.permutations(["math_notion", "pass_rate", "solution_length"]),
    indent=st.sampled_from([None, 0, 1, 2, 4, "\t"]),
    fence=st.booleans(),
    meta=st.booleans(),
    reasoning=st.text(alphabet='{}[]":,\\ \nab', max_size=30),
    prefix=_surrounding,
    suffix=_trailing,
)
def test_any_json_dumps_layout_round_trips(
    notions, scale, data, length, key_order, indent, fence, meta, reasoning, prefix, suffix
):
    pass_rate = data.draw(st.integers(0, scale))
    values = {"math_notion": notions, "pass_rate": pass_rate, "solution_length": length}
    body = json.dumps({key: values[key] for key in key_order}, indent=indent, ensure_ascii=data.draw(st.booleans()))
    if fence:
        body = f"```json\n{body}\n```"
    if meta:
        body = f"<meta>{reasoning}</meta>\n{body}"
    prediction = parse_meta_prediction(prefix + body + suffix, pass_rate_scale=scale)
    assert prediction is not None
    assert prediction.notions == tuple(notions)
    assert prediction.pass_rate == pass_rate / scale
    assert prediction.length == length
    if meta:
        assert prediction.reasoning == reasoning


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 300),
    min_length=st.one_of(st.none(), st.integers(1, 200)),
    span=st.one_of(st.none(), st.integers(0, 100)),
    meta=st.booleans(),
)
def test_length_range_accepts_exactly_the_lengths_inside_it(length, min_length, span, meta):
    max_length = None if span is None else (min_length or 1) + span
    text = _with(solution_length=length)
    if meta:
        text = f"<meta>r</meta>\n{text}"
    prediction = parse_meta_prediction(text, min_length=min_length, max_length=max_length)
    inside = (min_length is None or length >= min_length) and (max_length is None or length <= max_length)
    if inside:
        assert prediction == parse_meta_prediction(text)
        assert prediction.length == length
    else:
        assert prediction is None


@settings(max_examples=100, deadline=None)
@given(
    notions=st.lists(_notion, max_size=5),
    pass_rate=st.integers(0, 8),
    length=st.integers(1, 10**5),
    reasoning=st.one_of(st.none(), st.text(max_size=50)),
    indent=st.sampled_from([None, 2]),
)
def test_format_round_trips(notions, pass_rate, length, reasoning, indent):
    text = format_meta_prediction(notions, pass_rate, length, reasoning, indent=indent)
    assert parse_meta_prediction(text) == MetaPrediction(tuple(notions), pass_rate / 8, length, reasoning)


# Adversarial inputs: the scan is linear, so 1 MB of junk returns quickly. The bound is a generous safety net;
# benchmarks/bench_meta_rewards.py reports the measured times.

_KEYS = '"math_notion": ["a"], "pass_rate": 1, "solution_length": 2'
_MB = 1_000_000


@pytest.mark.parametrize(
    "text",
    [
        "{" * _MB,
        "{" * _MB + _KEYS,
        '{"' * (_MB // 2) + _KEYS,
        '{":' * (_MB // 3) + _KEYS,
        ("{" * 1000 + _KEYS) * (_MB // 1060),
        ('{"a":"\\"{' * _MB)[:_MB] + _KEYS,
        ('{ x " } { \\ " {{ ' * _MB)[:_MB] + _KEYS,
        '{"a":' * (_MB // 5) + _KEYS,
        '{"a":[' * (_MB // 6) + _KEYS,
        '{"":0}' * (_MB // 6) + _KEYS,
        '"' * _MB + "{" + _KEYS,
    ],
    ids=[
        "open-braces-no-keys",
        "open-braces",
        "brace-quote",
        "brace-quote-colon",
        "keys-in-junk",
        "nested-quotes",
        "mixed",
        "deep",
        "deep-array",
        "many-objects",
        "quotes",
    ],
)
def test_adversarial_megabyte_returns_fast(text):
    start = time.perf_counter()
    assert parse_meta_prediction(text) is None
    # A generous bound for a loaded CI machine (measured: 0.6-27 ms, benchmarks/bench_meta_rewards.py); a quadratic
    # scan of 1 MB would take minutes.
    assert time.perf_counter() - start < 3.0


def test_valid_object_after_megabyte_of_junk_is_found():
    text = "{" * _MB + '"' * 1000 + "<meta>" + COMPACT
    assert parse_meta_prediction(text).length == 900


# Differential tests: long regions are scanned in chunks between cut points (`masa_trl.meta._is_cut_point`); the result
# must be exactly that of the whole-region scan below, the implementation before the chunked scan. Small cut windows
# and `scan_whole_below=0` exercise the chunked scan on short strings.


def _reference_last_meta_object(region):
    if not all(f'"{key}"' in region for key in meta._REQUIRED_KEYS):
        return None
    for span in filter(meta._HAS_LENGTH_KEY, reversed(meta._JSON_OBJECT.findall(region))):
        if not all(f'"{key}"' in span for key in meta._REQUIRED_KEYS):
            continue
        try:
            obj = meta._find_keyed(json.loads(span))
        except (ValueError, RecursionError):
            continue
        if obj is not None:
            return obj
    return None


_WINDOWS = (1, 2, 3, 5, 8, 16, 64)


def _assert_same_as_reference(region):
    expected = _reference_last_meta_object(region)
    for window in _WINDOWS:
        assert meta._last_meta_object(region, scan_whole_below=0, window=window) == expected, window
    assert meta._last_meta_object(region) == expected


_FRAGMENTS = [
    '{"math_notion": ["a"], "pass_rate": 1, "solution_length": 2}',
    '{"math_notion":',
    '"pass_rate":',
    '"solution_length":',
    '"math_notion"',
    '"solution_length"',
    '"pass_rate"',
    '{"prediction": ',
    "{",
    "}",
    "[",
    "]",
    '"',
    '\\"',
    "\\",
    "\\\\",
    "\\u0041",
    ",",
    ":",
    " ",
    "\n",
    "\x01",
    "1",
    "-0.5e3",
    "8.0",
    '"3"',
    "true",
    "null",
    "NaN",
    "-Infinity",
    '"a"',
    "a",
    "x",
    '{":',
    '{"a":',
    '{"":0}',
    '"a":[',
    "</meta>",
]


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=80).map("".join))
def test_chunked_scan_matches_whole_scan_on_json_like_junk(region):
    _assert_same_as_reference(region)


@settings(max_examples=300, deadline=None)
@given(
    junk=st.lists(st.sampled_from(_FRAGMENTS), max_size=30).map("".join),
    repeat=st.integers(1, 40),
    obj=st.sampled_from([_with(), _with(pass_rate=9), json.dumps({"p": json.loads(_with())}), COMPACT[:-1], PRETTY]),
    tail=st.lists(st.sampled_from(_FRAGMENTS), max_size=10).map("".join),
)
def test_chunked_scan_matches_whole_scan_on_repeated_junk(junk, repeat, obj, tail):
    _assert_same_as_reference(junk * repeat + obj + tail)
    _assert_same_as_reference(junk * repeat + obj + tail + junk * repeat)
    _assert_same_as_reference((junk + obj) * repeat + tail)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet='{}[]":,\\ \n\x01ab0-e.', max_size=60), st.integers(1, 30))
def test_chunked_scan_matches_whole_scan_on_random_text(junk, repeat):
    _assert_same_as_reference(junk * repeat + _with() + junk)
    _assert_same_as_reference(junk + _KEYS + junk * repeat + "}")


_ADVERSARIAL_UNITS = ["{", '{"', '{":', '{"a":', '{"a":[', '{"":0}', '{"a":"\\"{', '{ x " } { \\ " {{ ', '"', '{"\\"']
_ADVERSARIAL_UNITS += ['{"a":1,', '{"":', "\\", '"a":"', '{"a":{"b":', "[", '{"a":[1,', '{"x": "', "}"]


@pytest.mark.parametrize("unit", _ADVERSARIAL_UNITS)
@pytest.mark.parametrize("size", [50, 3_000, 60_000])
def test_chunked_scan_matches_whole_scan_on_adversarial_text(unit, size):
    body = (unit * size)[:size]
    for obj in (_KEYS, "{" + _KEYS + "}", _with(), '{"p": ' + _with() + "}", _with() + "{"):
        _assert_same_as_reference(body + obj)
        _assert_same_as_reference(obj + body)
        _assert_same_as_reference(body + obj + body)
        _assert_same_as_reference((body[: size // 7] + obj) * 12)


@pytest.mark.parametrize("unit", _ADVERSARIAL_UNITS)
def test_adversarial_megabyte_with_object_matches_reference_and_returns_fast(unit):
    body = (unit * _MB)[:_MB]
    for text in (body + _with(), body + "{" + _KEYS + "}", _with() + body, body + _with() + body[:1000]):
        expected = _reference_last_meta_object(text)
        start = time.perf_counter()
        assert meta._last_meta_object(text) == expected
        assert time.perf_counter() - start < 3.0
