"""`--dry_run` for the recipes: check a run's setup in seconds on a CPU, print its batch layout, and exit.

A dry run constructs the config (which runs every `MASAConfig` / `GRPOConfig` check), loads only the tokenizer and
the model config (no weights), reads a few rows of the dataset to check its columns, renders one solution prompt and
one meta prompt through the chat template, and prints the batch layout the run would have on its training
processes. It never contacts a vLLM server. Every problem it finds is reported with the setting to change, and the
dry run then exits with status 1 ([`DryRunError`] is a `SystemExit`).

    python recipes/masa_qwen3_8b.py --dry_run
    python recipes/masa_qwen3_8b.py --dry_run --dry_run_num_processes 8 --gradient_accumulation_steps 128
"""

import importlib.util
import logging
import sys
from dataclasses import dataclass, field

import torch
from datasets import disable_progress_bars
from transformers import AutoConfig, AutoTokenizer

from masa_trl.data import (
    ProblemDataArguments,
    load_problem_dataset,
    meta_prompt_kwargs,
    prompt_lengths,
    render_prompt,
)
from masa_trl.masa_config import MASAConfig
from masa_trl.templates import meta_prompt, solution_prompt


logger = logging.getLogger(__name__)


@dataclass
class DryRunArguments:
    r"""
    Parameters:
        dry_run (`bool`, *optional*, defaults to `False`):
            Check the config, the dataset columns, the chat template and the batch arithmetic, print the batch
            layout, and exit without loading weights, contacting a vLLM server or training.
        dry_run_num_processes (`int` or `None`, *optional*, defaults to `None`):
            Number of training processes to lay the batch out for in a dry run. `None`: the processes of this
            launch. Recipes default it to the layout they are written for.
        dry_run_num_rows (`int`, *optional*, defaults to `8`):
            Dataset rows a dry run reads (streaming, so a Hub dataset is not downloaded whole).
    """

    dry_run: bool = field(
        default=False,
        metadata={"help": "Check config, data, chat template and batch layout in seconds on a CPU, then exit."},
    )
    dry_run_num_processes: int | None = field(
        default=None,
        metadata={"help": "Training processes to lay the batch out for in a dry run (default: the recipe's layout)."},
    )
    dry_run_num_rows: int = field(default=8, metadata={"help": "Dataset rows a dry run reads."})


