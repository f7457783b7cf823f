import json
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from masa_scripts import ScriptedGeneration, masa_dataset, meta_text, script_generation
from test_masa_trainer import PROBLEMS, batch_inputs, make_config
from transformers import AutoTokenizer

from masa_trl import MASAConfig, MASAGRPOTrainer, behaviour_cloning
from masa_trl.expert_bc import ExpertBuffer, expert_text, select_experts
from masa_trl.meta import MetaPrediction, parse_meta_prediction
from masa_trl.rewards import SolutionStats


def stats(correct, lengths, solutions=None):
    solutions = solutions or ["Use addition here." if c else "No idea." for c in correct]
    return SolutionStats(correct=correct, lengths=lengths, solutions=solutions, problem="What is 2 + 3?")


def pred(notions, reasoning="r"):
    """A parsed meta rollout; `reasoning=None` is one whose text lacks the `<meta>` tags."""
    return MetaPrediction(tuple(notions), 0.5, 10, reasoning=reasoning)


def pass_rate_label(prompt_stats, scale):
    """The integer pass rate that `expert_text` writes."""
    text = expert_text(MetaPrediction(("x",), 0.5, 10, reasoning="r"), prompt_stats, pass_rate_scale=scale)
    return json.loads(text.split("</meta>\n", 1)[1])["pass_rate"]


class TestSelection:
    def test_best_notion_reward_wins_and_ties_go_to_total_reward(self):
        prompt_stats = [stats([True, False], [10, 20])]
        predictions = [
            pred(["parity"]),  # notion reward 0
            pred(["addition"]),  # notion reward 1, total 0.4
            pred(["addition"]),  # notion reward 1, total 0.9: wins the tie
            None,
        ]
        choices = select_experts(predictions, [1.0, 0.4, 0.9, 1.0], [0, 0, 0, 0], prompt_stats, 0.2)
        assert [(c.prompt_index, c.row, c.notion_reward) for c in choices] == [(0, 2, 1.0)]

    def test_minimum_notion_reward_and_unscorable_prompts(self):
        prompt_stats = [stats([True, False], [10, 20]), None]
        predictions = [pred(["parity"]), pred(["addition"])]
        assert select_experts(predictions, [1.0, 1.0], [0, 1], prompt_stats, 0.2) == []
        assert len(select_experts(predictions, [1.0, 1.0], [0, 1], prompt_stats, 0.0)) == 1

    def test_rollouts_without_reasoning_are_never_experts(self):
        prompt_stats = [stats([True, False], [10, 20]), stats([True, False], [10, 20])]
        predictions = [
            pred(["addition"], reasoning=None),  # prompt 0, best notion and total reward, but bare JSON
            pred(["addition"]),  # prompt 0, best notion reward, lower total: chosen
            pred(["addition"], reasoning=None),  # prompt 1: no rollout with reasoning, so no expert
            pred(["addition"], reasoning=None),
            None,
        ]
        totals = [1.0, 0.5, 1.0, 0.9, 1.0]
        index = [0, 0, 1, 1, 1]
        choices = select_experts(predictions, totals, index, prompt_stats, 0.2)
        assert [(c.prompt_index, c.row, c.notion_reward) for c in choices] == [(0, 1, 1.0)]
        assert select_experts(predictions, totals, index, prompt_stats, 0.2, require_reasoning=True) == choices

    def test_reasoning_beats_a_higher_notion_reward_without_it(self):
        prompt_stats = [stats([True, False], [10, 20])]
        predictions = [pred(["addition"], reasoning=None), pred(["addition", "parity"])]  # notion rewards 1 and 1/2
        [choice] = select_experts(predictions, [1.0, 1.0], [0, 0], prompt_stats, 0.2)
        assert (choice.row, choice.notion_reward) == (1, 0.5)

    def test_empty_reasoning_counts_as_reasoning(self):
        prompt_stats = [stats([True, False], [10, 20])]
        [choice] = select_experts([pred(["addition"], reasoning="")], [1.0], [0], prompt_stats, 0.2)
        assert choice.row == 0

    def test_without_required_reasoning_bare_json_can_be_an_expert(self):
        # The CPU demo's template asks for bare JSON on purpose: the trainer passes require_reasoning=False there.
        prompt_stats = [stats([True, False], [10, 20]), stats([True, False], [10, 20])]
        predictions = [pred(["addition"], reasoning=None), pred(["addition"]), pred(["addition"], reasoning=None)]
        choices = select_experts(predictions, [1.0, 0.5, 1.0], [0, 0, 1], prompt_stats, 0.2, require_reasoning=False)
        assert [(c.prompt_index, c.row) for c in choices] == [(0, 0), (1, 2)]

    def test_expert_text_keeps_the_template(self):
        # What is cloned is what was chosen: with reasoning required, every expert text opens with <meta>.
        prompt_stats = [stats([True, False], [10, 20])]
        predictions = [pred(["addition"], reasoning=None), pred(["addition"], reasoning="why")]
        [choice] = select_experts(predictions, [1.0, 0.5], [0, 0], prompt_stats, 0.2)
        assert expert_text(predictions[choice.row], prompt_stats[0], 8).startswith("<meta>why</meta>\n")


