"""Run by tests/test_distributed.py on two gloo ranks: dynamic sampling where one rank's prompts are all constant.

Rank 0 writes the correct answer in every rollout (every one of its groups is constant, hence filtered); rank 1
writes half right, half wrong. Every training batch must still be full on both ranks, with no zero-std group.
"""

import json
import sys
from pathlib import Path
from unittest.mock import patch

import torch
from datasets import Dataset


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from masa_scripts import ScriptedGeneration
from transformers import AutoTokenizer
from trl import GRPOTrainer

from masa_trl import DAPOConfig, DAPOTrainer


def correctness(completions, answer, **kwargs):
    return [float(f"\\boxed{{{a}}}" in c) for c, a in zip(completions, answer, strict=True)]


def main(model_dir: str, output_file: str) -> None:
    problems = {f"Compute {i} + {i}.": str(2 * i) for i in range(1, 9)}
    args = DAPOConfig(
        output_dir=str(Path(output_file).parent / "run"),
        use_cpu=True,
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=16,
        max_steps=2,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        shuffle_dataset=False,
        dynamic_sampling=True,
        dynamic_sampling_max_rounds=6,
    )
    dataset = Dataset.from_dict({"prompt": list(problems), "answer": list(problems.values())})
    trainer = DAPOTrainer(model=model_dir, reward_funcs=[correctness], args=args, train_dataset=dataset)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rank = trainer.accelerator.process_index
    script = {}
    for problem, answer in problems.items():
        marker = problem.removeprefix("Compute ").removesuffix(".")
        script[("solution", marker)] = [f"\\boxed{{{answer}}}"] if rank == 0 else [f"\\boxed{{{answer}}}", "no"]

    batches = []
    generate = trainer._generate_and_score_completions

    def recording(inputs):
        batch = generate(inputs)
        batches.append({"rows": batch["completion_mask"].size(0), "advantages": batch["advantages"].tolist()})
        return batch

    trainer._generate_and_score_completions = recording
    with patch.object(GRPOTrainer, "_generate_single_turn", ScriptedGeneration(tokenizer, script)):
        trainer.train()
    logs = [entry for entry in trainer.state.log_history if "dynamic_sampling/num_gen_batches" in entry]
    result = {
        "global_step": trainer.state.global_step,
        "batches": batches,
        "rounds": [entry["dynamic_sampling/num_gen_batches"] for entry in logs],
        "filtered": [entry["dynamic_sampling/filtered_frac"] for entry in logs],
    }
    Path(f"{output_file}.rank{rank}").write_text(json.dumps(result))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    finally:
        # An undestroyed gloo process group can abort the process at exit ("terminate called without an active
        # exception", exit code -6) after the run itself succeeded; PyTorch asks for this call before exiting.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
