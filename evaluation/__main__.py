"""Command line: `python -m evaluation` (installed as `masa-eval`).

python -m evaluation --model PATH_OR_HUB_ID --benchmarks aime24,aime25,amc23,math500,minerva,olympiadbench
python -m evaluation --model PATH --benchmarks math --meta --notion-feedin
python -m evaluation --model PATH --data-file my_set.jsonl --problem-column question --answer-column target
python -m evaluation --model PATH --benchmarks all --fixtures --n 2 --max-new-tokens 32   # offline smoke run
python -m evaluation compare outputs/eval/grpo outputs/eval/masa --output table.md
python -m evaluation list
"""

import argparse
import logging
import math
import sys
import textwrap
from pathlib import Path

from evaluation.benchmarks import (
    ANSWER_FORMATS,
    BENCHMARK_GROUPS,
    BENCHMARKS,
    GPQA_SHUFFLES,
    PROMPT_STYLES,
    BenchmarkError,
    get_benchmark,
    local_benchmark,
)
from evaluation.code_benchmarks import DEFAULT_TIMEOUT_S as DEFAULT_CODE_TIMEOUT_S
from evaluation.runner import ResumeMismatchError


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _positive_seconds(text: str) -> float:
    """A time limit in seconds: a finite number above 0 (argparse names the flag in its error)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, got {text!r}")
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, in words for on/off flags.

    argparse would print "(default: True)" after `--no-chat-template`, which reads as if the flag were on by default;
    the feature is, the flag is not. Lines are not broken at hyphens, so that flag names stay whole.
    """

    def _get_help_string(self, action):
        text = action.help or ""
        if action.nargs == 0 and isinstance(action.const, bool) and "%(default)" not in text:
            if action.const is False:  # store_false: the feature is on unless the flag is given
                flag = next((o for o in action.option_strings if o.startswith("--no-")), action.option_strings[0])
                feature = flag.removeprefix("--no-").replace("-", " ")
                return f"{text} (default: {feature} on; {flag} turns it off)".lstrip()
            return f"{text} (default: off)".lstrip()
        return super()._get_help_string(action)

    def _split_lines(self, text, width):
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="masa-eval",
        description="Evaluate a model (a local directory or a Hub id) on math benchmarks: pass@1 (mean over n "
        "samples) and unbiased pass@k, optional meta-awareness evaluation. Defaults follow the MASA paper: n = 32, "
        "temperature 0.6, top-p 1.0, 16384 new tokens, chat template applied. Other commands: "
        "`masa-eval compare RUN_DIR ...` (Table 1 for several runs), `masa-eval list` (known benchmarks).",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model directory or Hugging Face Hub id")
    parser.add_argument(
        "--benchmarks",
        default=None,
        help=f"comma-separated benchmarks or groups ({', '.join(BENCHMARK_GROUPS)}); default: math "
        f"(the six math sets); known: {', '.join(BENCHMARKS)}",
    )
    parser.add_argument("--output-dir", default="outputs/eval", help="parent directory of the run directory")
    parser.add_argument("--run-name", default=None, help="run directory name (default: the model's basename)")

    g = parser.add_argument_group("sampling")
    g.add_argument("--n", type=int, default=32, help="samples per problem")
    g.add_argument("--temperature", type=float, default=0.6)
    g.add_argument("--top-p", type=float, default=1.0)
    g.add_argument("--top-k", type=int, default=-1, help="-1 disables top-k")
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=16384,
        help="new tokens per sample; capped, with a warning, to what the model's context leaves after the longest "
        "prompt",
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--k", type=_int_list, default=(1, 32), help="pass@k values (those > n are skipped)")

    g = parser.add_argument_group("prompting")
    g.add_argument(
        "--prompt-style",
        choices=PROMPT_STYLES,
        default="instruct",
        help="instruct: append MASA's training instruction (step by step, answer in \\boxed{}); raw: the bare "
        "problem, as the authors' evaluation did",
    )
    g.add_argument("--no-chat-template", dest="chat_template", action="store_false", help="prompt with plain text")
    g.add_argument("--system-prompt", default=None)

    g = parser.add_argument_group("scoring")
    g.add_argument(
        "--scorers",
        default="math_verify",
        help="comma-separated scorers, the first one primary: math_verify (robust, default) and/or paper (the "
        "authors' grader semantics)",
    )
    g.add_argument("--scorer-timeout", type=float, default=None, help="seconds per check (math_verify 5, paper 1)")
    g.add_argument(
        "--code-timeout",
        type=_positive_seconds,
        default=DEFAULT_CODE_TIMEOUT_S,
        metavar="SECONDS",
        help="seconds per sandboxed program of the coding sets",
    )
    g.add_argument(
        "--paper-protocol",
        action="store_true",
        help="reproduce the authors' protocol: raw prompts, the paper scorer first, GPQA options in their order",
    )

    g = parser.add_argument_group("data")
    g.add_argument(
        "--fixtures", action="store_true", help="use the bundled self-written fixture items (offline smoke test)"
    )
    g.add_argument(
        "--data-file",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="a local .jsonl/.json/.csv/.parquet file: NAME=PATH with a known benchmark NAME replaces its Hub source "
        "(same columns); otherwise a custom benchmark (named NAME or after the file) read with the column options "
        "below. Repeatable.",
    )
    g.add_argument("--problem-column", default="problem", help="problem column of custom --data-file sets")
    g.add_argument("--answer-column", default="answer", help="answer column of custom --data-file sets")
    g.add_argument("--id-column", default=None, help="id column of custom --data-file sets (default: row index)")
    g.add_argument("--answer-format", choices=ANSWER_FORMATS[:-1], default="string", help="answer normalisation")
    g.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    g.add_argument(
        "--gpqa-shuffle",
        choices=GPQA_SHUFFLES,
        default="item",
        help="GPQA option order: item (shuffled per item, seeded by its id) or paper (the authors' loader: every "
        "correct answer at D)",
    )

    g = parser.add_argument_group("backend")
    g.add_argument("--backend", choices=("auto", "vllm", "transformers"), default="auto", help="auto: vLLM on GPU")
    g.add_argument("--tensor-parallel-size", "--tp", type=int, default=1)
    g.add_argument("--dtype", default="auto", help="auto: bfloat16 on GPU, float32 on CPU")
    g.add_argument("--max-model-len", type=int, default=None, help="vLLM context length (the authors used 20000)")
    g.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    g.add_argument("--batch-size", type=int, default=16, help="sequences per forward pass (transformers)")
    g.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="problems per generation call; records are flushed after each (default: batch-size / n for "
        "transformers, 64 for vLLM)",
    )
    g.add_argument("--trust-remote-code", action="store_true")

    g = parser.add_argument_group("meta-awareness")
    g.add_argument("--meta", action="store_true", help="evaluate meta predictions against the measured outcomes")
    g.add_argument("--meta-n", type=int, default=4, help="meta answers per problem")
    g.add_argument("--meta-max-new-tokens", type=int, default=2048)
    g.add_argument("--meta-temperature", type=float, default=None, help="default: --temperature")
    g.add_argument("--meta-max-length", type=int, default=8192, help="length range stated in the meta prompt")
    g.add_argument("--pass-rate-scale", type=int, default=8, help="pass rates are predicted as k / scale")
    g.add_argument("--notion-feedin", action="store_true", help="append the predicted notions to each solution prompt")
    g.add_argument("--no-plot", dest="plot", action="store_false", help="skip the meta-awareness PNG plots")

    g = parser.add_argument_group("run")
    g.add_argument("--compare", nargs="+", default=[], metavar="RUN", help="earlier runs to put in the table")
    g.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    g.add_argument("--overwrite", action="store_true", help="discard the records of an earlier run of this name")
    g.add_argument("-v", "--verbose", action="store_true", help="log progress details; show tracebacks of errors")
    return parser


