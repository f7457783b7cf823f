"""Throughput of the meta-prediction parser and the meta rewards on CPU.

Measures:
1. `parse_meta_prediction` on typical meta rollouts (reasoning plus a compact or pretty-printed JSON object);
2. `parse_meta_prediction` on 1 MB adversarial strings (the parser is linear; this shows the constant);
3. `meta_reward` for a training batch: P prompts x M meta rollouts scored against G solutions of W words each
   (defaults: the paper's 128 x 16 against 16 solutions of ~2000 words), including building the per-prompt
   `SolutionStats` and lemmatizing the solutions.

Nothing is asserted; numbers vary with the machine and its load.

    python benchmarks/bench_meta_rewards.py
    python benchmarks/bench_meta_rewards.py --prompts 16 --words 500   # quick run
"""

import argparse
import random
import statistics
import time

from masa_trl.meta import format_meta_prediction, parse_meta_prediction
from masa_trl.rewards import SolutionStats, _lemma, meta_reward


_VOCABULARY = (
    "the of a is and to we let so then thus hence since because therefore find compute show prove consider note "
    "number numbers integer integers prime primes divisor divisors remainder remainders modulo sum sums product "
    "equation equations root roots polynomial polynomials coefficient coefficients triangle triangles circle angle "
    "angles area perimeter probability expected value values case cases term terms sequence series limit function "
    "functions derivative integral matrix matrices vertex vertices edge edges graph set sets element elements "
    "inequality inequalities bound bounds maximum minimum parity symmetry induction contradiction formula formulas "
    "theorem theorems lemma identity identities substitution factorization quadratic linear modular arithmetic "
    "geometric arithmetic progression binomial combinatorics permutation combination Vieta's Fibonacci Euler Fermat"
)
WORDS = _VOCABULARY.split()
NOTIONS = [
    "modular arithmetic",
    "Vieta's formulas",
    "quadratic formula",
    "binomial coefficients",
    "prime factorization",
    "Fermat's little theorem",
    "mathematical induction",
    "geometric progression",
    "inclusion-exclusion principle",
    "AM-GM inequality",
    "Euler's theorem",
    "symmetry",
    "parity",
]
LATEX = ["$x^2$", "\\frac{a}{b}", "$\\sqrt{2}$", "\\boxed{42}", "$n \\equiv 1 \\pmod{4}$", "{1, 2, 3}"]


def _solution(rng: random.Random, words: int) -> str:
    tokens = rng.choices(WORDS, k=words)
    for i in range(0, words, 25):
        tokens[i] = rng.choice(LATEX) if i % 50 else str(rng.randrange(10_000))
    return " ".join(tokens)


def _meta_text(rng: random.Random, indent: int | None, reasoning_words: int = 300) -> str:
    reasoning = _solution(rng, reasoning_words)
    notions = rng.sample(NOTIONS, rng.randint(1, 6))
    return format_meta_prediction(notions, rng.randint(0, 8), rng.randint(128, 8192), reasoning, indent=indent)


def _timeit(fn, repeat: int) -> float:
    """Best-of-3 seconds per call of `fn`, each round calling it `repeat` times."""
    rounds = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        rounds.append((time.perf_counter() - start) / repeat)
    return min(rounds)


def bench_parser(rng: random.Random) -> None:
    print("== parse_meta_prediction on typical meta rollouts ==")
    for name, indent in (("compact", None), ("pretty", 2)):
        texts = [_meta_text(rng, indent) for _ in range(200)]
        chars = statistics.mean(map(len, texts))
        seconds = _timeit(lambda texts=texts: [parse_meta_prediction(text) for text in texts], 5) / len(texts)
        print(f"{name:>8}: {1 / seconds:10,.0f} parses/s   ({seconds * 1e6:6.1f} us each, ~{chars:,.0f} chars)")
    junk = _solution(rng, 400)
    seconds = _timeit(lambda: parse_meta_prediction(junk), 200)
    print(f"{'no JSON':>8}: {1 / seconds:10,.0f} parses/s")


