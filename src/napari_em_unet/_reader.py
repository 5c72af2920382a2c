"""napari reader for TIFF images and stacks (2D, ZYX, OME-TIFF; grey or RGB; 8/16-bit or float)
and zarr stores (a zarr array, a group holding one array, an OME-Zarr image).

napari calls :func:`napari_get_reader` for every file the user drops on the window, so it
must be cheap and must never raise: it opens the TIFF header or the zarr metadata, checks
that it is something the plugin can show, and returns ``None`` otherwise so that napari
can try the next reader. Volumes larger than :data:`LARGE_FILE_BYTES` (the TIFF file, or
a zarr's uncompressed pixels) are not loaded: they open through
:func:`napari_em_unet.io.volumes.open_volume` as a dask array that reads one slice when napari
shows it (RGB data then appear grey, as the network sees them). An OME-Zarr opens at its
full resolution, as one (non-multiscale) layer that the widgets can segment.

See https://napari.org/stable/plugins/building_a_plugin/guides.html#readers
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

TIFF_SUFFIXES = (".tif", ".tiff")
LARGE_FILE_BYTES = 512 * 2**20
"""Volumes larger than this are read lazily, slice by slice, instead of loaded."""
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")

_SUPPORTED_KINDS = "biuf"  # bool, signed, unsigned, float: what napari can display
# Integer files whose name says they hold labels open as a Labels layer (what `em-unet
# segment`, this plugin's writer and most annotation tools produce); everything else is
# an image, because guessing "labels" for a 16-bit EM stack would be a worse mistake.
_LABELS_NAME = re.compile(
    r"(^|[^a-z])(labels?|masks?|seg|segmentation|membranes?|instances|gt|ground[-_ ]?truth)"
    r"($|[^a-z])",
    re.IGNORECASE,
)


def napari_get_reader(path: str | list[str]) -> Callable | None:
    """Return a reader function when every path is a TIFF or zarr this plugin can open.

    Parameters
    ----------
    path : str or list of str
        A file path, or several (napari passes a list when many files are opened at once).

    Returns
    -------
    callable or None
        :func:`read_tiff_layers`, or None (napari's contract: never raise here).
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path or [])
    if not paths:
        return None
    try:
        if all(_probe(Path(p)) for p in paths):
            return read_tiff_layers
    except Exception:  # a reader probe must not take napari down, whatever the file holds
        return None
    return None


def _is_zarr_store(path: Path) -> bool:
    return path.is_dir() and any((path / m).is_file() for m in _ZARR_MARKERS)


def _probe(path: Path) -> bool:
    if _is_zarr_store(path):
        from .io.volumes import open_volume

        try:
            open_volume(path)  # metadata only: one small JSON file or two
        except Exception:  # not an image we can segment (several arrays, channels...)
            return False
        return True
    if path.suffix.lower() not in TIFF_SUFFIXES or not path.is_file():
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.series:
                return False
            series = tif.series[0]
            return (
                np.dtype(series.dtype).kind in _SUPPORTED_KINDS
                and len(series.shape) >= 2
                and min(series.shape) > 0
            )
    except Exception:  # not a TIFF, truncated, or a format tifffile cannot decode
        return False


def read_tiff_layers(path: str | list[str]) -> list[tuple]:
    """Read one or several TIFF files or zarr stores as napari layer data tuples.

    Parameters
    ----------
    path : str or list of str
        File path(s) accepted by :func:`napari_get_reader`.

    Returns
    -------
    list of tuple
        One ``(data, kwargs, layer_type)`` per file; ``kwargs['metadata']`` carries
        ``pixel_size_nm`` (None when the file does not record it) and ``source_path``.
    """
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return [_read_one(Path(p)) for p in paths]


def _read_one(path: Path) -> tuple:
    import tifffile

    from .io.tiff import pixel_size_nm, read_tiff, section_spacing_nm

    zarr = _is_zarr_store(path)
    if zarr or path.stat().st_size > LARGE_FILE_BYTES:
        from .io.volumes import open_volume

        volume = open_volume(path)
        # A large TIFF stays lazy; a zarr by the same rule applied to its pixels rather than
        # its (compressed) files: a small store is loaded, so labels in it can be painted.
        lazy = not zarr or volume.nbytes > LARGE_FILE_BYTES
        data = volume.to_dask() if lazy else np.asarray(volume)
        data = data[0] if volume.was_2d else data
        rgb, pixel_size, spacing = False, volume.pixel_size_nm, None
    else:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            rgb = series.axes.endswith("S") and series.shape[-1] in (3, 4)
            pixel_size, spacing = pixel_size_nm(tif), section_spacing_nm(tif)
        data = np.asarray(read_tiff(path, memmap=False).data)
    name = _layer_name(path)
    metadata = {"pixel_size_nm": pixel_size, "source_path": str(path)}
    kwargs: dict = {
        "name": name,
        "metadata": metadata,
        **_physical_scale(data.ndim - bool(rgb), pixel_size, spacing),
    }
    integer = np.dtype(data.dtype).kind in "biu"
    if integer and not rgb and _LABELS_NAME.search(name):
        return data, kwargs, "labels"
    kwargs["rgb"] = bool(rgb)
    return data, kwargs, "image"


def _physical_scale(ndim: int, pixel_size: float | None, spacing: float | None) -> dict:
    """Layer ``scale`` and ``units`` in nanometres when the file says how big a pixel is, so
    napari's scale bar and 3D view are true to size (sections are often 10x thicker than a
    pixel); without a pixel size, napari's plain pixel grid."""
    if not pixel_size:
        return {}
    scale = ((spacing or pixel_size,) if ndim == 3 else ()) + (pixel_size, pixel_size)
    return {"scale": scale, "units": "nm"}


def _layer_name(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".ome.zarr", ".zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
