"""Run by tests/test_distributed.py under `accelerate launch --multi_gpu --num_processes 2` (two gloo ranks on CPU).

Three prompts, G = 4 solution rollouts each, 6 rows per rank: prompt 1's group straddles the two ranks. Rank 0 writes
correct solutions and rank 1 wrong ones, so the true pass rates are 1.0, 0.5 and 0.0 only if the solution statistics
are gathered across ranks (rank-local statistics would give prompt 1 a pass rate of 1.0 on rank 0 and 0.0 on rank 1).
"""

import json
import sys
from pathlib import Path

import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from masa_scripts import ScriptedGeneration, cpu_config, masa_dataset, meta_text, script_generation
from transformers import AutoTokenizer

from masa_trl import MASAGRPOTrainer


def main(model_dir: str, output_file: str) -> None:
    problems = {"Compute 1 + 1.": "2", "Compute 2 + 2.": "4", "Compute 3 + 3.": "6"}
    args = cpu_config(
        str(Path(output_file).parent / "run"),
        per_device_train_batch_size=6,
        num_generations=4,
        num_meta_generations=2,
        max_completion_length=32,
        meta_min_length=8,
        max_steps=2,
        learning_rate=1e-2,
        shuffle_dataset=False,
    )
    trainer = MASAGRPOTrainer(model=model_dir, args=args, train_dataset=masa_dataset(problems))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rank = trainer.accelerator.process_index
    script = {}
    for problem, answer in problems.items():
        marker = problem.removeprefix("Compute ").removesuffix(".")
        script[("solution", marker)] = [f"\\boxed{{{answer if rank == 0 else 0}}}"]
        script[("meta", marker)] = [meta_text(4, 8, ["addition"]), meta_text(4, 8, ["sum"])]
    script_generation(trainer, ScriptedGeneration(tokenizer, script))

    meta_rewards = []
    calculate_rewards = trainer._calculate_rewards

    def recording_calculate_rewards(*call_args):
        rewards = calculate_rewards(*call_args)
        if trainer._batch.phase == "meta":
            meta_rewards.append(rewards.tolist())
        return rewards

    trainer._calculate_rewards = recording_calculate_rewards
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()

    result = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "pass_rates": [s.pass_rate for s in trainer.last_rollout_batch.solution_stats],
        "difficulty_rewards": [
            row[trainer.meta_reward_func_names.index("difficulty_alignment_reward")] for row in meta_rewards[-1]
        ],
        "global_step": trainer.state.global_step,
        "params_changed": any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters()),
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
