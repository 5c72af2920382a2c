"""Small helpers about layers and slice lists shared by the widgets (no Qt)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


def parse_slices(text: str, depth: int) -> list[int]:
    """Parse ``"0, 3, 5-7"`` into sorted slice indices within ``0..depth-1``.

    Parameters
    ----------
    text : str
        Comma-separated indices and inclusive ranges; blank means none.
    depth : int
        Number of slices in the stack.

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
    bad = sorted(s for s in out if not 0 <= s < depth)
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


def spatial_shape(layer) -> tuple[int, ...]:
    """Shape of an image layer without its RGB channel axis (of level 0 if multiscale)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def depth_of(shape: tuple[int, ...]) -> int:
    """Number of slices: 1 for a 2D image, the first axis of a stack."""
    return 1 if len(shape) == 2 else int(shape[0])


def pixel_size_of(layer) -> float | None:
    """The pixel size (nm) the reader or sample recorded in the layer's metadata."""
    value = (getattr(layer, "metadata", None) or {}).get("pixel_size_nm")
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def current_slice(viewer, layer) -> int:
    """Index of the slice of ``layer`` shown in the viewer (0 for a 2D layer)."""
    if layer.ndim < 3:
        return 0
    position = layer.world_to_data(viewer.dims.point)
    index = int(round(float(position[-3]))) if len(position) >= 3 else 0
    return int(np.clip(index, 0, layer.data.shape[0] - 1 if not getattr(layer, "multiscale",
                                                                          False) else 0))


def go_to_slice(viewer, layer, index: int) -> None:
    """Show slice ``index`` of ``layer`` in the viewer."""
    if layer.ndim < 3:
        return
    coords = np.zeros(layer.ndim)
    coords[-3] = index
    world = layer.data_to_world(coords)
    axis = viewer.dims.ndim - layer.ndim + (layer.ndim - 3)
    viewer.dims.set_point(axis, float(world[-3]))
