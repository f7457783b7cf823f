import itertools
import os
import pickle
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest
from file_modules import import_file
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from masa_trl import math_reward
from masa_trl.answer_verdicts import algebraic_verdict, fast_verdict, identical_verdict, quick_verdict
from masa_trl.math_reward import (
    MathVerifier,
    extract_boxed_answer,
    get_default_verifier,
    math_accuracy_reward,
    verify_answers,
)


HAS_FORK = "fork" in __import__("multiprocessing").get_all_start_methods()
POWER_TOWER = "5^{5^{5^{5^5}}}"


@pytest.fixture(scope="module")
def verifier():
    with MathVerifier(timeout=2.0) as verifier:
        yield verifier


@pytest.fixture(scope="module")
def slow_verifier():
    """math-verify only: the reference the fast path must agree with."""
    with MathVerifier(timeout=5.0, fast_path=False, cache_size=0) as verifier:
        yield verifier


class TestExtractBoxedAnswer:
    def test_last_box_wins(self):
        assert extract_boxed_answer(r"try \boxed{1}, no: \boxed{2}.") == "2"

    def test_nested_braces(self):
        assert extract_boxed_answer(r"\boxed{\frac{1}{\sqrt{2}}} done") == r"\frac{1}{\sqrt{2}}"

    def test_escaped_braces_do_not_count(self):
        assert extract_boxed_answer(r"\boxed{\{1, 2\}}") == r"\{1, 2\}"

    def test_fbox_and_bare_argument(self):
        assert extract_boxed_answer(r"\fbox{7}") == "7"
        assert extract_boxed_answer(r"so $\boxed 5$") == "5"
        assert extract_boxed_answer(r"\boxed{1} then \fbox{2}") == "2"

    @pytest.mark.parametrize("text", ["no answer here", "", r"\boxed{", r"\boxed{1} and \boxed{2", r"\boxed{  }"])
    def test_missing_unclosed_or_empty_box(self, text):
        assert extract_boxed_answer(text) is None

    def test_linear_time_on_long_input(self):
        text = r"\boxed{" + "{" * 100_000 + "}" * 100_000 + "}"
        start = time.perf_counter()
        assert extract_boxed_answer(text) == "{" * 100_000 + "}" * 100_000
        assert time.perf_counter() - start < 3.0  # a generous bound: a quadratic scan would take minutes


class TestVerdicts:
    @pytest.mark.parametrize(
        ("gold", "prediction", "expected"),
        [
            ("5", "5", 1.0),
            ("5", "6", 0.0),
            ("-3", "-3", 1.0),
            ("1000", "1,000", 1.0),
            ("\\frac{1}{2}", "0.5", 1.0),
            ("0.5", "\\dfrac{1}{2}", 1.0),
            ("1/2", "\\frac{2}{4}", 1.0),
            ("\\frac{1}{3}", "0.333333", 1.0),  # math-verify rounds to 6 decimals
            ("\\frac{1}{3}", "0.33", 0.0),
            ("5", "5.0", 1.0),
            ("2\\sqrt{2}", "\\sqrt{8}", 1.0),
            ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", 1.0),
            ("2\\sqrt{3}", "3\\sqrt{2}", 0.0),
            ("(1, 2)", "(1,2)", 1.0),
            ("(1, 2)", "(2, 1)", 0.0),
            ("[1, 3)", "[1,3)", 1.0),
            ("[1, 3)", "(1, 3]", 0.0),
            ("50\\%", "50\\%", 1.0),
            ("0.5", "50\\%", 1.0),
            ("x^2+2x+1", "(x+1)^2", 1.0),
            ("x^2+1", "x^2-1", 0.0),
            ("\\frac{\\pi}{2}", "\\frac{1}{2}\\pi", 1.0),
            ("\\frac12", "1/2", 1.0),
            ("\\boxed{7}", "7", 1.0),  # a boxed gold is unwrapped
        ],
    )
    def test_hand_checked_pairs(self, verifier, gold, prediction, expected):
        assert verifier.verify_batch([gold], [prediction]) == [expected]

    @pytest.mark.parametrize("gold", [None, "", "   ", "\\boxed{}"])
    def test_unparsable_gold_gives_none(self, verifier, gold):
        assert verifier.verify_batch([gold, gold], ["5", None]) == [None, None]

    def test_gold_that_math_verify_cannot_parse_gives_none(self, verifier):
        before = verifier.stats()["gold_unparsable"]
        assert verifier.verify_batch(["\\text{}"], ["1"]) == [None]
        assert verifier.stats()["gold_unparsable"] == before + 1

    def test_numeric_gold_values(self, verifier):
        assert verifier.verify_batch([17.0, 66, 0.5], ["17", "66", "\\frac{1}{2}"]) == [1.0, 1.0, 1.0]

    def test_missing_prediction_scores_zero(self, verifier):
        assert verifier.verify_batch(["5", "x^2"], [None, None]) == [0.0, 0.0]

    def test_length_mismatch_raises(self, verifier):
        with pytest.raises(ValueError, match="2 gold answers for 1"):
            verifier.verify_batch(["1", "2"], ["1"])

    def test_cache_hits(self):
        with MathVerifier(timeout=2.0) as fresh:
            # Answers beyond the fast path, so that they go to math-verify.
            golds, predictions = ["\\sin x", "\\sin x", "\\log 2"], ["\\sin x", "\\sin(x)", "\\log 3"]
            assert fresh.verify_batch(golds, predictions) == [1.0, 1.0, 0.0]
            verified = fresh.stats()["verified"]
            assert fresh.verify_batch(golds, predictions) == [1.0, 1.0, 0.0]
            assert fresh.stats()["verified"] == verified
            assert fresh.stats()["cache_hits"] == 3
            fresh.clear_cache()
            fresh.verify_batch(golds[:1], predictions[:1])
            assert fresh.stats()["verified"] == verified + 1

    def test_duplicates_in_a_batch_are_verified_once(self):
        with MathVerifier(timeout=2.0) as fresh:
            assert fresh.verify_batch(["\\sin x"] * 4, ["\\sin x"] * 4) == [1.0] * 4
            assert fresh.stats()["verified"] == 1