class TestRewrite:
    def test_true_statistics_round_trip_through_the_parser(self):
        prediction = MetaPrediction(("addition", "carry"), 0.125, 999, reasoning="I think {it} is easy")
        prompt_stats = stats([True, True, False, True], [10, 21, 50, 30])
        text = expert_text(prediction, prompt_stats, pass_rate_scale=8)
        assert text.startswith("<meta>I think {it} is easy</meta>\n")
        parsed = parse_meta_prediction(text, pass_rate_scale=8)
        assert parsed.pass_rate == 6 / 8  # 3 of 4 correct -> 6 on the 0..8 scale
        assert parsed.length == round((10 + 21 + 30) / 3)  # mean correct length, in tokens
        assert parsed.notions == ("addition", "carry")
        assert json.loads(text.split("</meta>\n", 1)[1])["pass_rate"] == 6  # an integer, not a fraction

    def test_prompt_without_correct_rollout(self):
        text = expert_text(MetaPrediction(("x",), 0.5, 10), stats([False, False], [10, 30]), pass_rate_scale=8)
        parsed = parse_meta_prediction(text)
        assert parsed.pass_rate == 0.0 and parsed.length == 20  # mean length of all rollouts

    @pytest.mark.parametrize(
        "k, label",
        [(0, 0), (1, 1), (2, 1), (3, 2), (5, 3), (7, 4), (8, 4), (9, 5), (11, 6), (13, 7), (15, 7), (16, 8)],
    )
    def test_pass_rate_label_rounds_half_up_and_keeps_mixed_prompts_off_the_ends(self, k, label):
        # G = 16, S = 8: k/16 * 8 = k/2. Banker's rounding gave 1/16 -> 0 and 15/16 -> 8 (read by MASA-efficient's
        # gate as "unsolvable" and "trivial" although the prompt has reward variance); 3/16 -> 2 (half up, not even).
        prompt_stats = stats([True] * k + [False] * (16 - k), [10] * 16)
        assert pass_rate_label(prompt_stats, 8) == label
        assert parse_meta_prediction(expert_text(pred(["x"]), prompt_stats, 8)).pass_rate == label / 8

    def test_truthy_scores_count_as_correct(self):
        assert pass_rate_label(stats([1.0, 0.0, 1.0, 1.0], [1, 2, 3, 4]), 8) == 6

    def test_scale_one_cannot_keep_mixed_prompts_off_the_ends(self):
        # With S = 1 there is no label strictly between 0 and S: plain half-up rounding.
        assert [pass_rate_label(stats([True] * k + [False] * (4 - k), [1] * 4), 1) for k in range(5)] == [
            0,
            0,
            1,
            1,
            1,
        ]

    def test_buffer_state_round_trip(self):
        buffer = ExpertBuffer()
        buffer.add([1, 2], [3, 4, 5])
        restored = ExpertBuffer()
        restored.load_state_dict(json.loads(json.dumps(buffer.state_dict())))
        assert restored.examples == buffer.examples


