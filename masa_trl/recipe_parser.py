"""`RecipeParser`: the recipes' `trl.TrlParser`, with a short `--help`, no abbreviated flags, and "did you mean".

    parser = RecipeParser((ProblemDataArguments, MASAConfig, ModelConfig, DryRunArguments))
    parser.set_defaults(**PAPER_SETUP)  # the recipe's settings: listed first by --help, with these values

What it changes w.r.t. `TrlParser` (parsing itself, `--config` YAML files and their `env:` block are TrlParser's):

- `--help` lists `--config`, the recipe's settings (the ones it sets with `set_defaults`, and the fields of its own
  argument dataclasses), MASA's settings (the fields `MASAConfig` adds to `GRPOConfig`) and the dry-run flags, each
  with the value it has in this recipe; `--help-all` lists every setting, these sections first.
- A flag must be spelled out (`allow_abbrev=False`): argparse would otherwise take `--num_meta_generation` for
  `--num_meta_generations`.
- An unknown flag on the command line, or an unknown key in the `--config` file, raises [`UnknownSettingError`]
  naming the nearest known settings (difflib), before any config is built. `--config=FILE` works as `--config FILE`.
"""

import argparse
import dataclasses
import difflib
import re
import shlex
import shutil
import sys
import textwrap
from collections.abc import Iterable

import yaml
from transformers import TrainingArguments
from trl import GRPOConfig, TrlParser


USAGE = "%(prog)s [-h] [--help-all] [--config YAML] [--SETTING VALUE ...]"
CONFIG_HELP = (
    "Settings from a YAML file (`setting: value` lines, the flag names without `--`, and an optional `env:` mapping "
    "of environment variables to set); the command line overrides it."
)


class UnknownSettingError(ValueError):
    """A flag or a `--config` key that names no setting; the message suggests the nearest ones."""


def split_config_flag(args: Iterable[str]) -> list[str]:
    """`args` with `--config=FILE` written as `--config FILE`, the only form `TrlParser` reads."""
    out = []
    for arg in args:
        if arg.startswith("--config="):
            out += ["--config", arg.split("=", 1)[1]]
        else:
            out.append(arg)
    return out


def _suggest(name: str, candidates: Iterable[str], quote: str = "") -> str:
    """`name`, with the nearest of `candidates` (difflib) as "did you mean" when there are near ones."""
    matches = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    if not matches:
        return f"{quote}{name}{quote}"
    ratios = [difflib.SequenceMatcher(None, name, match).ratio() for match in matches]
    matches = [match for match, ratio in zip(matches, ratios, strict=True) if ratio >= ratios[0] - 0.05]
    return f"{quote}{name}{quote} (did you mean {' or '.join(f'{quote}{m}{quote}' for m in matches)}?)"


class _HelpAllAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings=option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        parser._print_message(parser.format_full_help(), sys.stdout)
        parser.exit()


