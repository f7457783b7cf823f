import math
from unittest.mock import patch

import pytest
import torch
from masa_scripts import ScriptedGeneration, cpu_config, masa_dataset, meta_text, script_generation
from transformers import AutoTokenizer
from trl import GRPOTrainer

from masa_trl import MASAGRPOTrainer
from masa_trl.math_reward import math_accuracy_reward


PROBLEMS = {"Compute 2 + 3.": "5", "Compute 7 - 4.": "3"}
META_METRICS = [
    "meta/reward",
    "meta/rewards/length_alignment_reward/mean",
    "meta/rewards/difficulty_alignment_reward/mean",
    "meta/rewards/notion_alignment_reward/mean",
    "meta/parse_failure_rate",
    "meta/pred_pass_rate",
    "meta/true_pass_rate",
    "meta/pass_rate_abs_error",
    "meta/pass_rate_correlation",
    "meta/pred_length",
    "meta/true_correct_length",
    "meta/num_notions",
]


def make_config(tmp_path, **overrides):
    return cpu_config(tmp_path, **overrides)


def group_advantages(rewards: list[float], group_size: int) -> torch.Tensor:
    r = torch.tensor(rewards, dtype=torch.float32).view(-1, group_size)
    return ((r - r.mean(1, keepdim=True)) / (r.std(1, keepdim=True) + 1e-4)).flatten()


def script_for(tokenizer):
    """Prompt A: 2 of 4 solutions correct; prompt B: none. Meta rollouts with hand-computable rewards."""
    solutions_a = ["Use addition: \\boxed{5}", "Addition gives \\boxed{5}", "Subtract: \\boxed{6}", "I am not sure."]
    lengths_a = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in solutions_a]  # + EOS
    return (
        {
            ("solution", "2 + 3"): solutions_a,
            ("solution", "7 - 4"): ["\\boxed{2}"],
            ("meta", "2 + 3"): [meta_text(4, lengths_a[0], ["addition"]), "I cannot say."],
            ("meta", "7 - 4"): [meta_text(0, 20, ["subtraction"]), meta_text(8, 20, ["subtraction"])],
        },
        lengths_a,
    )


@pytest.fixture
def scripted_trainer(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    script, lengths = script_for(tokenizer)
    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir),
        args=make_config(tmp_path, meta_loss_weight=0.5, log_completions=True, shuffle_dataset=False),
        train_dataset=masa_dataset(PROBLEMS),
    )
    script_generation(trainer, ScriptedGeneration(tokenizer, script))
    return trainer, lengths


def batch_inputs(trainer, group_size=4):
    return [dict(example) for example in trainer.train_dataset for _ in range(group_size)]


