"""Tests of the CPU demo's parts (`masa_trl.demo`, the sums task in `masa_trl.arithmetic`): fast, no RL run.

Run with `python -m pytest tests/test_demo.py -q`.
"""

import json
import math
import random

import pytest
import torch
from file_modules import import_file
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerControl, TrainerState, TrainingArguments

from masa_trl.arithmetic import (
    HELDOUT_CELLS,
    SUM_CELLS,
    make_sum_dataset,
    make_sum_heldout,
    sum_cell_size,
    sum_problem,
)
from masa_trl.demo.callbacks import HeldoutCurveCallback, TimeLimitCallback
from masa_trl.demo.heldout import HeldoutEvaluation, evaluate_heldout, sample_completions, spearman
from masa_trl.demo.report import json_safe
from masa_trl.demo.task import META_TEMPLATE, SOLUTION_TEMPLATE, meta_messages, solution_messages, solution_target
from masa_trl.demo.warm_start import PromptRenderer, WarmStartConfig, warm_start
from masa_trl.math_reward import math_accuracy_reward
from masa_trl.meta import parse_meta_prediction
from masa_trl.templates import meta_prompt


# ------------------------------------------------------------------------------------------------ task family
class TestSumsTask:
    def test_problems_have_exact_digit_counts_and_correct_answers(self):
        rng = random.Random(0)
        for terms, digits in SUM_CELLS:
            problem, answer = sum_problem(rng, terms, digits)
            numbers = problem.split("+")
            assert len(numbers) == terms
            assert all(len(n) == digits and n[0] != "0" for n in numbers)
            assert int(answer) == sum(map(int, numbers))

    def test_generation_is_deterministic_for_a_seed(self):
        assert make_sum_heldout(seed=3)["problem"] == make_sum_heldout(seed=3)["problem"]
        assert make_sum_dataset(50, seed=3)["problem"] == make_sum_dataset(50, seed=3)["problem"]
        assert make_sum_dataset(50, seed=3)["problem"] != make_sum_dataset(50, seed=4)["problem"]

    def test_heldout_split_is_distinct_per_cell_and_never_in_the_training_stream(self):
        heldout = make_sum_heldout()
        assert len(heldout) == 20 * len(HELDOUT_CELLS)
        assert len(set(heldout["problem"])) == len(heldout)
        train = make_sum_dataset(3000, seed=0, exclude=set(heldout["problem"]))
        assert not set(train["problem"]) & set(heldout["problem"])
        # Small cells repeat in the stream, but every cell stays about equally likely.
        counts = dict.fromkeys(SUM_CELLS, 0)
        for cell in zip(train["terms"], train["digits"], strict=True):
            counts[cell] += 1
        assert min(counts.values()) > 3000 / len(SUM_CELLS) * 0.7

    def test_heldout_takes_at_most_a_share_of_a_small_cell(self):
        heldout = make_sum_heldout(per_cell=50, max_cell_share=0.25)
        two_one_digit = sum(1 for t, d in zip(heldout["terms"], heldout["digits"], strict=True) if (t, d) == (2, 1))
        assert two_one_digit == int(0.25 * sum_cell_size(2, 1)) == 20

    def test_the_supervised_answer_is_what_the_answer_reward_accepts(self):
        heldout = make_sum_heldout(per_cell=2)
        completions = [solution_target(answer) for answer in heldout["answer"]]
        assert math_accuracy_reward(completions, answer=heldout["answer"]) == [1.0] * len(heldout)
        wrong = [solution_target(str(int(answer) + 1)) for answer in heldout["answer"]]
        assert math_accuracy_reward(wrong, answer=heldout["answer"]) == [0.0] * len(heldout)


