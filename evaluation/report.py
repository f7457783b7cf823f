"""Reports: a Markdown table in the layout of the paper's Table 1, from one or more run summaries.

Rows are models (one row per metric: pass@1, pass@32, ...), columns the benchmarks, then the average over the
in-domain math benchmarks ("Avg."), then the out-of-domain sets (GPQA-D). With two or more models, a relative gain row
(in %) compares each model with the first one (the baseline), as the paper reports MASA against GRPO.
"""

import json
import math
from pathlib import Path
from typing import Any


def load_summary(path: str | Path) -> dict[str, Any]:
    """A run summary from `summary.json` or from the run directory holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"no run summary at {path}")
    return json.loads(path.read_text(encoding="utf-8"))


def _pct(value: float | None) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _gain(value: float | None, base: float | None) -> str:
    if value is None or base is None or math.isnan(value) or math.isnan(base):
        return "–"
    if base == 0:
        return "n/a" if value else "+0.0%"
    return f"{100 * (value - base) / base:+.1f}%"


def _metric_label(metric: str) -> str:
    return metric.replace("pass@", "Pass@")


def benchmark_columns(summaries: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(in-domain, out-of-domain) `(name, display name)` columns, in first-seen order across the summaries."""
    in_domain: dict[str, str] = {}
    ood: dict[str, str] = {}
    for summary in summaries:
        for name, bench in summary["benchmarks"].items():
            target = in_domain if bench.get("in_domain", True) else ood
            target.setdefault(name, bench.get("display_name", name))
    return list(in_domain.items()), list(ood.items())


def _value(summary: dict[str, Any], benchmark: str, scorer: str, metric: str) -> float | None:
    bench = summary["benchmarks"].get(benchmark)
    if bench is None:
        return None
    return bench.get("scores", {}).get(scorer, {}).get(metric)


def _average(summary: dict[str, Any], names: list[str], scorer: str, metric: str) -> float | None:
    values = [_value(summary, name, scorer, metric) for name in names]
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def markdown_table(
    summaries: list[dict[str, Any]],
    *,
    scorer: str | None = None,
    metrics: list[str] | None = None,
    names: list[str] | None = None,
) -> str:
    """Table 1-style Markdown for one or more run summaries (the first is the baseline of the gain rows).

    The average ("Avg.") is the unweighted mean over the in-domain benchmarks, left empty for a model that lacks
    one of them. Values are percentages.
    """
    if not summaries:
        raise ValueError("no summaries to report")
    scorer = scorer or summaries[0]["primary_scorer"]
    for summary in summaries:
        if scorer not in summary.get("scorers", {}):
            raise ValueError(
                f"run {summary.get('run_name')!r} has no scores from scorer {scorer!r} "
                f"(it has {', '.join(summary.get('scorers', {}))}); rescore it or pick another scorer"
            )
    if metrics is None:
        seen: dict[str, None] = {}
        for summary in summaries:
            for bench in summary["benchmarks"].values():
                for key in bench.get("scores", {}).get(scorer, {}):
                    if key.startswith("pass@"):
                        seen.setdefault(key)
        metrics = sorted(seen, key=lambda m: int(m.split("@")[1]))
    names = names or [s.get("run_name") or s.get("model", f"model {i}") for i, s in enumerate(summaries)]
    in_domain, ood = benchmark_columns(summaries)
    in_names = [n for n, _ in in_domain]
    header = ["Model", "Metric", *[d for _, d in in_domain]]
    if in_domain:
        header.append("Avg.")
    header += [d for _, d in ood]

    def cells(summary, metric, fmt, base=None):
        row = []
        for name, _ in in_domain:
            value = _value(summary, name, scorer, metric)
            row.append(fmt(value, _value(base, name, scorer, metric)) if base else fmt(value))
        if in_domain:
            avg = _average(summary, in_names, scorer, metric)
            row.append(fmt(avg, _average(base, in_names, scorer, metric)) if base else fmt(avg))
        for name, _ in ood:
            value = _value(summary, name, scorer, metric)
            row.append(fmt(value, _value(base, name, scorer, metric)) if base else fmt(value))
        return row

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for i, (summary, name) in enumerate(zip(summaries, names, strict=True)):
        for j, metric in enumerate(metrics):
            label = name if j == 0 else ""
            lines.append("| " + " | ".join([label, _metric_label(metric), *cells(summary, metric, _pct)]) + " |")
        if i > 0:
            for j, metric in enumerate(metrics):
                label = f"Δ {name} vs {names[0]}" if j == 0 else ""
                row = cells(summary, metric, _gain, base=summaries[0])
                lines.append("| " + " | ".join([label, _metric_label(metric), *row]) + " |")
    return "\n".join(lines) + "\n"


