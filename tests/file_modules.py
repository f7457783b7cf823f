"""Import a repository script (a recipe, a benchmark, a helper script) as a module, without running its `__main__`."""

import importlib.util
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]


def import_file(path: Path | str, name: str | None = None):
    """The module defined by the file at `path` (relative paths start at the repository root)."""
    path = Path(path)
    path = path if path.is_absolute() else ROOT / path
    spec = importlib.util.spec_from_file_location(name or path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