def _data_files(args) -> tuple[dict[str, str], list]:
    overrides, custom = {}, []
    for item in args.data_file:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = None, item
        if name:
            try:
                overrides[get_benchmark(name).name] = path
                continue
            except BenchmarkError:
                pass
        custom.append(
            local_benchmark(
                path,
                name=name,
                problem_column=args.problem_column,
                answer_column=args.answer_column,
                id_column=args.id_column,
                answer_format=args.answer_format,
            )
        )
    return overrides, custom


def run_main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    from evaluation.report import load_summary, render_report
    from evaluation.runner import EvalConfig, run_evaluation

    overrides, custom = _data_files(args)
    benchmarks = args.benchmarks
    if benchmarks is None:
        benchmarks = [] if (overrides or custom) else "math"
    scorers = tuple(s.strip() for s in args.scorers.split(",") if s.strip())
    prompt_style, gpqa_shuffle = args.prompt_style, args.gpqa_shuffle
    if args.paper_protocol:
        prompt_style, gpqa_shuffle = "raw", "paper"
        scorers = ("paper", *[s for s in scorers if s not in ("paper", "masa_compat", "compat")])
    config = EvalConfig(
        model=args.model,
        benchmarks=benchmarks,
        output_dir=args.output_dir,
        run_name=args.run_name,
        n=args.n,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
        ks=args.k,
        prompt_style=prompt_style,
        chat_template=args.chat_template,
        system_prompt=args.system_prompt,
        scorers=scorers,
        scorer_timeout=args.scorer_timeout,
        code_timeout=args.code_timeout,
        data_source="fixtures" if args.fixtures else "auto",
        data_files=overrides,
        custom_benchmarks=custom,
        limit=args.limit,
        gpqa_shuffle=gpqa_shuffle,
        backend=args.backend,
        tensor_parallel_size=args.tensor_parallel_size,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        batch_size=args.batch_size,
        chunk_size=args.chunk_size,
        trust_remote_code=args.trust_remote_code,
        meta=args.meta,
        meta_n=args.meta_n,
        meta_max_new_tokens=args.meta_max_new_tokens,
        meta_temperature=args.meta_temperature,
        meta_max_length=args.meta_max_length,
        pass_rate_scale=args.pass_rate_scale,
        notion_feedin=args.notion_feedin,
        plot=args.plot,
        progress=args.progress,
        overwrite=args.overwrite,
    )
    others = [load_summary(path) for path in args.compare]
    summary = run_evaluation(config)
    report = render_report(summary, others=others)
    if others:
        (config.run_dir / "results.md").write_text(report, encoding="utf-8")
    print(report)
    print(f"Run directory: {config.run_dir} (summary.json, results.md, records/)")
    return 0


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="masa-eval compare", description="Table 1-style Markdown comparing runs (the first is the baseline)."
    )
    parser.add_argument("runs", nargs="+", help="run directories or summary.json files")
    parser.add_argument("--scorer", default=None, help="scorer to report (default: the first run's primary)")
    parser.add_argument("--names", default=None, help="comma-separated row names (default: run names)")
    parser.add_argument("--metrics", default=None, help="e.g. pass@1,pass@32 (default: all available)")
    parser.add_argument("--output", default=None, help="also write the table to this file")
    args = parser.parse_args(argv)
    from evaluation.report import describe_runs, load_summary, markdown_table, ood_markdown_table

    summaries = [load_summary(path) for path in args.runs]
    names = args.names.split(",") if args.names else None
    if names and len(names) != len(summaries):
        parser.error(f"{len(names)} names for {len(summaries)} runs")
    metrics = args.metrics.split(",") if args.metrics else None
    table = markdown_table(summaries, scorer=args.scorer, metrics=metrics, names=names)
    text = describe_runs(summaries, args.scorer, names=names) + "\n\n" + table
    ood = ood_markdown_table(summaries, scorer=args.scorer, names=names)  # table 2's layout, when there are OOD sets
    if ood is not None:
        text += "\nOut-of-domain (table 2 layout):\n\n" + ood
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    print(text)
    return 0


def list_main(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="masa-eval list", description="List the known benchmarks.").parse_args(argv)
    print("| Name | Hub id | Config | Split | Problem column | Answer column | Answer format | Aliases |")
    print("|---|---|---|---|---|---|---|---|")
    for spec in BENCHMARKS.values():
        print(
            f"| {spec.name} | {spec.hf_id} | {spec.config or ''} | {spec.split} | {spec.problem_column} | "
            f"{spec.answer_column} | {spec.answer_format} | {', '.join(spec.aliases)} |"
        )
    print("\nGroups: " + "; ".join(f"{g} = {','.join(m)}" for g, m in BENCHMARK_GROUPS.items()))
    return 0


COMMANDS = {"compare": compare_main, "list": list_main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = COMMANDS.get(argv[0]) if argv else None
    try:
        if command is not None:
            return command(argv[1:])
        return run_main(argv)
    except (BenchmarkError, ResumeMismatchError, FileNotFoundError, ImportError, ValueError) as err:
        if "-v" in argv or "--verbose" in argv:
            raise
        print(f"masa-eval: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
