"""GRPO vs MASA vs MASA-efficient on the CPU demo's task, model and seeds: accuracy and meta-awareness against cost.

Every run starts from the same cached warm start (`masa_trl.demo`), trains on the same problem stream with the same
seed and hyperparameters (`masa_trl.demo.experiment.DEMO_DEFAULTS`), and is evaluated on the same 220 held-out
problems every `--eval_every` steps:

- `grpo`: TRL's stock `GRPOTrainer` on the solution prompts only;
- `masa`: `MASAGRPOTrainer`, meta rollouts trained jointly, no behaviour cloning, no gating;
- `masa_efficient`: `MASAGRPOTrainer` with expert behaviour cloning and, from `--efficient_start_step` on, predictive
  gating and early cutoff (`gating_std_threshold`, `cutoff_factor`; notion hints off, see DEMO_DEFAULTS).

Costs per evaluation point: solution tokens generated so far (the tokens the paper's efficiency claim is about; meta
tokens are reported separately) and training wall time (evaluations excluded). The headline number is the ratio of
GRPO's cost to reach its final held-out accuracy to MASA-efficient's cost to reach the same accuracy; it is undefined
(and reported as such) when GRPO ends no higher than the warm start it began from, because then GRPO "reached" its
final accuracy at step 0. Timings depend on the machine and its load, which the output records.

    python benchmarks/compare_grpo_masa.py                                   # 3 methods x 1 seed, about 20 minutes
    python benchmarks/compare_grpo_masa.py --seeds 0 1 --max_steps 300
    python benchmarks/compare_grpo_masa.py --methods grpo masa --max_steps 40 --eval_every 20   # quick look

Writes `results.json` and `compare.png` to `--output_dir`.
"""

import argparse
import json
import math
import os
import time
from pathlib import Path