# Table 2's domains, in its order; a benchmark is reported under the first domain that lists it. Rows that the paper
# merges into one number (EvalPlus = mean of HumanEval+ and MBPP+) come from `evaluation.code_benchmarks.TABLE_ROWS`.
OOD_DOMAINS = {"Logical Reasoning": "logic", "Scientific Reasoning": "science", "Coding": "code"}


def ood_markdown_table(
    summaries: list[dict[str, Any]],
    *,
    scorer: str | None = None,
    metric: str = "pass@1",
    names: list[str] | None = None,
) -> str | None:
    """Table 2-style Markdown: per out-of-domain domain, one row per benchmark and an "Avg." row, one column per run.

    The first run is the baseline of the relative-gain column (the last one against it). Benchmarks that the paper
    reports as one number share a row (`code_benchmarks.TABLE_ROWS`: "EvalPlus" = the unweighted mean of HumanEval+
    and MBPP+, shown where both are among the runs' benchmarks, empty for a run that lacks one of them). A domain's
    average is the unweighted mean of its rows (so EvalPlus counts once, as in the paper's table), left empty for a
    run that lacks one of them (as in `markdown_table`). Returns `None` when no run holds an out-of-domain benchmark
    of a known domain.
    """
    from evaluation.benchmarks import BENCHMARK_GROUPS

    if not summaries:
        raise ValueError("no summaries to report")
    scorer = scorer or summaries[0]["primary_scorer"]
    names = names or [s.get("run_name") or s.get("model", f"model {i}") for i, s in enumerate(summaries)]
    _, ood = benchmark_columns(summaries)
    display = dict(ood)
    placed: set[str] = set()
    sections = []
    for domain, group in OOD_DOMAINS.items():
        members = [name for name in BENCHMARK_GROUPS.get(group, ()) if name in display and name not in placed]
        placed.update(members)
        if members:
            sections.append((domain, _table_rows(members, display)))
    if not sections:
        return None
    header = ["Domain", "Benchmark", *names]
    if len(summaries) > 1:
        header.append(f"Δ {names[-1]} vs {names[0]}")
    lines = [f"{_metric_label(metric)} (%), scorer {scorer}", "", "| " + " | ".join(header) + " |"]
    lines.append("|" + "---|" * len(header))

    def row(domain: str, label: str, values: list[float | None]) -> str:
        cells = [domain, label, *(_pct(v) for v in values)]
        if len(summaries) > 1:
            cells.append(_gain(values[-1], values[0]))
        return "| " + " | ".join(cells) + " |"

    for domain, rows in sections:
        table = [[_average(summary, list(names), scorer, metric) for summary in summaries] for _, names in rows]
        for k, ((label, _), values) in enumerate(zip(rows, table, strict=True)):
            lines.append(row(domain if k == 0 else "", label, values))
        averages = [_mean([values[j] for values in table]) for j in range(len(summaries))]
        lines.append(row("", "**Avg.**", averages))
    return "\n".join(lines) + "\n"


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def _table_rows(members: list[str], display: dict[str, str]) -> list[tuple[str, tuple[str, ...]]]:
    """`(label, benchmarks averaged in the row)` per row: a combined row replaces its members where all are shown."""
    from evaluation.code_benchmarks import TABLE_ROWS

    rows: list[tuple[str, tuple[str, ...]]] = []
    merged: set[str] = set()
    for name in members:
        if name in merged:
            continue
        combined = next((item for item in TABLE_ROWS.items() if name in item[1]), None)
        if combined and all(m in members for m in combined[1]):
            rows.append(combined)
            merged.update(combined[1])
        else:
            rows.append((display[name], (name,)))
    return rows


