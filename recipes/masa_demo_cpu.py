"""A complete MASA experiment on 2 CPU cores in about 10 minutes: `make demo`.

    python recipes/masa_demo_cpu.py                            # what `make demo` runs
    python recipes/masa_demo_cpu.py --efficient_start_step 150 # MASA-efficient (gating, cutoff) from step 150
    python recipes/masa_demo_cpu.py --use_expert_bc false      # MASA without expert behaviour cloning
    python recipes/masa_demo_cpu.py --max_steps 100 --heldout_eval_steps 25

Phases:
1. **Warm start** (2-5 minutes depending on the machine's load; cached under `--warm_start_cache_dir` by a hash of
   its settings): a 0.54M-parameter Qwen3 with a digit-level tokenizer learns to answer sums
   (`Solve: 37+5+81` -> `\\boxed{123}`) and to write the meta JSON with *random* pass rates and lengths
   (`masa_trl.demo.warm_start`).
2. **Before RL**: held-out meta-awareness. 220 held-out problems over 11 difficulty cells; predicted pass rate =
   mean of 8 meta samples, true pass rate = share of 32 solution samples correct (`masa_trl.demo.heldout`).
3. **MASA RL** through `MASAGRPOTrainer.train()`: 300 steps, G = M = 8, 8 problems per step, lr 1e-4 (2e-4 and
   above erode the solver on this model), the paper's meta reward (mean of length, difficulty and notion rewards),
   expert behaviour cloning; held-out curves every `--heldout_eval_steps` steps.
4. **After RL**: the same evaluation, true pass rates re-measured; per-cell calibration; pass/fail evidence.

Outputs in `--output_dir`: `results.json`, and the PNGs `heldout_meta_awareness.png` (predicted vs true pass rate and
length over steps, the paper's figure 7 analogue), `calibration.png`, `meta_rewards.png`, `accuracy.png`, and
`gating.png` with MASA-efficient (`--efficient_start_step`).
"""

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


START = time.perf_counter()

from masa_trl import MASAConfig, MASAGRPOTrainer  # noqa: E402
from masa_trl.demo.experiment import DEMO_DEFAULTS, NOTION_NOTE, prepare_experiment  # noqa: E402
from masa_trl.demo.report import format_table, json_safe, phase_header  # noqa: E402
from masa_trl.demo.warm_start import WarmStartConfig  # noqa: E402
from masa_trl.recipe_parser import RecipeParser  # noqa: E402


@dataclass
class DemoArguments:
    warm_start_cache_dir: str = field(default="outputs/demo", metadata={"help": "Where warm starts are cached."})
    warm_start_steps: int = field(default=1100, metadata={"help": "Supervised warm-start steps (batch 64)."})
    warm_start_max_seconds: float = field(
        default=300.0, metadata={"help": "Time guard of the warm start (stops early on a slow machine)."}
    )
    warm_start_seed: int = field(default=0, metadata={"help": "Seed of the warm start."})
    heldout_per_cell: int = field(default=20, metadata={"help": "Held-out problems per difficulty cell."})
    heldout_seed: int = field(default=1234, metadata={"help": "Seed of the held-out split."})
    num_train_problems: int = field(default=4000, metadata={"help": "Size of the RL problem stream."})
    heldout_eval_steps: int = field(default=50, metadata={"help": "Held-out curve evaluation every N RL steps."})
    eval_solution_samples: int = field(default=32, metadata={"help": "K solution samples per problem, before/after."})
    curve_solution_samples: int = field(default=16, metadata={"help": "K solution samples per problem on the curve."})
    eval_meta_samples: int = field(default=8, metadata={"help": "M meta samples per held-out problem."})
    rl_max_seconds: float | None = field(
        default=420.0, metadata={"help": "Time guard of the RL phase, evaluations excluded (None: no guard)."}
    )
    min_pearson: float = field(default=0.5, metadata={"help": "Evidence gate: held-out Pearson after RL."})
    max_accuracy_drop: float = field(default=0.05, metadata={"help": "Evidence gate: allowed held-out accuracy drop."})
    strict: bool = field(default=False, metadata={"help": "Exit with status 1 when an evidence gate fails."})
    plots: bool = field(default=True, metadata={"help": "Write the PNG figures (needs matplotlib)."})


