"""The pinned stack works: stock `trl.GRPOTrainer` trains the offline tiny model on CPU."""

import math

import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer


def digit_share_reward(completions, **kwargs):
    # Dense reward: a random model never answers right, and a constant reward would give zero advantages.
    return [sum(c.isdigit() for c in text) / max(len(text), 1) for text in completions]


def test_stock_grpo_trains_two_steps(tiny_model_dir, tmp_path):
    dataset = Dataset.from_dict({"prompt": [f"What is {i} + {i}?" for i in range(8)]})
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
    )
    trainer = GRPOTrainer(model=str(tiny_model_dir), reward_funcs=digit_share_reward, args=args, train_dataset=dataset)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, before[n])]
    assert len(changed) == len(before), f"parameters that did not change: {set(before) - set(changed)}"
