"""Prompt templates for MASA: the solution prompt, the meta-prediction prompt and the notion hint.

MASA prompts the policy with two variants of every problem (paper, section 3.2):

- the *solution* prompt, the problem followed by the usual step-by-step instruction, whose completions are scored
  by answer correctness exactly as in GRPO;
- the *meta* prompt (paper, appendix A), which asks the model to reason between `<meta>` and `</meta>` and then
  predict, as a JSON object, the notions a correct solution uses, its pass rate and its length.

Both builders return conversational prompts (lists of `{"role", "content"}` messages), the format TRL trainers
accept directly.

>>> solution_prompt("What is $1+1$?")
[{'role': 'user', 'content': "What is $1+1$? Let's think step by step and output the final answer within \\\\boxed{}."}]
>>> add_notion_hint(solution_prompt("What is $1+1$?"), ["addition"])[0]["content"].splitlines()[-1]
'Hint: the following notion may help: addition.'
"""

import string
from collections.abc import Sequence


SOLUTION_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."

DEFAULT_META_SYSTEM_PROMPT = "You are a helpful assistant."

META_PROMPT_TEMPLATE = (
    "Think step-by-step between <meta> and </meta>, ensuring comprehensive and detailed reasoning especially for "
    "determining the pass_rate and solution_length values. For each component (math_notion, pass_rate, "
    "solution_length), provide a comprehensive illustration or example during your reasoning in the <meta> section "
    "to clarify how each value is decided. When determining math_notion, ensure that the notions listed do not "
    "directly include the notions already written in the problem statement. After </meta>, return a JSON object "
    "with three keys:\n"
    "- math_notion (list[str])\n"
    "- pass_rate (integer from 0 to {pass_rate_scale})\n"
    "- solution_length (integer from {min_length} to {max_length})\n"
    "\n"
    "Problem: {problem}"
)

_META_TEMPLATE_FIELDS = frozenset({"pass_rate_scale", "max_length", "min_length", "problem"})


def _check_problem(problem: str) -> None:
    if not isinstance(problem, str):
        raise TypeError(f"`problem` must be a string, got {type(problem).__name__}: {problem!r}.")
    if not problem.strip():
        raise ValueError(
            "`problem` is empty; every prompt needs the problem text. Filter empty rows from the dataset."
        )


def _check_positive_int(name: str, value: int) -> None:
    # `bool` is a subclass of `int`; `True` as a length is always a bug.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"`{name}` must be an integer, got {type(value).__name__}: {value!r}.")
    if value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value}.")


def _check_meta_template(template: str) -> None:
    if not isinstance(template, str):
        raise TypeError(f"`template` must be a string, got {type(template).__name__}.")
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
    except ValueError as error:
        raise ValueError(
            f"`template` is not a valid str.format template ({error}). Write literal braces as '{{{{' and '}}}}'."
        ) from error
    unknown = fields - _META_TEMPLATE_FIELDS
    if unknown:
        raise ValueError(
            f"`template` has unknown placeholders {sorted(unknown)}; the allowed ones are "
            f"{sorted(_META_TEMPLATE_FIELDS)}. Write literal braces as '{{{{' and '}}}}'."
        )
    if "problem" not in fields:
        raise ValueError("`template` must contain the placeholder '{problem}', where the problem text is inserted.")


def solution_prompt(problem: str) -> list[dict[str, str]]:
    """
    Build the solution prompt: the problem followed by [`SOLUTION_INSTRUCTION`], as one user message.

    Args:
        problem (`str`):
            The problem statement.

    Returns:
        `list[dict[str, str]]`: A conversational prompt with a single user message.
    """
    _check_problem(problem)
    return [{"role": "user", "content": f"{problem} {SOLUTION_INSTRUCTION}"}]


