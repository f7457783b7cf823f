"""Throughput of evaluation.sandbox on MBPP-like programs (a function and 3 asserts, some sleeping briefly).

    .venv/bin/python benchmarks/bench_sandbox.py [--n 500] [--workers N] [--timeout 10]

Prints the batch wall time against the ideal (sum of the programs' intended run times / workers), the per-program
process overhead (a trivial program run sequentially, against a bare `python -I -c pass` subprocess), and the counts.
"""

import argparse
import os
import random
import statistics
import subprocess
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from evaluation.sandbox import _choose_interpreter, run_program, run_programs


TEMPLATE = """\
import time

def solve_{i}(xs):
    time.sleep({sleep})
    return sorted(set(x * {k} for x in xs))

assert solve_{i}([3, 1, 2]) == [{k}, {k2}, {k3}]
assert solve_{i}([]) == []
assert solve_{i}([1, 1]) == [{expected_dup}]
"""


def make_programs(n: int, seed: int = 0) -> tuple[list[str], list[float], list[str]]:
    rng = random.Random(seed)
    sources, sleeps, expected = [], [], []
    for i in range(n):
        k = rng.randint(1, 9)
        sleep = rng.choice([0.0, 0.0, 0.0, 0.02, 0.05, 0.1])  # ~half the programs do some "work"
        wrong = rng.random() < 0.2  # a fifth fail their last assert
        sources.append(TEMPLATE.format(i=i, sleep=sleep, k=k, k2=2 * k, k3=3 * k, expected_dup=k + 1 if wrong else k))
        sleeps.append(sleep * 3)  # the function is called by 3 asserts
        expected.append("fail" if wrong else "pass")
    return sources, sleeps, expected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()

    sources, sleeps, expected = make_programs(args.n)
    batch = run_programs(sources, max_workers=args.workers, timeout_s=args.timeout)
    wrong = sum(r.status != e for r, e in zip(batch.results, expected, strict=True))
    ideal = sum(sleeps) / args.workers
    cores = os.cpu_count() or 1
    busy = sum(r.wall_time_s for r in batch.results) / args.workers
    first = batch.results[0]
    print(f"{args.n} programs, {args.workers} workers (cpu_count={os.cpu_count()}), timeout {args.timeout:g} s")
    print(f"network namespace: {first.network_isolated}, fresh uid: {first.privileges_dropped}, euid={os.geteuid()}")
    print(f"counts: {batch.counts}; status different from expected: {wrong}")
    print(f"batch wall time: {batch.wall_time_s:.2f} s ({args.n / batch.wall_time_s:.1f} programs/s)")
    print(
        f"ideal (sum of intended run times / workers): {ideal:.2f} s; / cores ({cores}): {sum(sleeps) / cores:.2f} s"
    )
    print(f"sum of per-program wall times / workers: {busy:.2f} s")
    print(f"overhead per program in the batch: {(batch.wall_time_s - ideal) / args.n * args.workers * 1000:.1f} ms")

    interpreter, _ = _choose_interpreter(None, None)
    reps = 30
    sandboxed = []
    for _ in range(reps):
        t = time.monotonic()
        run_program("pass\n", timeout_s=args.timeout)  # timed from outside: includes tempdir, cleanup, uid sweep
        sandboxed.append(time.monotonic() - t)
    bare = []
    for _ in range(reps):
        t = time.monotonic()
        subprocess.run([interpreter, "-I", "-B", "-c", "pass"], check=True)
        bare.append(time.monotonic() - t)
    print(
        f"trivial program, sequential: sandbox median {statistics.median(sandboxed) * 1000:.1f} ms, "
        f"bare `{interpreter} -I -c pass` median {statistics.median(bare) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