class TestFastPath:
    @pytest.mark.parametrize(
        ("gold", "prediction", "expected"),
        [
            ("5", "5", 1.0),
            ("5", "6", 0.0),
            ("1,000", "1000", 1.0),
            ("\\frac{1}{2}", "0.5", 1.0),
            ("-\\frac{1}{2}", "\\frac{-1}{2}", 1.0),
            ("5", None, 0.0),
            ("\\frac{1}{3}", "0.333333", None),  # within rounding distance: math-verify decides
            ("50\\%", "0.5", None),  # percentages are math-verify's
            ("0.5", "50\\%", None),
            ("1,2", "12", None),  # a set, not a thousands separator
            ("x", "5", None),
            ("5", "5^{5^{5}}", None),
        ],
    )
    def test_verdicts(self, gold, prediction, expected):
        assert fast_verdict(gold, prediction) == expected

    @staticmethod
    def _write(value: Fraction, form: int) -> str:
        if form == 0 and value.denominator == 1:
            return str(value.numerator)
        if form == 1 and value.denominator == 1 and abs(value.numerator) >= 1000:
            return f"{value.numerator:,}"
        if form == 2 and abs(value) < 10**6:
            return f"{float(value):.6f}".rstrip("0").rstrip(".") if value.denominator > 1 else f"{value.numerator}.0"
        if form == 3:
            return f"{value.numerator}/{value.denominator}"
        if form == 4:
            sign = "-" if value < 0 else ""
            return f"{sign}\\dfrac{{{abs(value.numerator)}}}{{{value.denominator}}}"
        return f"\\frac{{{value.numerator}}}{{{value.denominator}}}"

    @settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        st.lists(
            st.tuples(
                st.fractions(max_denominator=1000).filter(lambda v: abs(v) < 10**7),
                st.integers(-1, 1),
                st.integers(0, 5),
                st.integers(0, 5),
            ),
            min_size=20,
            max_size=20,
        )
    )
    def test_agrees_with_math_verify(self, slow_verifier, rows):
        """Wherever the fast path decides, math-verify alone gives the same verdict."""
        golds, predictions = [], []
        for value, shift, gold_form, pred_form in rows:
            other = value if shift == 0 else value + Fraction(shift, 10**6) * (1 + value.denominator % 3)
            golds.append(self._write(value, gold_form))
            predictions.append(self._write(other, pred_form))
        decided = [(g, p, fast_verdict(g, p)) for g, p in zip(golds, predictions, strict=True)]
        decided = [(g, p, verdict) for g, p, verdict in decided if verdict is not None]
        reference = slow_verifier.verify_batch([g for g, _, _ in decided], [p for _, p, _ in decided])
        mismatches = [(g, p, v, r) for (g, p, v), r in zip(decided, reference, strict=True) if v != r]
        assert not mismatches


