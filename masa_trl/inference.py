"""Meta predictions at inference: what a MASA-trained model says about a problem before solving it, and solution
generation that uses it.

- [`predict_meta`] samples M meta predictions per problem with the trainer's own meta prompt
  ([`~masa_trl.templates.meta_prompt`]) and parse rules ([`~masa_trl.meta.parse_meta_prediction`] with the prompt's
  length range), and summarises them in a [`MetaEstimate`]: parse rate, mean and spread of the predicted pass rate,
  median predicted length and the notions most predictions name ([`~masa_trl.efficient.hint_notions`]).
- [`generate_with_meta`] generates solutions the way MASA-efficient rolls them out in training: the predicted notions
  fed into the solution prompt (paper, appendix B; [`~masa_trl.templates.add_notion_hint`]) and a token budget of
  `cutoff_factor` x the median predicted length ([`~masa_trl.efficient.length_cap`]), so inference saves tokens as
  training does.
- [`MetaEstimate.from_completions`] aggregates meta completions sampled elsewhere (vLLM, a server) with the same rules;
  [`meta_kwargs_from_config`] and [`solution_kwargs_from_config`] read a run's settings from its [`MASAConfig`] (or a
  mapping of its fields), so the prompt, the parse range and the sampling match the training run.

Generation uses transformers `generate` on left-padded batches, under a forked RNG seeded from `seed` per batch: a
call neither depends on nor disturbs the global torch RNG, the same call on the same machine gives the same samples,
and a token budget only cuts samples short, never changes them (runs with and without budget are paired).

>>> from masa_trl.meta import MetaPrediction
>>> estimate = MetaEstimate.from_predictions(
...     "1+1", [MetaPrediction(("addition",), 0.75, 100), None, MetaPrediction(("addition", "parity"), 0.25, 300)]
... )
>>> round(estimate.parse_rate, 3), estimate.mean_pass_rate, estimate.std_pass_rate, estimate.median_length
(0.667, 0.5, 0.25, 200.0)
>>> estimate.notions, estimate.token_budget(cutoff_factor=2.0, max_new_tokens=1024)
(('addition', 'parity'), 400)
"""

import math
import random
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from masa_trl.efficient import hint_notions, length_cap
from masa_trl.meta import MetaPrediction, parse_meta_prediction
from masa_trl.templates import (
    DEFAULT_META_SYSTEM_PROMPT,
    META_PROMPT_TEMPLATE,
    add_notion_hint,
    meta_prompt,
    solution_prompt,
)


# Defaults of the MASAConfig fields read by the `*_from_config` helpers, for mappings that leave some out. Kept in
# sync with MASAConfig / GRPOConfig by a test, so that this module imports neither TRL nor transformers.
_CONFIG_DEFAULTS = {
    "pass_rate_scale": 8,
    "meta_min_length": 128,
    "max_completion_length": 512,
    "meta_system_prompt": DEFAULT_META_SYSTEM_PROMPT,
    "meta_prompt_template": None,
    "notion_hint": True,
    "notion_hint_max_notions": 3,
    "cutoff_factor": 2.0,
    "temperature": 1.0,
    "top_p": 1.0,
    "top_k": 0,
    "min_p": None,
    "repetition_penalty": 1.0,
    "generation_kwargs": None,
    "chat_template_kwargs": None,
}

_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "generation_kwargs")


