import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from masa_trl import rewards
from masa_trl.meta import MetaPrediction, parse_meta_prediction
from masa_trl.meta_rewards import default_meta_reward_funcs
from masa_trl.rewards import (
    MetaReward,
    NotionMatcher,
    SolutionStats,
    difficulty_reward,
    lemmatize,
    length_reward,
    meta_reward,
    notion_reward,
)


PROBLEM = "Find the roots of $x^2 - 5x + 6 = 0$ with the quadratic formula."
SOLUTIONS = [
    "By Vieta's formulas the roots sum to 5 and multiply to 6, so \\boxed{2, 3}.",  # correct
    "Modular arithmetic is not needed; the Vieta formula gives \\boxed{2, 3}.",  # correct
    "Using modular arithmetic we find \\boxed{1}.",  # incorrect
    "The quadratic formula gives \\boxed{4}. A Vieta's formula check fails.",  # incorrect
]
CORRECT = [True, True, False, False]
LENGTHS = [300, 500, 800, 200]
NOTIONS = [
    "modular arithmetics",
    "Vieta's formulas",
    "quadratic formula",
    "Modular Arithmetic",
    "pigeonhole principle",
]


def _stats():
    return SolutionStats(correct=list(CORRECT), lengths=list(LENGTHS), solutions=list(SOLUTIONS), problem=PROBLEM)


class TestLengthReward:
    @pytest.mark.parametrize("predicted, expected", [(300, 1.0), (400, 1.0), (500, 1.0), (299, 0.0), (501, 0.0)])
    def test_inclusive_range_of_correct_lengths(self, predicted, expected):
        assert length_reward(predicted, [500, 300, 420]) == expected

    def test_one_correct_rollout_can_be_matched_exactly(self):
        # The authors' strict `min < pred < max` made this impossible.
        assert length_reward(400, [400]) == 1.0
        assert length_reward(401, [400]) == 0.0

    def test_no_correct_rollout_gives_zero(self):
        assert length_reward(400, []) == 0.0


class TestDifficultyReward:
    def test_hand_computed(self):
        # 0.01 ** |5/8 - 2/3| = 0.01 ** (1/24) = 10 ** (-1/12)
        assert difficulty_reward(5 / 8, 2 / 3) == pytest.approx(10 ** (-1 / 12))
        assert difficulty_reward(5 / 8, 2 / 3) == pytest.approx(0.8254, abs=1e-4)

    def test_exact_and_worst(self):
        assert difficulty_reward(0.5, 0.5) == 1.0
        assert difficulty_reward(0.0, 1.0) == pytest.approx(0.01)
        assert difficulty_reward(1.0, 0.0, base=0.1) == pytest.approx(0.1)

    def test_other_base(self):
        assert difficulty_reward(0.25, 0.75, base=0.25) == pytest.approx(0.5)

    @pytest.mark.parametrize("base", [0, 1, 1.5, -0.1, float("nan"), True, "0.01"])
    def test_base_must_lie_in_open_unit_interval(self, base):
        with pytest.raises(ValueError, match="base"):
            difficulty_reward(0.5, 0.5, base=base)

    @pytest.mark.parametrize("rates", [(5, 0.5), (0.5, -0.1), (float("nan"), 0.5), (0.5, 1.01)])
    def test_rates_must_lie_in_unit_interval(self, rates):
        with pytest.raises(ValueError, match="Divide an integer prediction"):
            difficulty_reward(*rates)


class TestLemmatize:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("Vieta's formulas", ["vieta", "formula"]),
            ("Vieta’s formula", ["vieta", "formula"]),
            ("vieta formula", ["vieta", "formula"]),
            ("Chinese remainder theorems", ["chinese", "remainder", "theorem"]),
            ("AM-GM inequalities", ["am", "gm", "inequality"]),
            ("matrices and vertices", ["matrix", "and", "vertex"]),
            ("Fibonacci numbers", ["fibonacci", "number"]),
            ("pi cos", ["pi", "cos"]),
            ("$x^2$ and a_n", ["x", "2", "and", "a", "n"]),
            ("Bézout identity", ["bézout", "identity"]),
            ("", []),
        ],
    )
    def test_words_are_lowercased_and_lemmatized_as_nouns(self, text, expected):
        assert lemmatize(text) == expected