class TestQuickVerdicts:
    """The in-process verdicts beyond plain numbers; each expected value is math-verify's own."""

    @pytest.mark.parametrize(
        ("gold", "prediction", "expected"),
        [
            ("(1, 2)", "(1,2)", 1.0),
            ("[1, 3)", "\\left[1, 3\\right)", 1.0),
            ("\\text{(A)}", "\\text{(A)}", 1.0),
            ("30^\\circ", "30^\\circ", 1.0),
            ("50\\%", "50\\%", 1.0),
            ("x", "x", 1.0),
            ("\\dfrac{1}{2}", "\\tfrac{1}{2}", 1.0),
            ("1,000", "1, 000", None),  # a number and a set
            ("\\text{1 , 2}", "\\text{1,2}", None),  # spaces are part of a text
            ("(10^{8})!", "(10^{8})!", None),  # factorials may be slow to parse
            ("\\text{}", "\\text{}", None),  # math-verify cannot parse this gold answer
            ("(1, 2)", "(2, 1)", None),
        ],
    )
    def test_identical(self, gold, prediction, expected):
        assert identical_verdict(gold, prediction) == expected

    @pytest.mark.parametrize(
        ("gold", "prediction", "expected"),
        [
            ("2\\sqrt{2}", "\\sqrt{8}", 1.0),
            ("2\\sqrt{2}", "2 \\sqrt 2", 1.0),
            ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt2}", 1.0),
            ("\\frac{5\\pi}{3}", "\\frac{5}{3}\\pi", 1.0),
            ("2\\pi/3", "\\frac{2\\pi}{3}", 1.0),
            ("3+2\\sqrt{2}", "(1+\\sqrt{2})^2", 1.0),
            ("x^2+3x+2", "(x+1)(x+2)", 1.0),
            ("x^2+3x+2", "2+3x+x^2", 1.0),
            ("10^{20}", "100000000000000000000", 1.0),
            ("2\\sqrt{3}", "3\\sqrt{2}", 0.0),
            ("2\\pi", "6.28", 0.0),
            ("3.14", "\\pi", 0.0),
            ("x^2+1", "x^2-1", 0.0),
            ("x", "5", 0.0),
            ("2\\pi", None, 0.0),
            ("\\pi", "3.141593", None),  # within math-verify's rounding
            ("2\\pi", "6.283185", None),
            ("\\frac{x}{2}", "0.5x", None),  # floats in an expression
            ("x", "\\frac{2x}{2}", None),  # math-verify compares a lone symbol by name: 0.0
            ("5", "2(3)", None),  # mixed number in latex2sympy: 2 + 3
            ("\\frac{5}{2}", "2\\frac{1}{2}", None),
            ("3x", "x(3)", None),  # a function call
            ("x^2+3", "x^2+3t", None),  # math-verify drops `t` as a unit
            ("1024", "2^10", None),
            ("10^{20}", "10^{20}+1", None),  # closer than math-verify's relative tolerance can tell
            ("x", "\\frac{1}{10^{20}}x", None),
            ("\\sqrt{-1}", "i", None),
            ("(1, 2)", "(1,2)", None),
            ("5", "5^{5^{5}}", None),
        ],
    )
    def test_algebraic(self, gold, prediction, expected):
        assert algebraic_verdict(gold, prediction) == expected

    def test_deep_or_long_input_is_deferred(self):
        assert quick_verdict("5", "(" * 10_000 + "5" + ")" * 10_000) is None
        assert quick_verdict("5", "1+" * 10_000 + "1") is None


def _differential_corpus() -> list[tuple[str, str]]:
    """Hand-written pairs and families from tests/data/math_answer_pairs.txt, and the benchmark's pairs."""
    pairs = []
    for line in (Path(__file__).parent / "data" / "math_answer_pairs.txt").read_text().splitlines():
        if line.startswith("* "):
            pairs += itertools.permutations(line[2:].split(" | "), 2)
        elif line and not line.startswith("#"):
            gold, prediction = line.split(" | ")
            pairs.append((gold, prediction))
    path = Path(__file__).parent.parent / "benchmarks" / "bench_math_reward.py"
    bench = import_file(path)
    benchmark_pairs = set()
    for seed in (0, 5):
        _, golds, completions = bench.make_batch(256, group=8, seed=seed)
        benchmark_pairs.update(zip(golds, map(extract_boxed_answer, completions), strict=True))
    return pairs + sorted(benchmark_pairs)