# ------------------------------------------------------------------------------------------------ prompts
class TestPrompts:
    def test_meta_messages_are_the_trainers_meta_prompt(self):
        # MASAGRPOTrainer renders meta_prompt(problem, template=args.meta_prompt_template, system_prompt="") etc.
        expected = meta_prompt("3+4", min_length=4, max_length=48, system_prompt="", template=META_TEMPLATE)
        assert meta_messages("3+4") == expected == [{"role": "user", "content": "Predict: 3+4"}]
        assert solution_messages("3+4") == [{"role": "user", "content": "Solve: 3+4"}]

    def test_renderer_reproduces_apply_chat_template(self, tiny_model_dir):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        problems = ["5", "37+5+81", "99+98+97+96+95+94"]
        for template, messages in ((SOLUTION_TEMPLATE, solution_messages), (META_TEMPLATE, meta_messages)):
            expected = tokenizer.apply_chat_template(
                [messages(p) for p in problems], add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            assert PromptRenderer(tokenizer, template)(problems) == [list(ids) for ids in expected]


# ------------------------------------------------------------------------------------------------ warm start
TINY_WARM_START = dict(steps=3, batch_size=4)


class TestWarmStartCache:
    def test_second_call_loads_the_cache(self, tmp_path):
        config = WarmStartConfig(**TINY_WARM_START)
        first_dir, record, cached = warm_start(config, tmp_path, progress=False)
        assert not cached and record["steps_done"] == 3 and record["complete"]
        assert record["num_parameters"] == 535_296
        second_dir, second_record, cached = warm_start(config, tmp_path, progress=False)
        assert cached and second_dir == first_dir and second_record == record
        assert not list(tmp_path.glob("*.partial"))
        AutoModelForCausalLM.from_pretrained(first_dir)  # a loadable Hub-style directory
        assert json.loads((first_dir / "warm_start.json").read_text())["cache_key"] == config.cache_key()

    def test_settings_change_the_key_but_the_time_guard_does_not(self):
        base = WarmStartConfig(**TINY_WARM_START)
        assert WarmStartConfig(**TINY_WARM_START, max_seconds=5.0).cache_key() == base.cache_key()
        assert WarmStartConfig(**TINY_WARM_START, seed=1).cache_key() != base.cache_key()
        assert WarmStartConfig(**TINY_WARM_START, learning_rate=1e-3).cache_key() != base.cache_key()

    def test_time_guard_stops_early_and_says_so(self, tmp_path):
        _, record, _ = warm_start(WarmStartConfig(steps=50, batch_size=4, max_seconds=0.0), tmp_path, progress=False)
        assert record["steps_done"] == 0 and not record["complete"]


# ------------------------------------------------------------------------------------------------ evaluation
def test_json_safe_turns_non_finite_floats_into_null():
    value = {"a": math.nan, 1: [math.inf, (-math.inf, 0.5)], "b": "x"}
    assert json_safe(value) == {"a": None, "1": [None, [None, 0.5]], "b": "x"}
    assert json.loads(json.dumps(json_safe(value), allow_nan=False))["1"][1] == [None, 0.5]


def test_spearman_uses_average_ranks_for_ties():
    assert spearman([1, 2, 3], [10, 20, 30]) == pytest.approx(1.0)
    assert spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 1], [2, 3]))