def describe_run(summary: dict[str, Any], scorer: str | None = None) -> str:
    """One paragraph: scorer, sampling settings, prompt, sources, timeouts."""
    scorer = scorer or summary["primary_scorer"]
    cfg = summary.get("config", {})
    timeouts = summary.get("scorer_stats", {}).get(scorer, {}).get("timeouts", 0)
    parts = [
        f"Scorer: **{scorer}** ({summary['scorers'].get(scorer, '')}); scorer timeouts: {timeouts}.",
        (
            f"Model: `{summary.get('model')}`; n = {cfg.get('n')} samples per problem, temperature "
            f"{cfg.get('temperature')}, top-p {cfg.get('top_p')}, max new tokens {cfg.get('max_new_tokens')}, prompt "
            f"style `{cfg.get('prompt_style')}`, chat template {'on' if cfg.get('chat_template', True) else 'off'}, "
            f"backend {cfg.get('backend')}."
        ),
        "pass@1 is the mean accuracy over samples; pass@k is the unbiased estimator (Chen et al., 2021).",
    ]
    if cfg.get("notion_feedin"):
        parts.append("Notion feed-in: predicted notions were appended to each solution prompt.")
    sources = [f"{name}: {bench.get('source')}" for name, bench in summary["benchmarks"].items()]
    parts.append("Data: " + "; ".join(sources) + ".")
    return " ".join(parts)


def _on_off(value: Any) -> str:
    return "on" if value else "off"


# (key, table column, phrase) of the settings that describe a run, in the order they are shown.
_SETTINGS: tuple[tuple[str, str, str], ...] = (
    ("model", "Model", "model {}"),
    ("n", "n", "n = {} samples per problem"),
    ("temperature", "Temperature", "temperature {}"),
    ("top_p", "Top-p", "top-p {}"),
    ("top_k", "Top-k", "top-k {}"),
    ("max_new_tokens", "Max new tokens", "max new tokens {}"),
    ("seed", "Seed", "seed {}"),
    ("prompt_style", "Prompt style", "prompt style {}"),
    ("chat_template", "Chat template", "chat template {}"),
    ("system_prompt", "System prompt", "system prompt {}"),
    ("notion_feedin", "Notion feed-in", "notion feed-in {}"),
    ("backend", "Backend", "backend {}"),
    ("timeouts", "Scorer timeouts", "scorer timeouts {}"),
    ("data", "Data", "data: {}"),
)


def _run_settings(summary: dict[str, Any], scorer: str) -> dict[str, str]:
    """The rendered value of each of `_SETTINGS` for one run."""
    cfg = summary.get("config", {})
    values = {key: cfg.get(key) for key, _, _ in _SETTINGS}
    values |= {
        "model": f"`{summary.get('model')}`",
        "prompt_style": f"`{cfg.get('prompt_style')}`",
        "chat_template": _on_off(cfg.get("chat_template", True)),
        "system_prompt": "none" if cfg.get("system_prompt") is None else f"`{cfg['system_prompt']}`",
        "notion_feedin": _on_off(cfg.get("notion_feedin")),
        "timeouts": summary.get("scorer_stats", {}).get(scorer, {}).get("timeouts", 0),
        "data": "; ".join(f"{name}: {bench.get('source')}" for name, bench in summary["benchmarks"].items()),
    }
    return {key: str(value) for key, value in values.items()}