def test_fast_paths_agree_with_math_verify(monkeypatch):
    """Wherever `fast_verdict`, `identical_verdict` or `algebraic_verdict` decides, math-verify, called as in the
    workers, gives the same verdict."""
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
    from math_verify.parser import parse_latex_cached

    monkeypatch.setattr(_Latex2Sympy, "parse", _Latex2Sympy.parse)  # restored after the test
    monkeypatch.setattr(_Latex2Sympy, "create_parser", _Latex2Sympy.create_parser)
    math_reward._enable_two_stage_parsing()
    runner = math_reward._MathVerifyRunner(signal_timeout=2)
    corpus = _differential_corpus()
    checked, mismatches = 0, []
    for raw_gold, raw_prediction in corpus:
        gold, prediction = math_reward._prepare_gold(raw_gold), raw_prediction.strip() or None
        verdicts = {f.__name__: f(gold, prediction) for f in (fast_verdict, identical_verdict, algebraic_verdict)}
        if all(verdict is None for verdict in verdicts.values()):
            continue
        checked += 1
        reference, _ = runner(gold, prediction)
        mismatches += [
            (gold, prediction, name, v, reference) for name, v in verdicts.items() if v not in (None, reference)
        ]
    parse_latex_cached.cache_clear()
    assert len(corpus) > 1200 and checked > 800  # the corpus, and the part of it that the fast paths decide
    assert not mismatches


