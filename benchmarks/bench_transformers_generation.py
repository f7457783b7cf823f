"""transformers generation of one MASA step: one padded `generate`, two (one per kind), or continuous batching.

The rows of a step: G solution rows and M meta rows per prompt, the meta prompt several times longer than the
solution prompt and the meta completion about 0.37 of the solution (the paper's 2293 / 6251 tokens). A random-init
tiny model rarely emits EOS, so EOS is banned and each call runs to its `max_new_tokens`; in the single padded call,
every row runs to the solution length (padded `generate` computes every row until the longest is done). Continuous
batching is transformers' `generate_batch`, TRL's `use_transformers_continuous_batching` path, which takes one
`max_new_tokens` per call.

    python benchmarks/bench_transformers_generation.py [--repeats 3] [--threads 1]

Prints the median seconds per variant and the machine load. This is what `MASAConfig.joint_generation`'s default
for transformers (one call per kind) rests on.
"""

import argparse
import os
import statistics
import tempfile
import time


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8, help="G (and M) rows per prompt")
    parser.add_argument("--solution-prompt", type=int, default=54, help="solution prompt tokens")
    parser.add_argument("--meta-prompt", type=int, default=420, help="meta prompt tokens")
    parser.add_argument("--solution-length", type=int, default=96)
    parser.add_argument("--meta-length", type=int, default=36)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    options = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    from masa_trl.tiny_model import build_tiny_model

    torch.set_num_threads(options.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model = AutoModelForCausalLM.from_pretrained(build_tiny_model(f"{tmp}/model")).eval()
    vocab = model.config.vocab_size
    rows = options.prompts * options.generations
    generator = torch.Generator().manual_seed(0)
    solution = torch.randint(5, vocab, (rows, options.solution_prompt), generator=generator)
    meta = torch.randint(5, vocab, (rows, options.meta_prompt), generator=generator)

    def config(length):
        return GenerationConfig(
            max_new_tokens=length, min_new_tokens=length, do_sample=True, pad_token_id=0, eos_token_id=1
        )

    def padded(batches):
        """One left-padded `generate` over the given (prompts, length) batches joined, or one per batch."""
        start = time.perf_counter()
        for prompts, length in batches:
            width = max(p.size(1) for p in prompts)
            ids = torch.cat([torch.nn.functional.pad(p, (width - p.size(1), 0)) for p in prompts])
            mask = torch.cat([torch.nn.functional.pad(torch.ones_like(p), (width - p.size(1), 0)) for p in prompts])
            with torch.no_grad():
                model.generate(input_ids=ids, attention_mask=mask, generation_config=config(length))
        return time.perf_counter() - start

    def continuous():
        start = time.perf_counter()
        for prompts, length in ((solution, options.solution_length), (meta, options.meta_length)):
            with torch.no_grad():
                model.generate_batch(prompts.tolist(), generation_config=config(length), progress_bar=False)
        return time.perf_counter() - start

    variants = {
        "one padded call (both kinds)": lambda: padded([((solution, meta), options.solution_length)]),
        "two padded calls (one per kind)": lambda: padded(
            [((solution,), options.solution_length), ((meta,), options.meta_length)]
        ),
        "continuous batching (one call per kind)": continuous,
    }
    padded([((solution[:2],), 4)])  # warm-up
    results = {name: statistics.median(run() for _ in range(options.repeats)) for name, run in variants.items()}
    print(f"{rows} solution + {rows} meta rows, {options.threads} thread(s), load {os.getloadavg()}")
    print("| variant | median seconds |\n|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.2f} |")


if __name__ == "__main__":
    main()