# ---------------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class MetaEstimate:
    """
    The M meta predictions of one problem and their summary.

    Undefined statistics are NaN (no prediction parsed); the notions are then empty.

    Args:
        problem (`str`):
            The problem statement.
        predictions (`tuple[MetaPrediction | None, ...]`):
            One entry per meta sample, in sampling order; `None` where the sample did not parse.
        completions (`tuple[str, ...]`):
            The decoded meta completions (empty when the estimate was built from predictions). Left out of the repr.
        parse_rate (`float`):
            The share of the samples that parsed (NaN with no sample at all).
        mean_pass_rate (`float`):
            The mean predicted pass rate of the parsed samples, in 0..1 (`pass_rate / pass_rate_scale`).
        std_pass_rate (`float`):
            Their population standard deviation, on the same 0..1 scale, the spread MASA-efficient's gate uses (0.0
            with one parsed sample).
        median_length (`float`):
            The median predicted solution length in tokens (a half-integer when the middle two differ).
        notions (`tuple[str, ...]`):
            The notions named by the most parsed samples (at most `max_notions`, ties to the first named), the
            notion hint MASA-efficient would use.
        num_tokens (`tuple[int, ...]`, *optional*, defaults to `()`):
            The token count of each meta completion, EOS included (what the meta predictions cost); empty when not
            known. Left out of the repr.
    """

    problem: str
    predictions: tuple[MetaPrediction | None, ...]
    completions: tuple[str, ...] = field(repr=False)
    parse_rate: float
    mean_pass_rate: float
    std_pass_rate: float
    median_length: float
    notions: tuple[str, ...]
    num_tokens: tuple[int, ...] = field(default=(), repr=False)

    @classmethod
    def from_predictions(
        cls,
        problem: str,
        predictions: Sequence[MetaPrediction | None],
        *,
        max_notions: int = 3,
        completions: Sequence[str] = (),
        num_tokens: Sequence[int] = (),
    ) -> "MetaEstimate":
        """
        Summarise parsed meta predictions.

        Args:
            problem (`str`):
                The problem statement.
            predictions (`Sequence[MetaPrediction | None]`):
                One entry per meta sample; `None` for a sample that did not parse.
            max_notions (`int`, *optional*, defaults to `3`):
                The most notions kept in [`MetaEstimate.notions`] (MASAConfig's `notion_hint_max_notions`).
            completions (`Sequence[str]`, *optional*, defaults to `()`):
                The texts the predictions were parsed from, kept for inspection.
            num_tokens (`Sequence[int]`, *optional*, defaults to `()`):
                Their token counts, kept for cost accounting.

        Returns:
            [`MetaEstimate`]: The summary.
        """
        predictions = tuple(predictions)
        for prediction in predictions:
            if prediction is not None and not isinstance(prediction, MetaPrediction):
                raise TypeError(
                    f"`predictions` must hold MetaPrediction or None, got {type(prediction).__name__} for problem "
                    f"{_short(problem)}."
                )
        _check_int("max_notions", max_notions, minimum=0)
        parsed = [p for p in predictions if p is not None]
        rates = [p.pass_rate for p in parsed]
        return cls(
            problem=problem,
            predictions=predictions,
            completions=tuple(completions),
            parse_rate=len(parsed) / len(predictions) if predictions else math.nan,
            mean_pass_rate=statistics.fmean(rates) if rates else math.nan,
            std_pass_rate=statistics.pstdev(rates) if rates else math.nan,
            median_length=float(statistics.median(p.length for p in parsed)) if parsed else math.nan,
            notions=hint_notions(predictions, max_notions),
            num_tokens=tuple(num_tokens),
        )

    @classmethod
    def from_completions(
        cls,
        problem: str,
        completions: Sequence[str],
        *,
        pass_rate_scale: int = 8,
        min_length: int = 128,
        max_length: int = 8192,
        max_notions: int = 3,
        num_tokens: Sequence[int] = (),
    ) -> "MetaEstimate":
        """
        Parse meta completions with the trainer's rules and summarise them; for completions sampled elsewhere.

        Args:
            problem (`str`):
                The problem statement.
            completions (`Sequence[str]`):
                The meta completions (decoded texts) of the problem.
            pass_rate_scale (`int`, *optional*, defaults to `8`):
                The scale S of the meta prompt.
            min_length (`int`, *optional*, defaults to `128`):
                The shortest valid predicted length (MASAConfig's `meta_min_length`).
            max_length (`int`, *optional*, defaults to `8192`):
                The longest valid predicted length (the run's `max_completion_length`).
            max_notions (`int`, *optional*, defaults to `3`):
                The most notions kept in [`MetaEstimate.notions`].
            num_tokens (`Sequence[int]`, *optional*, defaults to `()`):
                The completions' token counts, kept for cost accounting.

        Returns:
            [`MetaEstimate`]: The summary; a completion outside the length range counts as unparsed, as in training.
        """
        if isinstance(completions, str):
            raise TypeError("`completions` must be a list of strings (the M samples of one problem), not a string.")
        predictions = [
            parse_meta_prediction(text, pass_rate_scale, max_length=max_length, min_length=min_length)
            for text in completions
        ]
        return cls.from_predictions(
            problem, predictions, max_notions=max_notions, completions=completions, num_tokens=num_tokens
        )

    @property
    def parsed(self) -> tuple[MetaPrediction, ...]:
        """The predictions that parsed."""
        return tuple(p for p in self.predictions if p is not None)

    def token_budget(self, cutoff_factor: float, max_new_tokens: int) -> int | None:
        """
        The solution token budget of MASA-efficient's cutoff: `ceil(cutoff_factor x median predicted length)`.

        Args:
            cutoff_factor (`float`):
                The multiple of the median predicted length (MASAConfig's `cutoff_factor`).
            max_new_tokens (`int`):
                The generation limit without a budget.

        Returns:
            `int` or `None`: The budget, or `None` (no budget) when nothing parsed or the budget is not below
            `max_new_tokens`.
        """
        _check_factor(cutoff_factor)
        _check_int("max_new_tokens", max_new_tokens)
        return length_cap(self.predictions, cutoff_factor, max_new_tokens)