def meta_prompt(
    problem: str,
    *,
    pass_rate_scale: int = 8,
    max_length: int = 8192,
    min_length: int = 128,
    system_prompt: str | None = DEFAULT_META_SYSTEM_PROMPT,
    template: str = META_PROMPT_TEMPLATE,
) -> list[dict[str, str]]:
    """
    Build the meta-prediction prompt of the paper's appendix A.

    The problem is inserted as given, without [`SOLUTION_INSTRUCTION`] (the authors' code embedded the whole
    solution prompt, instruction included). Only the template is parsed as a format string, so braces in the problem
    (LaTeX) are safe.

    Args:
        problem (`str`):
            The problem statement.
        pass_rate_scale (`int`, *optional*, defaults to `8`):
            The predicted pass rate is asked as an integer from 0 to `pass_rate_scale` (S in the paper).
        max_length (`int`, *optional*, defaults to `8192`):
            Upper bound of the predicted solution length in tokens. Set it to the run's maximum completion length
            (the authors' code used the maximum prompt length by mistake).
        min_length (`int`, *optional*, defaults to `128`):
            Lower bound of the predicted solution length in tokens.
        system_prompt (`str` or `None`, *optional*, defaults to [`DEFAULT_META_SYSTEM_PROMPT`]):
            System message. `None` or `""` leaves the system message out.
        template (`str`, *optional*, defaults to [`META_PROMPT_TEMPLATE`]):
            A `str.format` template for the user message. It must contain `{problem}` and may contain
            `{pass_rate_scale}`, `{max_length}` and `{min_length}`; literal braces must be doubled.

    Returns:
        `list[dict[str, str]]`: A conversational prompt: an optional system message and one user message.
    """
    _check_problem(problem)
    _check_positive_int("pass_rate_scale", pass_rate_scale)
    _check_positive_int("min_length", min_length)
    _check_positive_int("max_length", max_length)
    if max_length < min_length:
        raise ValueError(
            f"`max_length` ({max_length}) is smaller than `min_length` ({min_length}). Set `max_length` to the "
            "maximum completion length of the run, which must be at least `min_length`."
        )
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(f"`system_prompt` must be a string or None, got {type(system_prompt).__name__}.")
    _check_meta_template(template)
    content = template.format(
        problem=problem, pass_rate_scale=pass_rate_scale, max_length=max_length, min_length=min_length
    )
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": content})
    return messages


def _clean_notions(notions: Sequence[str]) -> list[str]:
    if isinstance(notions, str) or not isinstance(notions, Sequence):
        raise TypeError(f"`notions` must be a list of strings, got {type(notions).__name__}: {notions!r}.")
    seen = set()
    cleaned = []
    for notion in notions:
        if not isinstance(notion, str):
            raise TypeError(f"Every notion must be a string, got {type(notion).__name__}: {notion!r}.")
        # Collapse inner whitespace too: a notion with a newline would break the one-sentence hint.
        notion = " ".join(notion.split())
        if notion and notion.casefold() not in seen:
            seen.add(notion.casefold())
            cleaned.append(notion)
    return cleaned


def _hint_sentence(notions: list[str]) -> str:
    if len(notions) == 1:
        return f"Hint: the following notion may help: {notions[0]}."
    return f"Hint: the following notions may help: {', '.join(notions[:-1])} and {notions[-1]}."


def add_notion_hint(prompt: str | list[dict], notions: Sequence[str]) -> str | list[dict]:
    """
    Append predicted notions to a solution prompt as one hint sentence, e.g. `"Hint: the following notions may help:
    A, B and C."`, separated from the prompt by a blank line.

    Notions are stripped (inner whitespace collapsed), empty ones dropped and duplicates removed case-insensitively,
    keeping the first spelling. The input is never modified.

    Args:
        prompt (`str` or `list[dict]`):
            A plain-text prompt, or a conversational prompt; the hint then goes at the end of the last user message.
            A message whose content is a list of parts (`[{"type": "text", "text": ...}]`) gets a new text part.
        notions (`Sequence[str]`):
            The predicted notions, e.g. [`MetaPrediction.notions`].

    Returns:
        `str` or `list[dict]`: A new prompt of the same kind; an unchanged copy when no notion is left.
    """
    notions = _clean_notions(notions)
    if isinstance(prompt, str):
        return f"{prompt}\n\n{_hint_sentence(notions)}" if notions else prompt
    if not isinstance(prompt, list):
        raise TypeError(f"`prompt` must be a string or a list of messages, got {type(prompt).__name__}.")
    messages = [dict(message) for message in prompt]
    if not notions:
        return messages
    user_indices = [i for i, message in enumerate(messages) if message.get("role") == "user"]
    if not user_indices:
        raise ValueError("`prompt` has no user message to append the notion hint to.")
    message = messages[user_indices[-1]]
    content = message.get("content")
    hint = _hint_sentence(notions)
    if isinstance(content, str):
        message["content"] = f"{content}\n\n{hint}"
    elif isinstance(content, list):
        message["content"] = [*content, {"type": "text", "text": f"\n\n{hint}"}]
    else:
        raise TypeError(f"The last user message has content of type {type(content).__name__}; expected str or list.")
    return messages