@settings(max_examples=300, deadline=None)
@given(num_rollouts=st.integers(2, 32), scale=st.integers(2, 16), data=st.data())
def test_pass_rate_label_property(num_rollouts, scale, data):
    k = data.draw(st.integers(0, num_rollouts))
    prompt_stats = stats([True] * k + [False] * (num_rollouts - k), [10] * num_rollouts)
    label = pass_rate_label(prompt_stats, scale)
    exact = Fraction(k * scale, num_rollouts)
    assert isinstance(label, int) and 0 <= label <= scale
    if k == 0:
        assert label == 0
    elif k == num_rollouts:
        assert label == scale
    else:
        assert 1 <= label <= scale - 1
        # Half up, then moved off the ends: the nearest label in 1..S-1, halves going up.
        nearest = int(exact + Fraction(1, 2))  # floor, exact for a non-negative Fraction
        assert label == min(max(nearest, 1), scale - 1)
        assert abs(label - exact) <= Fraction(1, 2) or label in (1, scale - 1)
    # Monotone in k: more correct rollouts never get a lower label.
    if k < num_rollouts:
        more = stats([True] * (k + 1) + [False] * (num_rollouts - k - 1), [10] * num_rollouts)
        assert pass_rate_label(more, scale) >= label


def bc_script(tokenizer):
    """Both prompts have a correct rollout that uses the predicted notion, so each yields one expert per step."""
    return {
        ("solution", "2 + 3"): ["Use addition: \\boxed{5}", "\\boxed{6}"],
        ("solution", "7 - 4"): ["By subtraction \\boxed{3}", "\\boxed{1}"],
        ("meta", "2 + 3"): [meta_text(4, 30, ["addition"]), meta_text(8, 30, ["parity"])],
        ("meta", "7 - 4"): [meta_text(2, 30, ["subtraction"]), "garbage"],
    }


def bc_trainer(tiny_model_dir, tmp_path, **overrides):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    values = dict(use_expert_bc=True, expert_buffer_size=4, expert_bc_steps=3, expert_bc_learning_rate=5e-3,
                  expert_bc_batch_size=1, max_steps=3)  # fmt: skip
    values.update(overrides)
    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir), args=make_config(tmp_path, **values), train_dataset=masa_dataset(PROBLEMS)
    )
    script_generation(trainer, ScriptedGeneration(tokenizer, bc_script(tokenizer)))
    return trainer


class TestTrainerPass:
    def test_experts_are_rewritten_with_the_rl_meta_prompt(self, tiny_model_dir, tmp_path):
        trainer = bc_trainer(tiny_model_dir, tmp_path)
        trainer.model.train()
        batch = trainer._generate_and_score_completions(batch_inputs(trainer))
        assert len(trainer.expert_buffer) == 2
        tokenizer = trainer.processing_class
        expert = trainer.expert_buffer.examples[0]
        # Exactly the prompt ids of the RL step's meta row (no second chat template).
        meta_row = batch["prompt_ids"][8][batch["prompt_mask"][8].bool()].tolist()
        assert expert["prompt_ids"] == meta_row
        completion = tokenizer.decode(expert["completion_ids"], skip_special_tokens=True)
        parsed = parse_meta_prediction(completion)
        assert parsed.notions == ("addition",) and parsed.pass_rate == 4 / 8  # 1 of 2 correct
        assert expert["completion_ids"][-1] == tokenizer.eos_token_id

    def test_runs_exactly_when_the_buffer_fills(self, tiny_model_dir, tmp_path):
        trainer = bc_trainer(tiny_model_dir, tmp_path)  # 2 experts per step, N_expert = 4
        trainer.train()
        passes = [entry.get("bc/passes") for entry in trainer.state.log_history if "loss" in entry]
        assert passes == [None, 1, None]
        assert len(trainer.expert_buffer) == 2  # step 3's experts wait for the next pass
        bc_log = next(entry for entry in trainer.state.log_history if "bc/passes" in entry)
        assert bc_log["bc/num_examples"] == 4
        # The cross-entropy on the expert examples falls across the pass.
        assert bc_log["bc/loss_after"] < bc_log["bc/loss_before"]

    def test_disabled_never_collects(self, tiny_model_dir, tmp_path):
        trainer = bc_trainer(tiny_model_dir, tmp_path, use_expert_bc=False)
        trainer.train()
        assert len(trainer.expert_buffer) == 0
        assert not any("bc/passes" in entry for entry in trainer.state.log_history)

    def test_pass_uses_its_own_learning_rate_and_leaves_the_schedule(self, tiny_model_dir, tmp_path):
        trainer = bc_trainer(tiny_model_dir, tmp_path, max_steps=1, expert_buffer_size=100)
        trainer.train()  # creates the optimizer and scheduler; 2 experts buffered
        optimizer, scheduler = trainer.optimizer, trainer.lr_scheduler
        rl_lrs, scheduler_state = [g["lr"] for g in optimizer.param_groups], scheduler.state_dict()
        seen = []
        step = optimizer.step

        def recording_step(*args, **kwargs):
            seen.append([g["lr"] for g in optimizer.param_groups])
            return step(*args, **kwargs)

        optimizer.step = recording_step
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.expert_bc.run_pass()
        assert seen == [[5e-3] * len(rl_lrs)] * 3
        assert [g["lr"] for g in optimizer.param_groups] == rl_lrs
        assert scheduler.state_dict() == scheduler_state
        assert any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
        assert len(trainer.expert_buffer) == 0

    @pytest.mark.parametrize("notion", ["addition", "parity"])
    def test_warns_once_when_no_prompt_yields_experts(self, tiny_model_dir, tmp_path, monkeypatch, notion):
        warnings = []
        monkeypatch.setattr(behaviour_cloning, "EXPERT_DROUGHT_BATCHES", 2)
        monkeypatch.setattr(behaviour_cloning.logger, "warning", lambda message, *args: warnings.append(message))
        trainer = bc_trainer(tiny_model_dir, tmp_path, max_steps=4, expert_buffer_size=100)
        # "parity" is in no solution: its notion reward is 0 < expert_min_notion_reward, so no expert ever.
        script = bc_script(trainer.processing_class)
        script[("meta", "2 + 3")] = script[("meta", "7 - 4")] = [meta_text(4, 30, [notion])] * 2
        script_generation(trainer, ScriptedGeneration(trainer.processing_class, script))
        trainer.train()
        drought = [w for w in warnings if "no prompt has yielded an expert" in w]
        if notion == "parity":
            assert len(drought) == 1 and "expert_min_notion_reward=0.2" in drought[0]
        else:
            assert drought == []

    def test_buffer_survives_save_and_resume(self, tiny_model_dir, tmp_path):
        trainer = bc_trainer(tiny_model_dir, tmp_path, max_steps=1, save_strategy="steps", save_steps=1)
        trainer.train()
        saved = [dict(e) for e in trainer.expert_buffer.examples]
        assert len(saved) == 2
        resumed = bc_trainer(tiny_model_dir, tmp_path, max_steps=1)
        resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))  # nothing left to train: loads only
        assert resumed.state.global_step == 1
        assert resumed.expert_buffer.examples == saved