class DryRunError(SystemExit):
    """The dry run found problems; the message lists them, each with the setting to change. Exits with status 1."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        listing = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(f"Dry run failed, {len(problems)} problem(s):\n{listing}")


def parse_recipe_args(parser, args: list[str] | None = None) -> tuple:
    """
    `parser.parse_args_and_config(args)` (command line and `--config` YAML, unknown keys rejected), with two
    conveniences for `--dry_run`: on a machine without a GPU the config is built with `use_cpu=True` (a bf16 GPU
    config cannot be constructed on a CPU otherwise; nothing else changes), and an invalid config is reported as a
    [`DryRunError`] instead of a traceback. Without `--dry_run`, an unknown flag or YAML key of a
    [`~masa_trl.recipe_parser.RecipeParser`] is an argparse error (usage, the nearest settings, exit status 2).
    """
    from trl import TrlParser

    from masa_trl.recipe_parser import UnknownSettingError, split_config_flag

    args = split_config_flag(sys.argv[1:] if args is None else args)
    pre_parser = TrlParser(DryRunArguments, add_help=False, allow_abbrev=False)  # `--help` is the recipe parser's
    pre, _ = pre_parser.parse_args_and_config(args, return_remaining_strings=True)
    if not pre.dry_run:
        try:
            return parser.parse_args_and_config(args)
        except UnknownSettingError as error:
            parser.error(str(error))
    if not torch.cuda.is_available():
        parser.set_defaults(use_cpu=True)
    try:
        return parser.parse_args_and_config(args)
    except ValueError as error:
        raise DryRunError([f"invalid configuration: {error}"]) from error


PEFT_INSTALL = "pip install 'masa-trl[peft]'"


def peft_problem(model_args) -> str | None:
    """Why the LoRA run that `model_args` (a `trl.ModelConfig`) asks for cannot start, or `None`."""
    if not getattr(model_args, "use_peft", False):
        return None
    if importlib.util.find_spec("peft") is None:
        return (
            f"--use_peft is set but the peft package is not installed: {PEFT_INSTALL} (or pip install peft), or "
            "remove --use_peft."
        )
    return None


def require_peft(model_args) -> None:
    """Raise `ImportError` before anything is loaded when `model_args.use_peft` is set and peft is missing."""
    problem = peft_problem(model_args)
    if problem is not None:
        raise ImportError(problem)


@dataclass
class BatchLayout:
    """How one generation (one training step) is laid out over the training processes."""

    num_processes: int
    num_generations: int
    num_meta_generations: int  # 0 for GRPO / DAPO
    prompts_per_step: float
    solution_rows_per_process: int
    meta_rows_per_process: float
    steps_per_generation: int
    gradient_accumulation_steps: int
    num_iterations: int
    dynamic_sampling_max_rounds: int = 0  # 0: no dynamic sampling

    @property
    def rows_per_micro_batch(self) -> float:
        return (self.solution_rows_per_process + self.meta_rows_per_process) / self.steps_per_generation

    @property
    def optimizer_steps_per_generation(self) -> float:
        return self.steps_per_generation * self.num_iterations / self.gradient_accumulation_steps

    def lines(self) -> list[str]:
        solution_rows = self.solution_rows_per_process * self.num_processes
        rows = [
            ("training processes", f"{self.num_processes}"),
            ("prompts per step", f"{self.prompts_per_step:g}"),
            ("solution rollouts per step", f"{solution_rows} (G = {self.num_generations} per prompt)"),
        ]
        if self.num_meta_generations:
            meta_rows = self.meta_rows_per_process * self.num_processes
            rows.append(("meta rollouts per step", f"{meta_rows:g} (M = {self.num_meta_generations} per prompt)"))
            per_process = f"{self.solution_rows_per_process} solution + {self.meta_rows_per_process:g} meta"
        else:
            per_process = f"{self.solution_rows_per_process} solution"
        rows += [
            ("rows per process per step", per_process),
            ("rows per micro-batch", f"{self.rows_per_micro_batch:g} per process"),
            ("micro-batches per step", f"{self.steps_per_generation * self.num_iterations} per process"),
            ("gradient accumulation", f"{self.gradient_accumulation_steps} micro-batches per optimizer step"),
            ("optimizer steps per step", f"{self.optimizer_steps_per_generation:g}"),
        ]
        if self.dynamic_sampling_max_rounds:
            # Each round generates one generation batch; the worst case runs all rounds.
            rows += [
                ("dynamic sampling", f"generation batch {self.prompts_per_step:g} prompts per round"),
                (
                    "worst case per step",
                    (
                        f"{self.dynamic_sampling_max_rounds} rounds = "
                        f"{self.dynamic_sampling_max_rounds * self.prompts_per_step:g} prompts generated at most"
                    ),
                ),
            ]
        return [f"  {name:28s} {value}" for name, value in rows]


def batch_layout(args, num_processes: int) -> BatchLayout:
    """The layout of `args` (a `GRPOConfig` or `MASAConfig`) on `num_processes` training processes."""
    local = args.per_device_train_batch_size * args.steps_per_generation
    meta = args.num_meta_generations if isinstance(args, MASAConfig) else 0
    return BatchLayout(
        num_processes=num_processes,
        num_generations=args.num_generations,
        num_meta_generations=meta,
        prompts_per_step=local * num_processes / args.num_generations,
        solution_rows_per_process=local,
        meta_rows_per_process=local * meta / args.num_generations,
        steps_per_generation=args.steps_per_generation,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        num_iterations=args.num_iterations,
        dynamic_sampling_max_rounds=args.dynamic_sampling_max_rounds
        if getattr(args, "dynamic_sampling", False)
        else 0,
    )


def check_layout(layout: BatchLayout, expected_prompts_per_step: int | None = None) -> tuple[list[str], list[str]]:
    """Problems (errors) and warnings of a layout, each naming the setting to change."""
    errors, warnings = [], []
    solution_rows = layout.solution_rows_per_process * layout.num_processes
    if solution_rows % layout.num_generations:
        errors.append(
            f"{layout.num_processes} processes x per_device_train_batch_size x steps_per_generation = {solution_rows} "
            f"solution rollouts per step is not a multiple of num_generations={layout.num_generations}: set "
            "--per_device_train_batch_size or --gradient_accumulation_steps so that it is."
        )
    if layout.optimizer_steps_per_generation != int(layout.optimizer_steps_per_generation):
        warnings.append(
            f"steps_per_generation x num_iterations = {layout.steps_per_generation * layout.num_iterations} is not a "
            f"multiple of gradient_accumulation_steps={layout.gradient_accumulation_steps}, so optimizer steps "
            "straddle generations; set --gradient_accumulation_steps to a divisor of it."
        )
    if expected_prompts_per_step is not None and layout.prompts_per_step != expected_prompts_per_step:
        rows = expected_prompts_per_step * layout.num_generations
        per_device = layout.solution_rows_per_process // layout.steps_per_generation
        steps = rows / (layout.num_processes * per_device)
        flag = (
            "--gradient_accumulation_steps"
            if layout.steps_per_generation == layout.gradient_accumulation_steps
            else "--steps_per_generation"
        )
        fix = f"{flag} {steps:g}" if steps == int(steps) else f"--per_device_train_batch_size and {flag}"
        warnings.append(
            f"{layout.prompts_per_step:g} prompts per step on {layout.num_processes} training processes, where the "
            f"recipe (the paper) uses {expected_prompts_per_step}: set {fix}, or change the number of processes."
        )
    return errors, warnings


def num_training_processes(args, requested: int | None) -> int:
    return requested if requested is not None else args.world_size


def print_layout(args, num_processes: int, expected_prompts_per_step: int | None = None) -> BatchLayout:
    """Print the batch layout of a run that is starting (main process) and warn about a prompts-per-step mismatch."""
    layout = batch_layout(args, num_processes)
    if args.process_index == 0:
        print("Batch layout:\n" + "\n".join(layout.lines()))
    _, warnings = check_layout(layout, expected_prompts_per_step)
    for warning in warnings:
        logger.warning(warning)
    return layout


def _lora_line(model_args, errors: list[str]) -> str:
    """The dry run's line on the LoRA config of `model_args`; a config that cannot be built goes to `errors`."""
    from importlib.metadata import version

    from trl import get_peft_config

    try:
        config = get_peft_config(model_args)
    except (TypeError, ValueError) as error:
        errors.append(f"LoRA: the adapter config cannot be built ({error}): check the --lora_* settings.")
        return "[error] LoRA: invalid adapter config"
    targets = config.target_modules
    if not targets:
        targets = "PEFT's default for the architecture"
    elif not isinstance(targets, str):
        targets = ", ".join(sorted(targets))
    return (
        f"[ok] LoRA (peft {version('peft')}): r={config.r}, alpha={config.lora_alpha}, dropout={config.lora_dropout}, "
        f"target modules {targets}; the RL update and expert BC train the adapter only, the base weights stay frozen"
    )