class TestExactness:
    def test_rewards_and_advantages_equal_hand_computed_values(self, scripted_trainer):
        trainer, lengths = scripted_trainer
        trainer.model.train()
        batch = trainer._generate_and_score_completions(batch_inputs(trainer))

        # The loss sees (G + M) rows per prompt: 2 x (4 + 2).
        assert batch["completion_ids"].size(0) == 12
        assert batch["is_meta"].tolist() == [False] * 8 + [True] * 4

        # Solution advantages exactly as TRL computes them from the answer reward.
        solution_rewards = [1, 1, 0, 0, 0, 0, 0, 0]
        torch.testing.assert_close(batch["advantages"][:8], group_advantages(solution_rewards, 4))

        # Meta rewards: A1 matches everything (1.0), A2 is unparsable (0.0); B1 has the right pass rate but no
        # correct rollout to match length or notions (1/3), B2 is off by 1.0 in pass rate (0.01/3).
        meta_rewards = [1.0, 0.0, 1 / 3, 0.01 / 3]
        logs = trainer._logs
        total = [sum(logs["rewards"][name][i] / 3 for name in trainer.meta_reward_func_names) for i in range(8, 12)]
        assert total == pytest.approx(meta_rewards)
        # Meta advantages are group-relative within the M = 2 meta rollouts of each prompt, scaled by the weight.
        torch.testing.assert_close(batch["advantages"][8:], 0.5 * group_advantages(meta_rewards, 2))

        stats = trainer.last_rollout_batch.solution_stats
        assert [s.pass_rate for s in stats] == [0.5, 0.0]
        assert stats[0].correct_lengths == lengths[:2]

    def test_meta_metrics_are_hand_computed(self, scripted_trainer):
        trainer, lengths = scripted_trainer
        trainer.model.train()
        trainer._generate_and_score_completions(batch_inputs(trainer))
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        assert metrics["meta/parse_failure_rate"] == pytest.approx(0.25)
        assert metrics["meta/pred_pass_rate"] == pytest.approx((0.5 + 0.0 + 1.0) / 3)
        assert metrics["meta/true_pass_rate"] == pytest.approx(0.25)
        assert metrics["meta/pass_rate_abs_error"] == pytest.approx((0.0 + 0.0 + 1.0) / 3)
        # Per prompt: predicted A = 0.5, B = mean(0, 1) = 0.5 -> constant prediction, correlation undefined.
        assert math.isnan(metrics["meta/pass_rate_correlation"])
        assert metrics["meta/pred_length"] == pytest.approx((lengths[0] + 20 + 20) / 3)
        assert metrics["meta/true_correct_length"] == pytest.approx((lengths[0] + lengths[1]) / 2)
        assert metrics["meta/num_notions"] == pytest.approx(1.0)
        assert metrics["meta/reward"] == pytest.approx((1.0 + 0.0 + 1 / 3 + 0.01 / 3) / 4)
        # Solution metrics stay TRL's own and count only solution rows.
        assert metrics["reward"] == pytest.approx(2 / 8)

    def test_completion_table_holds_both_kinds_of_row(self, scripted_trainer):
        trainer, _ = scripted_trainer
        trainer.model.train()
        trainer._generate_and_score_completions(batch_inputs(trainer))
        logs = trainer._logs
        assert list(logs["extra"]["kind"]) == ["solution"] * 8 + ["meta"] * 4
        columns = [logs["prompt"], logs["completion"], logs["advantages"], *logs["rewards"].values()]
        columns += list(logs["extra"].values())
        assert {len(c) for c in columns} == {12}
        assert list(logs["extra"]["pred_pass_rate"])[8:] == [0.5, None, 0.0, 1.0]
        # NaN, TRL's value for a reward that does not apply: its rich table formats rewards as numbers.
        assert all(math.isnan(v) for v in list(logs["rewards"]["math_accuracy_reward"])[8:])

    def test_loss_is_computed_on_joined_batch(self, scripted_trainer):
        trainer, _ = scripted_trainer
        trainer.model.train()
        batch = trainer._generate_and_score_completions(batch_inputs(trainer))
        trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() in a real run
        loss = trainer.compute_loss(trainer.model, batch)
        assert torch.isfinite(loss)
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())


def digit_share_reward(completions, **kwargs):
    # A dense reward, so that a random model's solution rows have non-zero advantages.
    return [sum(ch.isdigit() for ch in c[0]["content"]) / max(len(c[0]["content"]), 1) for c in completions]


class TestEndToEnd:
    def test_trains_with_scripted_rollouts_and_logs_finite_meta_metrics(self, tiny_model_dir, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        script, _ = script_for(tokenizer)
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            args=make_config(
                tmp_path,
                num_generations=4,
                num_meta_generations=6,
                per_device_train_batch_size=4,
                gradient_accumulation_steps=2,
            ),
            train_dataset=masa_dataset(PROBLEMS),
        )
        script[("meta", "7 - 4")].append(meta_text(2, 30, ["difference"]))
        script_generation(trainer, ScriptedGeneration(tokenizer, script))
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()

        logs = [entry for entry in trainer.state.log_history if "loss" in entry]
        assert len(logs) == 2
        for entry in logs:
            for key in META_METRICS:
                if key != "meta/pass_rate_correlation":
                    assert math.isfinite(entry[key]), (key, entry[key])
        changed = sum(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())
        assert changed > 0

    def test_trains_with_real_generation(self, tiny_model_dir, tmp_path):
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            reward_funcs=[math_accuracy_reward, digit_share_reward],
            args=make_config(tmp_path, num_meta_generations=2, correctness_reward="math_accuracy_reward"),
            train_dataset=masa_dataset(PROBLEMS),
        )
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
        # A random model writes no parsable meta output: a counted failure and zero meta reward, never a crash.
        assert last["meta/parse_failure_rate"] == 1.0
        assert last["meta/reward"] == 0.0
        assert last["meta/completions/mean_length"] > 0
        assert all(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters())


