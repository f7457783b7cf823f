"""Problem/answer datasets for the recipes: DeepScaleR or any dataset with a problem and an answer column.

[`load_problem_dataset`] reads a dataset from the Hugging Face Hub or from a local JSON, JSONL, CSV or parquet file
(or a folder of them) and returns it with exactly two string columns, `problem` and `answer`, the columns
[`~masa_trl.MASAGRPOTrainer`] and [`~masa_trl.math_reward.math_accuracy_reward`] read. [`filter_long_prompts`] drops
the problems whose rendered prompts exceed a token budget: TRL 1.16 no longer truncates prompts, so an overlong
prompt would otherwise go to the model whole.

>>> dataset = load_problem_dataset("train.jsonl", problem_column="question", answer_column="final")  # doctest: +SKIP
>>> dataset.column_names  # doctest: +SKIP
['problem', 'answer']
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from datasets import Dataset, Features, Value, load_dataset

from masa_trl.templates import META_PROMPT_TEMPLATE, meta_prompt, solution_prompt


logger = logging.getLogger(__name__)

DEEPSCALER = "agentica-org/DeepScaleR-Preview-Dataset"

# Builders of `datasets.load_dataset` for local files, by extension.
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class ProblemDataArguments:
    r"""
    Where the training problems come from, and which prompts are too long to train on.

    Parameters:
        dataset_name (`str` or `None`, *optional*, defaults to `"agentica-org/DeepScaleR-Preview-Dataset"`):
            A dataset on the Hugging Face Hub, or a local `.json`, `.jsonl`, `.csv` or `.parquet` file, or a local
            folder of such files. `None` only in recipes that generate their own problems (`masa_tiny_cpu.py`).
        dataset_config (`str` or `None`, *optional*, defaults to `None`):
            Configuration (subset) name of a Hub dataset.
        dataset_train_split (`str`, *optional*, defaults to `"train"`):
            Split to train on.
        problem_column (`str`, *optional*, defaults to `"problem"`):
            Column holding the problem text.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            Column holding the gold answer.
        max_prompt_length (`int` or `None`, *optional*, defaults to `2048`):
            Problems whose solution prompt or meta prompt, rendered through the chat template, has more tokens are
            dropped (with a logged count). The authors' value. `None` keeps every problem.
        max_train_samples (`int` or `None`, *optional*, defaults to `None`):
            Keep only the first this many problems (after filtering), e.g. for a short trial run.
    """

    dataset_name: str | None = field(
        default=DEEPSCALER,
        metadata={"help": "Hub dataset id, or a local .json/.jsonl/.csv/.parquet file or folder."},
    )
    dataset_config: str | None = field(default=None, metadata={"help": "Configuration name of a Hub dataset."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    problem_column: str = field(default="problem", metadata={"help": "Column holding the problem text."})
    answer_column: str = field(default="answer", metadata={"help": "Column holding the gold answer."})
    max_prompt_length: int | None = field(
        default=2048,
        metadata={"help": "Drop problems whose solution or meta prompt has more tokens than this (None: keep all)."},
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep only the first this many problems (after filtering)."}
    )


def load_problem_dataset(
    name_or_path: str,
    split: str = "train",
    problem_column: str = "problem",
    answer_column: str = "answer",
    *,
    config_name: str | None = None,
    num_rows: int | None = None,
) -> Dataset:
    """
    Load a dataset of problems and gold answers, as a [`~datasets.Dataset`] with string columns `problem` and `answer`.

    Args:
        name_or_path (`str`):
            A Hub dataset id (e.g. `"agentica-org/DeepScaleR-Preview-Dataset"`), or the path of a local `.json`,
            `.jsonl`, `.csv` or `.parquet` file, or of a local folder that `datasets.load_dataset` can read.
        split (`str`, *optional*, defaults to `"train"`):
            Split to load. A single local file is that split.
        problem_column (`str`, *optional*, defaults to `"problem"`):
            Column holding the problem text; renamed to `problem`.
        answer_column (`str`, *optional*, defaults to `"answer"`):
            Column holding the gold answer; renamed to `answer` and converted to a string.
        config_name (`str` or `None`, *optional*, defaults to `None`):
            Configuration name of a Hub dataset.
        num_rows (`int` or `None`, *optional*, defaults to `None`):
            Read only the first `num_rows` rows, streaming, so that a check does not download a whole dataset.

    Returns:
        [`~datasets.Dataset`]: columns `problem` and `answer` only. Rows with an empty problem or answer are dropped
        (with a logged count).
    """
    path = Path(name_or_path).expanduser()
    streaming = num_rows is not None
    if path.is_file():
        builder = _FILE_BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise ValueError(
                f"Cannot read {path}: unknown extension {path.suffix!r}. Give --dataset_name a "
                f"{', '.join(_FILE_BUILDERS)} file, a folder of them, or a Hub dataset id."
            )
        source = f"the local file {path}"
        dataset = load_dataset(builder, data_files={split: str(path)}, split=split, streaming=streaming)
    elif path.is_dir():
        source = f"the local folder {path}"
        dataset = load_dataset(str(path), config_name, split=split, streaming=streaming)
    elif path.suffix.lower() in _FILE_BUILDERS:
        raise FileNotFoundError(f"No such file: {path}. Check --dataset_name (a local file or a Hub dataset id).")
    else:
        source = f"the Hugging Face Hub dataset {name_or_path!r}"
        try:
            dataset = load_dataset(name_or_path, config_name, split=split, streaming=streaming)
        except (ConnectionError, OSError) as error:  # offline, unreachable, or no such repository
            raise ValueError(
                f"Could not load {source} (split {split!r}): {error}\nIf the machine has no network access (or "
                "HF_HUB_OFFLINE=1 is set), download the dataset first on a machine that has, e.g. `hf download "
                f"--repo-type dataset {name_or_path} --local-dir data/`, and pass the local file or folder with "
                "--dataset_name."
            ) from error
    if streaming:
        dataset = Dataset.from_list(list(dataset.take(num_rows)))

    columns = dataset.column_names
    for flag, column in (("--problem_column", problem_column), ("--answer_column", answer_column)):
        if column not in columns:
            raise ValueError(
                f"{source} has no column {column!r}; its columns are {sorted(columns)}. Set {flag} to the column "
                "that holds the " + ("problem text." if flag == "--problem_column" else "gold answer.")
            )
    dataset = dataset.map(
        lambda example: {
            "problem": _as_text(example[problem_column]),
            "answer": _as_text(example[answer_column]),
        },
        remove_columns=columns,
        features=Features({"problem": Value("string"), "answer": Value("string")}),
        desc="Selecting problem and answer",
    )
    num_loaded = len(dataset)
    dataset = dataset.filter(lambda example: bool(example["problem"] and example["answer"]), desc="Dropping empty")
    if len(dataset) < num_loaded:
        logger.warning(
            "Dropped %d of %d rows of %s with an empty problem or answer.",
            num_loaded - len(dataset),
            num_loaded,
            source,
        )
    if len(dataset) == 0:
        raise ValueError(f"{source} has no row with both a problem and an answer (split {split!r}).")
    return dataset


def _as_text(value) -> str:
    return "" if value is None else str(value).strip()


def meta_prompt_kwargs(args=None, **overrides) -> dict:
    """
    The keyword arguments of [`~masa_trl.templates.meta_prompt`] that [`~masa_trl.MASAGRPOTrainer`] uses for `args`.

    `args` is a [`~masa_trl.MASAConfig`]; without it (the GRPO and DAPO baselines, which filter prompts with the same
    rule as MASA so that all runs train on the same problems) the defaults of `MASAConfig` are used, with `overrides`
    (e.g. `max_length`) on top.
    """
    if args is None:
        from masa_trl.masa_config import MASAConfig

        args = SimpleNamespace(
            **{f.name: f.default for f in dataclasses.fields(MASAConfig) if f.default is not dataclasses.MISSING}
        )
        defaults = True
    else:
        defaults = False
    # The one place where the meta prompt's arguments are read from a config: the trainer calls this too.
    kwargs = dict(
        pass_rate_scale=args.pass_rate_scale,
        max_length=args.max_completion_length,
        min_length=args.meta_min_length,
        system_prompt=args.meta_system_prompt,
        template=args.meta_prompt_template or META_PROMPT_TEMPLATE,
    )
    kwargs.update(overrides)
    if defaults:  # MASAConfig would reject meta_min_length > max_completion_length; here just clamp it
        kwargs["min_length"] = min(kwargs["min_length"], kwargs["max_length"])
    return kwargs


def render_prompt(tokenizer, messages: list[dict], chat_template_kwargs: dict | None = None) -> str:
    """A conversational prompt rendered through the tokenizer's chat template, with the generation prompt."""
    return tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, **(chat_template_kwargs or {})
    )


