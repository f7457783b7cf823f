"""Where MASA-efficient's solution-generation saving goes: one solution call of a step, taken apart.

    python benchmarks/bench_generate_rows.py                                 # transformers, 7.0M-parameter Qwen3
    .venv-vllm/bin/python benchmarks/bench_generate_rows.py --backend vllm   # vLLM colocate (CPU build)
    python benchmarks/bench_generate_rows.py --hidden-size 64 --num-layers 2 # the tiny model of the tests

`bench_step_cost.py` measures whole training steps; this benchmark replays only the solution-generation call of one
step, with the shapes the trainer sends (8 prompts x G = 8 rows; MASA-efficient with 2 of the 8 prompts gated and 2
cut at half the length, as `bench_step_cost.py`'s defaults script them), through the same mechanism the trainer uses:

- transformers: one padded `generate` of every row that is not gated, with `masa_trl.rollout_generation`'s per-row
  stopping criterion (`RowCapStopping`) for the capped rows;
- vLLM: one `LLM.generate`, through `masa_trl.rollout_generation.CappedLLM` (one `SamplingParams` per row).

Scenarios, for each completion length N in `--new-tokens` (every row runs to N tokens or its cap; EOS ignored):

- `masa`: 64 rows, prompts of `--prompt-tokens` tokens (MASA's solution call, = GRPO's);
- `efficient`: what MASA-efficient sends: 48 rows (2 prompts gated), 16 of them capped at N/2, prompts lengthened by
  the notion hint (`--hint-tokens`);
- `efficient, no hint`: the same without the hint's tokens;
- `gated rows only`: 48 rows, no caps (what leaving the gated rows out saves by itself);
- `prefill`: 1 new token, for MASA's and MASA-efficient's prompts (the part of a call that does not shrink with
  shorter completions);
- with `--with-meta` (vLLM): `meta only`, MASA's 64 meta rows (423-token prompts whose first 380 tokens, the meta
  instruction, are shared, 0.375 x N tokens each), and `masa, one call`, the solution rows and the meta rows in one
  call (issue #14's goal 1: at most 1.15 x the solution rows alone).

The report also fits a decoding step's cost as `a + b * rows` to the two uncapped calls (`masa`, `gated rows only`)
and gives the saving that model predicts if every capped row stopped costing at its cap: a bound from this
machine's step costs, labelled as such, not a measurement.

MASA-efficient generates 37.5% fewer solution tokens than MASA in every scenario; issue #14's goal is a saving of
solution-generation time of at least 0.8 x that (30%). Defaults are the shapes `bench_step_cost.py` measured in the
trainer: 57-token prompts, 29 more with the hint (its tokenizer spells a notion in many tokens). Prompts are random
token ids, the same prompt for the G rows of a group (as in training; it matters for vLLM's prefix cache). One torch
thread; the scenarios are interleaved, `--repeats` times, and the median (with the range) is reported. Results are
written as JSON under `outputs/bench_generate_rows/`.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
PROMPTS, GROUP, GATED, CUT = 8, 8, 2, 2  # prompts per step, rows per prompt, gated prompts, cut prompts
GOAL_FACTOR = 0.8  # issue #14's goal 2: time saved >= 0.8 x the share of solution tokens saved
ONE_CALL_GOAL = 1.15  # issue #14's goal 1: MASA's generation <= 1.15 x GRPO's


META_PROMPT, META_PREFIX, META_RATIO = 423, 380, 0.375  # the trainer's meta prompt: tokens, shared instruction


def scenarios(prompt_tokens: int, hint_tokens: int, new_tokens: int, with_meta: bool = False) -> dict[str, dict]:
    """Scenario name -> prompt length, number of solution rows, their caps, new tokens, and (`meta_rows`) meta rows
    added to the same call."""
    kept = PROMPTS - GATED
    caps = [new_tokens // 2] * (CUT * GROUP) + [None] * ((kept - CUT) * GROUP)
    meta = {}
    if with_meta:
        meta_new = round(META_RATIO * new_tokens)
        meta = {
            "meta only": dict(prompt=prompt_tokens, rows=0, caps=None, new=meta_new, meta_rows=PROMPTS * GROUP),
            "masa, one call": dict(prompt=prompt_tokens, rows=PROMPTS * GROUP, caps=None, new=new_tokens,
                                   meta_rows=PROMPTS * GROUP, meta_new=meta_new),
        }  # fmt: skip
    return meta | {
        "masa": dict(prompt=prompt_tokens, rows=PROMPTS * GROUP, caps=None, new=new_tokens),
        "efficient": dict(prompt=prompt_tokens + hint_tokens, rows=kept * GROUP, caps=caps, new=new_tokens),
        "efficient, no hint": dict(prompt=prompt_tokens, rows=kept * GROUP, caps=caps, new=new_tokens),
        "gated rows only": dict(prompt=prompt_tokens, rows=kept * GROUP, caps=None, new=new_tokens),
        "prefill, masa": dict(prompt=prompt_tokens, rows=PROMPTS * GROUP, caps=None, new=1),
        "prefill, efficient": dict(prompt=prompt_tokens + hint_tokens, rows=kept * GROUP, caps=None, new=1),
    }


def row_caps(scenario: dict) -> list[int | None] | None:
    """The caps of the call's rows: the solution rows', then the meta rows' (each at the meta length)."""
    meta_rows = scenario.get("meta_rows", 0)
    if not meta_rows:
        return scenario["caps"]
    return (scenario["caps"] or [None] * scenario["rows"]) + [scenario.get("meta_new", scenario["new"])] * meta_rows


