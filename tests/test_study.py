"""The study's task generator, its held-out measurement of gating and cutoff, and an end-to-end smoke run."""

import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

from study.arms import ARMS, MAIN_ARMS, QUICK_ARMS  # noqa: E402
from study.task import NOTIONS, Cell, ChainTask  # noqa: E402


# ------------------------------------------------------------------------------------------------------------ task
def test_worked_solution_without_mistakes_boxes_the_sum():
    task = ChainTask()
    rng = random.Random(0)
    for cell in task.cells:
        if cell.digits == 3:
            continue
        for _ in range(50):
            problem = task.sample_problem(rng, cell)
            solution = task.solution(problem)
            assert solution.endswith(f"\\boxed{{{sum(task.terms(problem))}}}"), (problem, solution)
            assert solution.count("step ") == cell.terms - 1
            assert task.cell_of(problem) == cell


def test_cost_meter_tells_meta_prompts_from_solution_prompts():
    # The study counts meta and solution tokens apart by the meta template's fixed text in a row's prompt.
    from study.runner import CostMeter
    from study.task import META_TEMPLATE, SOLUTION_TEMPLATE

    marker = CostMeter.study_meta_marker
    assert marker and marker in META_TEMPLATE.format(problem="4+9+3")
    assert marker not in SOLUTION_TEMPLATE.format(problem="4+9+3")


def test_step_errors_happen_at_the_configured_rate_and_make_the_answer_wrong():
    task = ChainTask(step_error=0.2)
    rng = random.Random(1)
    wrong = 0
    for _ in range(3000):
        problem = task.sample_problem(rng, Cell(2, 1))  # one step: every mistake reaches the answer
        wrong += not task.solution(problem, rng).endswith(f"\\boxed{{{task.answer(problem)}}}")
    assert 0.17 < wrong / 3000 < 0.23


def test_mistakes_compound_with_chain_length():
    task = ChainTask(step_error=0.2)
    rng = random.Random(2)

    def correct_share(terms: int) -> float:
        hits = 0
        for _ in range(2000):
            problem = task.sample_problem(rng, Cell(terms, 1))
            hits += task.solution(problem, rng).endswith(f"\\boxed{{{task.answer(problem)}}}")
        return hits / 2000

    shares = [correct_share(n) for n in (2, 5, 9)]
    assert shares[0] > shares[1] > shares[2]
    assert abs(shares[2] - 0.8**8) < 0.03  # mistakes go upwards: they do not cancel


def test_carry_and_hold_words_depend_on_the_digits():
    task = ChainTask()
    assert task.solution("4+9+3+7") == (
        "step 1: 4+9=13, carry, tens 1; step 2: 3+3=6, hold, tens 1; step 3: 6+7=13, carry, tens 2; \\boxed{23}"
    )
    assert task.carry_words("1+2") == {"hold", "tens"}
    assert task.carry_words("9+9") == {"carry", "tens"}
    assert task.carry_words("37") == set()
    assert not any(word in "Solve: 4+9+3+7" for word in NOTIONS)


def test_heldout_is_disjoint_from_the_stream_and_the_warm_start_never_sees_the_unsolvable_cells():
    task = ChainTask()
    heldout = task.heldout(per_cell=16, seed=3)
    assert len(heldout) == len(set(heldout)) == 16 * len(task.cells)
    stream = task.stream(2000, seed=0, exclude=heldout)
    assert not set(stream) & set(heldout)
    assert {task.cell_of(p) for p in stream} == set(task.cells)
    rng = random.Random(4)
    warm = [task.solution_example(rng)[0].split("\n")[0] for _ in range(2000)]
    assert all(task.cell_of(p).digits != 3 for p in warm)
    hinted = [p for p, _ in (task.solution_example(rng) for _ in range(2000)) if "Hint:" in p]
    assert 0.15 < len(hinted) / 2000 < 0.25


def test_meta_targets_parse_strictly_and_carry_no_difficulty_information():
    from masa_trl.meta import parse_meta_prediction

    task = ChainTask()
    rng = random.Random(5)
    by_cell: dict[str, list[float]] = {}
    for _ in range(2000):
        problem, target = task.meta_example(rng, None)
        prediction = parse_meta_prediction(target, pass_rate_scale=8, max_length=160, min_length=1)
        assert prediction is not None, target
        by_cell.setdefault(task.cell_of(problem).name, []).append(prediction.pass_rate)
    means = [sum(v) / len(v) for v in by_cell.values()]
    assert max(means) - min(means) < 0.15
    assert set(by_cell) == {cell.name for cell in task.cells}


def test_bad_task_settings_fail_at_construction():
    with pytest.raises(ValueError, match="max_terms"):
        ChainTask(max_terms=12)
    with pytest.raises(ValueError, match="step_error"):
        ChainTask(step_error=1.0)
    with pytest.raises(ValueError, match="one-digit"):
        ChainTask().solution("123+4")


