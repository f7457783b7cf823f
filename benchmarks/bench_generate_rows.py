"""Does a padded transformers `generate` cost per row or per step? Seconds of one call against its number of rows.

    python benchmarks/bench_generate_rows.py                       # 6.6M-parameter Qwen3 (hidden 512, 4 layers)
    python benchmarks/bench_generate_rows.py --hidden-size 64 --num-layers 2   # the tiny model of the tests

Random-init Qwen3 (`masa_trl.tiny_model`), random 40-token prompts, 96 sampled tokens per row (EOS suppressed), one
torch thread, the median of `--repeats` calls. It also times 48 rows with MASA-efficient's per-row cap
(`masa_trl.rollout_generation.RowCapStopping`: 16 rows capped at 48 tokens), the stopping rule the trainer adds on
this backend. `bench_step_cost.py` explains its generation times with these numbers.
"""

import argparse
import statistics
import tempfile
import time


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, StoppingCriteriaList

    from masa_trl.rollout_generation import RowCapStopping
    from masa_trl.tiny_model import build_tiny_model

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as path:
        build_tiny_model(
            path,
            hidden_size=args.hidden_size,
            intermediate_size=2 * args.hidden_size,
            num_hidden_layers=args.num_layers,
        )
        model = AutoModelForCausalLM.from_pretrained(path).eval()
    generator = torch.Generator().manual_seed(0)

    def seconds(rows: int, caps=None) -> float:
        prompts = torch.randint(5, 500, (rows, 40), generator=generator)
        extra = {} if caps is None else {"stopping_criteria": StoppingCriteriaList([RowCapStopping(caps)])}
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with torch.no_grad():
                model.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=True, pad_token_id=0, **extra)  # fmt: skip
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    results = {f"{rows} rows": seconds(rows) for rows in (64, 48, 32)}
    results["48 rows, 16 capped at 48"] = seconds(48, [48] * 16 + [None] * 32)
    params = sum(p.numel() for p in model.parameters())
    print(f"hidden {args.hidden_size}, {args.num_layers} layers ({params / 1e6:.1f}M parameters), "
          f"{args.new_tokens} new tokens, median of {args.repeats}:")  # fmt: skip
    for name, value in results.items():
        print(f"  {name:>26}: {value:.2f} s ({value / results['64 rows']:.2f} of 64 rows)")
    return results


if __name__ == "__main__":
    main()
