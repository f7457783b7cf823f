"""The laptop-scale study of GRPO, MASA and MASA-efficient: seeds, ablations, and cost in tokens, FLOPs and time.

    python benchmarks/run_study.py            # the whole study (about 2.4 hours on 2 cores), resumable
    python benchmarks/run_study.py --quick    # main arms GRPO, MASA, MASA-efficient, one seed (about 25 minutes)
    python benchmarks/run_study.py --report-only   # rebuild the report from the cached runs

Each run (arm x seed) is cached as JSON under `--cache-dir` by a hash of the study's settings, so a killed study
resumes where it stopped and the report can be rebuilt from whatever has finished. The warm start and the held-out
evaluation before RL are cached too: every arm starts from them. Runs go in order of importance (main arms seed by
seed, then ablations, then the extra seeds), so a study stopped early still has balanced main arms.

Writes `results.json` and `REPORT.md` (with `figures/`) into `--out` (default `benchmarks/results/study`, or
`.../study_quick` with `--quick`). The task, the arms and the metrics are described in `benchmarks/study/`.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from study.arms import ABLATIONS, ARMS, EXTRA_SEED_ARMS, MAIN_ARMS, QUICK_ARMS  # noqa: E402
from study.runner import StudySettings, prepare, save_json  # noqa: E402
from study.task import ChainTask  # noqa: E402

from masa_trl.demo.task import settings_digest  # noqa: E402


def smoke_settings() -> StudySettings:
    """A pipeline check in about a minute (tests): tiny everything, numbers meaningless."""
    return StudySettings(
        task=ChainTask(max_terms=3, unsolvable_terms=(2,)),
        warm_start_steps=10,
        max_steps=2,
        eval_every=1,
        prompts_per_step=2,
        num_generations=2,
        num_meta_generations=2,
        max_completion_length=24,
        efficient_start_step=1,
        expert_buffer_size=2,
        heldout_per_cell=1,
        eval_solution_samples=2,
        eval_meta_samples=2,
        num_train_problems=64,
    )


# Main arms by their measured run time, longest first (MASA + DAPO about 9.5 minutes, GRPO 3.5, with 2 workers). Runs
# start in plan order, so a short run goes last, when the other worker may already be idle: with 2 workers the quick
# study's three runs take as long as MASA + GRPO instead of GRPO + MASA-efficient (about 80 s less).
LONGEST_FIRST = ("masa_dapo", "masa_efficient", "masa_bc", "masa", "dapo", "grpo")


def plan_runs(arms: list[str], seeds: int, extra_seeds: int) -> list[tuple[str, int]]:
    """Runs in order of importance: main arms seed by seed, then the ablations, then the extra seeds."""
    # The quick arms first: the start of a full study is then exactly a quick study, and its runs are shared.
    main = sorted(
        (a for a in arms if ARMS[a].group == "main"), key=lambda a: (a not in QUICK_ARMS, LONGEST_FIRST.index(a))
    )
    ablations = [a for a in arms if ARMS[a].group == "ablation"]
    order = [(arm, seed) for seed in range(seeds) for arm in main]
    order += [(arm, seed) for seed in range(seeds) for arm in ablations]
    order += [(arm, seed) for seed in range(seeds, seeds + extra_seeds) for arm in main if arm in EXTRA_SEED_ARMS]
    return order


def _iso(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat(timespec="seconds")


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _machine() -> dict:
    return {"cpus": os.cpu_count(), "load": list(os.getloadavg())}


def _commit(out: Path) -> tuple[str, bool]:
    """The commit and whether tracked files differ from it, the report's own files (under `out`) aside."""

    def git(*args):
        return subprocess.run(["git", *args], check=False, cwd=ROOT, capture_output=True, text=True).stdout.strip()

    status = ["status", "--porcelain", "--untracked-files=no"]
    if out.resolve().is_relative_to(ROOT):  # a rebuilt report is not a change of the code that made it
        status += ["--", ".", f":(exclude){out.resolve().relative_to(ROOT)}"]
    return git("rev-parse", "--short", "HEAD") or "unknown", bool(git(*status))


def _arm_entry(arm: str) -> dict:
    spec = ARMS[arm]
    return {"label": spec.label, "group": spec.group, "parent": spec.parent, "description": spec.description}


