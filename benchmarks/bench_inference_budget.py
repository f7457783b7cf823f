"""What the meta token budget saves and costs at inference, on the CPU demo's warm-started model.

    python benchmarks/bench_inference_budget.py                          # warm start of `make demo` (cached)
    python benchmarks/bench_inference_budget.py --cutoff_factors 2,1,0.75 --num_solution_samples 16
    python benchmarks/bench_inference_budget.py --model_dir path/to/a/trained/demo/model

The model is the demo's warm start (`masa_trl.demo.warm_start`, cached under `--cache_dir`; about 3-5 minutes to
train the first time), or `--model_dir`. On the demo's 220 held-out problems, [`masa_trl.inference.predict_meta`]
samples M meta predictions per problem with the demo's meta prompt and parse range (`DEMO_DEFAULTS`), then
[`masa_trl.inference.generate_with_meta`] writes K solutions per problem, once without a budget and once per cutoff
factor, from the demo's solution prompt, without notion feed-in (the demo's solver never saw a hint sentence; one
extra row measures feed-in). Accuracy is the demo's answer check ([`masa_trl.math_reward.math_accuracy_reward`]).

Columns: `budgeted` the share of problems that got a budget, `budget` the mean budget of those, `sol_tok` the mean
solution tokens per sample (EOS included), `saved` the share of the no-budget tokens saved, `cut` the share of samples
stopped by the budget, `accuracy` the share correct (`d_acc` its change against no budget, in points), `paired`
whether every budgeted sample is the no-budget sample of the same seed cut at its budget (`generate_with_meta` seeds
per batch, so budgets never change what is sampled: the rows compare the same samples, without resampling noise), and
`gen_s` the generation seconds. The notion feed-in row changes the prompts, so it is not paired. The warm start's meta
predictions are random by design (MASA's RL teaches them), so the budget is uninformed here; an RL-trained model can
be passed with `--model_dir`. Numbers are measured, not asserted.
"""

import argparse
import json
import statistics
import time
from pathlib import Path


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache_dir", default="outputs/demo", help="Where the demo caches its warm start.")
    parser.add_argument("--model_dir", default=None, help="A model to use instead of the demo's warm start.")
    parser.add_argument("--warm_start_max_seconds", type=float, default=300.0, help="Time guard of the warm start.")
    parser.add_argument("--num_meta_samples", type=int, default=8, help="M meta samples per problem.")
    parser.add_argument("--num_solution_samples", type=int, default=8, help="K solutions per problem and setting.")
    parser.add_argument("--cutoff_factors", default="2,1,0.75,0.5", help="Comma-separated cutoff factors.")
    parser.add_argument("--no_feed_in_row", action="store_true", help="Skip the row with notion feed-in.")
    parser.add_argument("--heldout_per_cell", type=int, default=20, help="Held-out problems per difficulty cell.")
    parser.add_argument("--batch_size", type=int, default=512, help="Sequences per generate call.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=None, help="Torch threads; default: the fastest now (a shared CPU)."
    )
    parser.add_argument("--json", default=None, help="Also write the rows to this JSON file.")
    return parser.parse_args()