@dataclass
class DryRunReport:
    layout: BatchLayout
    solution_prompt: str | None = None
    meta_prompt: str | None = None
    solution_prompt_lengths: list[int] = field(default_factory=list)
    meta_prompt_lengths: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run_dry_run(
    training_args,
    data_args: ProblemDataArguments,
    dry_run_args: DryRunArguments,
    *,
    model_name_or_path: str | None,
    model_revision: str | None = None,
    meta_kwargs: dict | None = None,
    rows=None,
    expected_prompts_per_step: int | None = None,
    reward_names: list[str] | None = None,
    model_args=None,
) -> DryRunReport:
    """
    Check a recipe's setup without loading weights or contacting a server, print what was checked and the batch
    layout, and return a [`DryRunReport`]. Raises [`DryRunError`] listing every problem found.

    Args:
        training_args (`MASAConfig` or `GRPOConfig`):
            The run's config, already validated by its construction. With a `MASAConfig` the meta prompt is
            checked too.
        data_args ([`~masa_trl.data.ProblemDataArguments`]):
            The dataset, its columns and `max_prompt_length`.
        dry_run_args ([`DryRunArguments`]):
            Rows to read and the number of training processes to lay the batch out for.
        model_name_or_path (`str`):
            The model whose config and tokenizer are loaded (no weights).
        model_revision (`str`, *optional*):
            Its revision.
        meta_kwargs (`dict`, *optional*):
            Meta prompt arguments to measure prompt lengths with; default: the trainer's for a `MASAConfig`, none
            otherwise. The baselines pass MASA's, as their prompt filter does.
        rows ([`~datasets.Dataset`], *optional*):
            Rows to check instead of reading `data_args.dataset_name` (a recipe's generated dataset).
        expected_prompts_per_step (`int`, *optional*):
            The recipe's prompts per step (the paper's 128); a different layout is reported as a warning.
        reward_names (`list[str]`, *optional*):
            Names of the solution reward functions, printed.
        model_args (`trl.ModelConfig`, *optional*):
            The model arguments; with `use_peft` set, the dry run checks that peft is installed and that the LoRA
            config can be built, and prints it.
    """
    is_masa = isinstance(training_args, MASAConfig)
    disable_progress_bars()  # a dry run reads a handful of rows
    errors, warnings = [], []
    out = [
        "",
        f"Dry run ({'MASA' if is_masa else 'GRPO'}): nothing is trained, no weights are loaded, no server is contacted.",
    ]

    # Config: constructing it already ran every MASAConfig / GRPOConfig check.
    out.append(f"[ok] config: {type(training_args).__name__} is valid (output_dir={training_args.output_dir})")

    # Model: config and tokenizer only.
    model_name = model_name_or_path
    tokenizer = model_config = None
    if model_name is None:
        errors.append("no model: set --model_name_or_path.")
    else:
        try:
            model_config = AutoConfig.from_pretrained(model_name, revision=model_revision)
            tokenizer = AutoTokenizer.from_pretrained(model_name, revision=model_revision)
        except (OSError, ValueError) as error:
            errors.append(
                f"cannot load the config and tokenizer of {model_name!r} ({error}). Set --model_name_or_path to a "
                "Hub model id (with network access) or a local directory."
            )
    if tokenizer is not None:
        num_errors = len(errors)
        if tokenizer.chat_template is None:
            errors.append(
                f"the tokenizer of {model_name!r} has no chat template, which the solution and meta prompts need. Set "
                "--model_name_or_path to a model whose tokenizer has one (Qwen3 base models do)."
            )
        context = getattr(model_config, "max_position_embeddings", None)
        needed = (data_args.max_prompt_length or 0) + training_args.max_completion_length
        if context is not None and needed > context:
            errors.append(
                f"max_prompt_length ({data_args.max_prompt_length}) + max_completion_length "
                f"({training_args.max_completion_length}) = {needed} tokens exceeds the {context}-token context of "
                f"{model_name!r}: lower --max_completion_length or --max_prompt_length."
            )
        status = "ok" if len(errors) == num_errors else "error"
        out.append(
            f"[{status}] model: {model_name} ({model_config.model_type}, context {context}); config and tokenizer "
            f"loaded, no weights; chat template {'present' if tokenizer.chat_template else 'missing'}"
        )

    # LoRA: peft installed, the adapter config buildable.
    if model_args is not None and getattr(model_args, "use_peft", False):
        problem = peft_problem(model_args)
        if problem is not None:
            errors.append(problem)
            out.append(f"[error] LoRA: --use_peft is set, but peft is not installed ({PEFT_INSTALL})")
        else:
            out.append(_lora_line(model_args, errors))

    # Dataset: a few rows, their columns, and the rendered prompts.
    if rows is not None:
        rows = rows.select(range(min(dry_run_args.dry_run_num_rows, len(rows))))
        out.append(f"[ok] dataset: generated by the recipe ({len(rows)} rows read)")
    else:
        try:
            rows = load_problem_dataset(
                data_args.dataset_name,
                data_args.dataset_train_split,
                data_args.problem_column,
                data_args.answer_column,
                config_name=data_args.dataset_config,
                num_rows=dry_run_args.dry_run_num_rows,
            )
            out.append(
                f"[ok] dataset: {data_args.dataset_name} [{data_args.dataset_train_split}], problem <- "
                f"{data_args.problem_column!r}, answer <- {data_args.answer_column!r} ({len(rows)} rows read)"
            )
        except (OSError, ValueError) as error:
            errors.append(f"dataset: {error}")

    report = DryRunReport(layout=batch_layout(training_args, 1))
    if rows is not None and tokenizer is not None and tokenizer.chat_template is not None:
        kwargs = training_args.chat_template_kwargs
        if meta_kwargs is None and is_masa:
            meta_kwargs = meta_prompt_kwargs(training_args)
        report.solution_prompt = render_prompt(tokenizer, solution_prompt(rows[0]["problem"]), kwargs)
        if is_masa:
            report.meta_prompt = render_prompt(tokenizer, meta_prompt(rows[0]["problem"], **meta_kwargs), kwargs)
        solution_lengths, meta_lengths = prompt_lengths(
            tokenizer, rows["problem"], meta_kwargs=meta_kwargs, chat_template_kwargs=kwargs
        )
        report.solution_prompt_lengths, report.meta_prompt_lengths = solution_lengths, meta_lengths or []
        longest = [("solution", max(solution_lengths))] + ([("meta", max(meta_lengths))] if meta_lengths else [])
        limit = data_args.max_prompt_length
        too_long = (
            0
            if limit is None
            else sum(n > limit for n in map(max, zip(solution_lengths, meta_lengths or solution_lengths, strict=True)))
        )
        summary = ", ".join(f"{kind} prompt up to {n} tokens" for kind, n in longest)
        out.append(
            f"[ok] prompts: {summary} (max_prompt_length {limit}; {too_long} of {len(rows)} rows read would be dropped)"
        )
        if limit is not None and too_long == len(rows):
            errors.append(
                f"every row read has a prompt longer than max_prompt_length={limit} tokens: raise --max_prompt_length."
            )
        out += ["--- solution prompt, rendered ---", report.solution_prompt]
        if report.meta_prompt is not None:
            out += ["--- meta prompt, rendered ---", report.meta_prompt]
        out.append("---")

    # Rewards, generation, and the MASA extras.
    if reward_names:
        out.append(f"[ok] solution rewards: {', '.join(reward_names)}")
    if training_args.use_vllm and training_args.vllm_mode == "server":
        url = training_args.vllm_server_base_url or (
            f"http://{training_args.vllm_server_host}:{training_args.vllm_server_port}"
        )
        out.append(
            f"[..] generation: vLLM server at {url} (not contacted); start it with `trl vllm-serve --model "
            f"{model_name} --max_model_len {(data_args.max_prompt_length or 0) + training_args.max_completion_length}`"
        )
    elif training_args.use_vllm:
        out.append(f"[..] generation: vLLM colocated, tensor parallel {training_args.vllm_tensor_parallel_size}")
    else:
        out.append("[..] generation: transformers generate (no vLLM)")
    trackers = [name for name in training_args.report_to if name != "none"]
    out.append(f"[..] tracking: {', '.join(trackers) or 'none'} (set --report_to wandb, trackio or tensorboard)")
    if is_masa and training_args.use_expert_bc:
        out.append(
            f"[..] expert BC: every {training_args.expert_buffer_size} experts, {training_args.expert_bc_steps} steps "
            f"at lr {training_args.expert_bc_learning_rate:g}"
        )
    if is_masa and training_args.efficient_start_step is not None:
        out.append(
            f"[..] MASA-efficient from step {training_args.efficient_start_step}: gating below pass-rate std "
            f"{training_args.gating_std_threshold:g}, cutoff at {training_args.cutoff_factor} x predicted length, "
            f"notion hint {training_args.notion_hint}"
        )

    # Batch arithmetic on the training processes.
    num_processes = num_training_processes(training_args, dry_run_args.dry_run_num_processes)
    report.layout = batch_layout(training_args, num_processes)
    layout_errors, warnings = check_layout(report.layout, expected_prompts_per_step)
    errors += layout_errors
    report.warnings = warnings
    out.append("Batch layout:")
    out += report.layout.lines()
    out += [f"[warning] {warning}" for warning in warnings]

    print("\n".join(out))
    if errors:
        raise DryRunError(errors)
    print("Dry run OK.")
    return report