class TestConstruction:
    def test_missing_columns_are_named(self, tiny_model_dir, tmp_path):
        from datasets import Dataset

        dataset = Dataset.from_dict({"question": ["q"], "solution": ["1"]})
        with pytest.raises(ValueError, match=r"\['problem', 'answer'\].*rename_column"):
            MASAGRPOTrainer(model=str(tiny_model_dir), args=make_config(tmp_path), train_dataset=dataset)

    def test_ready_prompt_column_is_kept(self, tiny_model_dir, tmp_path):
        from datasets import Dataset

        dataset = Dataset.from_dict({"prompt": ["Custom: 2 + 3?"], "problem": ["2 + 3?"], "answer": ["5"]})
        trainer = MASAGRPOTrainer(model=str(tiny_model_dir), args=make_config(tmp_path), train_dataset=dataset)
        assert trainer.train_dataset[0]["prompt"] == "Custom: 2 + 3?"

    def test_solution_prompt_is_rendered_from_problem(self, tiny_model_dir, tmp_path):
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir), args=make_config(tmp_path), train_dataset=masa_dataset(PROBLEMS)
        )
        prompt = trainer.train_dataset[0]["prompt"]
        assert prompt[-1]["role"] == "user" and prompt[-1]["content"].startswith("Compute 2 + 3.")
        assert "\\boxed{}" in prompt[-1]["content"]

    def test_unknown_correctness_reward_is_rejected(self, tiny_model_dir, tmp_path):
        with pytest.raises(ValueError, match="names no reward function"):
            MASAGRPOTrainer(
                model=str(tiny_model_dir),
                args=make_config(tmp_path, correctness_reward="format_reward"),
                train_dataset=masa_dataset(PROBLEMS),
            )

    def test_meta_reward_weights_must_match(self, tiny_model_dir, tmp_path):
        with pytest.raises(ValueError, match="meta_reward_weights has 2 values"):
            MASAGRPOTrainer(
                model=str(tiny_model_dir),
                args=make_config(tmp_path, meta_reward_weights=[0.5, 0.5]),
                train_dataset=masa_dataset(PROBLEMS),
            )

    def test_tools_are_rejected(self, tiny_model_dir, tmp_path):
        with pytest.raises(NotImplementedError, match="tools"):
            MASAGRPOTrainer(
                model=str(tiny_model_dir),
                args=make_config(tmp_path),
                train_dataset=masa_dataset(PROBLEMS),
                tools=[len],
            )

    def test_custom_meta_reward_component(self, tiny_model_dir, tmp_path):
        def format_bonus(completions, meta_prediction, **kwargs):
            return [1.0 if p is not None else 0.0 for p in meta_prediction]

        from masa_trl.meta_rewards import default_meta_reward_funcs

        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            args=make_config(tmp_path, meta_reward_weights=[0.25, 0.25, 0.25, 0.25]),
            train_dataset=masa_dataset(PROBLEMS),
            meta_reward_funcs=[*default_meta_reward_funcs(), format_bonus],
        )
        assert trainer.meta_reward_func_names[-1] == "format_bonus"
        assert trainer.meta_reward_weights.tolist() == [0.25] * 4


def test_subclass_of_grpo_trainer():
    assert issubclass(MASAGRPOTrainer, GRPOTrainer)


def test_checkpoint_save_and_resume(tiny_model_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    script, _ = script_for(tokenizer)

    def run(max_steps, resume=None):
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            args=make_config(tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=1),
            train_dataset=masa_dataset(PROBLEMS),
        )
        trainer.scripted = script_generation(trainer, ScriptedGeneration(tokenizer, script))
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    run(max_steps=1)
    assert (tmp_path / "checkpoint-1").is_dir()
    resumed = run(max_steps=2, resume=str(tmp_path / "checkpoint-1"))
    assert resumed.state.global_step == 2
    # Only the remaining step ran: on transformers, one generation call per kind (MASAConfig.joint_generation).
    assert len(resumed.scripted.calls) == 2
    assert (tmp_path / "checkpoint-2").is_dir()


class TestEveryLoss:
    @pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"])
    def test_joined_batch_goes_through_every_loss_type(self, tiny_model_dir, tmp_path, loss_type):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        script, _ = script_for(tokenizer)
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            args=make_config(tmp_path, loss_type=loss_type),
            train_dataset=masa_dataset(PROBLEMS),
        )
        script_generation(trainer, ScriptedGeneration(tokenizer, script))
        trainer.model.train()
        trainer.current_gradient_accumulation_steps = 1
        batch = trainer._generate_and_score_completions(batch_inputs(trainer))
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        assert torch.isfinite(loss)
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)

    def test_meta_rows_carry_reference_and_old_log_probs(self, tiny_model_dir, tmp_path):
        # beta > 0 needs reference log-probs and num_iterations > 1 needs old log-probs, for every row.
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        script, _ = script_for(tokenizer)
        trainer = MASAGRPOTrainer(
            model=str(tiny_model_dir),
            args=make_config(tmp_path, beta=0.04, num_iterations=2),
            train_dataset=masa_dataset(PROBLEMS),
        )
        script_generation(trainer, ScriptedGeneration(tokenizer, script))
        trainer.model.train()
        batch = trainer._generate_and_score_completions(batch_inputs(trainer))
        width = batch["completion_ids"].size(1)
        for key in ("ref_per_token_logps", "old_per_token_logps"):
            assert batch[key].shape == (12, width)
            # Real log-probs (negative) on every completion token, meta rows included.
            mask = batch["completion_mask"].bool()
            assert (batch[key][mask] < 0).all()


