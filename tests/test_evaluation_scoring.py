"""Both scorers on the committed fixtures, where they agree and where the paper-compatible one differs."""

from dataclasses import replace

import pytest

from evaluation.benchmarks import BENCHMARKS, Problem, load_benchmark
from evaluation.compat_grader import extract_answer, math_equal, strip_string
from evaluation.scoring import MathVerifyScorer, PaperScorer, extract_choice, extract_choice_paper, make_scorer


# A correct completion per fixture problem (in file order), written in the varied forms models use.
CORRECT = {
    "aime24": ["so \\boxed{66}.", "The remainder is $\\boxed{170}$.", "\\boxed{8}", "\\boxed{001}", "\\boxed{9}"],
    "aime25": ["\\boxed{650}", "\\boxed{100}", "\\boxed{512}", "Area $=\\boxed{84}$", "\\boxed{124}"],
    "amc23": ["\\boxed{\\frac{11}{10}}", "\\boxed{17}", "\\boxed{6}", "\\boxed{23}", "\\boxed{8}"],
    "math500": [
        "\\boxed{2\\sqrt{3}}",
        "\\boxed{2, 3}",
        "\\boxed{(-2,4)}",
        "\\boxed{\\dfrac{1}{2}}",
        "\\boxed{\\left(3, \\frac{\\pi}{2}\\right)}",
    ],
    "minerva": ["\\boxed{60}", "\\boxed{5 \\times 10^{14}}", "\\boxed{5}", "\\boxed{0.125}", "\\boxed{9}"],
    "olympiadbench": ["\\boxed{1, 3}", "\\boxed{25}", "\\boxed{5}", "\\boxed{\\frac{10}{11}}", "\\boxed{\\sqrt{2}}"],
}


@pytest.fixture(scope="module")
def scorers():
    mv, paper = MathVerifyScorer(timeout=10.0, num_workers=1), PaperScorer(timeout=5.0)
    yield {"math_verify": mv, "paper": paper}
    mv.close()
    paper.close()


def _items():
    problems, correct, wrong = [], [], []
    for name, completions in CORRECT.items():
        items = load_benchmark(name, source="fixtures")[: len(completions)]
        problems += items
        correct += [f"Let me think. {c}" for c in completions]
        wrong += ["Let me think. \\boxed{12345}"] * len(items)
    gpqa = load_benchmark("gpqa_diamond", source="fixtures")
    problems += gpqa
    correct += [f"The answer is \\boxed{{{p.answer}}}." for p in gpqa]
    wrong += [f"The answer is \\boxed{{{'ABCD'[('ABCD'.index(p.answer) + 1) % 4]}}}." for p in gpqa]
    return problems, correct, wrong


@pytest.mark.parametrize("name", ["math_verify", "paper"])
def test_scorers_on_fixtures(scorers, name):
    scorer = scorers[name]
    problems, correct, wrong = _items()
    results = scorer.score(problems, correct)
    failures = [
        (p.benchmark, p.problem_id, c, r.extracted)
        for p, c, r in zip(problems, correct, results, strict=True)
        if not r.correct
    ]
    assert not failures
    results = scorer.score(problems, wrong)
    assert not any(r.correct for r in results)
    assert all(r.extracted for r in results)
    assert scorer.stats()["timeouts"] == 0


def test_where_the_scorers_differ(scorers):
    aime = load_benchmark("aime24", source="fixtures")[0]  # 66
    olympiad = {p.problem_id: p for p in load_benchmark("olympiadbench", source="fixtures")}["9006"]  # ["0", "2"]
    problems = [aime, aime, olympiad, olympiad]
    completions = [
        "The answer is 66.",  # no box: the paper scorer reads "the answer is"
        "We get 12 and then 66",  # the paper scorer falls back to the last number
        "\\boxed{0, 2}",  # both answers: math-verify compares the whole list
        "\\boxed{0}",  # the paper scorer compares with final_answer[0] only
    ]
    mv = [r.correct for r in scorers["math_verify"].score(problems, completions)]
    paper = [r.correct for r in scorers["paper"].score(problems, completions)]
    assert mv == [False, False, True, False]
    assert paper == [True, True, False, True]


def test_percentage_tolerance_of_the_paper_scorer():
    assert math_equal("50", "0.5") and math_equal("0.5", "50")  # x100 and /100 accepted
    assert math_equal("3.14159", "3.1416")  # relative tolerance 1e-4
    assert not math_equal("3.14", "3.1416")
    assert not math_equal("7", "8")


