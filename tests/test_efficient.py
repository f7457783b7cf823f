import math
from unittest.mock import patch

import pytest
import torch
from masa_scripts import ScriptedGeneration, masa_dataset, meta_text
from test_masa_trainer import make_config
from transformers import AutoTokenizer
from trl import GRPOTrainer

from masa_trl import MASAGRPOTrainer
from masa_trl.batching import select_rows
from masa_trl.behaviour_cloning import ExpertBC
from masa_trl.efficient import (
    MIN_AUDITS_TO_PAUSE,
    TRIVIAL,
    UNSOLVABLE,
    GatingAudit,
    gate_verdict,
    hint_notions,
    length_cap,
    plan_prompts,
)
from masa_trl.meta import MetaPrediction


def preds(*rates, length=10, notions=("addition",)):
    return [None if r is None else MetaPrediction(tuple(notions), r / 8, length) for r in rates]


class TestDecisions:
    def test_gate_verdicts(self):
        assert gate_verdict(preds(8, 8, 8, 8), 8, 0.1) == TRIVIAL
        assert gate_verdict(preds(0, 0, 0, 1), 8, 0.1) == UNSOLVABLE  # std 0.054, consensus 0.03 -> 0 of 8
        assert gate_verdict(preds(8, 8, 0, 8), 8, 0.1) is None  # they disagree
        assert gate_verdict(preds(4, 4, 4, 4), 8, 0.1) is None  # agree, but the prompt is learnable
        assert gate_verdict(preds(8, None, None, None), 8, 0.1) is None  # one parse is no consensus
        assert gate_verdict(preds(8, 8, None, None), 8, 0.1) == TRIVIAL  # half parsed

    def test_length_cap(self):
        assert length_cap(preds(4, 4, 4, length=10), 2.0, 100) == 20
        assert length_cap([MetaPrediction((), 0.5, n) for n in (5, 10, 300)], 2.0, 100) == 20  # median is robust
        assert length_cap(preds(4, length=60), 2.0, 100) is None  # at or above the maximum: no cap
        assert length_cap([None, None], 2.0, 100) is None

    def test_gate_spread_is_measured_on_the_fraction_scale(self):
        # M = 16: one prediction off by one is a std of 0.24 on the 0..8 scale but 0.03 on the 0..1 scale (gated).
        assert gate_verdict(preds(*[8] * 15, 7), 8, 0.1) == TRIVIAL
        assert gate_verdict(preds(*[0] * 15, 1), 8, 0.1) == UNSOLVABLE
        assert gate_verdict(preds(*[8] * 12, *[6] * 4), 8, 0.1) is None  # std 0.108

    def test_gate_consensus_must_be_within_half_a_step_of_the_end(self):
        # Half say 0 of 8, half 1 of 8: std 0.0625 < 0.1, mean 0.5 of 8 steps is no consensus that none succeed.
        assert gate_verdict(preds(0, 0, 1, 1), 8, 0.1) is None
        assert gate_verdict(preds(8, 8, 7, 7), 8, 0.1) is None
        assert gate_verdict(preds(0, 0, 0, 1), 8, 0.1) == UNSOLVABLE  # mean 0.25 of a step
        assert gate_verdict(preds(8, 8, 8, 7), 8, 0.1) == TRIVIAL

    def test_hint_is_the_most_named_notions(self):
        predictions = [
            MetaPrediction(("Algebra", "parity"), 0.5, 1),
            None,
            MetaPrediction(("parity", "modular arithmetic", "parity"), 0.5, 1),  # counted once in its rollout
            MetaPrediction(("algebra ", "induction"), 0.5, 1),
            MetaPrediction(("modular arithmetic",), 0.5, 1),
        ]
        # parity 2, algebra 2 (case-insensitive), modular arithmetic 2, induction 1: ties by first mention.
        assert hint_notions(predictions, 3) == ("Algebra", "parity", "modular arithmetic")
        assert hint_notions(predictions, 1) == ("Algebra",)
        assert hint_notions(predictions, 0) == ()
        assert hint_notions([None, MetaPrediction((), 0.5, 1)], 3) == ()

    def test_plans_share_one_hint_per_prompt(self):
        audit = GatingAudit(audit_fraction=0.0, precision_floor=0.9, window=8)
        mixed = [MetaPrediction(("a",), 0.5, 10), MetaPrediction(("b",), 0.25, 10), MetaPrediction(("b",), 0.5, 10)]
        (plan,) = plan_prompts(
            [mixed], audit, pass_rate_scale=8, std_threshold=0.1, cutoff_factor=2.0, max_length=100,
            notion_hint_size=3,
        )  # fmt: skip
        assert plan.notions == ("b", "a") and plan.cap == 20

    def test_paused_gate_rolls_would_be_gated_prompts_out_plainly(self):
        audit = GatingAudit(audit_fraction=0.0, precision_floor=0.9, window=8)
        audit.paused = True
        (plan,) = plan_prompts(
            [preds(8, 8, length=10)], audit, pass_rate_scale=8, std_threshold=0.1, cutoff_factor=2.0,
            max_length=100, notion_hint_size=3,
        )  # fmt: skip
        # Trained (gating is paused) and recorded as an audit: no cutoff and no hint, like any audit.
        assert plan.gate == TRIVIAL and plan.trains and plan.cap is None and plan.notions == ()

    def test_audited_prompts_are_rolled_out_plainly(self):
        audit = GatingAudit(audit_fraction=1.0, precision_floor=0.9, window=8)
        (plan,) = plan_prompts(
            [preds(8, 8)], audit, pass_rate_scale=8, std_threshold=0.1, cutoff_factor=2.0, max_length=100,
            notion_hint_size=3,
        )  # fmt: skip
        assert plan.gate == TRIVIAL and plan.audit and not plan.skip and not plan.trains
        assert plan.cap is None and plan.notions == ()