def prompt_lengths(
    tokenizer,
    problems: list[str],
    *,
    meta_kwargs: dict | None = None,
    chat_template_kwargs: dict | None = None,
) -> tuple[list[int], list[int] | None]:
    """Token counts of the rendered solution prompts and, when `meta_kwargs` is given, of the meta prompts."""

    def count(conversations):
        texts = [render_prompt(tokenizer, messages, chat_template_kwargs) for messages in conversations]
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]

    solution = count([solution_prompt(problem) for problem in problems])
    meta = None if meta_kwargs is None else count([meta_prompt(problem, **meta_kwargs) for problem in problems])
    return solution, meta


def filter_long_prompts(
    dataset: Dataset,
    tokenizer,
    max_prompt_length: int | None,
    *,
    meta_kwargs: dict | None = None,
    chat_template_kwargs: dict | None = None,
) -> Dataset:
    """
    Drop the problems whose solution prompt, or meta prompt when `meta_kwargs` is given, exceeds `max_prompt_length`.

    Prompts are rendered through the chat template exactly as the trainer renders them. The meta prompt (the paper's
    appendix A) is a few hundred tokens longer than the solution prompt, so it is usually the binding one. The number
    of dropped problems is logged; `max_prompt_length=None` returns the dataset unchanged.
    """
    if max_prompt_length is None:
        return dataset

    def lengths(batch):
        solution, meta = prompt_lengths(
            tokenizer, batch["problem"], meta_kwargs=meta_kwargs, chat_template_kwargs=chat_template_kwargs
        )
        return {
            "_prompt_length": solution if meta is None else [max(s, m) for s, m in zip(solution, meta, strict=True)]
        }

    measured = dataset.map(lengths, batched=True, desc="Measuring prompt lengths")
    kept = measured.filter(lambda length: length <= max_prompt_length, input_columns="_prompt_length")
    kept = kept.remove_columns("_prompt_length")
    which = "solution or meta prompt" if meta_kwargs is not None else "solution prompt"
    dropped = len(dataset) - len(kept)
    (logger.warning if dropped else logger.info)(
        "Dropped %d of %d problems whose %s is longer than max_prompt_length=%d tokens; %d remain.",
        dropped,
        len(dataset),
        which,
        max_prompt_length,
        len(kept),
    )
    if len(kept) == 0:
        raise ValueError(
            f"Every one of the {len(dataset)} problems has a {which} longer than max_prompt_length="
            f"{max_prompt_length} tokens (the longest is {max(measured['_prompt_length'])}). Raise --max_prompt_length."
        )
    return kept


def prepare_problems(
    data_args: ProblemDataArguments,
    tokenizer,
    *,
    meta_kwargs: dict | None = None,
    chat_template_kwargs: dict | None = None,
) -> Dataset:
    """
    The recipes' training set: [`load_problem_dataset`] with `data_args`, then [`filter_long_prompts`] at
    `data_args.max_prompt_length`, then the first `data_args.max_train_samples` problems if set.
    """
    dataset = load_problem_dataset(
        data_args.dataset_name,
        data_args.dataset_train_split,
        data_args.problem_column,
        data_args.answer_column,
        config_name=data_args.dataset_config,
    )
    dataset = filter_long_prompts(
        dataset,
        tokenizer,
        data_args.max_prompt_length,
        meta_kwargs=meta_kwargs,
        chat_template_kwargs=chat_template_kwargs,
    )
    if data_args.max_train_samples is not None:
        dataset = dataset.select(range(min(data_args.max_train_samples, len(dataset))))
    return dataset


def hub_dataset_id(name_or_path: str) -> str | None:
    """`name_or_path` if it names a Hub dataset (for the model card's metadata), `None` for a local file or folder."""
    return None if Path(name_or_path).expanduser().exists() else name_or_path