def test_paper_extraction_and_normalisation():
    assert extract_answer("first \\boxed{1} then \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_answer("So the answer is: 12.\nDone") == "12"
    assert extract_answer("numbers 3, 4 and 1,000") == "1000"
    assert extract_answer("nothing here") == ""
    assert strip_string("\\dfrac{1}{2}") == "\\frac{1}{2}"
    assert strip_string("90^\\circ") == "90"
    assert strip_string("10\\%") == "10"
    assert strip_string("x = 5") == "5"
    assert strip_string("5.00") == "5"
    assert strip_string("12 \\text{ cm}") == "12"
    assert strip_string("\\frac12") == "\\frac{1}{2}"
    assert strip_string("3/4") == "\\frac{3}{4}"


def test_choice_extraction():
    assert extract_choice("so the answer is (C).") == "C"
    # A lowercase letter is an answer only boxed or bracketed (evaluation.ood's rule): "Answer: a photon ..." is none.
    assert extract_choice("A or B? Answer: (b)") == "B"
    assert extract_choice("A or B? Answer: b") is None
    assert extract_choice("\\boxed{\\text{D}}") == "D"
    assert extract_choice("I think a photon mediates it") is None
    # The authors' fallback: the first standalone letter, so the article "a" reads as "A".
    assert extract_choice_paper("I think a photon mediates it") == "A"
    assert extract_choice_paper("\\boxed{C}") == "C"


# GPQA reasoning traces whose correct option is C, with decoy letters before (or after) the final answer. The robust
# scorer reads them with evaluation.ood's letter rules over GPQA's options A-D; the old A-D extraction (a lowercase
# letter after "answer is" / "answer:" counted, \\boxed{} only with a bare letter, no "correct option is") read the
# ones with an `old:` comment wrongly.
GPQA_TRACES = {
    # name: (trace, math_verify's letter); the comment says what the old extraction read where it differs
    "decoys-then-boxed-then-article": (
        (
            "A) is wrong because the spin is not conserved. Option B seems plausible, but it breaks parity. "
            "So the answer is \\boxed{C}. Note that this answer is a direct consequence of gauge invariance."
        ),
        "C",  # old: A ("answer is a")
    ),
    "correct-option-is": (
        "Option B seems right at first, but it ignores the mass term, so the correct option is C.",
        "C",  # old: None
    ),
    "article-after-answer": ("The answer is (C), since the answer is a consequence of the symmetry.", "C"),  # old: A
    "boxed-with-text": ("Checking: A) too small, B) wrong sign, D) wrong units. \\boxed{C) 12 eV}", "C"),  # old: None
    "boxed-mathrm": ("Only one fits. The final answer is $\\boxed{\\mathrm{C}}$.", "C"),  # old: None
    "after-think": ("<think>Answer: B? No, B double counts.</think>\n\nThe correct choice is C.", "C"),  # old: B
    "answer-then-article": ("Answer: C. Option A and the answer is a trap for the unwary.", "C"),  # old: A
    "bracketed": ("It is (C); a photon is exchanged, not a gluon. The answer is (C)", "C"),
    "no-answer": ("Between A and D it is hard to say; the answer is a bit subtle.", None),  # old: A
    "not-an-option": ("The answer is (E).", None),  # not one of GPQA's options
}


@pytest.mark.parametrize(("trace", "expected"), GPQA_TRACES.values(), ids=GPQA_TRACES)
def test_gpqa_robust_scorer_reads_the_last_explicit_letter(scorers, trace, expected):
    """math_verify reads GPQA with evaluation.ood's letter rules (its options A-D): decoys earlier in the trace, an
    article "a" after "answer is", a letter outside A-D are no answer; `\\boxed{C) text}`, `\\boxed{\\mathrm{C}}`,
    "the correct option is C" and the text after </think> are."""
    problem = replace(load_benchmark("gpqa_diamond", source="fixtures")[0], answer="C", answers=("C",))
    assert extract_choice(trace) == expected
    result = scorers["math_verify"].score([problem], [trace])[0]
    assert (result.correct, result.extracted) == (expected == "C", expected)


def test_gpqa_robust_and_r_bench_letters_agree():
    """GPQA's robust extraction is evaluation.ood's, over A-D: the same verdicts as for a letter set's item."""
    from evaluation import ood

    for trace, _expected in GPQA_TRACES.values():
        assert extract_choice(trace) == ood.extract_letter(trace, "ABCD")
    assert extract_choice("\\boxed{E}") is None and ood.extract_letter("\\boxed{E}", "ABCDEF") == "E"


def test_gpqa_paper_scorer_keeps_the_authors_get_choice(scorers):
    """The paper scorer reproduces the authors' GPQA protocol (`--paper-protocol`: every correct option at D), so it
    keeps their get_choice: a bracketed letter anywhere wins, else the FIRST standalone letter, the article "a" too."""
    problem = load_benchmark("gpqa_diamond", source="fixtures", gpqa_shuffle="paper")[0]
    assert problem.answer == "D"
    traces = [
        "I think a photon mediates it, so D is right.",  # the article "a" -> A
        "Option B seems right at first, but the correct option is D.",  # the first standalone letter -> B
        "The answer is (D).",
        "\\boxed{D}",
    ]
    results = scorers["paper"].score([problem] * len(traces), traces)
    assert [r.extracted for r in results] == ["A", "B", "D", "D"]
    assert [r.correct for r in results] == [False, False, True, True]
    robust = scorers["math_verify"].score([problem] * len(traces), traces)
    assert [r.extracted for r in robust] == [None, "D", "D", "D"]


def test_paper_scorer_counts_timeouts():
    problem = Problem("custom", "tower", "Compute a tower of powers.", "9^{9^{9^{9}}}", ("9^{9^{9^{9}}}",))
    with PaperScorer(timeout=0.5) as scorer:
        result = scorer.score([problem], ["\\boxed{9^{9^{9^{8}}}}"])[0]
        assert not result.correct
        assert scorer.stats()["timeouts"] == 1
        # The worker was replaced: the next symbolic check works (given time for sympy's first simplify).
        scorer.checker.timeout = 30.0
        easy = Problem("custom", "sq", "Expand.", "x^2+2x+1", ("x^2+2x+1",))
        assert scorer.score([easy], ["\\boxed{(x+1)^2}"])[0].correct


def test_make_scorer():
    assert make_scorer("masa_compat").name == "paper"
    with pytest.raises(ValueError, match="math_verify"):
        make_scorer("exact")
    from evaluation import ood

    assert set(CORRECT) | {"gpqa_diamond"} | set(ood.OOD_BENCHMARKS) == set(BENCHMARKS)