@dataclass(frozen=True)
class MetaGuidedGeneration:
    """
    The solutions [`generate_with_meta`] wrote for one problem.

    Args:
        problem (`str`):
            The problem statement.
        prompt (`str` or `list[dict]`):
            The solution prompt the samples were generated from, notion hint included. Left out of the repr.
        texts (`tuple[str, ...]`):
            The decoded solutions, special tokens skipped.
        completion_ids (`tuple[tuple[int, ...], ...]`):
            Their token ids, EOS included when written. Left out of the repr.
        num_tokens (`tuple[int, ...]`):
            Their lengths in tokens, EOS included (as the trainer counts them).
        truncated (`tuple[bool, ...]`):
            Whether each sample stopped at the budget (or `max_new_tokens`) without writing EOS.
        budget (`int`):
            The most tokens a sample of this problem could write: the meta budget, or `max_new_tokens` without one.
        budgeted (`bool`):
            Whether `budget` came from the meta predictions (below `max_new_tokens`).
        notions (`tuple[str, ...]`):
            The notions fed into the prompt (empty: no hint).
        meta (`MetaEstimate` or `None`):
            The estimate used, `None` when none was needed.
    """

    problem: str
    prompt: str | list[dict] = field(repr=False)
    texts: tuple[str, ...]
    completion_ids: tuple[tuple[int, ...], ...] = field(repr=False)
    num_tokens: tuple[int, ...]
    truncated: tuple[bool, ...]
    budget: int
    budgeted: bool
    notions: tuple[str, ...]
    meta: MetaEstimate | None = field(repr=False)


# ---------------------------------------------------------------------------------------------------- settings
def _config_value(config, name: str):
    if isinstance(config, Mapping):
        return config.get(name, _CONFIG_DEFAULTS[name])
    return getattr(config, name, _CONFIG_DEFAULTS[name])


def _sampling_from_config(config) -> dict:
    kwargs = {key: _config_value(config, key) for key in _SAMPLING_KEYS}
    kwargs["chat_template_kwargs"] = _config_value(config, "chat_template_kwargs")
    return kwargs


def meta_kwargs_from_config(config) -> dict:
    """
    The keyword arguments of [`predict_meta`] that reproduce a training run's meta prompt, parse range and sampling.

    Args:
        config ([`MASAConfig`] or `Mapping`):
            The run's config, or a mapping of its fields (e.g. `masa_trl.demo.experiment.DEMO_DEFAULTS`); fields a
            mapping leaves out take MASAConfig's defaults, and other keys are ignored.

    Returns:
        `dict`: `pass_rate_scale`, `min_length`, `max_length`, `template`, `system_prompt`, `max_notions`, the
        sampling settings (`temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`, `generation_kwargs`) and
        `chat_template_kwargs`.

    Example:
        `predict_meta(model, tokenizer, problems, **meta_kwargs_from_config(trainer.args))`
    """
    return {
        "pass_rate_scale": _config_value(config, "pass_rate_scale"),
        "min_length": _config_value(config, "meta_min_length"),
        "max_length": _config_value(config, "max_completion_length"),
        "template": _config_value(config, "meta_prompt_template") or META_PROMPT_TEMPLATE,
        "system_prompt": _config_value(config, "meta_system_prompt"),
        "max_notions": _config_value(config, "notion_hint_max_notions"),
        **_sampling_from_config(config),
    }


