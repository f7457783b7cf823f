"""PNG figures of the demo (matplotlib with the Agg backend, imported only when a figure is drawn)."""

import math
from pathlib import Path


META_COMPONENTS = {
    "meta/rewards/length_alignment_reward/mean": "length",
    "meta/rewards/difficulty_alignment_reward/mean": "difficulty",
    "meta/rewards/notion_alignment_reward/mean": "notion",
    "meta/reward": "meta reward (weighted)",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(points: list[dict], key: str) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for point in points:
        value = point.get(key)
        if isinstance(value, (int, float)) and not math.isnan(value):
            xs.append(point["step"])
            ys.append(value)
    return xs, ys


def plot_meta_awareness(history: list[dict], path: Path, title: str = "") -> Path:
    """The analogue of the paper's figure 7: predicted vs true pass rate and length on held-out problems over steps,
    with the correlation and error against the reference predictors."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    ax = axes[0]
    ax.plot(*_series(history, "pred_pass_rate"), "o-", label="predicted (mean of meta samples)")
    ax.plot(*_series(history, "true_pass_rate"), "s-", label="true (re-measured solution samples)")
    ax.set(xlabel="RL step", ylabel="mean pass rate over held-out problems", title="Pass rate", ylim=(0, 1))
    ax.legend()

    ax = axes[1]
    ax.plot(*_series(history, "pearson"), "o-", label="Pearson(pred, true)")
    ax.plot(*_series(history, "spearman"), "^-", label="Spearman")
    ax.plot(*_series(history, "mae"), "s-", label="MAE")
    last = history[-1] if history else {}
    for key, style, label in (
        ("cell_mean_pearson", "--", "cell-mean ceiling (Pearson)"),
        ("cell_mean_mae", ":", "cell-mean MAE"),
        ("constant_mae", "-.", "constant-predictor MAE"),
    ):
        if isinstance(last.get(key), float) and not math.isnan(last[key]):
            ax.axhline(last[key], linestyle=style, color="grey", linewidth=1, label=label)
    ax.axhline(0.5, color="red", linewidth=0.8, alpha=0.5)
    ax.set(xlabel="RL step", title="Per-problem agreement (held-out)", ylim=(-0.3, 1.0))
    ax.legend(fontsize=8)

    ax = axes[2]
    ax.plot(*_series(history, "pred_length"), "o-", label="predicted solution_length")
    ax.plot(*_series(history, "true_length"), "s-", label="true length of correct solutions")
    ax.plot([], [])
    twin = ax.twinx()
    twin.plot(*_series(history, "length_hit_rate"), "^:", color="tab:green", label="in correct range (share)")
    twin.set(ylim=(0, 1), ylabel="share of predictions in [min, max] of correct lengths")
    ax.set(xlabel="RL step", ylabel="tokens", title="Length")
    lines = ax.get_legend_handles_labels()
    twin_lines = twin.get_legend_handles_labels()
    ax.legend(lines[0] + twin_lines[0], lines[1] + twin_lines[1], fontsize=8)
    fig.suptitle(title or "Held-out meta-awareness during MASA")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_calibration(before, after, path: Path) -> Path:
    """Per-problem predicted vs true pass rate before and after RL, with per-cell means."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 5), sharey=True)
    for ax, evaluation, name in ((axes[0], before, "before RL"), (axes[1], after, "after RL")):
        summary = evaluation.summary()
        ax.scatter(evaluation.true_pass_rate, evaluation.pred_pass_rate, s=10, alpha=0.4, label="problem")
        cells = evaluation.per_cell()
        ax.scatter(
            [c["true_pass_rate"] for c in cells],
            [c["pred_pass_rate"] for c in cells],
            s=60,
            marker="D",
            color="tab:red",
            label="cell mean",
        )
        for c in cells:
            ax.annotate(f"{c['terms']}x{c['digits']}d", (c["true_pass_rate"], c["pred_pass_rate"]), fontsize=7)
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
        ax.set(
            xlabel="true pass rate",
            title=f"{name}: Pearson {summary['pearson']:.2f}, MAE {summary['mae']:.2f}",
            xlim=(-0.03, 1.03),
            ylim=(-0.03, 1.03),
        )
        ax.legend(loc="upper left", fontsize=8)
    axes[0].set_ylabel("predicted pass rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_meta_rewards(train_logs: list[dict], path: Path, note: str = "") -> Path:
    """The meta reward components over training steps (training batches, not held-out)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in META_COMPONENTS.items():
        xs, ys = _series(train_logs, key)
        if xs:
            ax.plot(xs, ys, "-" if key != "meta/reward" else "k--", label=label)
    ax.set(xlabel="RL step", ylabel="mean reward of meta rollouts", ylim=(0, 1))
    ax.set_title("Meta reward components (training batches; not a success metric)", fontsize=10)
    ax.legend(fontsize=8)
    if note:
        import textwrap

        fig.tight_layout(rect=(0, 0.12, 1, 1))
        fig.text(0.02, 0.01, textwrap.fill(note, 120), fontsize=7, va="bottom")
    else:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_accuracy(history: list[dict], train_logs: list[dict], path: Path) -> Path:
    """Held-out solution accuracy over steps, with the training solution reward for comparison."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(*_series(history, "accuracy"), "o-", label="held-out accuracy (mean true pass rate)")
    xs, ys = _series(train_logs, "reward")
    if xs:
        ax.plot(xs, ys, alpha=0.5, label="training solution reward")
    ax.set(xlabel="RL step", ylabel="accuracy", ylim=(0, 1), title="Solution accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gating(train_logs: list[dict], path: Path, precision_floor: float | None = None) -> Path | None:
    """MASA-efficient: share of prompts gated and skipped, the audited gating precision (gating pauses below
    `precision_floor`, drawn as a line) and the cutoff rate; None when MASA-efficient never ran."""
    keys = {
        "efficient/gated_frac": "share of prompts gated",
        "efficient/skipped_frac": "share of prompts skipped (gated and not audited)",
        "efficient/audit_precision": "audited gating precision",
        "efficient/gating_paused": "gating paused (precision below the floor)",
        "efficient/cutoff_frac": "share of capped rows cut",
    }
    if not any(_series(train_logs, key)[0] for key in keys):
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, label in keys.items():
        xs, ys = _series(train_logs, key)
        if xs:
            ax.plot(xs, ys, "o-", markersize=3, label=label)
    if precision_floor is not None:
        ax.axhline(precision_floor, color="grey", linestyle="--", linewidth=1, label="gating precision floor")
    ax.set(xlabel="RL step", ylim=(0, 1.02), title="MASA-efficient predictive gating")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
