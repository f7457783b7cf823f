"""Could any backend meet both of issue #14's generation goals? A decoding-step cost model, not a measurement.

    python benchmarks/step_cost_model.py                    # the shapes bench_step_cost.py measured at 384 tokens
    python benchmarks/step_cost_model.py --solution-length 96 --meta-length 36 --cut-length 24

The two goals pull a backend in opposite directions:

- goal 1, MASA's generation <= 1.15 x GRPO's, asks that the meta rows cost little when added to a call: a decoding
  step must cost about the same with more rows;
- goal 2, MASA-efficient's solution generation falling by >= 0.8 x the share of solution tokens it saves, asks that
  the rows it leaves out (gated prompts) and stops early (cut prompts) save their share: a step must cost in
  proportion to its rows.

This script replays one step's generation calls, row by row, on a backend whose decoding step costs
`a + b * active_rows` ("linear"; vLLM, where a finished or capped row leaves the batch) or `max(a, b * active_rows)`
("roofline": flat until the rows saturate the device, then proportional), with the fixed part `a` worth `r = a / b`
rows, and reports, as a function of `r`, each goal's ratio and the range of `r` where it holds. The calls are those of
`bench_step_cost.py` (its `Settings`: prompts, G, M, lengths, gated and cut prompts, `--length-tail`); every row of a
call is seated at once (MASA seats the colocated engine so; `rollout_generation.colocated_engine_seats`). Prefill,
the meta prompt's longer context and the hint's tokens are left out, and they all work against the goals.
"""

import argparse
import dataclasses
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step_cost import GOAL_GENERATION_RATIO, GOAL_SAVING_FACTOR, Settings


COSTS = ("linear", "roofline")
FIXED_ROWS = (0, 4, 8, 16, 32, 48, 64, 96, 128, 256, 512, 1024)
HIGHEST = 1e5  # the largest fixed part searched, in rows


def call_cost(lengths: list[int], fixed_rows: float, cost: str = "linear") -> float:
    """Cost of one call, in units of `b`: every row starts at once and leaves the batch after its length in steps."""
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    ends = sorted(lengths)
    total, step, active = 0.0, 0, len(ends)
    for end in ends:  # between two row ends the batch is constant
        if end > step:
            per_step = fixed_rows + active if cost == "linear" else max(fixed_rows, active)
            total += (end - step) * per_step
            step = end
        active -= 1
    return total


def step_calls(settings: Settings) -> dict[str, list[int]]:
    """Row lengths of each call the benchmark's methods make: GRPO's (= MASA's) solution call, MASA's meta rows, and
    MASA-efficient's solution call (gated prompts left out, cut prompts capped at twice their predicted length)."""
    group = settings.solution_lengths
    cap = 2 * settings.cut_length
    efficient = []
    for prompt in range(settings.prompts - settings.num_gated):
        capped = prompt < settings.num_cut
        efficient += [min(length, cap) for length in group] if capped else list(group)
    return {
        "solution": group * settings.prompts,
        "meta": [settings.meta_length] * (settings.meta_generations * settings.prompts),
        "efficient": efficient,
    }


def goals(settings: Settings, fixed_rows: float, cost: str = "linear") -> dict[str, float]:
    """Goal 1's ratio (MASA's one call over GRPO's) and goal 2's saving against what it needs, at one `r`."""
    calls = step_calls(settings)
    grpo = call_cost(calls["solution"], fixed_rows, cost)
    one_call = call_cost(calls["solution"] + calls["meta"], fixed_rows, cost)
    efficient = call_cost(calls["efficient"], fixed_rows, cost)
    tokens_saved = 1 - sum(calls["efficient"]) / sum(calls["solution"])
    return dict(
        one_call_ratio=one_call / grpo,
        saving=1 - efficient / grpo,
        saving_needed=GOAL_SAVING_FACTOR * tokens_saved,
        tokens_saved=tokens_saved,
    )


