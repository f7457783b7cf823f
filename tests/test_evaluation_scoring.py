"""Both scorers on the committed fixtures, where they agree and where the paper-compatible one differs."""

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
    assert extract_choice("A or B? Answer: b") == "B"
    assert extract_choice("\\boxed{\\text{D}}") == "D"
    assert extract_choice("I think a photon mediates it") is None
    # The authors' fallback: the first standalone letter, so the article "a" reads as "A".
    assert extract_choice_paper("I think a photon mediates it") == "A"
    assert extract_choice_paper("\\boxed{C}") == "C"


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