class RecipeParser(TrlParser):
    """`trl.TrlParser` for the recipes: short `--help` (`--help-all` for everything), `allow_abbrev=False`, and
    unknown flags or `--config` keys reported with the nearest known settings (see the module docstring)."""

    def __init__(self, dataclass_types=None, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("usage", USAGE)
        super().__init__(dataclass_types, **kwargs)
        self._recipe_keys: list[str] = []  # set_defaults keys, in the recipe's order
        if kwargs.get("add_help", True):
            self.add_argument(
                "--help-all", action=_HelpAllAction, help="Show every setting (TRL's and transformers' too) and exit."
            )

    # ---------------------------------------------------------------------------------------------- defaults
    def set_defaults(self, **kwargs):
        """argparse's `set_defaults`, recording the keys as the recipe's settings; an unknown key raises."""
        known = {action.dest for action in self._actions}
        unknown = [key for key in kwargs if key not in known]
        if unknown:
            names = ", ".join(_suggest(key, known, "'") for key in unknown)
            raise UnknownSettingError(f"set_defaults: no such setting(s): {names}.")
        super().set_defaults(**kwargs)
        self._recipe_keys += [key for key in kwargs if key not in self._recipe_keys]

    # ---------------------------------------------------------------------------------------------- parsing
    def parse_args_and_config(
        self,
        args: Iterable[str] | None = None,
        return_remaining_strings: bool = False,
        fail_with_unknown_args: bool = True,
        separate_remaining_strings: bool = False,
    ):
        """`TrlParser.parse_args_and_config`; unless unknown strings are asked for, an unknown flag or YAML key raises
        [`UnknownSettingError`] first, with suggestions."""
        args = split_config_flag(sys.argv[1:] if args is None else args)
        asks_help = any(arg in ("-h", "--help", "--help-all") for arg in args)  # help first, as argparse does
        if not return_remaining_strings and fail_with_unknown_args and not asks_help:
            self._check_known(args)
        return super().parse_args_and_config(
            args,
            return_remaining_strings=return_remaining_strings,
            fail_with_unknown_args=fail_with_unknown_args,
            separate_remaining_strings=separate_remaining_strings,
        )

    def _check_known(self, args: list[str]) -> None:
        problems = []
        if "--config" in args and args.index("--config") + 1 < len(args):
            path = args[args.index("--config") + 1]
            with open(path) as file:
                config = yaml.safe_load(file)
            if isinstance(config, dict):
                dests = {action.dest for action in self._actions if action.dest != argparse.SUPPRESS}
                unknown = [str(key) for key in config if key != "env" and key not in dests]
                if unknown:
                    keys = ", ".join(_suggest(key, dests, "'") for key in unknown)
                    problems.append(f"unknown setting(s) in the config file {path}: {keys}")
            rest = args[: args.index("--config")] + args[args.index("--config") + 2 :]
        else:
            rest = args
        options = [
            option for option in self._option_string_actions if option.startswith("--") and "-" not in option[2:]
        ]
        flags = []
        for arg in rest:
            if arg == "--":
                break
            flag = arg.split("=", 1)[0]
            if flag.startswith("--") and flag not in self._option_string_actions:
                flags.append(_suggest(flag, options))
        if flags:
            problems.append(f"unrecognized argument(s): {', '.join(flags)}")
        if problems:
            raise UnknownSettingError(
                "; ".join(problems) + ". `--help` lists the recipe's settings, `--help-all` all."
            )

    # ---------------------------------------------------------------------------------------------- help
    def _sections(self) -> list[tuple[str, str | None, list[argparse.Action]]]:
        """(title, description, actions) of the recipe, MASA and dry-run settings, then of every other setting."""
        from masa_trl.dry_run import DryRunArguments
        from masa_trl.dynamic_sampling import DynamicSamplingArguments
        from masa_trl.masa_config import MASAConfig

        # Dynamic sampling is DAPO's (DAPOConfig has it too): listed with the recipe's settings where a recipe sets it.
        masa = (
            set(MASAConfig.__dataclass_fields__)
            - set(GRPOConfig.__dataclass_fields__)
            - set(DynamicSamplingArguments.__dataclass_fields__)
        )
        dry_run = set(DryRunArguments.__dataclass_fields__)
        own = []  # fields of the recipe's own argument dataclasses (data, DAPO, ...), in their order
        has_masa = False
        for dtype in self.dataclass_types:
            has_masa |= issubclass(dtype, MASAConfig)
            library = issubclass(dtype, TrainingArguments) or dtype.__module__.split(".")[0] in ("trl", "transformers")
            if not library and dtype is not DryRunArguments:
                own += [field.name for field in dataclasses.fields(dtype)]
        recipe_keys = [key for key in self._recipe_keys + own if key not in masa | dry_run]
        recipe_keys = list(dict.fromkeys(recipe_keys))

        by_dest: dict[str, list[argparse.Action]] = {}
        for action in self._actions:
            by_dest.setdefault(action.dest, []).append(action)
        helps = [a for a in self._actions if isinstance(a, (argparse._HelpAction, _HelpAllAction))]
        config = argparse.Action(
            ["--config"], dest="config", default=argparse.SUPPRESS, metavar="YAML", help=CONFIG_HELP
        )
        sections = [("config file and help", None, [config, *helps])]
        sections.append(
            (
                "recipe settings",
                "The settings this recipe sets or adds, with its values; any other setting is in --help-all.",
                [action for key in recipe_keys for action in by_dest.get(key, [])],
            )
        )
        if has_masa:
            sections.append(
                (
                    "MASA settings",
                    "What MASAConfig adds to TRL's GRPOConfig: meta rollouts, meta reward, expert BC, MASA-efficient.",
                    [action for action in self._actions if action.dest in masa],
                )
            )
        sections.append(("dry run", None, [action for action in self._actions if action.dest in dry_run]))
        sections = [section for section in sections if section[2]]
        listed = {id(action) for _, _, actions in sections for action in actions}
        others = [action for action in self._actions if id(action) not in listed]
        sections.append(
            (
                "other settings",
                "TRL's GRPOConfig, transformers' TrainingArguments and TRL's ModelConfig (model loading, LoRA).",
                others,
            )
        )
        return sections

    def _format(self, sections, epilog: str | None) -> str:
        formatter = self._get_formatter()
        formatter.add_usage(self.usage, self._actions, self._mutually_exclusive_groups)
        formatter.add_text(self.description)
        for title, description, actions in sections:
            formatter.start_section(title)
            formatter.add_text(description)
            formatter.add_arguments(actions)
            formatter.end_section()
        formatter.add_text(epilog or self.epilog)
        return formatter.format_help()

    def format_help(self) -> str:
        """The short help: `--config`, then the recipe's, MASA's and the dry-run settings, one entry each with its
        value in this recipe and the first sentence of its help."""
        *sections, (_, _, others) = self._sections()
        width = max(80, min(shutil.get_terminal_size().columns, 120)) - 2
        lines = [f"usage: {self.usage % {'prog': self.prog}}", ""]
        for title, description, actions in sections:
            lines.append(f"{title}:")
            if description:
                lines += textwrap.wrap(description, width, initial_indent="  ", subsequent_indent="  ")
            lines += _compact_entries(actions, width)
            lines.append("")
        count = len({action.dest for action in others})
        epilog = (
            f"{count} other settings, of TRL's GRPOConfig, transformers' TrainingArguments and TRL's ModelConfig (e.g. "
            "--use_peft and --lora_r for LoRA, --gradient_checkpointing, --push_to_hub, --resume_from_checkpoint), "
            "and the full help texts: --help-all."
        )
        lines += textwrap.wrap(epilog, width)
        return "\n".join(lines) + "\n"

    def format_full_help(self) -> str:
        """Every setting with argparse's full help texts: the sections of the short help first, then all others."""
        return self._format(self._sections(), None)


def _first_sentence(text: str | None) -> str:
    text = " ".join((text or "").replace("%%", "%").split())
    return re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]