def test_sampler_matches_generate_when_greedy(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompts = PromptRenderer(tokenizer, SOLUTION_TEMPLATE)(["5", "37+5+81", "12+3"])
    got = sample_completions(model, tokenizer, prompts, num_samples=2, max_new_tokens=6, greedy=True, batch_rows=2)
    for i, ids in enumerate(prompts):
        reference = model.generate(
            input_ids=torch.tensor([ids]),
            do_sample=False,
            max_new_tokens=6,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )[0, len(ids) :].tolist()
        if tokenizer.eos_token_id in reference:
            reference = reference[: reference.index(tokenizer.eos_token_id) + 1]
        assert got[2 * i] == got[2 * i + 1] == reference


class ScriptedSampler:
    """Stands in for `sample_completions`: per problem, a fixed list of solution and meta texts."""

    def __init__(self, tokenizer, solutions: dict, metas: dict):
        self.tokenizer = tokenizer
        self.by_prompt = {}
        for problem, texts in solutions.items():
            self.by_prompt[tuple(PromptRenderer(tokenizer, SOLUTION_TEMPLATE)([problem])[0])] = texts
            self.by_prompt[tuple(PromptRenderer(tokenizer, META_TEMPLATE)([problem])[0])] = metas[problem]

    def __call__(self, model, tokenizer, prompt_ids, *, num_samples, max_new_tokens):
        out = []
        for ids in prompt_ids:
            texts = self.by_prompt[tuple(ids)]
            assert len(texts) == num_samples
            out += [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
        return out


def meta_json(pass_rate: int, length: int) -> str:
    return json.dumps({"math_notion": ["addition"], "pass_rate": pass_rate, "solution_length": length})


def test_heldout_metrics_from_scripted_outputs(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    answer_len = len(tokenizer(solution_target("5"), add_special_tokens=False)["input_ids"]) + 1  # + EOS
    # "2+3": 3 of 4 solutions correct, meta says 6/8 and 4/8 (mean 0.625) plus one unparsable sample.
    # "9+9": no correct solution, meta says 0/8 twice and 2/8 once.
    solutions = {"2+3": [r"\boxed{5}"] * 3 + [r"\boxed{6}"], "9+9": [r"\boxed{17}"] * 4}
    metas = {
        "2+3": [meta_json(6, answer_len), meta_json(4, 20), "broken {"],
        "9+9": [meta_json(0, 7), meta_json(0, 7), meta_json(2, 9)],
    }
    model.train()
    result = evaluate_heldout(
        model,
        tokenizer,
        ["2+3", "9+9"],
        ["5", "18"],
        [(2, 1), (2, 1)],
        render_solution=PromptRenderer(tokenizer, SOLUTION_TEMPLATE),
        render_meta=PromptRenderer(tokenizer, META_TEMPLATE),
        num_solution_samples=4,
        num_meta_samples=3,
        sampler=ScriptedSampler(tokenizer, solutions, metas),
    )
    assert model.training  # the previous mode is restored
    assert result.true_pass_rate == [0.75, 0.0]
    assert result.pred_pass_rate == pytest.approx([0.625, 1 / 12])
    assert result.parse_rate == pytest.approx([2 / 3, 1.0])
    assert result.true_length[0] == answer_len and math.isnan(result.true_length[1])
    assert result.length_hits[0] == 0.5 and math.isnan(result.length_hits[1])
    summary = result.summary()
    assert summary["pearson"] == pytest.approx(1.0)  # two points
    assert summary["mae"] == pytest.approx((0.125 + 1 / 12) / 2)
    assert summary["accuracy"] == pytest.approx(0.375)
    assert summary["parse_rate"] == pytest.approx(5 / 6)
    assert summary["constant_mae"] == pytest.approx(0.375)
    # Both problems are in one cell: the cell-mean predictor is the constant one.
    assert summary["cell_mean_mae"] == pytest.approx(0.375)
    [cell] = result.per_cell()
    assert cell["n"] == 2 and cell["true_pass_rate"] == pytest.approx(0.375)
    # The parser used is the project's strict one.
    assert parse_meta_prediction(metas["2+3"][2]) is None


# ------------------------------------------------------------------------------------------------ callbacks
def fake_evaluation(step_marker: float) -> HeldoutEvaluation:
    return HeldoutEvaluation(
        problems=["a", "b"],
        cells=[(1, 2), (2, 2)],
        true_pass_rate=[0.0, 1.0],
        pred_pass_rate=[step_marker, 1.0],
        parse_rate=[1.0, 1.0],
        pred_length=[7.0, 7.0],
        true_length=[math.nan, 7.0],
        length_hits=[math.nan, 1.0],
        num_solution_samples=4,
        num_meta_samples=2,
    )


def test_curve_callback_evaluates_every_n_steps_and_at_the_end(tmp_path):
    calls = []

    def evaluate(model):
        calls.append(model)
        return fake_evaluation(0.1 * len(calls))

    callback = HeldoutCurveCallback(evaluate, eval_steps=2, initial=fake_evaluation(0.0))
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    callback.on_train_begin(args, state, control, model="m")
    for step in range(1, 6):
        state.global_step = step
        callback.on_step_end(args, state, control, model="m")
        callback.on_log(args, state, control, logs={"meta/reward": 0.1 * step})
    callback.on_train_end(args, state, control, model="m")
    assert [point["step"] for point in callback.history] == [0, 2, 4, 5]
    assert len(calls) == 3  # the initial evaluation is reused, not repeated
    assert callback.history[0]["mae"] == pytest.approx(0.0)
    assert callback.history[1]["mae"] == pytest.approx(0.05)
    assert [log["meta/reward"] for log in callback.train_logs] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
    assert all(point["train_seconds"] >= 0 for point in callback.history)


def test_time_limit_callback_stops_training(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    state, control = TrainerState(), TrainerControl()
    unlimited, limited = TimeLimitCallback(None), TimeLimitCallback(0.0)
    for callback in (unlimited, limited):
        callback.on_train_begin(args, state, control)
    state.global_step = 1
    unlimited.on_step_end(args, state, control)
    assert not control.should_training_stop
    limited.on_step_end(args, state, control)
    assert control.should_training_stop and limited.stopped_at == 1


# ------------------------------------------------------------------------------------------------ the recipe
def load_demo_recipe():
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "recipes" / "masa_demo_cpu.py"
    return import_file(path, "recipe_masa_demo_cpu")


def test_demo_recipe_runs_every_phase_on_a_tiny_budget(tmp_path, capsys):
    """`make demo`'s script end to end in seconds, with expert BC and MASA-efficient switched on; plots written."""
    recipe = load_demo_recipe()
    flags = {
        "--warm_start_cache_dir": tmp_path / "cache",
        "--output_dir": tmp_path / "run",
        "--warm_start_steps": 4,
        "--heldout_per_cell": 1,
        "--num_train_problems": 16,
        "--max_steps": 3,
        "--heldout_eval_steps": 2,
        "--eval_solution_samples": 2,
        "--curve_solution_samples": 2,
        "--eval_meta_samples": 2,
        "--per_device_train_batch_size": 16,
        "--expert_buffer_size": 2,
        "--efficient_start_step": 1,
        "--logging_steps": 1,
    }
    args = [str(item) for flag, value in flags.items() for item in (flag, value)]
    demo_args, training_args = recipe.make_parser().parse_args_and_config(args)
    results = recipe.main(demo_args, training_args)
    out = capsys.readouterr().out
    for phase in ("Phase 1", "Phase 2", "Phase 3", "Phase 4", "Evidence"):
        assert phase in out
    assert [point["step"] for point in results["curve"]] == [0, 2, 3]
    assert set(results["gates"]) and all(isinstance(ok, bool) for ok in results["gates"].values())
    # A 4-step warm start writes no parsable meta output yet, so no expert is found; the collection still runs.
    assert any("bc/expert_yield" in log for log in results["train_logs"])
    assert any(log.get("efficient/active") for log in results["train_logs"])
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["rl_steps"] == 3
    for name in ("heldout_meta_awareness", "calibration", "meta_rewards", "accuracy", "gating"):
        assert (tmp_path / "run" / f"{name}.png").stat().st_size > 0
