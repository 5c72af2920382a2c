"""Slice lists as people type them: ``"0, 3, 5-7"`` <-> ``[0, 3, 5, 6, 7]``.

One rule for the CLI (``--slices``) and the widgets' text fields.
"""

from __future__ import annotations

from collections.abc import Iterable


def parse_slices(text: str | None, depth: int | None = None) -> list[int]:
    """Parse ``"0, 3, 5-7"`` into sorted slice indices within ``0..depth-1``.

    Parameters
    ----------
    text : str
        Comma-separated indices and inclusive ranges; blank means none.
    depth : int, optional
        Number of slices in the stack; when given, slices outside it are refused.

    Returns
    -------
    list of int

    Raises
    ------
    ValueError
        With a one-sentence message for the user.
    """
    out: set[int] = set()
    for part in (text or "").replace(";", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                low, high = (int(v) for v in part.split("-", 1))
                if high < low:
                    raise ValueError
                out.update(range(low, high + 1))
            else:
                out.add(int(part))
        except ValueError:
            raise ValueError(f"'{part}' is not a slice number or range like 5-7") from None
    bad = sorted(s for s in out if s < 0 or (depth is not None and s >= depth))
    if bad and depth is None:
        raise ValueError(f"slice {bad[0]} is not a slice number (they start at 0)")
    if bad:
        raise ValueError(f"slice {bad[0]} is outside the stack (0-{depth - 1})")
    return sorted(out)


def format_slices(slices: Iterable[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    values = sorted({int(s) for s in slices})
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        parts.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ", ".join(parts)