def _end_with_study(study_pid: int) -> None:
    """Pool initializer: the worker gets SIGTERM when the study's process dies (Linux `PR_SET_PDEATHSIG`).

    Without it `kill <study>` leaves its runs going: they keep the cores busy and write the cache with the code they
    started with. A run stopped this way is simply not cached, and the next study reruns it.
    """
    import signal

    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != study_pid:  # the study died before the call above took effect
        os._exit(1)


def _worker(job):
    """One run in a fresh process (torch threads, RNG and memory do not leak between runs)."""
    arm, seed, settings, cache_dir, initial, threads, path = job
    from study.runner import run_arm

    try:
        prepared = prepare(settings, cache_dir, progress=False)
        record = run_arm(arm, seed, settings, prepared, initial=initial, threads=threads)
    except Exception:  # noqa: BLE001 -- one failed run is reported and left uncached; the others go on
        import traceback

        return {"arm": arm, "seed": seed, "error": traceback.format_exc()}
    record["settings_key"] = path.stem.rsplit("-", 1)[-1]
    record["load_end"] = list(os.getloadavg())
    save_json(path, record)
    return record


def task_properties(prepared, settings: StudySettings, cache_dir: Path, key: str) -> tuple[dict, dict]:
    """The warm start's held-out evaluation (every arm's step-0 point) and the task properties, cached."""
    path = cache_dir / f"initial-{key}.json"
    if path.exists():
        cached = json.loads(path.read_text())
        return cached["initial"], cached["properties"]
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(prepared.model_dir, dtype=torch.float32)
    evaluate = prepared.evaluator(seed=10_000)
    initial = evaluate(model)
    # Zero variance as the trainer sees it: G samples of training prompts (a slice of the stream, one per cell-draw).
    sample = prepared.train_problems[: len(prepared.heldout)]
    at_g = evaluate(model, problems=sample, num_solution_samples=settings.num_generations)
    properties = {
        "heldout_accuracy": initial["accuracy"],
        "heldout_pass_at_8": initial["pass_at_k"].get("8"),
        "zero_variance_share": at_g["zero_variance_share"],
        "zero_variance_trivial": at_g["zero_variance_trivial"],
        "zero_variance_unsolvable": at_g["zero_variance_unsolvable"],
        "zero_variance_sample": len(sample),
        "solution_length_mean": at_g["solution_length_mean"],
        "meta_length_mean": at_g["meta_length_mean"],
        "length_ratio": at_g["solution_length_mean"] / at_g["meta_length_mean"],
        "notion_score_share": initial["notion_score_share"],
        "meta_notion_reward_mean": initial["meta_notion_reward_mean"],
        "wrong_minus_correct_length_overall": initial["wrong_minus_correct_length_overall"],
        "wrong_minus_correct_length_within_problem": initial["wrong_minus_correct_length_within_problem"],
        "per_cell": initial["per_cell"],
        "warm_start": {k: v for k, v in prepared.warm_start_record.items() if k != "settings"},
    }
    save_json(path, {"initial": initial, "properties": properties})
    return initial, properties


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="main arms GRPO, MASA, MASA-efficient; one seed")
    parser.add_argument("--smoke", action="store_true", help="a one-minute pipeline check with tiny settings")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per arm (default 3; quick 1)")
    parser.add_argument("--extra-seeds", type=int, default=None, help="more seeds for GRPO, MASA, MASA-efficient")
    parser.add_argument("--arms", nargs="+", choices=sorted(ARMS), default=None, help="default: all (quick: 3)")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel, one torch thread each")
    parser.add_argument("--max-steps", type=int, default=None, help="override the RL steps per run")
    parser.add_argument("--cache-dir", default=str(ROOT / "outputs" / "study"))
    parser.add_argument("--out", default=None, help="report directory")
    parser.add_argument("--report-only", action="store_true", help="no new runs: report what the cache holds")
    args = parser.parse_args(argv)

    settings = smoke_settings() if args.smoke else StudySettings()
    if args.max_steps is not None:
        settings = replace(settings, max_steps=args.max_steps, eval_every=max(1, args.max_steps // 4))
    quick = args.quick or args.smoke
    arms = args.arms or list(QUICK_ARMS if quick else MAIN_ARMS + ABLATIONS)
    seeds = args.seeds if args.seeds is not None else (1 if quick else 3)
    extra = args.extra_seeds if args.extra_seeds is not None else (0 if quick else 2)
    name = "study_smoke" if args.smoke else "study_quick" if args.quick else "study"
    out = Path(args.out or ROOT / "benchmarks" / "results" / name)
    cache_dir = Path(args.cache_dir)
    key = settings_digest(settings.to_dict())
    started = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    machine_start = _machine()

    print(f"study {name}: settings {key}, {len(arms)} arms, {seeds} seeds (+{extra} extra), {args.workers} workers")
    prepared = prepare(settings, cache_dir)
    initial, properties = task_properties(prepared, settings, cache_dir, key)
    print(
        f"warm start: held-out pass@1 {_num(properties['heldout_accuracy'])}, pass@8 "
        f"{_num(properties['heldout_pass_at_8'])}; zero variance at G {_num(properties['zero_variance_share'])}; "
        f"solution/meta length {_num(properties['length_ratio'])}x"
    )

    runs_dir = cache_dir / "runs"
    plan = plan_runs(arms, seeds, extra)
    path_of = {(arm, seed): runs_dir / f"{arm}-s{seed}-{key}.json" for arm, seed in plan}
    todo = [run for run in plan if not path_of[run].exists()]
    print(f"{len(plan) - len(todo)} of {len(plan)} runs cached; {0 if args.report_only else len(todo)} to run")
    if todo and not args.report_only:
        _run_all(todo, settings, cache_dir, initial, path_of, args.workers)

    done = [run for run in plan if path_of[run].exists()]
    records = [json.loads(path_of[run].read_text()) for run in done]
    for record in records:  # the per-step trainer logs stay in the cache; the report does not use them
        record["train"].pop("logs", None)
    mtimes = [path_of[run].stat().st_mtime for run in done]
    commit, dirty = _commit(out)
    results = {
        "meta": {
            "commit": commit,
            "dirty": dirty,
            "machine": {
                "cpus": machine_start["cpus"],
                "load_start": machine_start["load"],
                "load_end": _machine()["load"],
            },
            "started": started,
            "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "quick": quick,
            "workers": args.workers,
            "settings_key": key,
            "settings": settings.to_dict(),
            "planned_runs": len(plan),
            "report_only": args.report_only,
            # When the runs finished (cache file times): a rebuilt report's own start and end say nothing about them.
            "runs_finished": [_iso(min(mtimes)), _iso(max(mtimes))] if mtimes else None,
        },
        "arms": {arm: _arm_entry(arm) for arm in arms},
        "task_properties": properties,
        "runs": records,
    }
    from study.report import make_report

    save_json(out / "results.json", results)
    report = make_report(results, out)
    print(f"{len(records)} runs reported: {report}")
    return results


def _run_all(todo, settings, cache_dir, initial, path_of, workers: int) -> None:
    import concurrent.futures
    import multiprocessing

    from tqdm.auto import tqdm

    threads = 1 if workers > 1 else max(1, os.cpu_count() or 1)
    jobs = [(arm, seed, settings, cache_dir, initial, threads, path_of[(arm, seed)]) for arm, seed in todo]
    start = time.perf_counter()
    bar = tqdm(total=len(jobs), desc="study runs", unit="run", dynamic_ncols=True)
    pool = None
    if workers == 1:
        results = map(_worker, jobs)
    else:
        # Not multiprocessing.Pool: its workers are daemons, and the answer reward starts its own verifier processes.
        pool = concurrent.futures.ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            max_tasks_per_child=1,
            initializer=_end_with_study,
            initargs=(os.getpid(),),
        )
        results = (
            future.result() for future in concurrent.futures.as_completed([pool.submit(_worker, j) for j in jobs])
        )
    failed = []
    for record in results:
        bar.update(1)
        if "error" in record:
            failed.append(record)
            tqdm.write(f"[{time.perf_counter() - start:6.0f} s] {record['arm']:>20} seed {record['seed']}: FAILED")
            continue
        final = record["points"][-1]
        tqdm.write(
            f"[{time.perf_counter() - start:6.0f} s] {record['arm']:>20} seed {record['seed']}: "
            f"acc {_num(record['points'][0]['accuracy'])} -> {_num(final['accuracy'])}, pearson "
            f"{_num(final.get('pearson'))}, "
            f"{record['train_seconds']:.0f} s train + {record['eval_seconds']:.0f} s eval, load {os.getloadavg()[0]:.1f}"
        )
    bar.close()
    for record in failed:
        print(
            f"run {record['arm']} seed {record['seed']} failed (not cached, rerun the study to retry):\n{record['error']}"
        )
    if pool is not None:
        pool.shutdown()


if __name__ == "__main__":
    main()