def test_config_rejects_a_zero_learning_rate(tmp_path):
    with pytest.raises(ValueError, match="expert_bc_learning_rate"):
        MASAConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_expert_bc=True, expert_bc_learning_rate=0.0)


def _nll_at(model, example, temperature):
    """Token-mean -log pi(completion | prompt) from the model's plain logits divided by `temperature`."""
    ids = torch.tensor([example["prompt_ids"] + example["completion_ids"]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1].float() / temperature
    targets = ids[0, 1:]
    logps = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    return -logps[len(example["prompt_ids"]) - 1 :].mean().item()


def test_bc_loss_is_computed_at_temperature_one(tiny_model_dir, tmp_path):
    # The BC loss is -log pi_theta (paper eq. 5), whatever the sampling temperature that TRL's fused LM head uses.
    trainer = bc_trainer(tiny_model_dir, tmp_path, temperature=0.5, expert_bc_steps=1, expert_bc_learning_rate=1e-9)
    example = {"prompt_ids": [5, 6, 7, 8], "completion_ids": [9, 10, 11, trainer.processing_class.eos_token_id]}
    trainer.expert_buffer.add(example["prompt_ids"], example["completion_ids"])
    trainer.create_optimizer_and_scheduler(num_training_steps=1)
    model = trainer.model
    untempered, tempered = _nll_at(model, example, 1.0), _nll_at(model, example, 0.5)
    assert abs(untempered - tempered) > 1e-3  # the test can tell the two apart
    trainer.expert_bc.run_pass()
    assert trainer._metrics["train"]["bc/loss_before"][-1] == pytest.approx(untempered, rel=1e-4)
    # The RL log-probabilities are tempered again after the pass.
    ids = torch.tensor([example["prompt_ids"] + example["completion_ids"]])
    logps, _, _ = trainer._get_per_token_logps_and_entropies(model, ids, torch.ones_like(ids), logits_to_keep=4)
    assert -logps.mean().item() == pytest.approx(_nll_at(model, example, 0.5), rel=1e-4)
