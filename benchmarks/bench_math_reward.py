"""Throughput and robustness of `masa_trl.math_reward` (not a test).

    python benchmarks/bench_math_reward.py [--n 2048] [--group 16] [--workers 2] [--timeout 5]

Scores `n` synthetic completions of about 2,000 characters, half of them correct, laid out as a GRPO batch: groups of
`group` completions share a prompt and its gold answer. The answer types follow roughly the mix of MATH-500
(integers 50%, fractions 15%, surds 10%, decimals, multiples of pi, polynomials, tuples, intervals, percentages,
text answers and equations 5% or less each), and a correct answer is often written in another form than the gold
one (`0.5` for `\\frac{1}{2}`, `\\sqrt{8}` for `2\\sqrt{2}`). Prints the time with a cold pool (worker start-up
included), with a warm pool and an empty cache, with a warm cache, the same without the fast path, a worst case where
no two completions share a gold answer, and a batch that hides pathological answers (power towers, 100k characters
of garbage) among ordinary ones. `--per-kind` adds math-verify's cost per answer type, measured in this process.
Warm-pool lines also give the CPU seconds of the parent and the workers: on a shared machine the wall time overstates
what 2 free cores would take, which is about half the CPU time.

Target (issue): under 2 s for 2,048 completions with a warm pool on 2 cores.
"""

import argparse
import os
import random
import string
import time
from collections import defaultdict

from masa_trl.math_reward import MathVerifier, _enable_two_stage_parsing, _MathVerifyRunner, extract_boxed_answer


FILLER = (
    "Let us think step by step. We first write the equation in standard form, then factor the polynomial and "
    "check each root against the constraints of the problem. Substituting back, both sides agree, so the value "
    "is consistent. "
)
KINDS = {
    "integer": 50,
    "fraction": 15,
    "surd": 10,
    "decimal": 4,
    "pi": 5,
    "polynomial": 5,
    "tuple": 4,
    "interval": 3,
    "percent": 4,
    "text": 3,
    "equation": 2,
}


def _answers(kind: str, k: int, rng: random.Random) -> tuple[str, list[str]]:
    """(gold, forms of the same value) for a problem of this kind; `k` makes the value unique."""
    a, b = rng.randint(1, 99), rng.choice([3, 7, 9, 11, 13, 17])
    if kind == "integer":
        return str(k), [str(k), f"{k}.0" if k % 3 else str(k)]
    if kind == "fraction":
        return f"\\frac{{{k}}}{{{b}}}", [f"\\frac{{{k}}}{{{b}}}", f"{k}/{b}", f"\\dfrac{{{2 * k}}}{{{2 * b}}}"]
    if kind == "surd":
        return f"{k}\\sqrt{{2}}", [f"{k}\\sqrt{{2}}", f"\\sqrt{{{2 * k * k}}}", f"{k} \\sqrt 2"]
    if kind == "decimal":
        return f"\\frac{{{k}}}{{4}}", [f"{k / 4}", f"\\frac{{{k}}}{{4}}"]
    if kind == "pi":
        return f"\\frac{{{k}\\pi}}{{{b}}}", [f"\\frac{{{k}\\pi}}{{{b}}}", f"\\frac{{{k}}}{{{b}}}\\pi"]
    if kind == "polynomial":
        return f"x^2+{k}x+{a}", [f"x^2+{k}x+{a}", f"{a}+{k}x+x^2"]
    if kind == "tuple":
        return f"({k}, {a})", [f"({k}, {a})", f"({k},{a})"]
    if kind == "interval":
        return f"[{k}, {k + a})", [f"[{k}, {k + a})", f"[{k},{k + a})"]
    if kind == "text":  # a name unique to k; no e or i, which latex2sympy reads as constants
        word = "".join("abcdfghjkl"[int(digit)] for digit in str(k))
        name = word.capitalize()
        return f"\\text{{{name}}}", [f"\\text{{{name}}}", name, f"\\text{{{word}}}"]
    if kind == "equation":
        return f"y=2x+{k}", [f"y=2x+{k}", f"y = {k}+2x", f"2x+{k}"]
    return f"{k}\\%", [f"{k}\\%", f"{k / 100}"]


def _completion(answer: str, rng: random.Random) -> str:
    words = []
    while sum(len(word) for word in words) < 1900:
        words.append(FILLER if rng.random() < 0.7 else f"$x_{rng.randint(0, 9)} = {rng.randint(0, 99)}$ ")
    return "".join(words) + f"Therefore the answer is $\\boxed{{{answer}}}$."


