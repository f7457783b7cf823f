"""DAPO's dynamic sampling (masa_trl.dynamic_sampling, masa_trl.dapo): filter, rounds, errors, MASA + DAPO."""

import logging
import math
from unittest.mock import patch

import pytest
import torch
from datasets import Dataset
from masa_scripts import ScriptedGeneration, cpu_config, meta_text
from transformers import AutoTokenizer
from trl import GRPOTrainer

from masa_trl import DAPOConfig, DAPOTrainer, MASADAPOTrainer, MASAGRPOTrainer
from masa_trl.dynamic_sampling import PromptStream, concat_and_select, informative_groups


# Prompts "1 + 1" and "2 + 2" are always solved (constant), "3 + 3" and "4 + 4" are solved half the time.
PROBLEMS = {"Compute 1 + 1.": "2", "Compute 2 + 2.": "4", "Compute 3 + 3.": "6", "Compute 4 + 4.": "8"}
CONSTANT = {"1 + 1", "2 + 2"}


def script(problems=PROBLEMS, constant=CONSTANT):
    out = {}
    for problem, answer in problems.items():
        marker = problem.removeprefix("Compute ").removesuffix(".")
        out[("solution", marker)] = [f"\\boxed{{{answer}}}"] if marker in constant else [f"\\boxed{{{answer}}}", "no"]
        out[("meta", marker)] = [meta_text(4, 8, ["addition"]), meta_text(8, 8, ["sum"])]
    return out


def dataset(problems=PROBLEMS):
    return Dataset.from_dict({"prompt": list(problems), "answer": list(problems.values())})


def dapo_config(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=4,
        max_completion_length=16,
        max_steps=1,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        shuffle_dataset=False,
        beta=0.0,
        dynamic_sampling=True,
    )
    values.update(overrides)
    return DAPOConfig(**values)


def correctness(completions, answer, **kwargs):
    return [float(f"\\boxed{{{a}}}" in c) for c, a in zip(completions, answer, strict=True)]


def dapo_trainer(tiny_model_dir, tmp_path, problems=PROBLEMS, **overrides):
    return DAPOTrainer(
        model=str(tiny_model_dir),
        reward_funcs=[correctness],
        args=dapo_config(tmp_path, **overrides),
        train_dataset=dataset(problems),
    )


def first_batch(trainer):
    return [dict(trainer.train_dataset[i]) for i in (0, 1) for _ in range(trainer.num_generations)]


class TestPieces:
    def test_informative_groups(self):
        scores = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0], [math.nan, 1.0]])
        assert informative_groups(scores) == [False, True, False, False]

    def test_prompt_stream_is_seeded_and_resumable(self):
        stream = PromptStream(5, seed=3)
        first = stream.take(7)  # one pass and two more: every prompt once per pass
        assert sorted(first[:5]) == [0, 1, 2, 3, 4]
        again = PromptStream(5, seed=3)
        again.load_state_dict(stream.state_dict())
        assert again.take(4) == stream.take(4)
        assert PromptStream(5, seed=3).take(7) == first

    def test_concat_and_select_pads_to_the_widest(self):
        a = {
            "prompt_ids": torch.tensor([[1, 2], [3, 4]]),
            "completion_ids": torch.tensor([[5], [6]]),
            "advantages": torch.tensor([1.0, 2.0]),
        }
        b = {
            "prompt_ids": torch.tensor([[7]]),
            "completion_ids": torch.tensor([[8, 9]]),
            "advantages": torch.tensor([3.0]),
        }
        out = concat_and_select([(a, [1]), (b, [0])], pad_token_id=0)
        assert out["prompt_ids"].tolist() == [[3, 4], [0, 7]]  # prompts stay left-padded
        assert out["completion_ids"].tolist() == [[6, 0], [8, 9]]
        assert out["advantages"].tolist() == [2.0, 3.0]

    def test_zero_rounds_is_refused(self, tmp_path):
        with pytest.raises(ValueError, match="dynamic_sampling_max_rounds"):
            dapo_config(tmp_path, dynamic_sampling_max_rounds=0)


