"""MASA vs MASA-efficient generation cost on the tiny model, same seeds, scripted meta behaviour.

    python benchmarks/bench_efficient.py [--steps 6] [--max-completion-length 96]

Solutions are generated for real by the tiny random model (transformers backend, which rarely stops early, so
every rollout runs to its cap); the meta rollouts are scripted so that the planner sees a fixed mix, one third each:
prompts predicted "always solved" (gated), prompts predicted short (capped at 2 x the predicted length) and prompts
predicted long (no cap). Prints per-step solution tokens generated and generation wall time for each method, and
their ratio. Numbers are measured, not asserted.
"""

import argparse
import statistics
import tempfile
import time
from unittest.mock import patch

from transformers import AutoTokenizer
from trl import GRPOTrainer

from masa_trl import MASAConfig, MASAGRPOTrainer
from masa_trl.arithmetic import make_arithmetic_dataset
from masa_trl.meta import format_meta_prediction
from masa_trl.tiny_model import build_tiny_model


def scripted_meta(tokenizer, dataset, max_length):
    kinds = {problem: i % 3 for i, problem in enumerate(dataset["problem"])}
    real = GRPOTrainer._generate_single_turn

    def generate(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
        prompts = tokenizer.batch_decode(prompt_ids)
        if "</meta>" not in prompts[0]:
            return real(self, prompt_ids, images, multimodal_fields, num_generations, has_tool_images)
        texts = []
        for prompt in prompts:
            kind = next(k for p, k in kinds.items() if p in prompt)
            rate, length = [(8, 8), (4, 8), (4, max_length)][kind]
            texts.append(format_meta_prediction(["addition"], rate, length))
        return [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts], None

    return generate


def run(model_dir, dataset, steps, max_completion_length, efficient: bool, output_dir):
    args = MASAConfig(
        output_dir=output_dir,
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=12,
        num_generations=4,
        num_meta_generations=4,
        max_completion_length=max_completion_length,
        meta_min_length=8,
        max_steps=steps,
        learning_rate=1e-5,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=0,
        shuffle_dataset=False,
        efficient_start_step=0 if efficient else None,
        gating_audit_fraction=0.0,
    )
    trainer = MASAGRPOTrainer(model=model_dir, args=args, train_dataset=dataset)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    start = time.perf_counter()
    with patch.object(GRPOTrainer, "_generate_single_turn", scripted_meta(tokenizer, dataset, max_completion_length)):
        trainer.train()
    wall = time.perf_counter() - start
    logs = [entry for entry in trainer.state.log_history if "efficient/solution_tokens" in entry]
    return {
        "solution_tokens": statistics.fmean(entry["efficient/solution_tokens"] for entry in logs),
        "solution_seconds": statistics.fmean(entry["timing/generate_solution_s"] for entry in logs),
        "meta_seconds": statistics.fmean(entry["timing/generate_meta_s"] for entry in logs),
        "train_wall_s": wall,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--max-completion-length", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved runs per method, to spread machine noise")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(build_tiny_model(f"{tmp}/model"))
        dataset = make_arithmetic_dataset(3 * options.steps, seed=0, terms=(2, 3), digits=(1, 1))
        runs = {"MASA": [], "MASA-efficient": []}
        for repeat in range(options.repeats):  # interleaved, so that load changes hit both methods alike
            for name, efficient in (("MASA", False), ("MASA-efficient", True)):
                output_dir = f"{tmp}/{name}-{repeat}"
                runs[name].append(
                    run(model_dir, dataset, options.steps, options.max_completion_length, efficient, output_dir)
                )
        results = {name: {k: statistics.fmean(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    print(
        f"\n{options.repeats} interleaved runs x {options.steps} steps, 3 prompts x G=4 solution rollouts per step, max_completion_length "
        f"{options.max_completion_length}; per-step means (transformers backend, CPU)"
    )
    print(f"{'method':16s} {'solution tokens':>16s} {'solution gen s':>15s} {'meta gen s':>11s} {'train wall s':>13s}")
    for name, r in results.items():
        print(
            f"{name:16s} {r['solution_tokens']:16.1f} {r['solution_seconds']:15.3f} {r['meta_seconds']:11.3f} "
            f"{r['train_wall_s']:13.1f}"
        )
    for name, rs in runs.items():
        print(
            f"{name} solution generation seconds per step, run by run: {[round(r['solution_seconds'], 3) for r in rs]}"
        )
    base, eff = results["MASA"], results["MASA-efficient"]
    print(
        f"ratio efficient/MASA: solution tokens {eff['solution_tokens'] / base['solution_tokens']:.3f}, "
        f"solution generation time {eff['solution_seconds'] / base['solution_seconds']:.3f}"
    )


if __name__ == "__main__":
    main()