def make_batch(n: int, group: int = 16, seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(kinds, golds, completions); even positions are correct, odd ones wrong."""
    rng = random.Random(seed)
    kinds, golds, completions = [], [], []
    for start in range(0, n, group):
        kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
        k = 100 * (seed + 1) + start + rng.randint(1, 99)
        gold, forms = _answers(kind, k, rng)
        for offset in range(min(group, n - start)):
            if (start + offset) % 2 == 0:
                answer = rng.choice(forms)
            else:  # a wrong answer of the same kind
                answer = rng.choice(_answers(kind, k + offset * 1000 + rng.randint(1, 999), rng)[1])
            kinds.append(kind)
            golds.append(gold)
            completions.append(_completion(answer, rng))
    return kinds, golds, completions


def pathological_batch(n: int, group: int, seed: int) -> tuple[list[str], list[str]]:
    _, golds, completions = make_batch(n, group, seed=seed)
    rng = random.Random(seed)
    garbage = "".join(rng.choice(string.ascii_letters + string.digits + "+-*/^{}()\\ ") for _ in range(100_000))
    bad = ["5^{5^{5^{5^5}}}", "9^{9^{9^9}}", "\\dfrac{5^{5^{5^{5^{5^5}}}}-5}{16}", "(10^{10^{8}})!", garbage]
    for position, answer in zip(range(1, n, max(1, n // len(bad))), bad, strict=False):
        completions[position] = f"Hence $\\boxed{{{answer}}}$"
    return golds, completions


def _cpu_seconds(verifier: MathVerifier) -> float:
    """CPU time of this process and of the verifier's current workers (Linux)."""
    total = time.process_time()
    for worker in verifier._workers:
        with open(f"/proc/{worker.process.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def timed(verifier: MathVerifier, golds: list[str], completions: list[str]) -> tuple[float, str, list]:
    """(wall-clock seconds to extract and score, CPU seconds of the parent and the workers, scores).

    The CPU time is only known for a warm pool whose workers all survive; on a shared machine the wall time
    overstates what 2 free cores would take, and the CPU time / 2 estimates it.
    """
    workers = list(verifier._workers)
    cpu = _cpu_seconds(verifier) if workers else 0.0
    start = time.perf_counter()
    predictions = [extract_boxed_answer(completion) for completion in completions]
    scores = verifier.verify_batch(golds, predictions)
    seconds = time.perf_counter() - start
    if workers and verifier._workers == workers:
        return seconds, f"{_cpu_seconds(verifier) - cpu:.2f} CPU s", scores
    return seconds, "", scores


def check(scores: list) -> str:
    wrong = sum(score != (i % 2 == 0) for i, score in enumerate(scores))
    return f"accuracy {sum(scores) / len(scores):.3f}" + (f", {wrong} unexpected verdicts" if wrong else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--group", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--start-method", default=None)
    parser.add_argument("--per-kind", action="store_true")
    args = parser.parse_args()
    options = dict(num_workers=args.workers, timeout=args.timeout, start_method=args.start_method)

    _, golds, completions = make_batch(args.n, args.group)
    chars = sum(map(len, completions)) / len(completions)
    print(f"{args.n} completions of {chars:.0f} characters on average in groups of {args.group}, half correct; ")
    print(f"{args.workers} workers, timeout {args.timeout} s")
    start = time.perf_counter()
    for completion in completions:
        extract_boxed_answer(completion)
    print(f"answer extraction only:               {time.perf_counter() - start:6.3f} s")

    with MathVerifier(**options) as verifier:
        seconds, cpu, scores = timed(verifier, golds, completions)
        print(f"cold pool (start-up included):        {seconds:6.3f} s   {check(scores)}   {cpu}")

        _, golds, completions = make_batch(args.n, args.group, seed=1)
        verifier.clear_cache()
        before = verifier.stats()
        seconds, cpu, scores = timed(verifier, golds, completions)
        after = verifier.stats()
        fast, sent = after["fast_path"] - before["fast_path"], after["verified"] - before["verified"]
        print(f"warm pool, empty cache:               {seconds:6.3f} s   {check(scores)}   {cpu}")
        print(f"  fast path {fast}, duplicates within the batch {args.n - fast - sent}, math-verify {sent}")
        seconds, cpu, _ = timed(verifier, golds, completions)
        print(f"warm pool, all cache hits:            {seconds:6.3f} s")

        _, golds, completions = make_batch(args.n, group=1, seed=2)
        verifier.clear_cache()
        seconds, cpu, scores = timed(verifier, golds, completions)
        print(f"warm pool, empty cache, groups of 1:  {seconds:6.3f} s   {check(scores)}   {cpu}")

        golds, completions = pathological_batch(args.n, args.group, seed=3)
        before = verifier.stats()
        seconds, cpu, scores = timed(verifier, golds, completions)
        after = verifier.stats()
        events = {key: after[key] - before[key] for key in ("timeouts", "hard_timeouts", "worker_restarts")}
        print(f"pathological batch (5 bad answers):   {seconds:6.3f} s   {events}")

    with MathVerifier(fast_path=False, **options) as slow:
        slow.start()
        _, golds, completions = make_batch(args.n, args.group, seed=1)
        seconds, cpu, scores = timed(slow, golds, completions)
        print(f"warm pool, empty cache, no fast path: {seconds:6.3f} s   {check(scores)}   {cpu}")

    if args.per_kind:
        runner = _MathVerifyRunner(signal_timeout=5)
        _enable_two_stage_parsing()  # as in the workers
        kinds, golds, completions = make_batch(2000, group=1, seed=4)
        spent, count = defaultdict(float), defaultdict(int)
        for kind, gold, completion in zip(kinds, golds, completions, strict=True):
            start = time.process_time()
            runner(gold, extract_boxed_answer(completion))
            spent[kind] += time.process_time() - start
            count[kind] += 1
        print(
            "math-verify, CPU ms per pair in one process: "
            + ", ".join(f"{k} {1000 * spent[k] / count[k]:.1f}" for k in KINDS)
        )


if __name__ == "__main__":
    main()
