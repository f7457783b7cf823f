"""Plain-text tables for the demo's printed report."""

import math
from collections.abc import Sequence


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence[dict], columns: Sequence[str | tuple[str, str]], *, digits: int = 3) -> str:
    """A fixed-width table; `columns` are keys, or (key, header) pairs. Missing values print as `-`.

    >>> print(format_table([{"a": 1, "b": 0.5}], ["a", ("b", "B")]))
    a  B
    -  -----
    1  0.500
    """
    columns = [(c, c) if isinstance(c, str) else c for c in columns]
    cells = [[_cell(row.get(key), digits) for key, _ in columns] for row in rows]
    widths = [max([len(header)] + [len(r[i]) for r in cells]) for i, (_, header) in enumerate(columns)]
    lines = ["  ".join(header.ljust(w) for (_, header), w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def phase_header(title: str) -> str:
    return f"\n{'=' * 8} {title} {'=' * max(4, 100 - len(title))}"


def json_safe(value):
    """JSON-safe copy of nested dicts/lists: NaN and infinities become null (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