def test_every_ablation_has_a_parent_and_main_arms_exist():
    for arm in ARMS.values():
        if arm.group == "ablation":
            assert arm.parent in ARMS
    assert set(MAIN_ARMS) <= set(ARMS)


# ----------------------------------------------------------------------------------------- held-out measurement
class _Model:
    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self


@pytest.fixture(scope="module")
def tokenizer():
    from masa_trl.tiny_model import build_tiny_tokenizer

    return build_tiny_tokenizer(vocab_size=400, seed=0, corpus=ChainTask().corpus(0), individual_digits=True)


def _scripted(tokenizer, solutions: dict[str, list[str]], metas: dict[str, list[str]]):
    """A sampler that returns, for each prompt, the scripted texts of its problem (recognised in the prompt)."""

    def sampler(model, tok, prompt_ids, *, num_samples, max_new_tokens):
        out = []
        for ids in prompt_ids:
            prompt = tokenizer.decode(ids)
            table = metas if "Predict:" in prompt else solutions
            problem = next(p for p in table if f": {p}" in prompt)
            texts = table[problem]
            assert len(texts) == num_samples
            out += [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
        return out

    return sampler


def _meta(pass_rate: int, length: int) -> str:
    from masa_trl.meta import format_meta_prediction

    return format_meta_prediction(["carry"], pass_rate, length, reasoning=None)


def test_cutoff_precision_counts_the_finished_versions_of_the_samples_the_cap_would_stop(tokenizer):
    from study.evaluate import evaluate_point

    from masa_trl.demo.warm_start import PromptRenderer

    task = ChainTask()
    right, wrong = task.solution("4+9+3+7"), task.solution("4+9+3+7").replace("{23}", "{24}")
    short = "\\boxed{23}"  # 5 tokens + EOS: under any cap below
    length = len(tokenizer(right, add_special_tokens=False)["input_ids"]) + 1
    cap_below = length // 2 - 1  # the meta rollouts predict this, so the cap (2x) is just under the long samples
    solutions = {"4+9+3+7": [right, wrong, wrong, short], "5": ["\\boxed{5}"] * 4, "1+1": [short] * 4}
    metas = {
        "4+9+3+7": [_meta(4, cap_below)] * 2,  # not gated: cap 2 x cap_below < length
        "5": [_meta(8, 5)] * 2,  # gated trivial, truly trivial
        "1+1": [_meta(0, 5)] * 2,  # gated unsolvable, and all its samples are wrong
    }
    result = evaluate_point(
        _Model(),
        tokenizer,
        task,
        list(solutions),
        render_solution=PromptRenderer(tokenizer, task.solution_template),
        render_meta=PromptRenderer(tokenizer, task.meta_template),
        max_new_tokens=160,
        num_solution_samples=4,
        num_meta_samples=2,
        sampler=_scripted(tokenizer, solutions, metas),
    )
    # Of the non-gated problem's 4 samples, the 3 long ones exceed the cap; 2 of them are wrong.
    assert result["cutoff_num_cut"] == 3
    assert result["cutoff_precision"] == pytest.approx(2 / 3)
    assert result["cutoff_share"] == pytest.approx(3 / 4)
    assert result["cutoff_correct_lost"] == pytest.approx(1 / 6)  # 1 of the 6 correct samples overall
    # Gating: 2 of 3 gated, both truly zero-variance (all 4 samples agree); the non-gated one is mixed.
    assert result["gated_share"] == pytest.approx(2 / 3)
    assert result["gating_precision"] == 1.0 and result["gating_recall"] == 1.0
    assert result["accuracy"] == pytest.approx((2 / 4 + 1 + 0) / 3)
    assert result["pass_at_k"]["1"] == pytest.approx(result["accuracy"])
    assert result["per_cell"][0]["cell"] == "1 term"


def test_hinted_accuracy_uses_the_trainers_hint_and_pairs_it_with_the_plain_samples(tokenizer):
    from study.evaluate import evaluate_point

    from masa_trl.demo.warm_start import PromptRenderer
    from masa_trl.meta import format_meta_prediction
    from masa_trl.templates import add_notion_hint

    task = ChainTask()
    render_solution = PromptRenderer(tokenizer, task.solution_template)
    seen = []

    def sampler(model, tok, prompt_ids, *, num_samples, max_new_tokens):
        # Plain prompts: "4+9" right once in 4, "5" always; hinted: "4+9" always right. "5" is gated as trivial, so
        # its notion is no hint (as in the trainer's plans).
        out = []
        for ids in prompt_ids:
            prompt = tokenizer.decode(ids)
            seen.append(list(ids))
            if "Predict:" in prompt:
                meta = (["carry"], 4, 20) if ": 4+9" in prompt else (["hold"], 8, 5)
                texts = [format_meta_prediction(*meta, reasoning=None)] * num_samples
            elif ": 4+9" in prompt:
                right, wrong = "\\boxed{13}", "\\boxed{14}"
                texts = [right] * num_samples if "Hint:" in prompt else [right] + [wrong] * (num_samples - 1)
            else:
                texts = ["\\boxed{5}"] * num_samples
            out += [tokenizer(t, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id] for t in texts]
        return out

    common = dict(
        render_solution=render_solution,
        render_meta=PromptRenderer(tokenizer, task.meta_template),
        max_new_tokens=160,
        num_solution_samples=4,
        num_meta_samples=2,
        sampler=sampler,
    )
    plain = evaluate_point(_Model(), tokenizer, task, ["4+9", "5"], **common)
    assert plain["accuracy_hinted"] is None and plain["hint_gain"] is None
    result = evaluate_point(_Model(), tokenizer, task, ["4+9", "5"], notion_hint_size=3, **common)
    assert result["accuracy"] == pytest.approx((1 / 4 + 1) / 2)
    assert result["accuracy_hinted"] == pytest.approx((1 + 1) / 2)
    assert result["hinted_share"] == 0.5 and result["hint_gain"] == pytest.approx(3 / 4)
    # The hinted prompt is the one the trainer sends: the hint appended to the user message, then the chat template.
    messages = add_notion_hint([{"role": "user", "content": task.solution_template.format(problem="4+9")}], ["carry"])
    expected = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
    assert list(expected["input_ids"]) in seen
    assert not any("hold" in tokenizer.decode(ids) for ids in seen if "Predict:" not in tokenizer.decode(ids))


# ------------------------------------------------------------------------------------------------ smoke run
def test_study_pipeline_end_to_end_and_resumes_from_its_cache(tmp_path, capsys):
    import run_study

    # Two workers: the study's own path (spawned, non-daemon processes whose answer reward starts verifier processes).
    argv = ["--smoke", "--workers", "2", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "report")]
    results = run_study.main(argv)
    assert {run["arm"] for run in results["runs"]} == {"grpo", "masa", "masa_efficient"}
    for run in results["runs"]:
        steps = [p["step"] for p in run["points"]]
        assert steps == [0, 1, 2]
        for axis in ("prompts_seen", "solution_tokens", "flops", "wall_seconds"):
            values = [p[axis] for p in run["points"]]
            assert values[0] == 0 or axis == "wall_seconds"
            assert values == sorted(values) and values[-1] > 0, (run["arm"], axis, values)
        meta = [p["meta_tokens"] for p in run["points"]]
        assert (meta[-1] > 0) == (run["arm"] != "grpo")
    report = (tmp_path / "report" / "REPORT.md").read_text()
    assert "## Task properties" in report and "GRPO" in report
    saved = json.loads((tmp_path / "report" / "results.json").read_text())
    assert len(saved["runs"]) == 3

    capsys.readouterr()
    run_study.main(argv)  # every run cached: nothing is trained again
    assert "3 of 3 runs cached; 0 to run" in capsys.readouterr().out


