"""Run by tests/test_distributed.py: the behaviour-cloning pass on two gloo ranks with unequal expert counts.

Four prompts, G = 2 solution rollouts each, 4 rows per rank. Prompts 0-2 have correct rollouts using the predicted
notion and yield experts; prompt 3 does not. Prompt i's expert is kept by rank i % 2, so one rank holds 2 experts
and the other 1 when the pass (N_expert = 3) runs: with micro-batches of 1, the second must feed a masked row to match
the first's forward/backward count, or the run hangs. Run under DDP, FSDP2 and DeepSpeed ZeRO-2/3 (the test picks the
accelerate config; an optional third argument sets gradient accumulation); every optimizer step's learning rate is
recorded, and the parameters are compared across ranks.
"""

import json
import sys
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from masa_scripts import ScriptedGeneration, cpu_config, masa_dataset, meta_text, script_generation
from transformers import AutoTokenizer

from masa_trl import MASAGRPOTrainer


def full_parameters(trainer) -> list[torch.Tensor]:
    """Every parameter in full on every rank (FSDP2 DTensors and ZeRO-3 shards gathered; a collective)."""
    params = list(trainer.model.parameters())
    if hasattr(params[0], "ds_id"):  # ZeRO-3 keeps only shards in the module
        import deepspeed

        with deepspeed.zero.GatheredParameters(params):
            return [p.detach().clone() for p in params]
    return [(p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone() for p in params]


def optimizer_steps(trainer) -> int:
    """Updates the torch AdamW applied, read from its state (under the accelerate/DeepSpeed wrappers)."""
    optimizer = trainer.optimizer
    while not isinstance(optimizer, torch.optim.AdamW):
        optimizer = optimizer.optimizer
    return max(int(state["step"]) for state in optimizer.state.values())


def checksum(params: list[torch.Tensor]) -> float:
    return sum(p.double().abs().sum().item() for p in params)


def main(model_dir: str, output_file: str, accumulation: int = 1) -> None:
    problems = {"Compute 1 + 1.": "2", "Compute 2 + 2.": "4", "Compute 3 + 3.": "6", "Compute 4 + 4.": "8"}
    args = cpu_config(
        str(Path(output_file).parent / "run"),
        per_device_train_batch_size=4 // accumulation,  # the same 4 rows per rank and generation
        gradient_accumulation_steps=accumulation,
        num_generations=2,
        num_meta_generations=2,
        max_completion_length=48,
        meta_min_length=8,
        max_steps=1,
        learning_rate=1e-2,
        temperature=0.7,  # the BC pass then swaps in a temperature-1 LM head: exercised under every backend
        shuffle_dataset=False,
        use_expert_bc=True,
        expert_buffer_size=3,
        expert_bc_steps=2,
        expert_bc_batch_size=1,
        expert_bc_learning_rate=3e-3,
        expert_bc_max_grad_norm=0.5,
    )
    trainer = MASAGRPOTrainer(model=model_dir, args=args, train_dataset=masa_dataset(problems))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    script = {}
    for problem, answer in problems.items():
        marker = problem.removeprefix("Compute ").removesuffix(".")
        solved = not marker.startswith("4")
        script[("solution", marker)] = [f"By addition \\boxed{{{answer if solved else 0}}}", "\\boxed{0}"]
        script[("meta", marker)] = [meta_text(4, 9, ["addition"]), meta_text(4, 9, ["addition"])]
    script_generation(trainer, ScriptedGeneration(tokenizer, script))

    collected, checksums, step_lrs = [], [], []
    run_pass = trainer.expert_bc.run_pass

    def recording_pass():
        collected.append(len(trainer.expert_buffer))
        checksums.append(checksum(full_parameters(trainer)))
        run_pass()
        checksums.append(checksum(full_parameters(trainer)))

    trainer.expert_bc.run_pass = recording_pass

    def record_step(optimizer, *_):
        # DeepSpeed wraps the torch optimizer in its own (also a torch Optimizer): record the inner AdamW only,
        # with the clipping norm DeepSpeed's ZeRO optimizer applies in that step.
        if isinstance(optimizer, torch.optim.AdamW):
            zero_optimizer = getattr(trainer.model_wrapped, "optimizer", None)
            step_lrs.append((optimizer.param_groups[0]["lr"], getattr(zero_optimizer, "clip_grad", None)))

    register_optimizer_step_pre_hook(record_step)
    trainer.train()
    params = full_parameters(trainer)
    bc_log = next(entry for entry in trainer.state.log_history if "bc/passes" in entry)
    result = {
        "local_experts_at_pass": collected,
        "buffer_after": len(trainer.expert_buffer),
        "num_examples": bc_log["bc/num_examples"],
        "loss_before": bc_log["bc/loss_before"],
        "loss_after": bc_log["bc/loss_after"],
        "finite": bool(all(torch.isfinite(p).all() for p in params)),
        "checksums_around_pass": checksums,
        "final_checksum": checksum(params),
        "step_lrs": step_lrs,
        "optimizer_steps": optimizer_steps(trainer),
        "lr_after": trainer.optimizer.param_groups[0]["lr"],
        "scheduled_lr": trainer.lr_scheduler.get_last_lr()[0],
    }
    Path(f"{output_file}.rank{trainer.accelerator.process_index}").write_text(json.dumps(result))


if __name__ == "__main__":
    try:
        main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:]))
    finally:
        # An undestroyed gloo process group can abort the process at exit ("terminate called without an active
        # exception", exit code -6) after the run itself succeeded; PyTorch asks for this call before exiting.
        if torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
