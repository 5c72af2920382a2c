"""Shared helpers for the benchmark scripts: data paths, the machine, and simple tables."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EM_UNET_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()
ISBI = DATA / "isbi2012"
VNC = DATA / "vnc2013"


def require_data() -> None:
    if not (ISBI / "train-volume.tif").exists():
        sys.exit(f"benchmark needs the shared EM data at {DATA} (set EM_UNET_SHARED_DATA)")


def machine() -> str:
    return (f"{_dt.date.today().isoformat()}, {platform.processor() or platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}")


def napari_like_labels(membranes: np.ndarray) -> np.ndarray:
    """Turn a 0 = membrane / 255 = interior mask into instance labels as napari's brush makes them.

    Each cell becomes its own id and is grown over the membrane until cells touch, so the
    borders between cells are one pixel wide, with no 0 left (what a user painting cells with
    the brush or fill tool produces).
    """
    from skimage.measure import label
    from skimage.segmentation import expand_labels

    out = np.zeros(membranes.shape, dtype=np.uint32)
    for z, plane in enumerate(membranes):
        cells = label(plane > 0, connectivity=1)
        out[z] = expand_labels(cells, distance=max(plane.shape))
    return out


def table(rows: list[tuple], header: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(lines)
