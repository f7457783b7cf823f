"""Tests of benchmarks/study/report.py on a small synthetic results dict (no training)."""

import copy
import json
import re
import sys
import warnings
from pathlib import Path

import pytest


sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from study import report, stats


STEPS = (0, 5, 10)
GRPO_ACCURACY = ((0.40, 0.50, 0.60), (0.40, 0.52, 0.60))
ABOVE = ((0.40, 0.65, 0.75), (0.40, 0.67, 0.77))  # well above GRPO
EQUAL = ((0.40, 0.50, 0.61), (0.40, 0.52, 0.59))  # GRPO's mean final, seeds on either side
ARMS = {
    "grpo": {"label": "GRPO", "group": "main", "description": "baseline"},
    "masa": {"label": "MASA", "group": "main", "description": "meta rollouts"},
    "masa_efficient": {"label": "MASA-efficient", "group": "main", "description": "gating and cutoff"},
    "gating_only": {"label": "gating only", "group": "ablation", "description": "no cutoff"},
    "dapo": {"label": "DAPO", "group": "main", "description": "not run"},
}


def make_run(arm: str, seed: int, accuracy, *, seconds_per_step: float, meta: bool, gating: bool) -> dict:
    points = []
    for step, acc in zip(STEPS, accuracy, strict=True):
        tokens = 100 * step
        point = {"step": step, "prompts_seen": 8 * step, "solution_tokens": tokens, "generated_tokens": 1.3 * tokens,
                 "generation_flops": 1e9 * step, "training_flops": 2e9 * step, "flops": 3e9 * step,
                 "wall_seconds": seconds_per_step * step + seed, "accuracy": acc,
                 "pass_at_k": {"1": acc, "2": min(1, acc + 0.1), "4": min(1, acc + 0.2), "8": min(1, acc + 0.25)},
                 "pearson": 0.1 + 0.03 * step if meta else None, "mae": 0.3 - 0.01 * step if meta else None,
                 "parse_rate": 0.95 if meta else None, "length_mae": 20.0 - step if meta else None,
                 "gated_share": (0.3 + 0.01 * seed if step else None) if gating else None,
                 "gating_precision": 0.8 if gating and step else None, "gating_recall": 0.3 if gating and step else None,
                 "gating_f1": 0.44 if gating and step else None, "cutoff_share": 0.05 if gating else None,
                 "cutoff_precision": (0.7 if seed == 0 else None) if gating else None, "cutoff_num_cut": 4}  # fmt: skip
        if meta:
            point["per_cell"] = [
                {"cell": f"{n} terms", "pred_pass_rate": 0.5, "true_pass_rate": 0.6, "pred_length": 10.0 * n + step,
                 "true_length": 11.0 * n} for n in (1, 3, 5)
            ]  # fmt: skip
        points.append(point)
    return {"arm": arm, "seed": seed, "seconds": points[-1]["wall_seconds"], "train": {"steps": 10}, "points": points}


def make_results(efficient_accuracy=ABOVE, arms=("grpo", "masa", "masa_efficient", "gating_only")) -> dict:
    specs = {
        "grpo": (GRPO_ACCURACY, 10.0, False, False),
        "masa": (((0.40, 0.55, 0.66), (0.40, 0.57, 0.68)), 12.0, True, False),
        "masa_efficient": (efficient_accuracy, 7.0, True, True),
        "gating_only": (((0.40, 0.60, 0.70), (0.40, 0.62, 0.72)), 8.0, True, True),
    }
    runs = []
    for arm in arms:
        accuracy, seconds_per_step, meta, gating = specs[arm]
        for seed, acc in enumerate(accuracy):
            runs.append(make_run(arm, seed, acc, seconds_per_step=seconds_per_step, meta=meta, gating=gating))
    return {
        "meta": {"commit": "abc1234", "dirty": True, "machine": {"cpus": 2, "load_start": [1.0, 0.9, 0.8],
                 "load_end": [1.5, 1.2, 1.0]}, "started": "2026-12-01T17:00:00Z", "finished": "2026-12-01T18:00:00Z",
                 "quick": True, "workers": 2, "settings": {"G": 8, "M": 4, "lr": 1e-4}},
        "arms": ARMS,
        "task_properties": {"heldout_accuracy": 0.41, "heldout_pass_at_8": 0.8, "zero_variance_share": 0.31,
                            "zero_variance_trivial": 0.1, "zero_variance_unsolvable": 0.18, "solution_length_mean": 76.0,
                            "meta_length_mean": 27.0, "length_ratio": 2.8, "notion_score_share": {"carry": 0.4, "hold": 0.3},
                            "meta_notion_reward_mean": 0.2, "wrong_minus_correct_length_overall": 10.0,
                            "wrong_minus_correct_length_within_problem": None,
                            "per_cell": [{"cell": "1 term", "true_pass_rate": 1.0, "pass_at_8": 1.0, "solution_length": 6.0,
                                          "zero_variance_share": 0.9}]},
        "runs": runs,
    }  # fmt: skip