def test_meta_metrics_reach_tensorboard(tiny_model_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    script, _ = script_for(tokenizer)
    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir),
        args=make_config(tmp_path, max_steps=1, report_to=["tensorboard"]),
        train_dataset=masa_dataset(PROBLEMS),
    )
    script_generation(trainer, ScriptedGeneration(tokenizer, script))
    trainer.train()
    (run_dir,) = {path.parent for path in tmp_path.rglob("events.out.tfevents*")}
    events = EventAccumulator(str(run_dir))
    events.Reload()
    scalars = events.Tags()["scalars"]
    for key in ("meta/reward", "meta/pass_rate_abs_error", "meta/parse_failure_rate"):
        assert f"train/{key}" in scalars, scalars
    assert events.Scalars("train/meta/parse_failure_rate")[-1].value == pytest.approx(0.25)


@pytest.mark.parametrize("rich", [True, False])
def test_log_completions_prints_both_kinds_of_row(tiny_model_dir, tmp_path, rich):
    # The table is printed at each log step when rich is installed; the meta rows lack the solution rewards and the
    # solution rows the meta rewards, which used to be None and crashed rich's number formatting.
    import trl.trainer.grpo_trainer as grpo_module

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    script, _ = script_for(tokenizer)
    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir),
        args=make_config(tmp_path, max_steps=1, log_completions=True),
        train_dataset=masa_dataset(PROBLEMS),
    )
    script_generation(trainer, ScriptedGeneration(tokenizer, script))
    printed = []
    real_print = grpo_module.print_prompt_completions_sample

    def recording_print(*args, **kwargs):
        printed.append(kwargs.get("extra", {}).get("kind"))
        return real_print(*args, **kwargs)

    with (
        patch.object(grpo_module, "is_rich_available", lambda: rich),
        patch.object(grpo_module, "print_prompt_completions_sample", recording_print),
    ):
        trainer.train()
    assert trainer.state.global_step == 1
    if rich:
        assert printed and all(set(kinds) == {"solution", "meta"} for kinds in printed)
    else:
        assert printed == []


def test_empty_dataset_fails_at_construction(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="train_dataset is empty"):
        MASAGRPOTrainer(
            model=str(tiny_model_dir), args=make_config(tmp_path), train_dataset=masa_dataset({}).select([])
        )


def test_undefined_metrics_are_left_out_of_the_logs(tiny_model_dir, tmp_path):
    # Nothing parses: the meta alignment metrics have no value. They must not reach the loggers as None.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    script, _ = script_for(tokenizer)
    for key in list(script):
        if key[0] == "meta":
            script[key] = ["not a prediction"]
    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir), args=make_config(tmp_path, max_steps=1), train_dataset=masa_dataset(PROBLEMS)
    )
    script_generation(trainer, ScriptedGeneration(tokenizer, script))
    trainer.train()
    (entry,) = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert entry["meta/parse_failure_rate"] == 1.0
    assert "meta/pass_rate_abs_error" not in entry
    assert all(value is not None for value in entry.values())


def test_a_dropped_trainer_is_freed_by_reference_counting(tiny_model_dir, tmp_path):
    # vLLM freezes the garbage collector when its engine starts, so a reference cycle through the trainer would keep
    # the model and the engine alive after the trainer is dropped: the collaborators hold weak proxies.
    import gc
    import weakref

    trainer = MASAGRPOTrainer(
        model=str(tiny_model_dir),
        args=make_config(tmp_path, use_expert_bc=True, efficient_start_step=0),
        train_dataset=masa_dataset(PROBLEMS),
    )
    assert trainer.expert_bc.trainer.args is trainer.args  # the proxy works
    alive = weakref.ref(trainer)
    gc.collect()
    gc.disable()
    try:
        del trainer
        assert alive() is None, [type(r).__name__ for r in gc.get_referrers(alive())]
    finally:
        gc.enable()