def solution_kwargs_from_config(config) -> dict:
    """
    The keyword arguments of [`generate_with_meta`] that reproduce a run's MASA-efficient solution rollouts.

    Args:
        config ([`MASAConfig`] or `Mapping`):
            As in [`meta_kwargs_from_config`].

    Returns:
        `dict`: `notion_feed_in` (the run's `notion_hint`), `cutoff_factor`, `max_new_tokens` (its
        `max_completion_length`), the sampling settings and `chat_template_kwargs`. Pass
        `meta_kwargs=meta_kwargs_from_config(config)` too when [`generate_with_meta`] is to predict the meta itself.
    """
    return {
        "notion_feed_in": bool(_config_value(config, "notion_hint")),
        "cutoff_factor": _config_value(config, "cutoff_factor"),
        "max_new_tokens": _config_value(config, "max_completion_length"),
        **_sampling_from_config(config),
    }


# ---------------------------------------------------------------------------------------------------- checks
def _short(problem, width: int = 60) -> str:
    text = repr(problem)
    return text if len(text) <= width else f"{text[: width - 4]}...{text[-1]}"


def _check_int(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}: {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}, got {value}.")


def _check_factor(cutoff_factor) -> None:
    if isinstance(cutoff_factor, bool) or not isinstance(cutoff_factor, (int, float)):
        raise TypeError(f"`cutoff_factor` must be a number or None, got {type(cutoff_factor).__name__}.")
    if not math.isfinite(cutoff_factor) or cutoff_factor <= 0:
        raise ValueError(f"`cutoff_factor` must be a positive number or None, got {cutoff_factor!r}.")


def _check_problems(problems) -> list[str]:
    if isinstance(problems, str) or not isinstance(problems, Sequence):
        raise TypeError(
            f"`problems` must be a list of problem strings, got {type(problems).__name__}"
            + (": wrap a single problem in a list." if isinstance(problems, str) else ".")
        )
    for i, problem in enumerate(problems):
        if not isinstance(problem, str):
            raise TypeError(f"problems[{i}] must be a string, got {type(problem).__name__}: {_short(problem)}.")
        if not problem.strip():
            raise ValueError(f"problems[{i}] is empty ({problem!r}); every prompt needs the problem text.")
    return list(problems)


# ---------------------------------------------------------------------------------------------------- generation
def _render(tokenizer, prompts: list, chat_template_kwargs: dict | None) -> list[list[int]]:
    """Token ids of the prompts, rendered as TRL's GRPOTrainer renders them (chat template with generation prompt)."""
    ids: list[list[int] | None] = [None] * len(prompts)
    chats = [i for i, p in enumerate(prompts) if isinstance(p, list)]
    texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
    if chats:
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "The tokenizer has no chat template, which conversational prompts need. Set tokenizer.chat_template "
                "or use a chat model's tokenizer."
            )
        rendered = tokenizer.apply_chat_template(
            conversation=[prompts[i] for i in chats],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            **(chat_template_kwargs or {}),
        )["input_ids"]
        for i, row in zip(chats, rendered, strict=True):
            ids[i] = list(row)
    if texts:
        for i, row in zip(texts, tokenizer(text=[prompts[i] for i in texts])["input_ids"], strict=True):
            ids[i] = list(row)
    return ids


def _eos_ids(model, tokenizer) -> list[int]:
    """The tokens that end a completion: the tokenizer's EOS and the generation config's, as TRL collects them."""
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    configured = [] if configured is None else [configured] if isinstance(configured, int) else list(configured)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in configured:
        configured = [tokenizer.eos_token_id, *configured]
    if not configured:
        raise ValueError("Neither the tokenizer nor the model's generation config defines an EOS token.")
    return configured