def row_cells(text: str, first: str, second: str | None = None) -> list[str]:
    """The cells of the first table row whose first (and second) cell match."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first and (second is None or cells[1] == second):
            return cells
    raise AssertionError(f"no row {first!r} {second!r}")


def section(text: str, title: str) -> str:
    return text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def claim(text: str, start: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"- {start}"))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    results = make_results()
    path = report.make_report(results, tmp_path_factory.mktemp("report"))
    return results, path, path.read_text()


def test_sections_rows_and_header(rendered):
    _, path, text = rendered
    assert path.name == "REPORT.md"
    assert text.startswith(f"# {report.TITLE}\n")
    order = [
        "## Task properties",
        "## Headline",
        "### Claims",
        "## Final held-out results",
        "## Ablations",
        "## Figures",
    ]
    positions = [text.index(title) for title in order]
    assert positions == sorted(positions)
    assert "`abc1234` (dirty)" in text and "2 CPUs" in text and "1.00/0.90/0.80" in text and "quick" in text
    assert '```json\n{"G": 8, "M": 4, "lr": 0.0001}\n```' in text
    final = section(text, "Final held-out results")
    for name in ("GRPO", "MASA", "MASA-efficient", "gating only"):
        assert row_cells(final, name)[1] == "2"
    assert "DAPO" not in text  # declared but never run: skipped
    assert final.index("| MASA-efficient |") < final.index("| gating only |")
    ablation = row_cells(section(text, "Ablations"), "gating only")
    assert ablation[1] == "MASA-efficient"
    # RL can learn: GRPO gains 20 points on both seeds.
    assert row_cells(section(text, "Task properties"), "RL can learn (GRPO final − warm-start accuracy, points)")[
        1:
    ] == ["20.0 ± 0.0", ">= +10", "yes"]
    assert "| 1 term |" in text


def test_figures_exist_and_are_linked(rendered):
    _, path, text = rendered
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(links) == 7
    for link in links:
        assert link.startswith("figures/") and link.endswith(".png")
        figure = path.parent / link
        assert figure.is_file() and figure.stat().st_size > 1000
        assert figure.read_bytes()[:4] == b"\x89PNG"


def test_headline_ratio_matches_stats(rendered):
    results, _, text = rendered
    runs = report.arm_runs(results)
    headline = section(text, "Headline")
    for axis, axis_label in report.COST_AXES:
        expected = stats.cost_ratio(runs["masa_efficient"], runs["grpo"], axis=axis)
        cells = row_cells(headline, "MASA-efficient", axis_label)
        assert float(cells[2]) == pytest.approx(expected["ratio"], abs=6e-4), axis
        assert cells[4] == f"{expected['reached']}/2"
        lo, hi = (float(x) for x in cells[3].strip("[]").split(","))
        assert (lo, hi) == pytest.approx(expected["ratio_ci"], abs=6e-4)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no MASA-efficient run lasts GRPO's final wall time
            difference = stats.accuracy_difference_at_equal_cost(runs["masa_efficient"], runs["grpo"], axis=axis)
        if difference["arm_missing"] < 2:
            assert float(cells[5]) == pytest.approx(difference["difference"], abs=6e-4)
        else:  # MASA-efficient stops short of GRPO's final wall time
            assert cells[5] == "—"
    assert float(row_cells(headline, "MASA-efficient", "wall time (s)")[2]) < 1  # cheaper
    assert row_cells(headline.split("Other arms:", 1)[1], "gating only", "step")  # in the second table


def test_claim_verdicts_flip_with_the_data(rendered, tmp_path):
    _, _, above = rendered
    assert claim(above, "Accuracy gain, MASA-efficient").endswith("**holds**")
    equal = report.make_report(make_results(efficient_accuracy=EQUAL), tmp_path).read_text()
    assert claim(equal, "Accuracy gain, MASA-efficient").endswith("**within noise**")
    below = tuple(tuple(a - 0.1 * (i > 0) for i, a in enumerate(seed)) for seed in GRPO_ACCURACY)
    below_text = report.make_report(make_results(efficient_accuracy=below), tmp_path / "below").read_text()
    assert claim(below_text, "Accuracy gain, MASA-efficient").endswith("**does not hold**")
    # MASA is above GRPO in all three.
    assert claim(equal, "Accuracy gain, MASA −").endswith("**holds**")
    # Wall time: MASA-efficient takes 7 s a step against MASA's 12 s.
    assert claim(above, "-34.5% train time").endswith("**holds**")
    assert "-41.5%" in claim(above, "-34.5% train time")  # (70 + 0.5) / (120 + 0.5) - 1
    gated = claim(above, "37% gated")
    assert "0.305 ± 0.007" in gated and gated.endswith("**lower**")
    assert claim(above, "1.28x faster").endswith("**holds**")
    assert claim(below_text, "1.28x faster").endswith("**does not hold**")  # never reaches GRPO's accuracy


def test_verdict():
    assert report.verdict((0.1, 0.2)) == "holds"
    assert report.verdict((-0.1, 0.2)) == "within noise"
    assert report.verdict((-0.2, -0.1)) == "does not hold"
    assert report.verdict((0.5, 0.9), null=1.0, direction=-1) == "holds"
    assert report.verdict((float("inf"), float("inf")), null=1.0, direction=-1) == "does not hold"
    assert report.verdict((None, None)) == "not measurable"


def test_missing_metrics_render_as_dash(rendered):
    _, _, text = rendered
    final = section(text, "Final held-out results")
    header = row_cells(final, "arm")
    grpo = dict(zip(header, row_cells(final, "GRPO"), strict=True))
    for column in ("Pearson", "MAE", "gated", "gating F1", "cutoff P"):
        assert grpo[column] == "—", column
    efficient = dict(zip(header, row_cells(final, "MASA-efficient"), strict=True))
    assert efficient["cutoff P"] == "0.700 ± —"  # one seed has it
    assert efficient["Pearson"] == "0.400 ± 0.000"
    assert "pass@16" not in header and "pass@8" in header
    assert "10.0; —" in row_cells(section(text, "Task properties"), "wrong − correct length (overall; within problem)")


def test_two_arms_one_seed_still_render(tmp_path):
    results = make_results(arms=("grpo", "masa"))
    results["runs"] = [run for run in results["runs"] if run["seed"] == 0]
    del results["task_properties"]
    text = report.make_report(results, tmp_path).read_text()
    assert "MASA-efficient" not in section(text, "Final held-out results")
    assert row_cells(section(text, "Final held-out results"), "MASA")[2] == "0.660 ± —"
    cells = row_cells(section(text, "Headline"), "MASA", "step")
    lo, hi = cells[3].strip("[]").split(", ")
    assert lo == hi  # one seed a side: the interval collapses
    assert "No ablation ran together with its parent." in text
    assert claim(text, "Accuracy gain, MASA −")
    assert "37% gated" not in text
    assert (tmp_path / "figures" / "accuracy_vs_cost.png").stat().st_size > 0
    assert not (tmp_path / "figures" / "gated_share.png").exists()


def test_main_cli(tmp_path, capsys):
    results = copy.deepcopy(make_results(arms=("grpo", "masa_efficient")))
    source = tmp_path / "results.json"
    source.write_text(json.dumps(results))
    assert report.load_results(source) == results
    path = report.main([str(source), "--out", str(tmp_path / "out")])
    assert path == tmp_path / "out" / "REPORT.md" and path.is_file()
    assert str(path) in capsys.readouterr().out


def test_a_claim_with_a_stated_size_holds_only_when_its_interval_reaches_that_size():
    # -34.5% train time: a saving of 10-20% is real but smaller; one of 40-50% holds.
    assert report.verdict((-20.0, -10.0), direction=-1, paper=-34.5) == "smaller than the paper's"
    assert report.verdict((-50.0, -40.0), direction=-1, paper=-34.5) == "holds"
    # 1.28x faster = a wall-time ratio of 0.78: 0.90-0.95 is faster, but less so.
    assert report.verdict((0.90, 0.95), null=1.0, direction=-1, paper=0.78) == "smaller than the paper's"
    assert report.verdict((0.60, 0.80), null=1.0, direction=-1, paper=0.78) == "holds"
    assert report.verdict((0.90, 1.10), null=1.0, direction=-1, paper=0.78) == "within noise"
    assert report.verdict((1.05, 1.10), null=1.0, direction=-1, paper=0.78) == "does not hold"


def test_hint_section_pairs_plain_and_hinted_accuracy_per_step(tmp_path):
    results = make_results()
    assert "## Notion hints" not in report.make_report(results, tmp_path / "plain").read_text()
    for run in results["runs"]:
        if run["arm"] == "masa_efficient":
            for point in run["points"]:
                point |= {"accuracy_hinted": point["accuracy"] - 0.1, "hint_gain": -0.1, "hinted_share": 0.9}
    full = report.make_report(results, tmp_path / "hinted").read_text()
    assert "](figures/hints.png)" in full and (tmp_path / "hinted" / "figures" / "hints.png").is_file()
    text = section(full, "Notion hints")
    assert row_cells(text, "MASA-efficient", "10")[2:] == ["0.760 ± 0.014", "0.660 ± 0.014", "-0.100 ± 0.000",
                                                         "0.900 ± 0.000"]  # fmt: skip
    assert "| MASA |" not in text and "| gating only |" not in text  # arms without hints have no rows
