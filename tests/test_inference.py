"""Tests of `masa_trl.inference`: meta predictions at inference and meta-guided solution generation.

A random tiny model rarely writes parsable JSON, so the aggregation and budget logic is tested with a scripted
`generate` that replays chosen completions through the same decoding loop (EOS, stopping criteria, padding), with
numbers that can be checked by hand; the real `generate` of the tiny model checks batching, budgets and seeding.

Run with `python -m pytest tests/test_inference.py -q`.
"""

import dataclasses
import math
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from masa_trl.inference import (
    _CONFIG_DEFAULTS,
    MetaEstimate,
    MetaGuidedGeneration,
    generate_with_meta,
    meta_kwargs_from_config,
    predict_meta,
    solution_kwargs_from_config,
)
from masa_trl.meta import MetaPrediction, format_meta_prediction
from masa_trl.templates import META_PROMPT_TEMPLATE, meta_prompt, solution_prompt


def meta_text(notions, pass_rate, length):
    return format_meta_prediction(notions, pass_rate, length, reasoning="thinking")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)


class ScriptedGenerate:
    """Stands in for `model.generate`: row r of a call (prompt-major, as `num_return_sequences` expands rows) writes
    `script(prompt_text, sample_index)` and then EOS, through the decoding loop of transformers' `_sample`: one token
    per step, a row stops at EOS or when the stopping criteria say so, and stopped rows are padded."""

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script = tokenizer, script
        self.calls = []  # per call: the unpadded prompt ids, max_new_tokens, num_return_sequences

    def __call__(self, input_ids, attention_mask, generation_config, stopping_criteria, **kwargs):
        tokenizer, n = self.tokenizer, generation_config.num_return_sequences
        prompts = [row[mask.bool()].tolist() for row, mask in zip(input_ids, attention_mask, strict=True)]
        self.calls.append({"prompts": prompts, "max_new_tokens": generation_config.max_new_tokens, "n": n})
        texts = [tokenizer.decode(p, skip_special_tokens=False) for p in prompts]
        planned = [
            tokenizer(self.script(texts[r // n], r % n), add_special_tokens=False)["input_ids"]
            + [tokenizer.eos_token_id]
            for r in range(len(prompts) * n)
        ]
        ids = input_ids.repeat_interleave(n, dim=0)
        finished = torch.zeros(len(ids), dtype=torch.bool)
        for step in range(generation_config.max_new_tokens):
            tokens = torch.tensor(
                [tokenizer.pad_token_id if finished[r] else planned[r][step] for r in range(len(ids))]
            )
            ids = torch.cat([ids, tokens[:, None]], dim=1)
            finished |= tokens == tokenizer.eos_token_id
            finished |= stopping_criteria(ids, None)
            if finished.all():
                break
        return ids


@pytest.fixture
def scripted(model, tokenizer, monkeypatch):
    def install(script):
        fake = ScriptedGenerate(tokenizer, script)
        monkeypatch.setattr(model, "generate", fake)
        return fake

    return install


# ------------------------------------------------------------------------------------------------ aggregation
class TestMetaEstimate:
    def test_all_parsable(self):
        texts = [meta_text(["parity"], 6, 100), meta_text(["parity", "modular arithmetic"], 2, 300)]
        estimate = MetaEstimate.from_completions("x", texts, min_length=1, max_length=1000)
        assert estimate.parse_rate == 1.0
        assert estimate.mean_pass_rate == pytest.approx(0.5)  # (6/8 + 2/8) / 2
        assert estimate.std_pass_rate == pytest.approx(0.25)  # population std of 0.75 and 0.25
        assert estimate.median_length == 200.0
        assert estimate.notions == ("parity", "modular arithmetic")
        assert estimate.completions == tuple(texts)
        assert [p.length for p in estimate.parsed] == [100, 300]

    def test_mixed_counts_unparsable_and_out_of_range_as_failures(self):
        texts = [
            meta_text(["parity"], 8, 50),
            "no json here",
            meta_text(["parity"], 4, 5000),  # above max_length: invalid, as in training
            meta_text(["induction"], 0, 70),
        ]
        estimate = MetaEstimate.from_completions("x", texts, min_length=10, max_length=1000, max_notions=1)
        assert estimate.parse_rate == 0.5
        assert estimate.predictions[1] is None and estimate.predictions[2] is None
        assert estimate.mean_pass_rate == pytest.approx(0.5)
        assert estimate.std_pass_rate == pytest.approx(0.5)
        assert estimate.median_length == 60.0
        assert estimate.notions == ("parity",)  # tie between parity and induction: first named wins

    def test_nothing_parsed(self):
        estimate = MetaEstimate.from_completions("x", ["{", "pass_rate: 3"])
        assert estimate.parse_rate == 0.0
        assert math.isnan(estimate.mean_pass_rate) and math.isnan(estimate.std_pass_rate)
        assert math.isnan(estimate.median_length)
        assert estimate.notions == () and estimate.parsed == ()
        assert estimate.token_budget(2.0, 4096) is None

    def test_single_prediction_has_zero_spread(self):
        estimate = MetaEstimate.from_predictions("x", [MetaPrediction((), 0.25, 40)])
        assert estimate.std_pass_rate == 0.0 and estimate.median_length == 40.0

    def test_notions_are_the_most_named(self):
        predictions = [
            MetaPrediction(("a", "b"), 0.5, 10),
            MetaPrediction(("B", "c"), 0.5, 10),
            MetaPrediction(("c", " b "), 0.5, 10),
            MetaPrediction(("d",), 0.5, 10),
        ]
        assert MetaEstimate.from_predictions("x", predictions, max_notions=2).notions == ("b", "c")

    def test_token_budget_is_the_trainers_cutoff(self):
        estimate = MetaEstimate.from_predictions("x", [MetaPrediction((), 0.5, n) for n in (3, 4)])
        assert estimate.median_length == 3.5
        assert estimate.token_budget(2.0, 100) == 7
        assert estimate.token_budget(1.5, 100) == 6  # ceil(5.25)
        assert estimate.token_budget(2.0, 7) is None  # not below the limit: no budget
        with pytest.raises(ValueError, match="cutoff_factor"):
            estimate.token_budget(0, 100)

    def test_rejects_a_string_of_completions(self):
        with pytest.raises(TypeError, match="list of strings"):
            MetaEstimate.from_completions("x", "one text")


# ------------------------------------------------------------------------------------------------ settings
class TestSettings:
    def test_defaults_match_masa_config(self):
        from masa_trl.masa_config import MASAConfig

        fields = {f.name: f for f in dataclasses.fields(MASAConfig)}
        for name, value in _CONFIG_DEFAULTS.items():
            default = fields[name].default
            if default is dataclasses.MISSING:
                default = fields[name].default_factory()
            assert default == value, name

    def test_meta_prompt_and_parse_are_the_trainers(self, tmp_path):
        from masa_trl.masa_config import MASAConfig
        from masa_trl.masa_trainer import MASAGRPOTrainer

        config = MASAConfig(
            output_dir=str(tmp_path),
            use_cpu=True,
            bf16=False,
            report_to="none",
            max_completion_length=600,
            meta_min_length=50,
            pass_rate_scale=4,
            meta_system_prompt="Be brief.",
        )
        kwargs = meta_kwargs_from_config(config)
        stand_in = SimpleNamespace(args=config)
        problem = "Find $x$ with {braces}."
        settings = {k: kwargs[k] for k in ("pass_rate_scale", "min_length", "max_length", "template", "system_prompt")}
        assert meta_prompt(problem, **settings) == MASAGRPOTrainer._meta_prompt(stand_in, problem)
        texts = [meta_text(["a"], 3, 60), meta_text(["a"], 3, 40), meta_text(["a"], 5, 60), meta_text(["a"], 4, 600)]
        estimate = MetaEstimate.from_completions(
            problem,
            texts,
            pass_rate_scale=kwargs["pass_rate_scale"],
            min_length=kwargs["min_length"],
            max_length=kwargs["max_length"],
        )
        assert list(estimate.predictions) == [MASAGRPOTrainer._parse_meta(stand_in, text) for text in texts]
        assert solution_kwargs_from_config(config)["max_new_tokens"] == 600

    def test_demo_settings_give_the_demo_meta_prompt(self):
        from masa_trl.demo.experiment import DEMO_DEFAULTS
        from masa_trl.demo.task import meta_messages

        kwargs = meta_kwargs_from_config(DEMO_DEFAULTS)
        assert (kwargs["min_length"], kwargs["max_length"], kwargs["pass_rate_scale"]) == (1, 48, 8)
        settings = {k: kwargs[k] for k in ("pass_rate_scale", "min_length", "max_length", "template", "system_prompt")}
        assert meta_prompt("37+5+81", **settings) == meta_messages("37+5+81")
        solution = solution_kwargs_from_config(DEMO_DEFAULTS)
        assert solution["notion_feed_in"] is False and solution["max_new_tokens"] == 48

    def test_mapping_falls_back_to_defaults(self):
        kwargs = meta_kwargs_from_config({"unrelated": 1})
        assert kwargs["template"] == META_PROMPT_TEMPLATE and kwargs["min_length"] == 128


# ------------------------------------------------------------------------------------------------ predict_meta
class TestPredictMeta:
    def test_scripted_estimates_all_mixed_and_none(self, model, tokenizer, scripted):
        scripts = {
            "all parse": [meta_text(["parity"], 6, 20), meta_text(["parity"], 2, 40)],
            "some parse": [meta_text(["induction"], 8, 30), "not json"],
            "none parse": ["{", "nothing"],
        }

        def script(prompt, k):
            problem = next(p for p in scripts if p in prompt)
            return scripts[problem][k]

        fake = scripted(script)
        estimates = predict_meta(
            model, tokenizer, list(scripts), num_samples=2, min_length=10, max_length=60, batch_size=4
        )
        assert [e.problem for e in estimates] == list(scripts)
        assert [e.parse_rate for e in estimates[:2]] == [1.0, 0.5]
        assert estimates[0].mean_pass_rate == pytest.approx(0.5) and estimates[0].median_length == 30.0
        assert estimates[1].mean_pass_rate == 1.0 and estimates[1].std_pass_rate == 0.0
        assert estimates[1].notions == ("induction",)
        assert estimates[2].parse_rate == 0.0 and math.isnan(estimates[2].mean_pass_rate)
        assert estimates[0].completions == tuple(scripts["all parse"])
        assert estimates[0].num_tokens == tuple(
            len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1 for text in scripts["all parse"]
        )
        # batch_size 4 with 2 samples: 2 problems per call; the meta samples may write max_length tokens
        assert [len(call["prompts"]) for call in fake.calls] == [2, 1]
        assert {call["max_new_tokens"] for call in fake.calls} == {60}

    def test_prompt_is_the_rendered_meta_prompt(self, model, tokenizer, scripted):
        fake = scripted(lambda prompt, k: "x")
        predict_meta(model, tokenizer, ["What is 2+2?"], num_samples=1, min_length=4, max_length=32, template=None)
        expected = tokenizer.apply_chat_template(
            meta_prompt("What is 2+2?", min_length=4, max_length=32),
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        assert fake.calls[0]["prompts"] == [list(expected)]

    def test_template_override(self, model, tokenizer, scripted):
        fake = scripted(lambda prompt, k: "x")
        predict_meta(model, tokenizer, ["3+4"], num_samples=1, template="Predict: {problem}", system_prompt="")
        text = tokenizer.decode(fake.calls[0]["prompts"][0])
        assert "Predict: 3+4" in text and "system" not in text and "<meta>" not in text

    def test_real_generate_is_seeded_and_leaves_the_global_rng_alone(self, model, tokenizer):
        problems = ["What is 1+1?", "Find the prime factors of 91."]
        kwargs = dict(num_samples=3, min_length=1, max_length=12, batch_size=4, show_progress=False)
        state = torch.random.get_rng_state()
        first = predict_meta(model, tokenizer, problems, seed=7, **kwargs)
        assert torch.equal(torch.random.get_rng_state(), state)
        again = predict_meta(model, tokenizer, problems, seed=7, **kwargs)
        other = predict_meta(model, tokenizer, problems, seed=8, **kwargs)
        assert [e.completions for e in first] == [e.completions for e in again]
        assert [e.completions for e in first] != [e.completions for e in other]
        assert all(len(e.predictions) == len(e.num_tokens) == 3 for e in first)
        assert all(1 <= n <= 12 for e in first for n in e.num_tokens)
        # A random model writes no parsable JSON: every statistic is undefined, nothing breaks.
        assert all(e.parse_rate == 0.0 and math.isnan(e.median_length) for e in first)

    def test_training_mode_is_restored(self, model, tokenizer):
        model.train()
        try:
            predict_meta(model, tokenizer, ["1+1"], num_samples=1, max_length=4, min_length=1)
            assert model.training
        finally:
            model.eval()

    def test_empty_list(self, model, tokenizer):
        assert predict_meta(model, tokenizer, []) == []

    @pytest.mark.parametrize(
        "problems, error, match",
        [
            ("1+1", TypeError, "wrap a single problem in a list"),
            (["1+1", "  "], ValueError, r"problems\[1\] is empty"),
            (["1+1", "2+2", 5], TypeError, r"problems\[2\] must be a string, got int: 5"),
        ],
    )
    def test_bad_problems_are_named(self, model, tokenizer, problems, error, match):
        with pytest.raises(error, match=match):
            predict_meta(model, tokenizer, problems)

    def test_bad_settings(self, model, tokenizer):
        with pytest.raises(ValueError, match="max_length"):
            predict_meta(model, tokenizer, ["1+1"], min_length=64, max_length=32)
        with pytest.raises(ValueError, match="placeholder"):
            predict_meta(model, tokenizer, ["1+1"], template="no problem here")
        with pytest.raises(ValueError, match="num_samples"):
            predict_meta(model, tokenizer, ["1+1"], num_samples=0)
        with pytest.raises(ValueError, match="must not set"):
            predict_meta(model, tokenizer, ["1+1"], max_length=200, generation_kwargs={"max_new_tokens": 3})


# ------------------------------------------------------------------------------------------------ generate_with_meta
def estimate(problem, lengths, notions=("parity",)):
    return MetaEstimate.from_predictions(problem, [MetaPrediction(tuple(notions), 0.5, n) for n in lengths])


class TestGenerateWithMeta:
    def test_budget_caps_scripted_solutions(self, model, tokenizer, scripted):
        long_answer = " ".join(["step"] * 40)
        fake = scripted(lambda prompt, k: long_answer)
        problems = ["p one", "p two", "p three"]
        meta = [
            estimate("p one", [3, 5]),  # median 4 -> budget 8
            MetaEstimate.from_predictions("p two", [None, None]),  # nothing parsed -> no budget
            estimate("p three", [10, 12, 14]),  # median 12 -> budget 24
        ]
        out = generate_with_meta(
            model, tokenizer, problems, meta=meta, num_samples=2, cutoff_factor=2.0, max_new_tokens=30, batch_size=4
        )
        assert all(isinstance(o, MetaGuidedGeneration) for o in out)
        assert [o.budget for o in out] == [8, 30, 24]
        assert [o.budgeted for o in out] == [True, False, True]
        assert [o.num_tokens for o in out] == [(8, 8), (30, 30), (24, 24)]
        assert all(all(o.truncated) for o in out)
        # Two problems per call, in the order given (8, 30 | 24), each call up to its largest row budget.
        assert [call["max_new_tokens"] for call in fake.calls] == [30, 24]

    def test_short_solutions_end_at_eos_within_budget(self, model, tokenizer, scripted):
        scripted(lambda prompt, k: "42")
        (out,) = generate_with_meta(model, tokenizer, ["p"], meta=[estimate("p", [50])], max_new_tokens=500)
        eos_length = len(tokenizer("42", add_special_tokens=False)["input_ids"]) + 1
        assert out.budget == 100 and out.num_tokens == (eos_length,) and out.truncated == (False,)
        assert out.texts == ("42",)

    def test_notion_feed_in_reaches_the_prompt(self, model, tokenizer, scripted):
        fake = scripted(lambda prompt, k: "ok")
        meta = [estimate("p", [4], notions=("parity", "induction")), MetaEstimate.from_predictions("q", [None])]
        out = generate_with_meta(model, tokenizer, ["p", "q"], meta=meta, cutoff_factor=None, max_new_tokens=8)
        hint = "Hint: the following notions may help: parity and induction."
        assert out[0].notions == ("parity", "induction")
        assert out[0].prompt[-1]["content"].endswith(hint)
        assert out[1].notions == () and out[1].prompt == solution_prompt("q")
        sent = [tokenizer.decode(p) for call in fake.calls for p in call["prompts"]]
        assert sum(hint in text for text in sent) == 1
        assert all(o.budget == 8 and not o.budgeted for o in out)

        fake.calls.clear()
        off = generate_with_meta(model, tokenizer, ["p"], meta=meta[:1], notion_feed_in=False, max_new_tokens=8)
        assert off[0].notions == () and "Hint" not in tokenizer.decode(fake.calls[0]["prompts"][0])

    def test_custom_solution_prompt(self, model, tokenizer, scripted):
        fake = scripted(lambda prompt, k: "ok")
        generate_with_meta(
            model,
            tokenizer,
            ["3+4"],
            meta=[estimate("3+4", [4], notions=("addition",))],
            solution_prompt_fn=lambda p: [{"role": "user", "content": f"Solve: {p}"}],
            max_new_tokens=8,
        )
        text = tokenizer.decode(fake.calls[0]["prompts"][0])
        assert "Solve: 3+4\n\nHint: the following notion may help: addition." in text

    def test_predicts_meta_itself_when_none_given(self, model, tokenizer, scripted):
        def script(prompt, k):
            return meta_text(["parity"], 4, 5) if "math_notion" in prompt else "ok"

        fake = scripted(script)
        (out,) = generate_with_meta(
            model,
            tokenizer,
            ["p"],
            max_new_tokens=64,
            meta_kwargs={"num_samples": 2, "min_length": 1, "max_length": 64},
        )
        assert out.meta.parse_rate == 1.0 and out.budget == 10 and out.notions == ("parity",)
        assert [call["n"] for call in fake.calls] == [2, 1]

        fake.calls.clear()
        (plain,) = generate_with_meta(
            model, tokenizer, ["p"], notion_feed_in=False, cutoff_factor=None, max_new_tokens=16
        )
        assert plain.meta is None and len(fake.calls) == 1  # nothing asked of the meta: no meta generation

    def test_real_generate_respects_budgets_and_seed(self, model, tokenizer):
        problems = ["What is 3+5?", "Compute 12*12.", "Is 91 prime?"]
        meta = [estimate(problems[0], [2]), estimate(problems[1], [5]), MetaEstimate.from_predictions(problems[2], [])]
        kwargs = dict(meta=meta, num_samples=3, max_new_tokens=16, batch_size=6, show_progress=False)
        out = generate_with_meta(model, tokenizer, problems, seed=3, **kwargs)
        assert [o.budget for o in out] == [4, 10, 16]
        for o in out:
            assert len(o.texts) == len(o.num_tokens) == 3
            assert all(1 <= n <= o.budget for n in o.num_tokens)
            assert all(n == o.budget for n, t in zip(o.num_tokens, o.truncated, strict=True) if t)
        again = generate_with_meta(model, tokenizer, problems, seed=3, **kwargs)
        assert [o.texts for o in out] == [o.texts for o in again]

    def test_budget_only_cuts_the_samples_of_the_run_without_budget(self, model, tokenizer):
        problems = [f"What is {n}+{n}?" for n in range(5)]
        meta = [estimate(p, [n + 1]) for n, p in enumerate(problems)]  # budgets 2, 4, 6, 8, 10
        kwargs = dict(meta=meta, num_samples=2, max_new_tokens=12, batch_size=4, seed=11, notion_feed_in=False)
        plain = generate_with_meta(model, tokenizer, problems, cutoff_factor=None, **kwargs)
        cut = generate_with_meta(model, tokenizer, problems, cutoff_factor=2.0, **kwargs)
        assert [o.budget for o in cut] == [2, 4, 6, 8, 10] and [o.budget for o in plain] == [12] * 5
        for p, c in zip(plain, cut, strict=True):
            for plain_ids, cut_ids in zip(p.completion_ids, c.completion_ids, strict=True):
                assert cut_ids == plain_ids[: c.budget]
        assert sum(map(sum, (o.num_tokens for o in cut))) < sum(map(sum, (o.num_tokens for o in plain)))

    def test_bad_inputs_are_named(self, model, tokenizer):
        meta = [estimate("a", [4]), estimate("b", [4])]
        with pytest.raises(ValueError, match=r"meta\[1\] is the estimate of 'b', not of problems\[1\] 'c'"):
            generate_with_meta(model, tokenizer, ["a", "c"], meta=meta)
        with pytest.raises(ValueError, match="2 estimates for 1 problems"):
            generate_with_meta(model, tokenizer, ["a"], meta=meta)
        with pytest.raises(TypeError, match=r"meta\[0\] must be a MetaEstimate"):
            generate_with_meta(model, tokenizer, ["a"], meta=[{"median_length": 4}])
        with pytest.raises(ValueError, match=r"problems\[0\] is empty"):
            generate_with_meta(model, tokenizer, [""], meta=None)
        with pytest.raises(ValueError, match="cutoff_factor"):
            generate_with_meta(model, tokenizer, ["a"], meta=meta[:1], cutoff_factor=-1.0)
        with pytest.raises(TypeError, match=r"for problems\[0\] 'a'"):
            generate_with_meta(model, tokenizer, ["a"], meta=meta[:1], solution_prompt_fn=lambda p: 3)