def test_two_stage_parsing_changes_no_parse(monkeypatch):
    """latex2sympy with SLL-then-LL parsing (as in the workers) gives the same objects as with LL parsing alone."""
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy
    from math_verify import LatexExtractionConfig, parse
    from math_verify.parser import parse_latex_cached
    from sympy import srepr

    config = [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
    # One answer per line: tuples, intervals, sets, matrices, relations, and some broken LaTeX.
    answers = r"""
(1, 2)
(3,1)
[1, 3)
(-\infty, 2] \cup (3, \infty)
\{1, 2, 3\}
1, 2
1,000
x^2+2x+1
\frac{\sqrt{3}}{2}
2\sqrt{3}
\frac{\pi}{4}
50\%
30^\circ
x = 5
1 < x < 3
\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}
\sin x + \cos y
\log_2 8
|x-1|
5!
\binom{5}{2}
\text{Friday}
(a, b) = (1, -2)
y = 2x + 3
\pm 2
3 \text{ cm}
{{}
\frac{
((1, 2)
1,,2
x^
\sqrt
(1, 2]]
""".strip().splitlines()

    def parse_all():
        parse_latex_cached.cache_clear()
        results = []
        for answer in answers:
            parsed = parse(f"$\\boxed{{{answer}}}$", extraction_config=config)
            results.append([item if isinstance(item, str) else srepr(item) for item in parsed])
        return results

    reference = parse_all()
    monkeypatch.setattr(_Latex2Sympy, "parse", _Latex2Sympy.parse)  # restored after the test
    monkeypatch.setattr(_Latex2Sympy, "create_parser", _Latex2Sympy.create_parser)
    assert math_reward._enable_two_stage_parsing()
    assert parse_all() == reference
    parse_latex_cached.cache_clear()


class TestRobustness:
    def test_pathological_answers_score_zero_without_stalling_the_batch(self, verifier):
        garbage = "".join(chr(33 + (i * 7919) % 90) for i in range(100_000))
        golds = ["5", "x^2+1", "5", "\\sqrt{2}", "5", "(1, 2)"]
        predictions = ["5", "1+x^2", POWER_TOWER, "\\sqrt{2}", garbage, "(1,2)"]
        start = time.perf_counter()
        assert verifier.verify_batch(golds, predictions) == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
        # Two items hit their timeout; the bound leaves room for a loaded CI machine, far below a stalled batch.
        assert time.perf_counter() - start < 6 * verifier.timeout

    def test_timeouts_are_counted_and_cached(self, verifier):
        before = verifier.stats()["timeouts"]
        assert verifier.verify_batch(["7"], ["9^{9^{9^9}}"]) == [0.0]
        assert verifier.stats()["timeouts"] == before + 1
        start = time.perf_counter()
        assert verifier.verify_batch(["7"], ["9^{9^{9^9}}"]) == [0.0]
        assert time.perf_counter() - start < 0.5

    @pytest.mark.skipif(not HAS_FORK, reason="the test hook reaches the workers through fork")
    def test_hung_worker_is_killed_and_replaced(self, monkeypatch):
        run = math_reward._MathVerifyRunner.__call__

        def hang_on_marker(self, gold, prediction):
            if gold == "hang":
                time.sleep(600)
            return run(self, gold, prediction)

        monkeypatch.setattr(math_reward._MathVerifyRunner, "__call__", hang_on_marker)
        with MathVerifier(num_workers=2, timeout=1.0, chunk_size=4) as fresh:
            golds = ["x^2", "hang", "x^3", "x^4", "x^5", "x^6"]
            predictions = ["x^2", "1", "x^3", "x^3", "x^5", "x^6"]
            start = time.perf_counter()
            assert fresh.verify_batch(golds, predictions) == [1.0, 0.0, 1.0, 0.0, 1.0, 1.0]
            assert time.perf_counter() - start < 30  # the hung worker sleeps 600 s
            stats = fresh.stats()
            assert stats["hard_timeouts"] == 1 and stats["timeouts"] == 1 and stats["worker_restarts"] == 1
            assert len(fresh._workers) == 2 and all(worker.process.is_alive() for worker in fresh._workers)
            assert fresh.verify_batch(["x^7"], ["x^7"]) == [1.0]

    @pytest.mark.skipif(not HAS_FORK, reason="the test hook reaches the workers through fork")
    def test_crashed_worker_is_replaced(self, monkeypatch):
        run = math_reward._MathVerifyRunner.__call__

        def crash_on_marker(self, gold, prediction):
            if gold == "crash":
                os._exit(3)
            return run(self, gold, prediction)

        monkeypatch.setattr(math_reward._MathVerifyRunner, "__call__", crash_on_marker)
        with MathVerifier(num_workers=1, timeout=2.0) as fresh:
            assert fresh.verify_batch(["x", "crash", "y"], ["x", "1", "y"]) == [1.0, 0.0, 1.0]
            assert fresh.stats()["errors"] == 1 and fresh.stats()["worker_restarts"] == 1

    def test_workers_exit_with_their_parent(self):
        script = (
            "import os, signal\n"
            "from masa_trl.math_reward import MathVerifier\n"
            "v = MathVerifier(num_workers=2)\n"
            "v.start()\n"
            "print(' '.join(str(w.process.pid) for w in v._workers), flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n"
        )
        result = subprocess.run(
            [sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=60
        )
        pids = [int(pid) for pid in result.stdout.split()]
        assert len(pids) == 2
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids)

    def test_spawn_start_method(self):
        with MathVerifier(num_workers=1, start_method="spawn") as fresh:
            assert fresh.verify_batch(["x^2", "2"], ["x\\cdot x", "3"]) == [1.0, 0.0]

    def test_close_stops_workers_and_the_verifier_restarts_them(self):
        fresh = MathVerifier(num_workers=1)
        fresh.start()
        process = fresh._workers[0].process
        fresh.close()
        assert not process.is_alive()
        assert fresh.verify_batch(["x"], ["x"]) == [1.0]
        fresh.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class TestReward:
    def test_string_and_conversational_completions(self):
        completions = [
            [{"role": "assistant", "content": r"Thus \boxed{\frac{1}{2}}."}],
            r"I get $\boxed{3}$",
            [{"role": "assistant", "content": "I do not know."}],
        ]
        assert math_accuracy_reward(completions, answer=["0.5", "4", "2"]) == [1.0, 0.0, 0.0]

    def test_trl_call_signature_and_metrics(self):
        logged = {}
        rewards = math_accuracy_reward(
            prompts=["p"] * 4,
            completions=[r"\boxed{5}", r"\boxed{6}", "no box", r"\boxed{5}"],
            completion_ids=[[1]] * 4,
            answer=["5", "5", "5", "\\text{}"],
            trainer_state=None,
            log_extra=lambda column, values: None,
            log_metric=lambda name, value: logged.__setitem__(name, value),
            other_column=[1, 2, 3, 4],
        )
        assert rewards == [1.0, 0.0, 0.0, None]
        assert logged == {
            "math_reward/timeouts": 0.0,
            "math_reward/gold_unparsable": 1.0,
            "math_reward/no_boxed": 0.25,
        }

    def test_usable_as_trl_reward_func(self):
        assert math_accuracy_reward.__name__ == "math_accuracy_reward"
        assert pickle.loads(pickle.dumps(math_accuracy_reward)) is math_accuracy_reward

    def test_verify_answers_and_default_verifier(self):
        assert get_default_verifier() is get_default_verifier()
        assert verify_answers(["2", "x"], [r"\boxed{2}", [{"role": "assistant", "content": r"\boxed{y}"}]]) == [
            1.0,
            0.0,
        ]