def describe_runs(
    summaries: list[dict[str, Any]], scorer: str | None = None, *, names: list[str] | None = None
) -> str:
    """The settings of several runs: those they share once, a table of those that differ (one row per run).

    A comparison is only as fair as its settings are equal, so every run's settings are shown, not the first's
    alone; for one run this is [`describe_run`].
    """
    if len(summaries) == 1:
        return describe_run(summaries[0], scorer)
    scorer = scorer or summaries[0]["primary_scorer"]
    names = names or [s.get("run_name") or s.get("model", f"model {i}") for i, s in enumerate(summaries)]
    settings = [_run_settings(summary, scorer) for summary in summaries]
    shared = [key for key, _, _ in _SETTINGS if all(s[key] == settings[0][key] for s in settings)]
    differ = [(key, column) for key, column, _ in _SETTINGS if key not in shared]
    phrases = {key: phrase for key, _, phrase in _SETTINGS}
    shared_text = ", ".join(phrases[key].format(settings[0][key]) for key in shared if key != "data")
    description = summaries[0].get("scorers", {}).get(scorer, "")
    parts = [f"Scorer: **{scorer}** ({description})."]
    if not differ:
        parts.append(f"All {len(summaries)} runs share their settings: {shared_text}.")
    else:
        parts.append(f"Shared settings: {shared_text}." if shared_text else "The runs share no setting.")
    parts.append("pass@1 is the mean accuracy over samples; pass@k is the unbiased estimator (Chen et al., 2021).")
    if "data" in shared:
        parts.append(f"Data: {settings[0]['data']}.")
    text = " ".join(parts)
    if differ:
        rows = [
            "| Run | " + " | ".join(column for _, column in differ) + " |",
            "|" + "---|" * (len(differ) + 1),
            *(
                "| " + " | ".join([name, *(s[key] for key, _ in differ)]) + " |"
                for name, s in zip(names, settings, strict=True)
            ),
        ]
        text += "\n\nSettings that differ between the runs:\n\n" + "\n".join(rows)
    return text


def render_report(summary: dict[str, Any], *, others: list[dict[str, Any]] | None = None) -> str:
    """The Markdown report of one run (optionally compared with others), for every scorer it was scored with."""
    lines = [f"# Evaluation: {summary.get('run_name') or summary.get('model')}", ""]
    lines += _details_table(summary)
    for scorer in [summary["primary_scorer"], *[s for s in summary["scorers"] if s != summary["primary_scorer"]]]:
        comparable = [o for o in others or [] if scorer in o.get("scorers", {})]
        lines += [f"## Scorer: {scorer}", "", describe_runs([*comparable, summary], scorer), ""]
        skipped = [o.get("run_name", "?") for o in others or [] if scorer not in o.get("scorers", {})]
        lines.append(markdown_table([*comparable, summary], scorer=scorer))
        if skipped:
            lines.append(f"(Not scored with {scorer}, so left out: {', '.join(skipped)}.)\n")
        lines.append("")
    meta = summary.get("meta")
    if meta:
        from evaluation.meta_eval import format_meta_markdown

        lines += ["## Meta-awareness", ""]
        lines.append(
            f"Meta samples per problem: {meta.get('meta_n')}; measured pass rates from scorer "
            f"`{meta.get('scorer')}`; lengths in completion tokens."
        )
        lines.append("")
        for name, metrics in meta.get("benchmarks", {}).items():
            lines.append(format_meta_markdown(name, metrics))
            if metrics.get("plot"):
                lines.append(f"![meta-awareness {name}]({metrics['plot']})\n")
    return "\n".join(lines).rstrip() + "\n"


def _details_table(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| Benchmark | Problems | Samples | Mean tokens | Truncated | No answer |",
        "|---|---|---|---|---|---|",
    ]
    scorer = summary["primary_scorer"]
    for name, bench in summary["benchmarks"].items():
        no_answer = bench.get("scores", {}).get(scorer, {}).get("no_answer_rate")
        lines.append(
            f"| {bench.get('display_name', name)} | {bench['num_problems']} | {bench['num_samples']} | "
            f"{bench['mean_tokens']:.1f} | {_pct(bench['truncated_rate'])}% | {_pct(no_answer)}% |"
        )
    return [*lines, ""]