def threshold(settings: Settings, cost: str, goal: str, hi: float = HIGHEST) -> float | None:
    """Goal 1: the smallest `r` at which it holds; goal 2: the largest. None: it holds at no `r` in [0, hi]. Both
    ratios fall as `r` grows for both cost forms (a larger fixed part dilutes the rows' cost), so bisection finds the
    edge."""

    if goal not in ("goal 1", "goal 2"):
        raise ValueError(f"goal must be 'goal 1' or 'goal 2', got {goal!r}")

    def holds(r: float) -> bool:
        g = goals(settings, r, cost)
        return g["one_call_ratio"] <= GOAL_GENERATION_RATIO if goal == "goal 1" else g["saving"] >= g["saving_needed"]

    lo_r, hi_r = 0.0, hi
    if goal == "goal 1":
        if not holds(hi_r):
            return None
        if holds(lo_r):
            return lo_r
    else:
        if not holds(lo_r):
            return None
        if holds(hi_r):
            return hi_r
    for _ in range(60):
        mid = (lo_r + hi_r) / 2
        if holds(mid) == (goal == "goal 1"):
            hi_r = mid
        else:
            lo_r = mid
    return hi_r if goal == "goal 1" else lo_r


def report(settings: Settings) -> str:
    calls = step_calls(settings)
    lines = [
        (
            f"{settings.prompts} prompts x G={settings.generations} solutions (lengths {sorted(set(calls['solution']))}) "
            f"+ M={settings.meta_generations} meta rows of {settings.meta_length} tokens; MASA-efficient: "
            f"{settings.num_gated} prompts gated, {settings.num_cut} capped at {2 * settings.cut_length} tokens "
            f"({goals(settings, 0)['tokens_saved']:.1%} fewer solution tokens). A model, not a measurement: prefill, "
            "context length and the hint's tokens are left out."
        ),
        "",
        (
            "| cost | r = a / b (fixed part, in rows) | MASA one call / GRPO (goal 1: <= 1.15) | "
            "MASA-efficient time saved (goal 2: >= needed) |"
        ),
        "|---|---|---|---|",
    ]
    for cost in COSTS:
        for r in FIXED_ROWS:
            g = goals(settings, r, cost)
            lines.append(
                f"| {cost} | {r} | {g['one_call_ratio']:.3f} | {g['saving']:.1%} (needed {g['saving_needed']:.1%}) |"
            )
    lines.append("")
    for cost in COSTS:
        first, last = threshold(settings, cost, "goal 1", HIGHEST), threshold(settings, cost, "goal 2", HIGHEST)
        goal1 = "at no r" if first is None else "for every r" if first == 0 else f"for r >= {first:.1f}"
        goal2 = "at no r" if last is None else "for every r" if last == HIGHEST else f"for r <= {last:.1f}"
        if first is None or last is None or first > last:
            both = "**no r meets both**."
        else:
            both = f"both for r >= {first:.1f}." if last == HIGHEST else f"both for {first:.1f} <= r <= {last:.1f}."
        lines.append(f"- {cost}: goal 1 holds {goal1}; goal 2 holds {goal2}; {both}")
    return "\n".join(lines)


def main(argv=None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = Settings(solution_length=384, meta_length=144, cut_length=96)
    for name in ("solution_length", "meta_length", "cut_length", "prompts", "generations", "meta_generations"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=getattr(defaults, name))
    for name in ("gated_share", "cut_share"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=getattr(defaults, name))
    parser.add_argument("--length-tail", action="store_true", help="bench_step_cost.py's long-tailed lengths")
    args = parser.parse_args(argv)
    fields = {field.name for field in dataclasses.fields(Settings)}
    settings = dataclasses.replace(defaults, **{k: v for k, v in vars(args).items() if k in fields})
    text = report(settings)
    print(text)
    return text


if __name__ == "__main__":
    main()
