"""Run by tests/test_distributed.py: MASA-efficient on two gloo ranks, one of which gates every prompt.

Four prompts, G = 2 solution rollouts each, 4 rows per rank: rank 0 holds prompts 0-1, whose meta rollouts all say
"always solved" (gated), and rank 1 holds prompts 2-3, which are learnable. Rank 0 then has nothing to generate, yet
both ranks must run the same collectives (generation, gathers, the loss) to the end.
"""

import json
import sys
from pathlib import Path
from unittest.mock import patch

import torch


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from masa_scripts import ScriptedGeneration, cpu_config, masa_dataset, meta_text
from transformers import AutoTokenizer
from trl import GRPOTrainer

from masa_trl import MASAGRPOTrainer


def main(model_dir: str, output_file: str) -> None:
    problems = {"Compute 1 + 1.": "2", "Compute 2 + 2.": "4", "Compute 3 + 3.": "6", "Compute 4 + 4.": "8"}
    args = cpu_config(
        str(Path(output_file).parent / "run"),
        per_device_train_batch_size=4,
        num_generations=2,
        num_meta_generations=2,
        max_completion_length=48,
        meta_min_length=8,
        max_steps=2,
        learning_rate=1e-2,
        shuffle_dataset=False,
        efficient_start_step=0,
        gating_audit_fraction=0.0,
    )
    trainer = MASAGRPOTrainer(model=model_dir, args=args, train_dataset=masa_dataset(problems))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    script = {}
    for i, (problem, answer) in enumerate(problems.items()):
        marker = problem.removeprefix("Compute ").removesuffix(".")
        script[("solution", marker)] = [f"By addition \\boxed{{{answer}}}", "\\boxed{0}"]
        rate = 8 if i < 2 else 4
        script[("meta", marker)] = [meta_text(rate, 9, ["addition"]), meta_text(rate, 9, ["addition"])]
    generation = ScriptedGeneration(tokenizer, script)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    with patch.object(GRPOTrainer, "_generate_single_turn", generation):
        trainer.train()
    last = [entry for entry in trainer.state.log_history if "loss" in entry][-1]
    result = {
        "global_step": trainer.state.global_step,
        "skipped_frac": last["efficient/skipped_frac"],
        "calls": generation.calls,
        "params_changed": any(not torch.equal(p, before[n]) for n, p in trainer.model.named_parameters()),
    }
    Path(f"{output_file}.rank{trainer.accelerator.process_index}").write_text(json.dumps(result))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2])
    finally:
        # An undestroyed gloo process group can abort the process at exit ("terminate called without an active
        # exception", exit code -6) after the run itself succeeded; PyTorch asks for this call before exiting.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