class TestNotionReward:
    def test_hand_computed(self):
        # "quadratic formula" is in the problem: dropped. The two "modular arithmetic" spellings count once: in one
        # correct and one incorrect rollout, net 0. "Vieta's formulas": 2 correct - 1 incorrect > 0. "pigeonhole
        # principle": in no rollout. Score 1 / 3.
        assert notion_reward(NOTIONS, SOLUTIONS, CORRECT, PROBLEM) == pytest.approx(1 / 3)

    def test_case_and_plural_do_not_matter(self):
        # The authors matched case-sensitive substrings: "Pythagorean Theorem" missed "pythagorean theorem".
        solutions = ["By the pythagorean theorem the primes are 2 and 3.", "no idea"]
        assert notion_reward(["Pythagorean Theorems"], solutions, [True, False], "p") == 1.0
        assert notion_reward(["PRIME"], solutions, [True, False], "p") == 1.0

    def test_notions_differing_in_plural_or_case_count_once(self):
        solutions = ["the prime 7", "no idea"]
        assert notion_reward(["Primes", "prime", "PRIME", "parity"], solutions, [True, False], "p") == 0.5

    def test_matching_respects_word_boundaries(self):
        solutions = ["By summation we get 10.", "nothing"]
        assert notion_reward(["sum"], solutions, [True, False], "p") == 0.0
        assert notion_reward(["summation"], solutions, [True, False], "p") == 1.0

    def test_multi_word_notion_must_appear_as_a_phrase(self):
        solutions = ["The theorem on the remainder.", "nothing"]
        assert notion_reward(["remainder theorem"], solutions, [True, False], "p") == 0.0

    def test_exclusion_uses_only_the_problem_text(self):
        # The authors excluded notions found anywhere in the meta prompt, instruction and system text included.
        solutions = ["Step by step: the final answer is 4.", "I guess 5."]
        notions = ["final answer", "step", "helpful assistant"]
        assert notion_reward(notions, solutions, [True, False], "Compute $2+2$.") == pytest.approx(2 / 3)

    def test_exclusion_is_lemmatized_and_on_word_boundaries(self):
        solutions = ["Count the primes; also the sum.", "nothing"]
        problem = "How many Primes below 10? Give the summation."
        # "prime" is in the problem (as "Primes"): dropped. "sum" is not (only "summation"): kept and found.
        assert notion_reward(["prime", "sum"], solutions, [True, False], problem) == 1.0

    def test_every_notion_excluded_gives_zero(self):
        assert notion_reward(["quadratic formula", "Roots"], SOLUTIONS, CORRECT, PROBLEM) == 0.0

    def test_no_notion_gives_zero(self):
        assert notion_reward([], SOLUTIONS, CORRECT, PROBLEM) == 0.0
        assert notion_reward(["", "$$", "+"], SOLUTIONS, CORRECT, PROBLEM) == 0.0

    def test_notions_without_words_are_dropped(self):
        solutions = ["the prime 7", "no idea"]
        assert notion_reward(["$$", "prime"], solutions, [True, False], "p") == 1.0

    def test_no_correct_rollout_gives_zero(self):
        assert notion_reward(["modular arithmetic", "vieta formula"], SOLUTIONS, [False] * 4, PROBLEM) == 0.0

    def test_tie_between_correct_and_incorrect_is_not_rewarded(self):
        assert notion_reward(["modular arithmetic"], SOLUTIONS, CORRECT, PROBLEM) == 0.0

    def test_one_correct_rollout(self):
        assert notion_reward(["vieta formula"], SOLUTIONS[:1], [True], PROBLEM) == 1.0

    def test_mismatched_lengths_are_rejected(self):
        with pytest.raises(ValueError, match="one entry per rollout"):
            NotionMatcher(SOLUTIONS, CORRECT[:2], PROBLEM)

    @pytest.mark.parametrize("notions", ["vieta formula", ["vieta formula", 1]])
    def test_non_string_notions_are_rejected(self, notions):
        with pytest.raises(TypeError, match="list of strings"):
            NotionMatcher(SOLUTIONS, CORRECT, PROBLEM).score(notions)

    def test_solutions_are_lemmatized_once_per_prompt(self, monkeypatch):
        calls = []
        original = rewards._lemma_string

        def counting(text):
            calls.append(text)
            return original(text)

        monkeypatch.setattr(rewards, "_lemma_string", counting)
        stats = _stats()
        scores = [meta_reward(MetaPrediction(tuple(NOTIONS), 0.5, 400), stats).notion for _ in range(16)]
        assert scores == [pytest.approx(1 / 3)] * 16
        assert stats.notion_matcher is stats.notion_matcher
        assert sum(text in SOLUTIONS for text in calls) == len(SOLUTIONS)
        assert calls.count(PROBLEM) == 1


class TestSolutionStats:
    def test_statistics(self):
        stats = _stats()
        assert stats.pass_rate == 0.5
        assert stats.correct_lengths == [300, 500]

    def test_truthy_scores_count_as_correct(self):
        stats = SolutionStats(correct=[1.0, 0.0, 1.0], lengths=[1, 2, 3], solutions=["a", "b", "c"], problem="p")
        assert stats.pass_rate == pytest.approx(2 / 3)
        assert stats.correct_lengths == [1, 3]

    def test_empty_is_rejected(self):
        with pytest.raises(ValueError, match="at least one"):
            SolutionStats(correct=[], lengths=[], solutions=[], problem="p")

    def test_mismatched_lengths_are_rejected(self):
        with pytest.raises(ValueError, match="one entry per rollout"):
            SolutionStats(correct=[True], lengths=[1, 2], solutions=["a"], problem="p")