class TestDAPO:
    def test_the_batch_is_filled_with_informative_groups_only(self, tiny_model_dir, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        trainer = dapo_trainer(tiny_model_dir, tmp_path)
        trainer.model.train()
        with patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, script())):
            batch = trainer._generate_and_score_completions(first_batch(trainer))  # prompts 1+1 (const), 2+2 (const)
        assert batch["completion_mask"].size(0) == 8  # the training batch: 2 prompts x G = 4
        groups = batch["advantages"].view(2, 4)
        assert (groups.abs().sum(1) > 0).all(), "a zero-advantage (constant) group reached the batch"
        assert batch["num_items_in_batch"].item() == batch["completion_mask"].sum().item()
        metrics = trainer._metrics["train"]
        rounds = metrics["dynamic_sampling/num_gen_batches"][-1]
        assert rounds >= 2  # round 1 had only constant prompts
        assert 0 < metrics["dynamic_sampling/filtered_frac"][-1] < 1
        assert metrics["dynamic_sampling/wasted_solution_tokens"][-1] > 0

    def test_an_all_constant_dataset_fails_with_the_setting_named(self, tiny_model_dir, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        trainer = dapo_trainer(tiny_model_dir, tmp_path, dynamic_sampling_max_rounds=3)
        trainer.model.train()
        everything = script(constant={p.removeprefix("Compute ").removesuffix(".") for p in PROBLEMS})
        with (
            patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, everything)),
            pytest.raises(RuntimeError, match="dynamic_sampling_max_rounds=3"),
        ):
            trainer._generate_and_score_completions(first_batch(trainer))

    def test_partial_batches_are_filled_and_warned(self, tiny_model_dir, tmp_path, caplog):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        trainer = dapo_trainer(tiny_model_dir, tmp_path, dynamic_sampling_max_rounds=2, dynamic_sampling_partial=True)
        trainer.model.train()
        everything = script(constant={p.removeprefix("Compute ").removesuffix(".") for p in PROBLEMS})
        with (
            patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, everything)),
            caplog.at_level(logging.WARNING),
        ):
            batch = trainer._generate_and_score_completions(first_batch(trainer))
        assert batch["completion_mask"].size(0) == 8 and batch["advantages"].abs().sum() == 0
        assert trainer._metrics["train"]["dynamic_sampling/num_gen_batches"][-1] == 2

    def test_training_runs_and_evaluation_is_unfiltered(self, tiny_model_dir, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        trainer = dapo_trainer(tiny_model_dir, tmp_path, max_steps=2)
        with patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, script())):
            trainer.train()
        assert trainer.state.global_step == 2
        logged = [entry for entry in trainer.state.log_history if "dynamic_sampling/num_gen_batches" in entry]
        assert len(logged) == 2


class TestMASADAPO:
    def test_meta_rows_travel_with_their_prompt(self, tiny_model_dir, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        problems = {"problem": list(PROBLEMS), "answer": list(PROBLEMS.values())}
        args = cpu_config(tmp_path, dynamic_sampling=True, shuffle_dataset=False, max_completion_length=32)
        trainer = MASADAPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=Dataset.from_dict(problems))
        trainer.model.train()
        inputs = [dict(trainer.train_dataset[i]) for i in (0, 1) for _ in range(4)]
        with patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, script())):
            batch = trainer._generate_and_score_completions(inputs)
        # 2 kept prompts x (G = 4 solutions + M = 2 meta rows), no solution group of a constant prompt.
        assert batch["is_meta"].tolist().count(False) == 8 and batch["is_meta"].tolist().count(True) == 4
        solution = batch["advantages"][~batch["is_meta"]].view(2, 4)
        assert (solution.abs().sum(1) > 0).all()
        assert trainer._metrics["train"]["dynamic_sampling/num_gen_batches"][-1] >= 2
        assert trainer._generation_step == 1  # k counts training batches, not rounds

    def test_masa_trainer_refuses_dynamic_sampling(self, tiny_model_dir, tmp_path):
        problems = {"problem": list(PROBLEMS), "answer": list(PROBLEMS.values())}
        with pytest.raises(ValueError, match="MASADAPOTrainer"):
            MASAGRPOTrainer(
                model=str(tiny_model_dir),
                args=cpu_config(tmp_path, dynamic_sampling=True),
                train_dataset=Dataset.from_dict(problems),
            )