class TestAudit:
    def test_pauses_below_the_floor_and_resumes(self):
        audit = GatingAudit(audit_fraction=0.0, precision_floor=0.75, window=8)
        for _ in range(MIN_AUDITS_TO_PAUSE - 1):
            audit.record(TRIVIAL, 0.5)  # wrong, but too few audits to pause
        assert not audit.paused
        audit.record(UNSOLVABLE, 0.0)
        assert audit.paused and audit.precision == pytest.approx(1 / 8)
        assert audit.plan([TRIVIAL, None]) == [(False, False), (False, False)]  # paused: roll everything out
        for _ in range(7):
            audit.record(TRIVIAL, 1.0)
        assert audit.precision == 1.0 and not audit.paused  # the window holds the last 8 audits
        assert audit.plan([TRIVIAL]) == [(True, False)]

    def test_state_round_trip_keeps_the_random_stream(self):
        audit = GatingAudit(audit_fraction=0.5, precision_floor=0.9, window=4, seed=3)
        audit.record(TRIVIAL, 1.0)
        restored = GatingAudit(audit_fraction=0.5, precision_floor=0.9, window=4)
        restored.load_state_dict(audit.state_dict())
        assert restored.plan([TRIVIAL] * 20) == audit.plan([TRIVIAL] * 20)
        assert list(restored.outcomes) == [True]


PROBLEMS = {"Compute 2 + 3.": "5", "Compute 7 - 4.": "3"}
LONG = "Let us add the numbers one by one and check each partial sum carefully before answering. \\boxed{3}"


def efficient_trainer(tiny_model_dir, tmp_path, script=None, **overrides):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    values = dict(efficient_start_step=0, gating_audit_fraction=0.0, max_completion_length=64, max_steps=1)
    values.update(overrides)
    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir), args=make_config(tmp_path, **values), train_dataset=masa_dataset(PROBLEMS)
    )
    script = script or {
        # Prompt A: every meta rollout says "always solved" -> gated as trivial.
        ("meta", "2 + 3"): [meta_text(8, 8, ["addition"]), meta_text(8, 8, ["addition"])],
        # Prompt B: learnable; median predicted length 8 -> solutions capped at 16 tokens, hinted with "subtraction".
        ("meta", "7 - 4"): [meta_text(4, 8, ["subtraction"]), meta_text(2, 8, ["subtraction"])],
        ("solution", "2 + 3"): ["\\boxed{5}"],
        ("solution", "7 - 4"): [LONG, "\\boxed{3}"],
    }
    return trainer, ScriptedGeneration(tokenizer, script), tokenizer


def inputs_of(trainer, group_size=4):
    return [dict(example) for example in trainer.train_dataset for _ in range(group_size)]