class TestMetaReward:
    def test_hand_computed(self):
        prediction = MetaPrediction(notions=tuple(NOTIONS), pass_rate=4 / 8, length=400)
        reward = meta_reward(prediction, _stats())
        assert reward == (1.0, 1.0, pytest.approx(1 / 3), pytest.approx(7 / 9))

    def test_components_and_mean(self):
        prediction = MetaPrediction(notions=("pigeonhole principle",), pass_rate=5 / 8, length=600)
        reward = meta_reward(prediction, _stats())
        # 0.01 ** |5/8 - 1/2| = 10 ** (-1/4)
        assert reward.length == 0.0 and reward.notion == 0.0
        assert reward.difficulty == pytest.approx(10 ** (-1 / 4))
        assert reward.total == pytest.approx(10 ** (-1 / 4) / 3)

    def test_from_parsed_text(self):
        text = '<meta>r</meta>\n{"math_notion": ["Vieta\'s formulas"], "pass_rate": 4, "solution_length": 500}'
        assert meta_reward(parse_meta_prediction(text), _stats()) == MetaReward(1.0, 1.0, 1.0, 1.0)

    def test_unparsable_prediction_scores_zero(self):
        assert meta_reward(None, _stats()) == MetaReward(0.0, 0.0, 0.0, 0.0)
        assert meta_reward(parse_meta_prediction("{'math_notion': []}"), _stats()).total == 0.0

    @pytest.mark.parametrize("length, in_range", [(10, False), (127, False), (4097, False), (128, True), (400, True)])
    def test_out_of_range_length_scores_zero(self, length, in_range):
        # The trainer parses with the meta prompt's range (meta_min_length..max_completion_length): a length outside it
        # is unparsable, so every component scores 0, as for broken JSON. Inside it, the pass rate and the notion are
        # exact (difficulty and notion 1) and only the length decides its own component.
        text = f'<meta>r</meta>\n{{"math_notion": ["Vieta\'s formulas"], "pass_rate": 4, "solution_length": {length}}}'
        prediction = parse_meta_prediction(text, pass_rate_scale=8, max_length=4096, min_length=128)
        stats = _stats()
        expected_length = float(in_range and 300 <= length <= 500)
        expected = [expected_length, 1.0, 1.0] if in_range else [0.0, 0.0, 0.0]
        # Through the trainer's TRL-style reward callables...
        funcs = default_meta_reward_funcs()
        scores = [func([text], meta_prediction=[prediction], solution_stats=[stats])[0] for func in funcs]
        assert scores == expected
        # ...and through `meta_reward`.
        assert meta_reward(prediction, stats).total == pytest.approx(sum(expected) / 3)
        assert (prediction is None) == (not in_range)

    def test_length_above_max_length_is_not_clamped_into_a_reward(self):
        # A clamped 400 -> 256 used to keep the difficulty and notion rewards (total 2/3); now it scores 0.
        text = '{"math_notion": ["Vieta\'s formulas"], "pass_rate": 4, "solution_length": 400}'
        assert meta_reward(parse_meta_prediction(text), _stats()).total == pytest.approx(1.0)
        assert meta_reward(parse_meta_prediction(text, max_length=256), _stats()) == MetaReward(0.0, 0.0, 0.0, 0.0)

    def test_no_correct_rollout(self):
        stats = SolutionStats(correct=[False] * 4, lengths=LENGTHS, solutions=SOLUTIONS, problem=PROBLEM)
        reward = meta_reward(MetaPrediction(("vieta formula",), 0.0, 300), stats)
        assert reward == MetaReward(0.0, 1.0, 0.0, pytest.approx(1 / 3))

    def test_base_is_validated(self):
        with pytest.raises(ValueError, match="base"):
            meta_reward(None, _stats(), base=2.0)

    def test_reward_is_a_named_tuple(self):
        reward = meta_reward(MetaPrediction(("vieta formula",), 0.5, 300), _stats())
        length, difficulty, notion, total = reward
        assert math.isclose(total, (length + difficulty + notion) / 3)
        assert reward._asdict().keys() == {"length", "difficulty", "notion", "total"}


@settings(max_examples=100, deadline=None)
@given(
    notions=st.lists(st.text(max_size=30), max_size=6),
    solutions=st.lists(st.text(max_size=200), min_size=1, max_size=4),
    data=st.data(),
    problem=st.text(max_size=100),
)
def test_notion_reward_is_a_share_on_any_text(notions, solutions, data, problem):
    correct = data.draw(st.lists(st.booleans(), min_size=len(solutions), max_size=len(solutions)))
    score = notion_reward(notions, solutions, correct, problem)
    assert 0.0 <= score <= 1.0
    if not any(correct):
        assert score == 0.0