def bench_adversarial() -> None:
    print("== parse_meta_prediction on 1 MB adversarial strings (linear scan) ==")
    keys = '"math_notion": ["a"], "pass_rate": 1, "solution_length": 2'
    mb = 1_000_000
    # The key names are appended to every case but the first: without them the parser returns before scanning.
    cases = {
        "{ x 1M, no keys": "{" * mb,
        "{ x 1M": "{" * mb + keys,
        '{" x 500k': '{"' * (mb // 2) + keys,
        "nested quotes": ('{"a":"\\"{' * mb)[:mb] + keys,
        "mixed junk": ('{ x " } { \\ " {{ ' * mb)[:mb] + keys,
        "keys in junk": ("{" * 1000 + keys) * (mb // 1060),
        '{": x 333k': '{":' * (mb // 3) + keys,
        '{"a": x 200k (deep)': '{"a":' * (mb // 5) + keys,
        '{"a":[ x 166k (deep)': '{"a":[' * (mb // 6) + keys,
        '{"":0} x 166k': '{"":0}' * (mb // 6) + keys,
        '{"\\" x 250k': '{"\\"' * (mb // 4) + keys,
        "\\ x 1M": "\\" * mb + keys,
        '{": x 333k + object': '{":' * (mb // 3) + "{" + keys + "}",
    }
    for name, text in cases.items():
        seconds = _timeit(lambda text=text: parse_meta_prediction(text), 1)
        result = "None" if parse_meta_prediction(text) is None else "found"
        print(f"{name:>22}: {seconds * 1e3:7.1f} ms   ({len(text) / 1e6:.2f} MB, result {result})")


def bench_batch(rng: random.Random, prompts: int, meta: int, solutions: int, words: int) -> None:
    print(f"== meta_reward: {prompts} prompts x {meta} meta rollouts vs {solutions} solutions of {words} words ==")
    for label in ("cold lemma cache", "warm lemma cache"):
        if label.startswith("cold"):
            _lemma.cache_clear()
        batch = []
        for _ in range(prompts):
            texts = [_solution(rng, words) for _ in range(solutions)]
            correct = [rng.random() < 0.5 for _ in range(solutions)]
            lengths = [rng.randint(500, 8192) for _ in range(solutions)]
            problem = _solution(rng, 60)
            metas = [_meta_text(rng, rng.choice([None, 2])) for _ in range(meta)]
            batch.append((texts, correct, lengths, problem, metas))

        start = time.perf_counter()
        predictions = [[parse_meta_prediction(text, max_length=8192) for text in item[4]] for item in batch]
        parsed = time.perf_counter()
        stats = [SolutionStats(correct, lengths, texts, problem) for texts, correct, lengths, problem, _ in batch]
        for item_stats in stats:
            item_stats.notion_matcher  # noqa: B018 - build (lemmatize the solutions) now, to time it separately
        built = time.perf_counter()
        totals = [
            meta_reward(pred, item_stats).total
            for preds, item_stats in zip(predictions, stats, strict=True)
            for pred in preds
        ]
        scored = time.perf_counter()
        print(
            f"{label}: total {scored - start:6.2f} s  = parse {parsed - start:5.2f} s + lemmatize solutions "
            f"{built - parsed:5.2f} s + score {scored - built:5.2f} s   ({len(totals)} rewards, "
            f"mean {statistics.mean(totals):.3f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--meta", type=int, default=16, help="meta rollouts per prompt (M)")
    parser.add_argument("--solutions", type=int, default=16, help="solution rollouts per prompt (G)")
    parser.add_argument("--words", type=int, default=2000, help="words per solution rollout")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    bench_parser(rng)
    bench_adversarial()
    bench_batch(rng, args.prompts, args.meta, args.solutions, args.words)


if __name__ == "__main__":
    main()
