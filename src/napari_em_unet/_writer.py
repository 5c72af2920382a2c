"""napari writers: a Labels or Image layer to a TIFF file, with its pixel size.

Files are written atomically by :func:`napari_em_unet.io.tiff.write_tiff` (temporary name,
then rename), so a failed save never leaves a half-written file over an older one.
Labels are stored in the smallest unsigned integer type that holds them, so a label
stack saved from napari (often int64 in memory) is not eight times larger than needed.

See https://napari.org/stable/plugins/building_a_plugin/guides.html#writers
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ._reader import TIFF_SUFFIXES


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write a Labels layer to a TIFF file.

    Parameters
    ----------
    path : str
        Destination; ``.tif`` is appended when the name has no TIFF suffix.
    data : array-like
        The label image or stack.
    meta : dict
        The layer's attributes; ``meta['metadata']['pixel_size_nm']`` is stored if set.

    Returns
    -------
    list of str
        The written path.
    """
    labels = _compact_labels(np.asarray(data))
    return [str(_write(path, labels, meta))]


def write_image(path: str, data: Any, meta: dict) -> list[str]:
    """Write an Image layer (grey or RGB; the full-resolution level if multiscale).

    Parameters
    ----------
    path : str
        Destination; ``.tif`` is appended when the name has no TIFF suffix.
    data : array-like or list of array-like
        The image; for a multiscale layer, the list of levels.
    meta : dict
        The layer's attributes; ``meta['metadata']['pixel_size_nm']`` is stored if set.

    Returns
    -------
    list of str
        The written path.
    """
    if meta.get("multiscale") or isinstance(data, (list, tuple)):
        data = data[0]
    return [str(_write(path, np.asarray(data), meta))]


def _write(path: str, data: np.ndarray, meta: dict) -> Path:
    from .io.tiff import write_tiff

    target = Path(path)
    if target.suffix.lower() not in TIFF_SUFFIXES:
        target = target.with_name(target.name + ".tif")
    pixel_size = (meta.get("metadata") or {}).get("pixel_size_nm")
    return write_tiff(target, data, pixel_size if pixel_size else None)


def _compact_labels(labels: np.ndarray) -> np.ndarray:
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
        return labels
    low, high = int(labels.min()), int(labels.max())
    if low < 0:
        return (
            labels.astype(np.int32)
            if np.iinfo(np.int32).min <= low and high <= np.iinfo(np.int32).max
            else labels
        )
    for dtype in (np.uint8, np.uint16, np.uint32):
        if high <= np.iinfo(dtype).max:
            return labels.astype(dtype, copy=False)
    return labels