def test_resume_restores_the_prompt_stream(tiny_model_dir, tmp_path):
    # The extra rounds' stream position is checkpointed: a resumed run continues it, neither replaying nor skipping.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)

    def run(max_steps, resume=None):
        trainer = dapo_trainer(tiny_model_dir, tmp_path, max_steps=max_steps, save_strategy="steps", save_steps=1)
        with patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, script())):
            trainer.train(resume_from_checkpoint=resume)
        return trainer

    first = run(1)
    saved = first._prompt_stream.state_dict()
    assert saved["position"] > 0  # the first step needed extra rounds
    resumed = run(1, resume=str(tmp_path / "checkpoint-1"))  # max_steps reached: nothing more runs
    assert resumed._prompt_stream.state_dict() == saved


def test_bad_settings_fail_at_start(tiny_model_dir, tmp_path):
    from trl import GRPOConfig

    with pytest.raises(ValueError, match="dynamic_sampling_reward='accuracy' names no reward function"):
        dapo_trainer(tiny_model_dir, tmp_path, dynamic_sampling_reward="accuracy")
    with pytest.raises(TypeError, match="DAPOConfig or MASAConfig"):
        DAPOTrainer(
            model=str(tiny_model_dir),
            reward_funcs=[correctness],
            args=GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none"),
            train_dataset=dataset(),
        )


class TestMASADAPOMetrics:
    def make(self, tiny_model_dir, tmp_path, **overrides):
        problems = {"problem": list(PROBLEMS), "answer": list(PROBLEMS.values())}
        args = cpu_config(
            tmp_path, dynamic_sampling=True, shuffle_dataset=False, max_completion_length=32, **overrides
        )
        trainer = MASADAPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=Dataset.from_dict(problems))
        trainer.model.train()
        return trainer

    def test_generation_cost_is_logged_once_per_step_summed_over_rounds(self, tiny_model_dir, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        trainer = self.make(tiny_model_dir, tmp_path)
        inputs = [dict(trainer.train_dataset[i]) for i in (0, 1) for _ in range(4)]
        with patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, script())):
            trainer._generate_and_score_completions(inputs)
        metrics = trainer._metrics["train"]
        assert metrics["dynamic_sampling/num_gen_batches"][-1] >= 2
        assert metrics["efficient/solution_tokens"] == [trainer._solution_tokens_total]  # all rounds, one entry
        assert metrics["efficient/solution_tokens_total"] == [trainer._solution_tokens_total]
        assert len(metrics["timing/generate_s"]) == 1

    def test_audited_prompts_count_as_generated_waste(self, tiny_model_dir, tmp_path):
        # The constant prompts' meta rollouts agree (8 of 8): gated, and with gating_audit_fraction=1 all audited,
        # i.e. generated but never trained: dropped by the filter, their solution tokens are waste.
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        trainer = self.make(tiny_model_dir, tmp_path, efficient_start_step=0, gating_audit_fraction=1.0)
        gated = script()
        for marker in CONSTANT:
            gated[("meta", marker)] = [meta_text(8, 8, ["addition"])]
        inputs = [dict(trainer.train_dataset[i]) for i in (0, 1) for _ in range(4)]  # both constant prompts
        with patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, gated)):
            trainer._generate_and_score_completions(inputs)
        round_one = sum(
            4 * (len(tokenizer(f"\\boxed{{{answer}}}", add_special_tokens=False)["input_ids"]) + 1)
            for answer in ("2", "4")
        )
        assert trainer._metrics["train"]["dynamic_sampling/wasted_solution_tokens"][-1] >= round_one


def test_a_filled_batch_is_what_several_micro_steps_share(tiny_model_dir, tmp_path):
    # steps_per_generation = 2: the filled batch (2 prompts x G = 4 per process) is what TRL buffers and splits.
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    trainer = dapo_trainer(
        tiny_model_dir, tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2, max_steps=2
    )
    assert trainer.args.steps_per_generation == 2
    seen = []
    generate = trainer._generate_and_score_completions

    def recording(inputs):
        batch = generate(inputs)
        seen.append(batch["advantages"].view(-1, 4))
        return batch

    trainer._generate_and_score_completions = recording
    with patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, script())):
        trainer.train()
    assert trainer.state.global_step == 2 and len(seen) == 2  # one filled batch per optimizer step of 2 micro-steps
    for groups in seen:
        assert groups.shape == (2, 4) and (groups.abs().sum(1) > 0).all()