def _value(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_value(item) for item in value) or "[]"
    text = str(value)
    return shlex.quote(text) if text else "''"


def _compact_entries(actions: list[argparse.Action], width: int, column: int = 36) -> list[str]:
    """One entry per setting: `--name VALUE` (VALUE: its default here) and the first sentence of its help. The
    `--no_*` complement of a boolean setting is left out."""
    lines, seen = [], set()
    for action in actions:
        if action.dest != argparse.SUPPRESS and action.dest in seen:
            continue
        seen.add(action.dest)
        option = next((o for o in action.option_strings if o.startswith("--") and "-" not in o[2:]), None)
        if isinstance(action, argparse._HelpAction):
            option = ", ".join(action.option_strings)
        head = f"  {option or action.option_strings[-1]}"
        if action.nargs != 0 and action.default is not argparse.SUPPRESS:
            head += f" {_value(action.default)}"
        if action.metavar == "YAML":
            head += " YAML"
        text = _first_sentence(action.help)
        if len(head) + 2 > column:
            lines.append(head)
            lines += textwrap.wrap(text, width, initial_indent=" " * column, subsequent_indent=" " * column)
        else:
            wrapped = textwrap.wrap(text, width - column) or [""]
            lines.append(f"{head:<{column}}{wrapped[0]}".rstrip())
            lines += [" " * column + line for line in wrapped[1:]]
    return lines