METHODS = ("grpo", "masa", "masa_efficient")
# MASAConfig fields that a stock GRPOConfig lacks.
_MASA_ONLY = (
    "num_meta_generations",
    "meta_min_length",
    "meta_prompt_template",
    "meta_system_prompt",
    "difficulty_base",
    "use_expert_bc",
    "expert_buffer_size",
    "expert_bc_steps",
    "expert_bc_learning_rate",
    "expert_bc_batch_size",
    "expert_min_notion_reward",
    "efficient_start_step",
    "notion_hint",
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--eval_every", type=int, default=50, help="Held-out evaluation every N steps.")
    parser.add_argument("--curve_solution_samples", type=int, default=16)
    parser.add_argument("--final_solution_samples", type=int, default=32)
    parser.add_argument("--meta_samples", type=int, default=8)
    parser.add_argument("--efficient_start_step", type=int, default=100, help="k: gating and cutoff from this step.")
    parser.add_argument("--gating_std_threshold", type=float, default=0.1)
    parser.add_argument("--cutoff_factor", type=float, default=2.0)
    parser.add_argument("--max_seconds_per_run", type=float, default=600.0, help="Time guard per run.")
    parser.add_argument(
        "--accuracy_tolerance", type=float, default=0.0, help="Reach GRPO's final accuracy minus this."
    )
    parser.add_argument("--warm_start_cache_dir", default="outputs/demo")
    parser.add_argument("--output_dir", default="outputs/benchmarks/compare_grpo_masa")
    return parser.parse_args(argv)


def training_config(method: str, seed: int, args, output_dir: Path):
    from trl import GRPOConfig

    from masa_trl import MASAConfig
    from masa_trl.demo.experiment import DEMO_DEFAULTS

    values = dict(DEMO_DEFAULTS, output_dir=str(output_dir), seed=seed, max_steps=args.max_steps, logging_steps=1)
    if method == "grpo":
        return GRPOConfig(**{k: v for k, v in values.items() if k not in _MASA_ONLY})
    if method == "masa":
        values.update(use_expert_bc=False, efficient_start_step=None)
    else:
        values.update(
            use_expert_bc=True,
            efficient_start_step=args.efficient_start_step,
            gating_std_threshold=args.gating_std_threshold,
            cutoff_factor=args.cutoff_factor,
        )
    return MASAConfig(**values)


def solution_tokens_of_step(log: dict, rows_per_step: int) -> float:
    """Solution tokens generated in one logged step (logging_steps=1)."""
    if "efficient/solution_tokens" in log:  # MASAGRPOTrainer counts them itself (gated rows excluded)
        return log["efficient/solution_tokens"]
    return log.get("completions/mean_length", 0.0) * rows_per_step


def run_one(method: str, seed: int, experiment, args) -> dict:
    import torch
    from transformers.trainer_callback import ProgressCallback
    from trl import GRPOTrainer

    from masa_trl import MASAGRPOTrainer
    from masa_trl.demo.callbacks import (
        AdaptiveThreadsCallback,
        CompactProgressCallback,
        HeldoutCurveCallback,
        TimeLimitCallback,
        fastest_thread_count,
    )

    output_dir = Path(args.output_dir) / f"{method}-seed{seed}"
    config = training_config(method, seed, args, output_dir)

    def evaluate(model, num_solution_samples):
        return experiment.evaluate(
            model,
            num_solution_samples=num_solution_samples,
            num_meta_samples=args.meta_samples,
            max_new_tokens=config.max_completion_length,
            pass_rate_scale=8,
            seed=1,
        )

    if method == "grpo":
        trainer = GRPOTrainer(
            model=str(experiment.model_dir),
            reward_funcs=_answer_reward(),
            args=config,
            train_dataset=experiment.train,
        )
    else:
        trainer = MASAGRPOTrainer(model=str(experiment.model_dir), args=config, train_dataset=experiment.train)
    torch.set_num_threads(fastest_thread_count())
    initial = evaluate(trainer.model, args.final_solution_samples)
    curve = HeldoutCurveCallback(lambda m: evaluate(m, args.curve_solution_samples), args.eval_every, initial=initial)
    threads = AdaptiveThreadsCallback(every=20)
    trainer.remove_callback(ProgressCallback)
    for callback in (
        threads,
        curve,
        TimeLimitCallback(args.max_seconds_per_run, clock=curve.train_seconds),
        CompactProgressCallback(desc=f"{method} seed {seed}"),
    ):
        trainer.add_callback(callback)
    trainer.train()
    # The last point again with the final sample count, so that the final accuracy is measured like the initial one.
    torch.set_num_threads(fastest_thread_count())
    final = evaluate(trainer.model, args.final_solution_samples)
    curve.history[-1] = {**curve.history[-1], **final.summary(), "step": trainer.state.global_step}

    rows_per_step = config.per_device_train_batch_size
    tokens_by_step, meta_tokens_by_step = {}, {}
    total = meta_total = 0.0
    for log in curve.train_logs:
        if "loss" not in log:
            continue
        total += solution_tokens_of_step(log, rows_per_step)
        meta_total += log.get("efficient/meta_tokens", log.get("meta/completions/mean_length", 0.0) * rows_per_step)
        tokens_by_step[log["step"]] = total
        meta_tokens_by_step[log["step"]] = meta_total
    for point in curve.history:
        point["solution_tokens"] = tokens_by_step.get(point["step"], 0.0)
        point["meta_tokens"] = meta_tokens_by_step.get(point["step"], 0.0) if method != "grpo" else 0.0
    gating = {
        key: _mean_of(curve.train_logs, key, active_only=True)
        for key in (
            "efficient/gated_frac",
            "efficient/skipped_frac",
            "efficient/audit_precision",
            "efficient/gating_paused",
            "efficient/cutoff_frac",
        )
    }
    step_logs = [log for log in curve.train_logs if "loss" in log]
    timing = {}
    for phase, logs in (
        ("before_efficient", [log for log in step_logs if not log.get("efficient/active")]),
        ("efficient_active", [log for log in step_logs if log.get("efficient/active")]),
    ):
        timing[phase] = {
            key: _mean_of(logs, key)
            for key in (
                "step_time",
                "timing/generate_s",
                "timing/generate_joint_s",
                "timing/generate_meta_s",
                "timing/generate_solution_s",
            )
        } | {"steps": len(logs)}
    return {
        "method": method,
        "seed": seed,
        "steps": trainer.state.global_step,
        "timing": timing,
        "train_seconds": curve.train_seconds(),
        "eval_seconds": curve.eval_seconds,
        "curve": curve.history,
        "gating_means_while_active": gating,
        "torch_threads": threads.history,
    }


def _answer_reward():
    from masa_trl.math_reward import math_accuracy_reward

    return [math_accuracy_reward]


def _mean_of(logs: list[dict], key: str, *, active_only: bool = False) -> float | None:
    """Mean of a logged value over the logs that have it (finite), optionally only where MASA-efficient was on."""
    values = [
        log[key]
        for log in logs
        if isinstance(log.get(key), (int, float))
        and math.isfinite(log[key])
        and (not active_only or log.get("efficient/active"))
    ]
    return sum(values) / len(values) if values else None


def cost_to_reach(curve: list[dict], target: float) -> dict | None:
    """Solution tokens and training seconds at the first evaluation point with accuracy >= target (None: never)."""
    for point in curve:
        if point["accuracy"] >= target:
            return {
                "step": point["step"],
                "solution_tokens": point["solution_tokens"],
                "seconds": point["train_seconds"],
            }
    return None


def compare(runs: list[dict], tolerance: float) -> list[dict]:
    """Per seed: GRPO's cost to reach its final accuracy over MASA-efficient's cost to reach it."""
    rows = []
    for seed in sorted({run["seed"] for run in runs}):
        by_method = {run["method"]: run for run in runs if run["seed"] == seed}
        grpo, efficient = by_method.get("grpo"), by_method.get("masa_efficient")
        if grpo is None or efficient is None:
            continue
        start, final = grpo["curve"][0]["accuracy"], grpo["curve"][-1]["accuracy"]
        target = final - tolerance
        row = {"seed": seed, "grpo_start_accuracy": start, "grpo_final_accuracy": final, "target": target}
        grpo_cost, efficient_cost = cost_to_reach(grpo["curve"], target), cost_to_reach(efficient["curve"], target)
        row["grpo_cost"], row["masa_efficient_cost"] = grpo_cost, efficient_cost
        if final <= start:
            row["ratio"] = None
            row["note"] = (
                "undefined: GRPO ended no higher than its warm start, so it reached its final accuracy at step 0"
            )
        elif efficient_cost is None:
            row["ratio"] = None
            row["note"] = "MASA-efficient never reached GRPO's final accuracy"
        else:
            row["ratio_tokens"] = grpo_cost["solution_tokens"] / max(efficient_cost["solution_tokens"], 1.0)
            row["ratio_seconds"] = grpo_cost["seconds"] / max(efficient_cost["seconds"], 1e-9)
            row["ratio"] = row["ratio_tokens"]
        rows.append(row)
    return rows


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8))
    colors = {"grpo": "tab:blue", "masa": "tab:orange", "masa_efficient": "tab:green"}
    for run in runs:
        curve = run["curve"]
        label = f"{run['method']} (seed {run['seed']})"
        for row, metric in enumerate(("accuracy", "pearson")):
            for col, cost in enumerate(("solution_tokens", "train_seconds")):
                axes[row][col].plot(
                    [p[cost] for p in curve],
                    [p[metric] for p in curve],
                    "o-",
                    color=colors[run["method"]],
                    alpha=0.5 + 0.5 / (1 + run["seed"]),
                    label=label,
                )
    for row, metric in enumerate(("held-out accuracy", "held-out Pearson(pred, true pass rate)")):
        for col, cost in enumerate(("solution tokens generated", "training seconds (evaluations excluded)")):
            axes[row][col].set(xlabel=cost, ylabel=metric)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("GRPO vs MASA vs MASA-efficient on the CPU demo task")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    args = parse_args(argv)
    from masa_trl.demo.experiment import prepare_experiment
    from masa_trl.demo.report import format_table, json_safe
    from masa_trl.demo.warm_start import WarmStartConfig

    start = time.perf_counter()
    load_start = os.getloadavg()
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for seed in args.seeds:
        # The same warm start for every run; the RL problem stream and the trainer follow the seed.
        experiment = prepare_experiment(WarmStartConfig(), cache_dir=args.warm_start_cache_dir, train_seed=seed)
        for method in args.methods:
            runs.append(run_one(method, seed, experiment, args))
            print(f"{method} seed {seed}: {runs[-1]['steps']} steps, {runs[-1]['train_seconds']:.0f} s")
    rows = []
    for run in runs:
        first, last = run["curve"][0], run["curve"][-1]
        rows.append(
            {
                "method": run["method"],
                "seed": run["seed"],
                "steps": run["steps"],
                "train_s": run["train_seconds"],
                "sol_tokens": int(last["solution_tokens"]),
                "meta_tokens": int(last["meta_tokens"]),
                "acc_start": first["accuracy"],
                "acc_end": last["accuracy"],
                "pearson_start": first["pearson"],
                "pearson_end": last["pearson"],
                "mae_end": last["mae"],
                "gated": run["gating_means_while_active"]["efficient/gated_frac"],
                "gate_precision": run["gating_means_while_active"]["efficient/audit_precision"],
            }
        )
    print(format_table(rows, list(rows[0])))
    timing_rows = [
        {"method": run["method"], "seed": run["seed"], "phase": phase, **values}
        for run in runs
        for phase, values in run["timing"].items()
        if values["steps"]
    ]
    print("\nMean seconds per step (efficient_active: from efficient_start_step on):")
    print(format_table(timing_rows, list(timing_rows[0])))
    comparison = compare(runs, args.accuracy_tolerance)
    for row in comparison:
        if row.get("ratio") is not None:
            print(
                f"seed {row['seed']}: GRPO's cost to reach its final accuracy {row['target']:.3f} / MASA-efficient's: "
                f"{row['ratio_tokens']:.2f}x in solution tokens, {row['ratio_seconds']:.2f}x in training time"
            )
        else:
            print(f"seed {row['seed']}: ratio {row['note']}")
    results = {
        "runs": runs,
        "comparison": comparison,
        "settings": vars(args),
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "cpu_count": os.cpu_count(),
        "total_seconds": time.perf_counter() - start,
    }
    (output_dir / "results.json").write_text(json.dumps(json_safe(results), indent=2, default=str))
    plot(runs, output_dir / "compare.png")
    print(f"results: {output_dir / 'results.json'}, plot: {output_dir / 'compare.png'}")


if __name__ == "__main__":
    main()