def _budget_criterion(prompt_width: int, budgets):
    """A stopping criterion that ends each row once it has written its own number of tokens."""
    from transformers import StoppingCriteria

    class RowBudget(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return (input_ids.shape[1] - prompt_width) >= budgets

    return RowBudget()


def _sample(
    model,
    tokenizer,
    prompts: list,
    *,
    num_samples: int,
    budgets: list[int],
    batch_size: int,
    seed: int,
    show_progress: bool | None,
    desc: str,
    temperature: float,
    top_p: float,
    top_k: int | None,
    min_p: float | None,
    repetition_penalty: float,
    generation_kwargs: dict | None,
    chat_template_kwargs: dict | None,
) -> list[tuple[list[list[int]], list[str], list[int], list[bool]]]:
    """
    `num_samples` completions per prompt, prompt `i` writing at most `budgets[i]` tokens.

    Prompts are taken in order, `max(1, batch_size // num_samples)` per `generate` call, and each call is seeded from
    `seed` and its index. A call runs up to its largest budget, and a stopping criterion ends every row at its own
    budget. A row's random draws do not depend on when the other rows stop, nor on the other calls, so the same
    prompts and seed give the same samples whatever the budgets, each cut at its own budget.

    Returns:
        Per prompt: the completion ids (up to and including EOS), their texts, their token counts and whether each
        ended without EOS.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig, StoppingCriteriaList

    prompt_ids = _render(tokenizer, prompts, chat_template_kwargs)
    eos_ids = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_ids[0]
    settings = {
        "do_sample": True,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "min_p": min_p,
        "repetition_penalty": repetition_penalty,
        **(generation_kwargs or {}),
    }
    reserved = {"max_new_tokens", "num_return_sequences", "eos_token_id", "pad_token_id"} & set(settings)
    if reserved:
        raise ValueError(
            f"`generation_kwargs` must not set {sorted(reserved)}: they are set from the budgets, `num_samples` and "
            "the tokenizer."
        )
    per_call = max(1, batch_size // num_samples)
    chunks = [list(range(start, min(start + per_call, len(prompts)))) for start in range(0, len(prompts), per_call)]
    device = next(model.parameters()).device
    results: list = [None] * len(prompts)
    was_training = model.training
    model.eval()
    fork_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=fork_devices), torch.no_grad():
            disable = not show_progress if show_progress is not None else len(chunks) < 2
            for index, chunk in enumerate(tqdm(chunks, desc=desc, unit="batch", disable=disable, dynamic_ncols=True)):
                torch.manual_seed(random.Random(f"masa_trl.inference/{seed}/{index}").getrandbits(63))
                width = max(len(prompt_ids[i]) for i in chunk)
                input_ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                attention_mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):  # left padding
                    ids = prompt_ids[i]
                    input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                    attention_mask[row, width - len(ids) :] = 1
                row_budgets = torch.tensor([budgets[i] for i in chunk for _ in range(num_samples)])
                config = GenerationConfig(
                    max_new_tokens=int(row_budgets.max()),
                    num_return_sequences=num_samples,
                    eos_token_id=eos_ids,
                    pad_token_id=pad,
                    bos_token_id=tokenizer.bos_token_id,
                    disable_compile=True,
                    **settings,
                )
                sequences = model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention_mask.to(device),
                    generation_config=config,
                    stopping_criteria=StoppingCriteriaList([_budget_criterion(width, row_budgets.to(device))]),
                )
                completions = sequences[:, width:].cpu().tolist()
                for row, ids in enumerate(completions):
                    limit = min(int(row_budgets[row]), len(ids))
                    end = next((k + 1 for k in range(limit) if ids[k] in eos_ids), None)
                    ids = ids[: end or limit]
                    i = chunk[row // num_samples]
                    if results[i] is None:
                        results[i] = ([], [], [])
                    results[i][0].append(ids)
                    results[i][1].append(len(ids))
                    results[i][2].append(end is None)
    finally:
        model.train(was_training)
    return [
        (ids, tokenizer.batch_decode(ids, skip_special_tokens=True), lengths, truncated)
        for ids, lengths, truncated in results
    ]


def predict_meta(
    model,
    tokenizer,
    problems: Sequence[str],
    num_samples: int = 8,
    *,
    pass_rate_scale: int = 8,
    min_length: int = 128,
    max_length: int = 8192,
    template: str | None = None,
    system_prompt: str | None = DEFAULT_META_SYSTEM_PROMPT,
    max_notions: int = 3,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    seed: int = 0,
    show_progress: bool | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = 0,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    generation_kwargs: dict | None = None,
    chat_template_kwargs: dict | None = None,
) -> list[MetaEstimate]:
    """
    Sample `num_samples` meta predictions per problem and summarise them.

    The meta prompt and the parse rules are the trainer's: [`~masa_trl.templates.meta_prompt`] with the given range,
    system message and template, and [`~masa_trl.meta.parse_meta_prediction`] with the same range, so a prediction
    outside `min_length..max_length` counts as unparsed. Pass the run's settings with
    `**meta_kwargs_from_config(config)`. Sampling defaults to the trainer's (temperature 1, top-p 1, no top-k).

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The (MASA-trained) causal LM. Put in eval mode for the call, then back in its previous mode.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer, with a chat template.
        problems (`Sequence[str]`):
            The problem statements.
        num_samples (`int`, *optional*, defaults to `8`):
            Meta samples per problem (M).
        pass_rate_scale (`int`, *optional*, defaults to `8`):
            The scale S of the predicted pass rate.
        min_length (`int`, *optional*, defaults to `128`):
            Lower end of the predicted length range (MASAConfig's `meta_min_length`).
        max_length (`int`, *optional*, defaults to `8192`):
            Upper end of the predicted length range (the run's `max_completion_length`).
        template (`str` or `None`, *optional*, defaults to `None`):
            The meta prompt template (MASAConfig's `meta_prompt_template`); `None` for
            [`~masa_trl.templates.META_PROMPT_TEMPLATE`].
        system_prompt (`str` or `None`, *optional*, defaults to `"You are a helpful assistant."`):
            The meta prompt's system message; `None` or `""` leaves it out.
        max_notions (`int`, *optional*, defaults to `3`):
            The most notions kept in [`MetaEstimate.notions`] (MASAConfig's `notion_hint_max_notions`).
        max_new_tokens (`int` or `None`, *optional*, defaults to `None`):
            Tokens per meta sample; `None` for `max_length`, what the trainer generates them with.
        batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call (`batch_size // num_samples` problems, at least one).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the sampling RNG (forked: the global RNG is left as it was). Each `generate` call is seeded from
            it and the call's index, so the samples of a problem depend on the seed, `batch_size` and the problems
            batched with it.
        show_progress (`bool` or `None`, *optional*, defaults to `None`):
            Whether to show a tqdm bar over the `generate` calls; `None` shows it when there are several.
        temperature, top_p, top_k, min_p, repetition_penalty:
            Sampling settings, as in [`~trl.GRPOConfig`].
        generation_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Further [`~transformers.GenerationConfig`] settings; they override the sampling settings above.
        chat_template_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Extra arguments of `apply_chat_template` (e.g. `{"enable_thinking": False}`), as in GRPOConfig.

    Returns:
        `list[MetaEstimate]`: One estimate per problem, in order.
    """
    problems = _check_problems(problems)
    _check_int("num_samples", num_samples)
    _check_int("batch_size", batch_size)
    _check_int("seed", seed, minimum=0)
    max_new_tokens = max_length if max_new_tokens is None else max_new_tokens
    _check_int("max_new_tokens", max_new_tokens)
    template = META_PROMPT_TEMPLATE if template is None else template
    settings = dict(
        pass_rate_scale=pass_rate_scale,
        min_length=min_length,
        max_length=max_length,
        system_prompt=system_prompt,
        template=template,
    )
    meta_prompt("A problem with {braces} to check the meta prompt settings.", **settings)  # settings errors first
    _check_int("max_notions", max_notions, minimum=0)
    if not problems:
        return []
    prompts = [meta_prompt(problem, **settings) for problem in problems]
    samples = _sample(
        model,
        tokenizer,
        prompts,
        num_samples=num_samples,
        budgets=[max_new_tokens] * len(prompts),
        batch_size=batch_size,
        seed=seed,
        show_progress=show_progress,
        desc="meta predictions",
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        generation_kwargs=generation_kwargs,
        chat_template_kwargs=chat_template_kwargs,
    )
    return [
        MetaEstimate.from_completions(
            problem,
            texts,
            pass_rate_scale=pass_rate_scale,
            min_length=min_length,
            max_length=max_length,
            max_notions=max_notions,
            num_tokens=lengths,
        )
        for problem, (_, texts, lengths, _) in zip(problems, samples, strict=True)
    ]


def generate_with_meta(
    model,
    tokenizer,
    problems: Sequence[str],
    *,
    meta: Sequence[MetaEstimate] | None = None,
    num_samples: int = 1,
    solution_prompt_fn: Callable[[str], str | list[dict]] = solution_prompt,
    notion_feed_in: bool = True,
    cutoff_factor: float | None = 2.0,
    max_new_tokens: int = 8192,
    batch_size: int = 64,
    seed: int = 0,
    show_progress: bool | None = None,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int | None = 0,
    min_p: float | None = None,
    repetition_penalty: float = 1.0,
    generation_kwargs: dict | None = None,
    chat_template_kwargs: dict | None = None,
    meta_kwargs: dict | None = None,
) -> list[MetaGuidedGeneration]:
    """
    Generate solutions guided by meta predictions: notion feed-in and a per-problem token budget.

    For each problem, the solution prompt `solution_prompt_fn(problem)` gets the estimate's notions as a hint sentence
    ([`~masa_trl.templates.add_notion_hint`], paper appendix B) when `notion_feed_in` is set and some notion was
    predicted, and its samples may write at most `ceil(cutoff_factor x median predicted length)` tokens
    ([`MetaEstimate.token_budget`], MASA-efficient's cutoff), never more than `max_new_tokens`. A problem whose meta
    predictions did not parse gets neither hint nor budget, as in training.

    Every row stops at its own budget (a per-row stopping criterion), so budgets are exact and one `generate` call
    serves problems of different budgets. Problems are batched in the order given, `batch_size // num_samples` per
    call, and each call is seeded from `seed` and its index, so budgets never change what a row samples: with the same
    problems, prompts, seed and `batch_size`, a budgeted run writes exactly the samples of the run without budget, each
    cut at its budget (a paired comparison; bit-exact where the backend's kernels are deterministic). A call lasts
    until its longest row stops; to save wall time on long lists, order the problems by budget (e.g. by
    [`MetaEstimate.median_length`]) before the call.

    Args:
        model ([`~transformers.PreTrainedModel`]):
            The causal LM.
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]):
            Its tokenizer.
        problems (`Sequence[str]`):
            The problem statements.
        meta (`Sequence[MetaEstimate]` or `None`, *optional*, defaults to `None`):
            One estimate per problem, in order (from [`predict_meta`]). With `None`, [`predict_meta`] is run with
            `meta_kwargs` when a hint or a budget is asked for, and skipped otherwise.
        num_samples (`int`, *optional*, defaults to `1`):
            Solutions per problem.
        solution_prompt_fn (`Callable[[str], str | list[dict]]`, *optional*):
            Builds the solution prompt of a problem (a conversation or a plain string), e.g. the one the model was
            trained on; defaults to [`~masa_trl.templates.solution_prompt`], the paper's step-by-step instruction.
        notion_feed_in (`bool`, *optional*, defaults to `True`):
            Append the predicted notions to the solution prompt.
        cutoff_factor (`float` or `None`, *optional*, defaults to `2.0`):
            Budget multiple of the median predicted length; `None` for no budget.
        max_new_tokens (`int`, *optional*, defaults to `8192`):
            The generation limit, and the budget's cap (the run's `max_completion_length`).
        batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call (`batch_size // num_samples` problems, at least one).
        seed (`int`, *optional*, defaults to `0`):
            Seed of the sampling RNG (forked; per call, as in [`predict_meta`]), also passed to [`predict_meta`]
            unless `meta_kwargs` sets one.
        show_progress (`bool` or `None`, *optional*, defaults to `None`):
            Whether to show a tqdm bar; `None` shows it when there are several `generate` calls.
        temperature, top_p, top_k, min_p, repetition_penalty, generation_kwargs, chat_template_kwargs:
            Sampling and rendering settings of the solutions, as in [`predict_meta`].
        meta_kwargs (`dict` or `None`, *optional*, defaults to `None`):
            Keyword arguments of [`predict_meta`] when `meta` is `None`, e.g. `meta_kwargs_from_config(config)` plus
            `num_samples`.

    Returns:
        `list[MetaGuidedGeneration]`: One entry per problem, in order, with the texts, token counts and the budget.
    """
    problems = _check_problems(problems)
    _check_int("num_samples", num_samples)
    _check_int("max_new_tokens", max_new_tokens)
    _check_int("batch_size", batch_size)
    _check_int("seed", seed, minimum=0)
    if cutoff_factor is not None:
        _check_factor(cutoff_factor)
    if not callable(solution_prompt_fn):
        raise TypeError(f"`solution_prompt_fn` must be callable, got {type(solution_prompt_fn).__name__}.")
    needs_meta = notion_feed_in or cutoff_factor is not None
    if meta is not None:
        if isinstance(meta, MetaEstimate) or not isinstance(meta, Sequence):
            raise TypeError("`meta` must be a list of MetaEstimate, one per problem, or None.")
        if len(meta) != len(problems):
            raise ValueError(f"`meta` has {len(meta)} estimates for {len(problems)} problems; pass one per problem.")
        for i, (estimate, problem) in enumerate(zip(meta, problems, strict=True)):
            if not isinstance(estimate, MetaEstimate):
                raise TypeError(f"meta[{i}] must be a MetaEstimate, got {type(estimate).__name__}.")
            if estimate.problem != problem:
                raise ValueError(
                    f"meta[{i}] is the estimate of {_short(estimate.problem)}, not of problems[{i}] "
                    f"{_short(problem)}; pass the estimates in the order of the problems."
                )
        meta = list(meta)
    elif needs_meta and problems:
        meta = predict_meta(
            model,
            tokenizer,
            problems,
            **{"seed": seed, "batch_size": batch_size, "show_progress": show_progress, **(meta_kwargs or {})},
        )
    if not problems:
        return []

    prompts, budgets, hints = [], [], []
    for i, problem in enumerate(problems):
        prompt = solution_prompt_fn(problem)
        if not isinstance(prompt, (str, list)):
            raise TypeError(
                f"`solution_prompt_fn` must return a string or a list of messages, got {type(prompt).__name__} for "
                f"problems[{i}] {_short(problem)}."
            )
        estimate = meta[i] if meta is not None else None
        notions = estimate.notions if (notion_feed_in and estimate is not None) else ()
        if notions:
            try:
                prompt = add_notion_hint(prompt, notions)
            except (TypeError, ValueError) as error:
                raise type(error)(f"problems[{i}] {_short(problem)}: {error}") from error
        budget = None
        if cutoff_factor is not None and estimate is not None:
            budget = estimate.token_budget(cutoff_factor, max_new_tokens)
        prompts.append(prompt)
        budgets.append(budget)
        hints.append(tuple(notions))

    samples = _sample(
        model,
        tokenizer,
        prompts,
        num_samples=num_samples,
        budgets=[max_new_tokens if b is None else b for b in budgets],
        batch_size=batch_size,
        seed=seed,
        show_progress=show_progress,
        desc="solutions",
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        min_p=min_p,
        repetition_penalty=repetition_penalty,
        generation_kwargs=generation_kwargs,
        chat_template_kwargs=chat_template_kwargs,
    )
    return [
        MetaGuidedGeneration(
            problem=problem,
            prompt=prompt,
            texts=tuple(texts),
            completion_ids=tuple(tuple(row) for row in ids),
            num_tokens=tuple(lengths),
            truncated=tuple(truncated),
            budget=max_new_tokens if budget is None else budget,
            budgeted=budget is not None,
            notions=notions,
            meta=meta[i] if meta is not None else None,
        )
        for i, (problem, prompt, budget, notions, (ids, texts, lengths, truncated)) in enumerate(
            zip(problems, prompts, budgets, hints, samples, strict=True)
        )
    ]