def _spawned_children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline:
            children.append(int(stat.parent.name))
    return children


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_killing_the_study_ends_its_runs(tmp_path):
    """`kill <study>` must not leave runs going, busy and writing the cache with the code they started with."""
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "run_study.py"
    cache = tmp_path / "cache"
    study = subprocess.Popen(
        # 400 steps: far longer than the 30 s allowed below for the runs to end once the study is gone.
        [sys.executable, str(script), "--smoke", "--max-steps", "400", "--workers", "2", "--cache-dir", str(cache)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while len(workers := _spawned_children(study.pid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert len(workers) == 2, "the study never started its worker processes"
        time.sleep(10)  # let them start their runs
        study.terminate()
        study.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(pid) for pid in workers)
    finally:
        study.kill()


def test_runs_are_planned_quick_arms_first_longest_first():
    import run_study

    full = run_study.plan_runs(list(ARMS), seeds=3, extra_seeds=2)
    quick = run_study.plan_runs(list(QUICK_ARMS), seeds=1, extra_seeds=0)
    assert quick == [("masa_efficient", 0), ("masa", 0), ("grpo", 0)]  # the short run last
    assert full[:3] == quick  # a full study starts with exactly the quick study's runs
    assert len(full) == len(set(full)) == 12 * 3 + 3 * 2
    first_ablation = next(i for i, (arm, _) in enumerate(full) if ARMS[arm].group == "ablation")
    assert {seed for _, seed in full[:first_ablation]} == {0, 1, 2}  # every main arm's 3 seeds before any ablation
    assert full[-6:] == [(arm, seed) for seed in (3, 4) for arm in ("masa_efficient", "masa", "grpo")]


def test_a_rebuilt_report_does_not_make_the_commit_dirty(tmp_path, monkeypatch):
    import run_study

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "REPORT.md").write_text("old\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    monkeypatch.setattr(run_study, "ROOT", tmp_path)
    (tmp_path / "results" / "REPORT.md").write_text("rebuilt\n")
    assert run_study._commit(tmp_path / "results")[1] is False
    assert run_study._commit(tmp_path / "elsewhere")[1] is True  # the report's own files changed, elsewhere
    (tmp_path / "code.py").write_text("x = 2\n")
    assert run_study._commit(tmp_path / "results")[1] is True