def _summary_row(name: str, summary: dict) -> dict:
    return {"phase": name, **summary}


SUMMARY_COLUMNS = [
    "phase",
    "pearson",
    "spearman",
    ("mae", "MAE"),
    ("accuracy", "accuracy"),
    ("parse_rate", "parse"),
    ("pred_pass_rate", "pred_pr"),
    ("pred_length", "pred_len"),
    ("true_length", "true_len"),
    ("length_hit_rate", "len_hit"),
    ("seconds", "eval_s"),
]


def main(args: DemoArguments, training_args: MASAConfig) -> dict:
    """Run the four phases, print their tables, write `results.json` and the plots; returns the results."""
    import torch
    from transformers.trainer_callback import ProgressCallback

    from masa_trl.demo.callbacks import (
        AdaptiveThreadsCallback,
        CompactProgressCallback,
        HeldoutCurveCallback,
        TimeLimitCallback,
        fastest_thread_count,
    )

    output_dir = Path(training_args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    print(
        f"MASA CPU demo: {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, load average "
        f"{load_start[0]:.2f} (1 min); imports took {time.perf_counter() - START:.1f} s"
    )

    # ---------------------------------------------------------------------------------------------------- warm start
    print(phase_header("Phase 1: supervised warm start (cached by a hash of its settings)"))
    ws_config = WarmStartConfig(
        steps=args.warm_start_steps,
        seed=args.warm_start_seed,
        pass_rate_scale=training_args.pass_rate_scale,
        max_seconds=args.warm_start_max_seconds,
    )
    phase_start = time.perf_counter()
    experiment = prepare_experiment(
        ws_config,
        cache_dir=args.warm_start_cache_dir,
        heldout_per_cell=args.heldout_per_cell,
        heldout_seed=args.heldout_seed,
        num_train_problems=args.num_train_problems,
        train_seed=training_args.seed,
    )
    record, cached = experiment.warm_start_record, experiment.warm_start_cached
    print(
        format_table(
            [
                {
                    "model_dir": str(experiment.model_dir),
                    "cached": cached,
                    "params": record["num_parameters"],
                    "steps": record["steps_done"],
                    "train_s": record["seconds"],
                    "tok/s": record["tokens_per_second"],
                    "sol_loss": record["final_solution_loss"],
                    "meta_loss": record["final_meta_loss"],
                    "this_run_s": time.perf_counter() - phase_start,
                }
            ],
            ["model_dir", "cached", "params", "steps", "train_s", "tok/s", "sol_loss", "meta_loss", "this_run_s"],
            digits=2,
        )
    )
    if not record["complete"]:
        print(f"note: the warm start hit its time guard after {record['steps_done']} of {ws_config.steps} steps")

    def evaluate(model, num_solution_samples: int, seed: int):
        return experiment.evaluate(
            model,
            num_solution_samples=num_solution_samples,
            num_meta_samples=args.eval_meta_samples,
            max_new_tokens=training_args.max_completion_length,
            pass_rate_scale=training_args.pass_rate_scale,
            seed=seed,
        )

    # ---------------------------------------------------------------------------------------------------- RL trainer
    trainer = MASAGRPOTrainer(model=str(experiment.model_dir), args=training_args, train_dataset=experiment.train)

    print(phase_header("Phase 2: held-out meta-awareness before RL"))
    torch.set_num_threads(fastest_thread_count())
    before = evaluate(trainer.model, args.eval_solution_samples, seed=1)
    _print_evaluation("before RL", before)

    print(phase_header("Phase 3: MASA RL in MASAGRPOTrainer.train()"))
    print(
        f"{training_args.max_steps} steps (time guard {args.rl_max_seconds} s), "
        f"{training_args.per_device_train_batch_size // training_args.num_generations} problems per step, "
        f"G={training_args.num_generations}, M={training_args.num_meta_generations}, lr {training_args.learning_rate}, "
        f"meta reward weights {training_args.meta_reward_weights or 'paper default (mean of length, difficulty, notion)'}"
    )
    print(NOTION_NOTE)
    if training_args.use_expert_bc:
        print(
            f"expert BC: 1 pass per {training_args.expert_buffer_size} experts, {training_args.expert_bc_steps} step(s) "
            f"at lr {training_args.expert_bc_learning_rate}, expert_min_notion_reward "
            f"{training_args.expert_min_notion_reward} (notions cannot score here)"
        )

    progress = CompactProgressCallback(
        {"meta/reward": "meta_r", "meta/rewards/difficulty_alignment_reward/mean": "diff_r", "reward": "sol_r"}
    )

    def on_point(point):
        progress.show("heldout_r", point["pearson"])

    curve = HeldoutCurveCallback(
        lambda model: evaluate(model, args.curve_solution_samples, seed=2),
        args.heldout_eval_steps,
        initial=before,
        on_point=on_point,
    )
    time_limit = TimeLimitCallback(args.rl_max_seconds, clock=curve.train_seconds)
    threads = AdaptiveThreadsCallback(every=20)
    trainer.remove_callback(ProgressCallback)
    for callback in (threads, curve, time_limit, progress):
        trainer.add_callback(callback)
    rl_start = time.perf_counter()
    trainer.train()
    rl_seconds = time.perf_counter() - rl_start
    print(f"torch threads (step, count), re-picked every 20 steps on measured speed: {threads.history}")
    if time_limit.stopped_at is not None:
        print(f"note: the RL time guard stopped training at step {time_limit.stopped_at}")
    print(
        f"RL: {trainer.state.global_step} steps in {rl_seconds:.0f} s "
        f"({curve.train_seconds():.0f} s training, {curve.eval_seconds:.0f} s held-out curve evaluations)"
    )
    curve_rows = []
    logs_by_step = {entry["step"]: entry for entry in curve.train_logs}
    for point in curve.history:
        log = logs_by_step.get(point["step"], {})
        curve_rows.append(
            {
                **point,
                "meta_reward": log.get("meta/reward"),
                "len_r": log.get("meta/rewards/length_alignment_reward/mean"),
                "diff_r": log.get("meta/rewards/difficulty_alignment_reward/mean"),
                "notion_r": log.get("meta/rewards/notion_alignment_reward/mean"),
            }
        )
    print(
        format_table(
            curve_rows,
            [
                "step",
                ("train_seconds", "train_s"),
                "pearson",
                "spearman",
                ("mae", "MAE"),
                "accuracy",
                ("parse_rate", "parse"),
                ("pred_length", "pred_len"),
                ("true_length", "true_len"),
                ("meta_reward", "meta_r"),
                "len_r",
                "diff_r",
                "notion_r",
            ],
        )
    )
    print(
        f"(curve points use K={args.curve_solution_samples} solution samples; meta_r and its components: the "
        "training batch of that step)"
    )
    active = [log for log in curve.train_logs if log.get("efficient/active")]
    if active:

        def mean(key):
            values = [log[key] for log in active if isinstance(log.get(key), float) and math.isfinite(log[key])]
            return sum(values) / len(values) if values else math.nan

        print(
            f"MASA-efficient from step {training_args.efficient_start_step}: {mean('efficient/gated_frac'):.2f} of "
            f"prompts gated, {mean('efficient/skipped_frac'):.2f} skipped, audited gating precision "
            f"{mean('efficient/audit_precision'):.2f} (gating pauses below {training_args.gating_precision_floor}; "
            f"paused {mean('efficient/gating_paused'):.2f} of the time), cutoff on "
            f"{mean('efficient/cutoff_frac'):.3f} of capped rows; notion hints "
            f"{'on' if training_args.notion_hint else 'off (a hint sentence is off the solver distribution here)'}"
        )

    print(phase_header("Phase 4: held-out meta-awareness after RL (true pass rates re-measured)"))
    torch.set_num_threads(fastest_thread_count())
    after = evaluate(trainer.model, args.eval_solution_samples, seed=1)
    _print_evaluation("after RL", after)
    cell_rows = [
        {
            "cell": f"{b['terms']}x{b['digits']}d",
            "n": b["n"],
            "pred_before": b["pred_pass_rate"],
            "true_before": b["true_pass_rate"],
            "pred_after": a["pred_pass_rate"],
            "true_after": a["true_pass_rate"],
            "pred_len_after": a["pred_length"],
            "true_len_after": a["true_length"],
        }
        for b, a in zip(before.per_cell(), after.per_cell(), strict=True)
    ]
    print("\nPer difficulty cell (terms x digits):")
    print(format_table(cell_rows, list(cell_rows[0]), digits=2))
    print("\nMeta samples before RL:", *before.meta_examples, sep="\n  ")
    print("Meta samples after RL:", *after.meta_examples, sep="\n  ")

    # ---------------------------------------------------------------------------------------------------- evidence
    print(phase_header("Evidence"))
    sb, sa = before.summary(), after.summary()
    gates = [
        (f"held-out Pearson after RL >= {args.min_pearson}", sa["pearson"] >= args.min_pearson),
        ("held-out Pearson rose by >= 0.4", sa["pearson"] - sb["pearson"] >= 0.4),
        (
            f"held-out accuracy fell by <= {100 * args.max_accuracy_drop:.0f} points",
            sb["accuracy"] - sa["accuracy"] <= args.max_accuracy_drop,
        ),
        ("strict meta parse rate >= 0.9", sa["parse_rate"] >= 0.9),
    ]
    print(
        f"Pearson  {sb['pearson']:.3f} -> {sa['pearson']:.3f}   Spearman {sb['spearman']:.3f} -> {sa['spearman']:.3f}"
    )
    print(
        f"MAE      {sb['mae']:.3f} -> {sa['mae']:.3f}   (constant predictor {sa['constant_mae']:.3f}, cell-mean "
        f"reference {sa['cell_mean_mae']:.3f}, Pearson {sa['cell_mean_pearson']:.3f})"
    )
    print(
        f"accuracy {sb['accuracy']:.3f} -> {sa['accuracy']:.3f}   parse {sb['parse_rate']:.3f} -> {sa['parse_rate']:.3f}"
    )
    print(
        f"length   predicted {sb['pred_length']:.1f} -> {sa['pred_length']:.1f} tokens, true {sa['true_length']:.1f}; "
        f"in correct range {sb['length_hit_rate']:.2f} -> {sa['length_hit_rate']:.2f}"
    )
    for name, ok in gates:
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}")

    total = time.perf_counter() - START
    load_end = os.getloadavg()
    results = {
        "before": sb,
        "after": sa,
        "curve": curve.history,
        "train_logs": curve.train_logs,
        "per_cell": cell_rows,
        "gates": dict(gates),
        "warm_start": {k: v for k, v in record.items() if k != "settings"} | {"cached": cached},
        "rl_seconds": rl_seconds,
        "rl_steps": trainer.state.global_step,
        "total_seconds": total,
        "load_average": {"start": load_start, "end": load_end},
        "cpu_count": os.cpu_count(),
        "torch_threads": threads.history,
    }
    (output_dir / "results.json").write_text(json.dumps(json_safe(results), indent=2, default=str))
    if args.plots:
        from masa_trl.demo import plots

        written = [
            plots.plot_meta_awareness(curve.history, output_dir / "heldout_meta_awareness.png"),
            plots.plot_calibration(before, after, output_dir / "calibration.png"),
            plots.plot_meta_rewards(curve.train_logs, output_dir / "meta_rewards.png", note=NOTION_NOTE),
            plots.plot_accuracy(curve.history, curve.train_logs, output_dir / "accuracy.png"),
            plots.plot_gating(
                curve.train_logs,
                output_dir / "gating.png",
                precision_floor=training_args.gating_precision_floor,
            ),
        ]
        print("plots:", ", ".join(str(p) for p in written if p is not None))
    print(f"results: {output_dir / 'results.json'}")
    print(f"total wall time {total:.0f} s (load average {load_start[0]:.2f} at start, {load_end[0]:.2f} at end)")
    return results


def _print_evaluation(name: str, evaluation) -> None:
    summary = evaluation.summary()
    print(format_table([_summary_row(name, summary)], SUMMARY_COLUMNS))
    print(
        f"reference: constant predictor MAE {summary['constant_mae']:.3f}; cell-mean predictor (in-sample) Pearson "
        f"{summary['cell_mean_pearson']:.3f}, MAE {summary['cell_mean_mae']:.3f}"
    )


def make_parser() -> RecipeParser:
    parser = RecipeParser((DemoArguments, MASAConfig))
    parser.set_defaults(**DEMO_DEFAULTS)
    return parser


if __name__ == "__main__":
    demo_args, masa_args = make_parser().parse_args_and_config()
    results = main(demo_args, masa_args)
    sys.exit(1 if demo_args.strict and not all(results["gates"].values()) else 0)