class TestTrainer:
    def test_gating_cutoff_and_hints(self, tiny_model_dir, tmp_path):
        trainer, script, tokenizer = efficient_trainer(tiny_model_dir, tmp_path)
        trainer.model.train()
        with patch.object(GRPOTrainer, "_generate_single_turn", script):
            batch = trainer._generate_and_score_completions(inputs_of(trainer))
        eos = tokenizer.eos_token_id
        # Prompt A (rows 0-3) was skipped: one-token placeholders, no loss, no advantage.
        assert batch["completion_ids"][:4, 0].tolist() == [eos] * 4
        assert batch["completion_mask"][:4].sum() == 0 and batch["advantages"][:4].abs().sum() == 0
        # Prompt B (rows 4-7): no rollout exceeds 2 x 8 = 16 tokens; the long one was cut there.
        lengths = batch["completion_mask"][4:8].sum(1).tolist()
        assert max(lengths) == 16 and all(n <= 16 for n in lengths)
        assert batch["num_items_in_batch"].item() == batch["completion_mask"].sum().item()
        # Meta first (4 rows: 2 prompts x M = 2), then only prompt B's 4 solution rows were generated.
        assert script.calls == [(4, 1), (4, 1)]  # rows are sent one by one (n = 1): each may have its own cap
        # The hint reached prompt B's solution prompts only.
        prompts = tokenizer.batch_decode(batch["prompt_ids"][4:8], skip_special_tokens=True)
        assert all("subtraction" in p for p in prompts)
        assert not any("subtraction" in p for p in tokenizer.batch_decode(batch["prompt_ids"][:4]))
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        assert metrics["efficient/gated_frac"] == 0.5 and metrics["efficient/gated_trivial_frac"] == 0.5
        assert metrics["efficient/skipped_frac"] == 0.5
        assert metrics["efficient/cutoff_frac"] == 0.5  # the long rollouts of B hit their cap, the short ones not
        # Gated rows are out of the reward mean: B's rewards only (the 2 short rollouts are correct).
        assert metrics["reward"] == pytest.approx(0.5)
        # Placeholders are out of the length metrics: B's 4 rollouts only (2 cut at 16 tokens, 2 short ones).
        assert metrics["completions/max_length"] == 16 and metrics["completions/min_length"] > 1
        assert metrics["completions/mean_length"] == pytest.approx(sum(lengths) / 4)
        assert metrics["completions/clipped_ratio"] == 0.5
        # The gated prompt's meta rollouts (rows 8-9) have no solution rollouts to be scored against: no loss.
        assert batch["is_meta"][8:10].all() and trainer.last_rollout_batch.solution_stats[0] is None
        assert batch["completion_mask"][8:10].sum() == 0 and batch["advantages"][8:10].abs().sum() == 0
        assert batch["trained"].tolist() == [False] * 4 + [True] * 4 + [False] * 2 + [True] * 2

    def test_unscored_meta_rows_log_no_model_output(self, tiny_model_dir, tmp_path, caplog):
        # A gated prompt's meta rows are unscored by design. TRL warns about such rows with the row's prompt and
        # completion; model output must never reach the logs, so the trainer replaces that warning with a count.
        secret = "do-not-log-this-reasoning"
        script = {
            ("meta", "2 + 3"): [meta_text(8, 8, ["addition"], reasoning=secret)] * 2,
            ("meta", "7 - 4"): [meta_text(4, 8, ["subtraction"]), meta_text(2, 8, ["subtraction"])],
            ("solution", "2 + 3"): ["\\boxed{5}"],
            ("solution", "7 - 4"): [LONG, "\\boxed{3}"],
        }
        trainer, script, _ = efficient_trainer(tiny_model_dir, tmp_path, script=script)
        trainer.model.train()
        with caplog.at_level("WARNING"), patch.object(GRPOTrainer, "_generate_single_turn", script):
            trainer._generate_and_score_completions(inputs_of(trainer))
        assert trainer.last_rollout_batch.solution_stats[0] is None  # the prompt was gated: its meta rows unscored
        assert secret not in caplog.text and "All reward functions returned None" not in caplog.text
        assert trainer._metrics["train"]["meta/unscored_frac"][-1] == 0.5

    def test_gated_rows_contribute_exactly_zero_gradient(self, tiny_model_dir, tmp_path):
        trainer, script, _ = efficient_trainer(tiny_model_dir, tmp_path)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        with patch.object(GRPOTrainer, "_generate_single_turn", script):
            batch = trainer._generate_and_score_completions(inputs_of(trainer))

        def grads(b):
            trainer.model.zero_grad()
            trainer.compute_loss(trainer.model, b).backward()
            return [p.grad.clone() for p in trainer.model.parameters()]

        reference = grads(batch)
        altered = dict(batch)
        altered["completion_ids"] = batch["completion_ids"].clone()
        altered["completion_ids"][:4] = 7  # rewrite the gated rows entirely
        for a, b in zip(reference, grads(altered), strict=True):
            assert torch.equal(a, b)

    def test_plain_masa_before_step_k(self, tiny_model_dir, tmp_path):
        trainer, script, _ = efficient_trainer(tiny_model_dir, tmp_path, efficient_start_step=5)
        trainer.model.train()
        with patch.object(GRPOTrainer, "_generate_single_turn", script):
            batch = trainer._generate_and_score_completions(inputs_of(trainer))
        assert batch["completion_mask"][:4].sum() > 0  # nothing gated
        assert trainer._metrics["train"]["efficient/active"][-1] == 0.0

    def test_audit_measures_precision_without_training(self, tiny_model_dir, tmp_path):
        trainer, script, _ = efficient_trainer(tiny_model_dir, tmp_path, gating_audit_fraction=1.0)
        trainer.model.train()
        with patch.object(GRPOTrainer, "_generate_single_turn", script):
            batch = trainer._generate_and_score_completions(inputs_of(trainer))
        # Prompt A was audited: generated in full, excluded from the loss; the gate was right (all 4 correct).
        assert batch["completion_mask"][:4].sum() == 0
        assert trainer.last_rollout_batch.solution_stats[0].pass_rate == 1.0
        assert list(trainer._gating_audit.outcomes) == [True]
        assert trainer._metrics["train"]["efficient/audit_precision"][-1] == 1.0

    def test_trains_end_to_end(self, tiny_model_dir, tmp_path):
        trainer, script, _ = efficient_trainer(tiny_model_dir, tmp_path, max_steps=2, use_expert_bc=True)
        with patch.object(GRPOTrainer, "_generate_single_turn", script):
            trainer.train()
        last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
        assert last["efficient/gated_frac"] == 0.5
        assert last["efficient/solution_tokens_total"] > last["efficient/solution_tokens"] > 0
        assert math.isfinite(last["loss"])

    def test_one_hinted_prompt_per_group(self, tiny_model_dir, tmp_path):
        # Prompt B's meta rollouts name different notions: its 4 solution rows still share one hinted prompt, made of
        # the notions most of them name, and every row was generated from that prompt.
        trainer, _, tokenizer = efficient_trainer(tiny_model_dir, tmp_path, notion_hint_max_notions=1)
        script = {
            ("meta", "2 + 3"): [meta_text(8, 8, ["addition"])],
            ("meta", "7 - 4"): [
                meta_text(4, 8, ["subtraction", "borrowing"]),
                meta_text(2, 8, ["counting", "borrowing"]),
            ],
            ("solution", "2 + 3"): ["\\boxed{5}"],
            ("solution", "7 - 4"): ["\\boxed{3}"],
        }
        generation = ScriptedGeneration(tokenizer, script)
        prompts_seen = []

        def record(self, prompt_ids, *args, **kwargs):
            prompts_seen.extend(tokenizer.batch_decode(prompt_ids, skip_special_tokens=True))
            return generation(prompt_ids, *args, **kwargs)

        trainer.model.train()
        with patch.object(GRPOTrainer, "_generate_single_turn", record):
            batch = trainer._generate_and_score_completions(inputs_of(trainer))
        trained = tokenizer.batch_decode(batch["prompt_ids"][4:8], skip_special_tokens=True)
        assert len(set(trained)) == 1 and "borrowing" in trained[0]
        assert "subtraction" not in trained[0] and "counting" not in trained[0]
        solution_prompts = [p for p in prompts_seen if "7 - 4" in p and "</meta>" not in p]
        assert solution_prompts == trained  # generated from the prompt it is trained on

    def test_all_gated_batch_gives_exactly_zero_gradient(self, tiny_model_dir, tmp_path):
        script = {
            ("meta", "2 + 3"): [meta_text(8, 8, ["addition"])],
            ("meta", "7 - 4"): [meta_text(0, 8, ["subtraction"])],
            ("solution", "2 + 3"): ["\\boxed{5}"],
            ("solution", "7 - 4"): ["\\boxed{3}"],
        }
        trainer, generation, _ = efficient_trainer(tiny_model_dir, tmp_path, script=script)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        with patch.object(GRPOTrainer, "_generate_single_turn", generation):
            batch = trainer._generate_and_score_completions(inputs_of(trainer))
        assert not batch["trained"].any() and batch["completion_mask"].sum() == 0
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        assert math.isnan(metrics["meta/reward"])  # no meta row was scored: none enters the meta reward metrics
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        assert loss.item() == 0.0
        assert all(p.grad is None or not p.grad.any() for p in trainer.model.parameters())

    def test_audited_prompt_meta_rows_are_scored_against_its_real_rollouts(self, tiny_model_dir, tmp_path):
        trainer, script, _ = efficient_trainer(tiny_model_dir, tmp_path, gating_audit_fraction=1.0)
        trainer.model.train()
        with patch.object(GRPOTrainer, "_generate_single_turn", script):
            batch = trainer._generate_and_score_completions(inputs_of(trainer))
        assert batch["trained"][8:10].all() and batch["completion_mask"][8:10].sum() > 0
        # Prompt A's 4 plain rollouts are all correct and the meta rollouts said 8 of 8: difficulty reward 1.
        rewards = trainer.last_rollout_batch.meta_rewards_per_func[
            :2, trainer.meta_reward_func_names.index("difficulty_alignment_reward")
        ]
        assert rewards.tolist() == [1.0, 1.0]

    @pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"])
    def test_gated_rows_leave_every_loss_type_unchanged(self, tiny_model_dir, tmp_path, loss_type):
        # The gradient of a batch with gated rows equals the gradient of the same batch without them (TRL's own
        # loss on the smaller batch): per-sequence means (grpo, sapo, luspo) and dr_grpo's row count must not
        # count the masked rows.
        trainer, script, _ = efficient_trainer(tiny_model_dir, tmp_path, loss_type=loss_type)
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        with patch.object(GRPOTrainer, "_generate_single_turn", script):
            batch = trainer._generate_and_score_completions(inputs_of(trainer))
        assert not batch["trained"].all()
        without = {k: v for k, v in select_rows(batch, batch["trained"]).items() if k != "trained"}

        def grads(b):
            trainer.model.zero_grad()
            trainer.compute_loss(trainer.model, b).backward()
            return [p.grad.clone() for p in trainer.model.parameters()]

        for a, b in zip(grads(batch), grads(without), strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


FOUR_PROBLEMS = {"Compute 2 + 3.": "5", "Compute 7 - 4.": "3", "Compute 1 + 1.": "2", "Compute 9 - 8.": "1"}


def test_k_and_expert_bc_count_generation_steps(tiny_model_dir, tmp_path):
    # steps_per_generation = 2 x gradient_accumulation_steps: every generation batch feeds two optimizer steps. k = 2
    # means the third generation batch (optimizer step 4), and BC runs only once a batch's two steps are done.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = make_config(
        tmp_path, efficient_start_step=2, gating_audit_fraction=0.0, max_steps=6, steps_per_generation=2,
        use_expert_bc=True, expert_buffer_size=1, expert_bc_steps=1, expert_min_notion_reward=0.0,
    )  # fmt: skip
    trainer = MASAGRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=masa_dataset(FOUR_PROBLEMS))
    script = {
        ("meta", p.split()[1]): [meta_text(4, 8, ["arithmetic"]), meta_text(2, 8, ["sums"])] for p in FOUR_PROBLEMS
    }
    script.update({("solution", p.split()[1]): ["\\boxed{" + a + "}", "No idea."] for p, a in FOUR_PROBLEMS.items()})
    bc_steps = []
    original = ExpertBC.run_pass

    def record_bc(self):
        bc_steps.append(self.trainer.state.global_step)
        original(self)

    with (
        patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, script)),
        patch.object(ExpertBC, "run_pass", record_bc),
    ):
        trainer.train()
    assert trainer._generation_step == 3
    active = [entry["efficient/active"] for entry in trainer.state.log_history if "efficient/active" in entry]
    assert active == [0.0, 0.0, 1.0]  # generation batches 0, 1 plain; 2 (= k) planned
    assert bc_steps == [2, 4, 6]  # after the second optimizer step of each generation batch, never in between
