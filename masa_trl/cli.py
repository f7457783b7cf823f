"""`masa-trl train --recipe NAME [--config my.yaml] [settings]`: run a recipe of `recipes/`, as `trl grpo` does.

    masa-trl train --recipe masa_qwen3_8b --dry_run
    masa-trl train --recipe masa_qwen3_8b --config my.yaml --learning_rate 2e-6
    accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_processes 4 \\
        -m masa_trl.cli train --recipe masa_qwen3_8b --config my.yaml

Everything after the recipe name is the recipe's own command line (`--help` shows its settings); the recipe runs
exactly as `python recipes/NAME.py ...` would, in this process, so `accelerate launch -m masa_trl.cli` (or
`accelerate launch $(which masa-trl) train ...`) starts it on every process like a script.

Where recipes are found, first match wins: `--recipe` may be a path to a `.py` file; else `NAME.py` in the folder
named by `$MASA_TRL_RECIPES`, in the `recipes/` folder of the source checkout this package was imported from (an
editable install: `pip install -e .`), and in `<prefix>/share/masa-trl/recipes`, where a regular install
(`pip install masa-trl`, setup.cfg `data_files`) copies them. The recipes are scripts that import each other from
their own folder, not a package, so they are run from that folder rather than imported by module name.
"""

import difflib
import os
import runpy
import sys
from pathlib import Path


USAGE = """usage: masa-trl train --recipe NAME_OR_PATH [--config YAML] [--SETTING VALUE ...]

Run a MASA / GRPO / DAPO recipe; everything after the recipe is the recipe's command line (`--help` for its
settings, `--help-all` for all of them, `--dry_run` to check a setup in seconds on a CPU).

  masa-trl train --recipe masa_qwen3_8b --dry_run
  masa-trl train --recipe masa_qwen3_8b --config my.yaml --learning_rate 2e-6
  accelerate launch --config_file recipes/accelerate_configs/zero3.yaml --num_processes 4 \\
      -m masa_trl.cli train --recipe masa_qwen3_8b --config my.yaml
"""


def recipe_dirs() -> list[Path]:
    """The folders searched for recipes, in order (see the module docstring); only those that exist."""
    dirs = []
    if os.environ.get("MASA_TRL_RECIPES"):
        dirs.append(Path(os.environ["MASA_TRL_RECIPES"]))
    dirs.append(Path(__file__).resolve().parents[1] / "recipes")  # a source checkout / editable install
    dirs.append(Path(sys.prefix) / "share" / "masa-trl" / "recipes")  # setup.cfg data_files
    return [folder for folder in dirs if folder.is_dir()]


def known_recipes() -> dict[str, Path]:
    """Recipe name -> file, over `recipe_dirs()` (an earlier folder shadows a later one)."""
    recipes = {}
    for folder in reversed(recipe_dirs()):
        recipes.update({path.stem: path for path in sorted(folder.glob("*.py")) if not path.name.startswith("_")})
    return dict(sorted(recipes.items()))


def _summary(path: Path) -> str:
    """The head of a recipe's docstring (up to its first colon), read without importing the recipe."""
    text = path.read_text(encoding="utf-8").lstrip()
    if text[:3] not in ('"""', "'''"):
        return ""
    return text[3:].split("\n", 1)[0].split(": ", 1)[0].strip().rstrip(".")


def recipe_listing(recipes: dict[str, Path]) -> str:
    if not recipes:
        return "No recipes found: set MASA_TRL_RECIPES to the recipes/ folder of a masa-trl checkout."
    width = max(map(len, recipes))
    return "Recipes:\n" + "\n".join(f"  {name:{width}}  {_summary(path)}" for name, path in recipes.items())


class UnknownRecipeError(LookupError):
    pass


def find_recipe(name: str) -> Path:
    """The file of recipe `name` (a name from `known_recipes()`, or a path to a `.py` file)."""
    if name.endswith(".py") or os.sep in name:
        path = Path(name)
        if path.is_file():
            return path.resolve()
        raise UnknownRecipeError(f"no recipe file {name!r}.")
    recipes = known_recipes()
    if name in recipes:
        return recipes[name]
    close = difflib.get_close_matches(name, list(recipes), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise UnknownRecipeError(f"unknown recipe {name!r}{hint}. {recipe_listing(recipes)}")


def run_recipe(path: Path, args: list[str]) -> None:
    """Run the recipe file `path` as `python path *args` would: as `__main__`, with `sys.argv` set, in this process."""
    saved = sys.argv
    sys.argv = [str(path), *args]
    try:
        runpy.run_path(str(path), run_name="__main__")
    finally:
        sys.argv = saved


def _pop_recipe(args: list[str]) -> tuple[str | None, list[str]]:
    """(`--recipe`'s value, the other arguments in their order)."""
    for i, arg in enumerate(args):
        if arg == "--recipe":
            if i + 1 == len(args):
                _usage_error("--recipe needs a recipe name or file.")
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith("--recipe="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None, args


def _usage_error(message: str):
    usage = USAGE.split("\n", 1)[0]
    print(f"{usage}\nmasa-trl: error: {message}\n(masa-trl train --help for the usage)", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        _usage_error("a command is needed: train.")
    if argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n{recipe_listing(known_recipes())}")
        raise SystemExit(0)
    command, args = argv[0], argv[1:]
    if command != "train":
        _usage_error(f"unknown command {command!r}; the command is train.")
    name, args = _pop_recipe(args)
    if name is None:
        if any(arg in ("-h", "--help") for arg in args):
            print(f"{USAGE}\n{recipe_listing(known_recipes())}")
            raise SystemExit(0)
        _usage_error(f"--recipe is required. {recipe_listing(known_recipes())}")
    try:
        path = find_recipe(name)
    except UnknownRecipeError as error:
        _usage_error(str(error))
    run_recipe(path, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