def main():
    args = parse_args()
    start = time.perf_counter()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from masa_trl.arithmetic import make_sum_heldout
    from masa_trl.demo.callbacks import fastest_thread_count
    from masa_trl.demo.experiment import DEMO_DEFAULTS
    from masa_trl.demo.report import format_table
    from masa_trl.demo.task import solution_messages
    from masa_trl.demo.warm_start import WarmStartConfig, warm_start
    from masa_trl.inference import generate_with_meta, meta_kwargs_from_config, predict_meta
    from masa_trl.math_reward import math_accuracy_reward

    if args.model_dir is None:
        # The recipe's warm start (recipes/masa_demo_cpu.py defaults): a cache hit after `make demo`.
        config = WarmStartConfig(steps=1100, seed=0, pass_rate_scale=8, max_seconds=args.warm_start_max_seconds)
        model_dir, record, cached = warm_start(config, args.cache_dir)
        how = "cached" if cached else f"trained in {record['seconds']} s"
        print(f"warm start {model_dir} ({how})")
        if not record["complete"]:
            print(f"note: the warm start stopped at its time guard after {record['steps_done']} steps")
    else:
        model_dir = Path(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    heldout = make_sum_heldout(args.heldout_per_cell, seed=1234)
    problems, answers = list(heldout["problem"]), list(heldout["answer"])
    max_new_tokens = DEMO_DEFAULTS["max_completion_length"]
    K = args.num_solution_samples
    print(
        f"{len(problems)} held-out problems, M={args.num_meta_samples} meta samples, K={K} solutions per setting, "
        f"max_new_tokens={max_new_tokens}"
    )

    def pick_threads():  # on a loaded 2-core machine one thread can be several times faster than two
        torch.set_num_threads(args.threads or fastest_thread_count())

    pick_threads()
    meta_start = time.perf_counter()
    meta = predict_meta(
        model,
        tokenizer,
        problems,
        num_samples=args.num_meta_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        **meta_kwargs_from_config(DEMO_DEFAULTS),
    )
    meta_seconds = time.perf_counter() - meta_start
    meta_tokens = sum(sum(e.num_tokens) for e in meta)
    lengths = [e.median_length for e in meta if e.parse_rate > 0]
    print(
        f"meta: parse rate {statistics.fmean(e.parse_rate for e in meta):.3f}, median predicted length "
        f"{statistics.median(lengths) if lengths else float('nan'):.1f} tokens (mean over problems "
        f"{statistics.fmean(lengths) if lengths else float('nan'):.1f}), {meta_tokens / len(problems):.1f} meta "
        f"tokens per problem, {meta_seconds:.1f} s"
    )

    def run(name, cutoff_factor, notion_feed_in=False):
        pick_threads()
        t0 = time.perf_counter()
        out = generate_with_meta(
            model,
            tokenizer,
            problems,
            meta=meta,
            num_samples=K,
            solution_prompt_fn=solution_messages,
            notion_feed_in=notion_feed_in,
            cutoff_factor=cutoff_factor,
            max_new_tokens=max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            show_progress=False,
        )
        seconds = time.perf_counter() - t0
        texts = [t for o in out for t in o.texts]
        scores = math_accuracy_reward(texts, answer=[a for a in answers for _ in range(K)])
        correct = [s is not None and s >= 1.0 for s in scores]
        tokens = [n for o in out for n in o.num_tokens]
        budgeted = [o for o in out if o.budgeted]
        cut = sum(t and o.budgeted for o in out for t in o.truncated)
        return out, {
            "setting": name,
            "budgeted": len(budgeted) / len(out),
            "budget": statistics.fmean(o.budget for o in budgeted) if budgeted else None,
            "sol_tok": statistics.fmean(tokens),
            "cut": cut / len(tokens),
            "accuracy": statistics.fmean(correct),
            "gen_s": seconds,
        }

    base_out, base = run("no budget", None)
    rows = [base]
    factors = [float(f) for f in args.cutoff_factors.split(",") if f.strip()]
    for factor in factors:
        out, row = run(f"cutoff {factor:g}x", factor)
        row["paired"] = all(
            cut_ids == plain_ids[: o.budget]
            for o, b in zip(out, base_out, strict=True)
            for cut_ids, plain_ids in zip(o.completion_ids, b.completion_ids, strict=True)
        )
        rows.append(row)
    if not args.no_feed_in_row and factors:
        _, row = run(f"cutoff {factors[0]:g}x + notions", factors[0], notion_feed_in=True)
        rows.append(row)
    for row in rows:
        row["saved"] = 1 - row["sol_tok"] / base["sol_tok"]
        row["d_acc"] = 100 * (row["accuracy"] - base["accuracy"])

    print()
    print(
        format_table(
            rows,
            ["setting", "budgeted", "budget", "sol_tok", "saved", "cut", "accuracy", "d_acc", "paired", "gen_s"],
        )
    )
    per_problem = meta_tokens / len(problems)
    print(
        f"\nmeta predictions cost {per_problem:.1f} tokens per problem ({args.num_meta_samples} samples), "
        f"{per_problem / K:.1f} per solution sample at K={K}; gen_s is wall time on a possibly shared machine; "
        f"total {time.perf_counter() - start:.0f} s"
    )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "meta_tokens_per_problem": meta_tokens / len(problems)}))


if __name__ == "__main__":
    main()
