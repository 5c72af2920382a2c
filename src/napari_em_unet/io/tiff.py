"""Reading and writing TIFF stacks, with the pixel size when the file carries it.

No TensorFlow, no napari: used by the CLI, the napari reader and writer, and benchmarks.
Pixel sizes are returned in nanometres, taken from ImageJ metadata (XResolution in pixels
per ``unit``), OME-XML (PhysicalSizeX) or a centimetre ResolutionUnit. Inch-based
resolutions are ignored: they are DPI values from office software, not physical sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from .atomic import atomic_path
from .units import UNIT_TO_NM


@dataclass
class TiffImage:
    data: np.ndarray
    """The pixels; a memory map when the file allows it (uncompressed, contiguous)."""
    pixel_size_nm: float | None
    path: Path


def _open(path: str | os.PathLike):
    import tifffile

    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"{path} is a folder, not a TIFF file")
    if path.stat().st_size == 0:
        raise InputError(f"{path} is empty (0 bytes)")
    try:
        return tifffile.TiffFile(path)
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error...
        raise InputError(f"{path.name} is not a readable TIFF file ({first_line(exc)})") from None


def read_tiff(path: str | os.PathLike, *, memmap: bool = True) -> TiffImage:
    """Read a 2D image or ZYX stack (grey or RGB) and its pixel size."""
    path = Path(path)
    with _open(path) as tif:
        pixel_size = pixel_size_nm(tif)
        try:
            data = None
            if memmap:
                try:
                    data = tif.asarray(out="memmap")
                except (ValueError, TypeError):
                    data = None
            if data is None:
                data = tif.asarray()
        except Exception as exc:
            raise InputError(f"{path.name} could not be decoded ({first_line(exc)})") from None
    data = np.squeeze(data) if data.ndim > 3 and 1 in data.shape[:-2] else data
    return TiffImage(data, pixel_size, path)


def pixel_size_nm(tif) -> float | None:
    """The XY pixel size of an open ``tifffile.TiffFile``, in nm, or None if not recorded."""
    try:
        if tif.is_ome and tif.ome_metadata:
            size = _ome_pixel_size(tif.ome_metadata)
            if size:
                return size
        page = tif.pages.first
        tag = page.tags.get("XResolution")
        if tag is None:
            return None
        num, den = tag.value
        if not num or not den:
            return None
        per_unit = num / den  # pixels per unit
        unit = None
        if tif.is_imagej and tif.imagej_metadata:
            unit = str(tif.imagej_metadata.get("unit", "")).strip().lower() or None
        if unit is None:
            resunit = page.tags.get("ResolutionUnit")
            if resunit is not None and int(resunit.value) == 3:
                unit = "cm"
        if unit not in UNIT_TO_NM:
            return None
        size = UNIT_TO_NM[unit] / per_unit
        return float(size) if 0.01 < size < 1e6 else None
    except Exception:  # metadata is a bonus: never fail a read because of it
        return None


def section_spacing_nm(tif) -> float | None:
    """The distance between slices (Z) of an open ``tifffile.TiffFile`` in nm, when the file
    records it (ImageJ's ``spacing``, in its ``unit``), else None."""
    try:
        meta = tif.imagej_metadata if tif.is_imagej else None
        if not meta or "spacing" not in meta:
            return None
        unit = str(meta.get("unit", "")).strip().lower() or "um"
        if unit not in UNIT_TO_NM:
            return None
        spacing = float(meta["spacing"]) * UNIT_TO_NM[unit]
        return spacing if 0.01 < spacing < 1e7 else None
    except Exception:  # metadata is a bonus: never fail a read because of it
        return None


def _ome_pixel_size(xml: str) -> float | None:
    import re

    match = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', xml)
    if not match:
        return None
    unit_match = re.search(r'PhysicalSizeXUnit="([^"]+)"', xml)
    unit = unit_match.group(1).lower() if unit_match else "µm"
    return float(match.group(1)) * UNIT_TO_NM.get(unit, 1e3)


def write_tiff(
    path: str | os.PathLike, data: np.ndarray, pixel_size_nm: float | None = None
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary file, then rename), with its pixel size."""
    import tifffile

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.asarray(data)
    kwargs = tiff_write_options(data.dtype, data.ndim, pixel_size_nm, data.nbytes)
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, data, **kwargs)
    return path


def tiff_write_options(
    dtype, ndim: int, pixel_size_nm: float | None = None, nbytes: int = 0
) -> dict:
    """Keyword arguments for ``tifffile.imwrite`` (or ``TiffWriter`` + ``write``).

    ImageJ-style when ImageJ can read the type (so Fiji shows the pixel size), a centimetre
    resolution otherwise, and BigTIFF once the pixels approach the 4 GB limit of classic
    TIFF. Shared by :func:`write_tiff` and the streaming writer, so both files look alike.
    """
    dtype = np.dtype(dtype)
    kwargs: dict = {}
    imagej = dtype in (np.uint8, np.uint16, np.float32) and ndim in (2, 3)
    if pixel_size_nm:
        kwargs["resolution"] = (1e3 / pixel_size_nm, 1e3 / pixel_size_nm)
        if imagej:
            kwargs["metadata"] = {"unit": "um", "axes": "ZYX" if ndim == 3 else "YX"}
        else:
            kwargs["resolutionunit"] = "CENTIMETER"
            kwargs["resolution"] = (1e7 / pixel_size_nm, 1e7 / pixel_size_nm)
    elif imagej:
        kwargs["metadata"] = {"axes": "ZYX" if ndim == 3 else "YX"}
    kwargs["imagej"] = imagej
    kwargs["bigtiff"] = nbytes > 2**32 - 2**25
    return kwargs