def generated_tokens(scenario: dict) -> int:
    caps = row_caps(scenario) or [None] * scenario["rows"]
    return sum(scenario["new"] if cap is None else min(cap, scenario["new"]) for cap in caps)


def prompt_ids(generator, scenario: dict) -> list[list[int]]:
    """Solution prompts (one per group of G rows), then meta prompts: the meta instruction, shared by every meta
    prompt as in the trainer's template, then the problem."""
    import torch

    def random_ids(*shape):
        return torch.randint(5, 500, shape, generator=generator).tolist()

    solutions = [ids for ids in random_ids(scenario["rows"] // GROUP, scenario["prompt"]) for _ in range(GROUP)]
    if not scenario.get("meta_rows"):
        return solutions
    instruction = random_ids(META_PREFIX)
    problems = random_ids(scenario["meta_rows"] // GROUP, META_PROMPT - META_PREFIX)
    return solutions + [instruction + problem for problem in problems for _ in range(GROUP)]


class TransformersBackend:
    def __init__(self, path: str):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.model = AutoModelForCausalLM.from_pretrained(path).eval()

    def generate(self, prompts: list[list[int]], caps, new_tokens: int) -> list[int]:
        from transformers import StoppingCriteriaList

        from masa_trl.rollout_generation import RowCapStopping

        ids = self.torch.tensor(prompts)  # equal lengths: no padding
        extra = {} if caps is None else {"stopping_criteria": StoppingCriteriaList([RowCapStopping(caps)])}
        with self.torch.no_grad():
            out = self.model.generate(
                ids, attention_mask=self.torch.ones_like(ids), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                do_sample=True, pad_token_id=0, **extra,
            )  # fmt: skip
        # A row stopped by its cap is padded to the longest row; count what the trainer keeps (cut at the cap).
        return [min(out.size(1) - ids.size(1), cap or new_tokens) for cap in (caps or [None] * len(prompts))]


class VLLMBackend:
    def __init__(self, path: str):
        from vllm import LLM

        self.llm = LLM(model=path, gpu_memory_utilization=0.3, max_model_len=2048, seed=0)

    def generate(self, prompts: list[list[int]], caps, new_tokens: int) -> list[int]:
        from vllm import SamplingParams

        from masa_trl.rollout_generation import CappedLLM

        params = SamplingParams(max_tokens=new_tokens, ignore_eos=True, temperature=1.0)
        llm = self.llm if caps is None else CappedLLM(self.llm, caps)
        outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], params, use_tqdm=False)
        return [len(output.outputs[0].token_ids) for output in outputs]


def run(args) -> dict:
    import torch

    from masa_trl.tiny_model import build_tiny_model

    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    with tempfile.TemporaryDirectory() as path:
        build_tiny_model(
            path, hidden_size=args.hidden_size, intermediate_size=2 * args.hidden_size, num_hidden_layers=args.num_layers
        )  # fmt: skip
        backend = VLLMBackend(path) if args.backend == "vllm" else TransformersBackend(path)
        plan = {
            (n, name): scenario
            for n in args.new_tokens
            for name, scenario in scenarios(args.prompt_tokens, args.hint_tokens, n, args.with_meta).items()
        }
        backend.generate(prompt_ids(generator, plan[(args.new_tokens[0], "masa")])[:8], None, 4)  # warm-up
        seconds = {key: [] for key in plan}
        for repeat in range(args.repeats):
            for key, scenario in plan.items():
                prompts = prompt_ids(generator, scenario)  # fresh prompts: no prefix cached from a previous call
                start = time.perf_counter()
                lengths = backend.generate(prompts, row_caps(scenario), scenario["new"])
                seconds[key].append(time.perf_counter() - start)
                if sum(lengths) != generated_tokens(scenario):
                    raise RuntimeError(
                        f"{key}: generated {sum(lengths)} tokens, expected {generated_tokens(scenario)}"
                    )
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    rows = []
    for (n, name), scenario in plan.items():
        rows.append(
            dict(
                new_tokens=n, scenario=name, rows=scenario["rows"] + scenario.get("meta_rows", 0),
                prompt_tokens=scenario["prompt"] if scenario["rows"] else META_PROMPT,
                generated_tokens=generated_tokens(scenario), median_s=statistics.median(seconds[(n, name)]),
                min_s=min(seconds[(n, name)]), max_s=max(seconds[(n, name)]), seconds=seconds[(n, name)],
            )
        )  # fmt: skip
    return dict(
        backend=args.backend, hidden_size=args.hidden_size, num_layers=args.num_layers, repeats=args.repeats,
        prompt_tokens=args.prompt_tokens, hint_tokens=args.hint_tokens, load_end=os.getloadavg(), results=rows,
    )  # fmt: skip


def table(result: dict) -> str:
    lines = [
        (
            f"{result['backend']}, hidden {result['hidden_size']}, {result['num_layers']} layers, median of "
            f"{result['repeats']} (range), load at end {result['load_end'][0]:.1f}"
        ),
        "",
        "| new tokens | scenario | rows | prompt tokens | generated tokens | seconds | vs masa | time saved | tokens saved |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    base = {r["new_tokens"]: r for r in result["results"] if r["scenario"] == "masa"}
    prefill = {r["new_tokens"]: r for r in result["results"] if r["scenario"] == "prefill, masa"}
    for r in result["results"]:
        ref = prefill[r["new_tokens"]] if r["scenario"].startswith("prefill") else base[r["new_tokens"]]
        ratio = r["median_s"] / ref["median_s"]
        tokens_saved = 1 - r["generated_tokens"] / ref["generated_tokens"]
        lines.append(
            f"| {r['new_tokens']} | {r['scenario']} | {r['rows']} | {r['prompt_tokens']} | {r['generated_tokens']} | "
            f"{r['median_s']:.2f} ({r['min_s']:.2f}-{r['max_s']:.2f}) | {ratio:.2f} | {1 - ratio:.1%} | "
            f"{tokens_saved:.1%} |"
        )
    lines.append("")
    for n, ref in base.items():
        pick = {r["scenario"]: r for r in result["results"] if r["new_tokens"] == n}
        eff = pick["efficient"]
        saved, tokens = 1 - eff["median_s"] / ref["median_s"], 1 - eff["generated_tokens"] / ref["generated_tokens"]
        share = prefill[n]["median_s"] / ref["median_s"]
        verdict = "met" if saved >= GOAL_FACTOR * tokens else "not met"
        step = step_cost(ref, pick["gated rows only"], prefill[n])
        if "masa, one call" in pick:
            one, meta = pick["masa, one call"]["median_s"], pick["meta only"]["median_s"]
            rows, meta_rows = ref["rows"], pick["meta only"]["rows"]
            modelled = one_call_ratio(step["a"] / step["b"], rows, meta_rows)
            lines.append(
                f"- N = {n}: MASA's solution and meta rows in one call take {one / ref['median_s']:.2f}x the solution "
                f"rows alone (GRPO's call; goal <= {ONE_CALL_GOAL}x), and {one / (ref['median_s'] + meta):.2f}x the "
                f"two calls made one after the other. The step-cost model gives {modelled:.2f}x; it reaches the goal "
                f"only where a step's fixed part is worth {fixed_rows_for_goal(rows, meta_rows):.0f} rows or more "
                f"(here {step['a'] / step['b']:.0f})."
            )
        lines.append(
            f"- N = {n}: MASA-efficient saves {saved:.1%} of the solution-generation time for {tokens:.1%} fewer "
            f"tokens (goal {GOAL_FACTOR * tokens:.1%}: {verdict}); prefill is {share:.0%} of MASA's call. A decoding "
            f"step costs {1e3 * step['a']:.1f} ms + {1e3 * step['b']:.2f} ms per row (the fixed part is worth "
            f"{step['a'] / step['b']:.0f} rows), so even if every capped row left the batch at its cap and no hint "
            f"lengthened the prompts, the saving would be {step['bound']:.1%}."
        )
    return "\n".join(lines)


def one_call_ratio(fixed_rows: float, rows: int, meta_rows: int, meta_ratio: float = META_RATIO) -> float:
    """Time of one call holding the solution and meta rows over the solution rows alone, if a decoding step costs
    `a + b * rows` with `a = fixed_rows * b` and the meta rows decode `meta_ratio` as many steps (prefill and the meta
    rows' longer context left out: a model, not a measurement)."""
    return (fixed_rows + rows + meta_rows * meta_ratio) / (fixed_rows + rows)


def fixed_rows_for_goal(rows: int, meta_rows: int, goal: float = ONE_CALL_GOAL, meta_ratio: float = META_RATIO):
    """The fixed part of a decoding step, in rows, at which `one_call_ratio` falls to `goal`."""
    return meta_rows * meta_ratio / (goal - 1) - rows


def step_cost(masa: dict, gated: dict, prefill: dict) -> dict:
    """A decoding step's cost as `a + b * rows`, fitted to the two uncapped calls of equal prompts (64 and 48 rows,
    prefill taken as proportional to the rows), and the saving it predicts for MASA-efficient's rows if each capped row
    stopped costing at its cap (vLLM's behaviour) and the prompts kept their length: a bound from this machine's step
    costs, not a measurement."""
    n, rows, kept = masa["new_tokens"], masa["rows"], gated["rows"]
    fill = prefill["median_s"] / prefill["rows"]  # prefill seconds per row
    decode_all, decode_kept = masa["median_s"] - fill * rows, gated["median_s"] - fill * kept
    b = (decode_all - decode_kept) / ((rows - kept) * n)
    a = decode_all / n - b * rows
    cut = CUT * GROUP
    ideal = fill * kept + (n // 2) * (a + b * kept) + (n - n // 2) * (a + b * (kept - cut))
    return dict(a=a, b=b, bound=1 - ideal / masa["median_s"])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, nargs="+", default=[96, 384])
    parser.add_argument("--prompt-tokens", type=int, default=57)
    parser.add_argument("--hint-tokens", type=int, default=29)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--with-meta",
        action="store_true",
        help="vLLM only: also MASA's meta rows alone and in one call with the solutions (issue #14's goal 1)",
    )
    parser.add_argument("--out-dir", type=Path, default=REPO / "outputs" / "bench_generate_rows")
    parser.add_argument("--from-json", type=Path, help="print the report of a saved result instead of measuring")
    args = parser.parse_args(argv)
    if args.from_json:
        result = json.loads(args.from_json.read_text())
        print(table(result))
        return result
    if args.with_meta and args.backend != "vllm":
        parser.error(
            "--with-meta needs --backend vllm (benchmarks/bench_transformers_generation.py times transformers)"
        )
    if args.backend == "vllm":
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    result = run(args)
    text = table(result)
    print(text)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{args.backend}-h{args.hidden_size}-l{args.num_layers}-{'-'.join(map(str, args.new_tokens))}"
    (args.out_dir / f"{name}.json").write_text(json.dumps(result, indent=1))
    (args.out_dir / f"{name}.md").write_text(text + "\n")
    return result


if __name__ == "__main__":
    main()
