"""The voxel size a file records: XY pixel size (see :mod:`.tiff`) and the section spacing Z.

Z comes from the ImageJ ``spacing`` entry (in the file's ``unit``, the one its XY resolution
uses), OME-XML ``PhysicalSizeZ``, an OME-Zarr scale on the ``z`` axis with a unit, or a
``voxel_size_nm`` attribute of a zarr array or group. A value the file does not state is
None: serial sections are often 10 times thicker than a pixel, so Z is never guessed
from XY.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .tiff import _UNIT_TO_NM
from .volumes import _OME_UNIT_TO_NM, _is_zarr, open_volume


def read_voxel_size_nm(path: str | os.PathLike) -> tuple[float | None, float | None,
                                                          float | None]:
    """``(Z, Y, X)`` in nm as the file at ``path`` records them (None where it does not).

    Never raises because of metadata: an unreadable file raises
    :class:`~napari_em_unet.errors.InputError` as :func:`.volumes.open_volume` does.
    """
    path = Path(path)
    volume = open_volume(path)
    xy = volume.pixel_size_nm
    try:
        z = _zarr_z_spacing(path) if _is_zarr(path) else _tiff_z_spacing(path)
    except Exception:  # metadata is a bonus: a file we can read is never refused for it
        z = None
    return (z if _plausible(z) else None, xy, xy)


def _plausible(value) -> bool:
    return value is not None and 0.01 < value < 1e7


def _tiff_z_spacing(path: Path) -> float | None:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            spacing = _ome_xml_z(tif.ome_metadata)
            if spacing:
                return spacing
        if tif.is_imagej and tif.imagej_metadata:
            meta = tif.imagej_metadata
            spacing, unit = meta.get("spacing"), str(meta.get("unit", "")).strip().lower()
            if spacing is not None and unit in _UNIT_TO_NM:
                return float(spacing) * _UNIT_TO_NM[unit]
    return None


def _ome_xml_z(xml: str) -> float | None:
    match = re.search(r'PhysicalSizeZ="([0-9.eE+-]+)"', xml)
    if not match:
        return None
    unit_match = re.search(r'PhysicalSizeZUnit="([^"]+)"', xml)
    unit = unit_match.group(1).lower() if unit_match else "µm"  # the OME default
    return float(match.group(1)) * _UNIT_TO_NM.get(unit, 1e3)


def _zarr_z_spacing(path: Path) -> float | None:
    import zarr

    node = zarr.open(str(path.absolute()), mode="r")
    attrs = dict(node.attrs)
    if "voxel_size_nm" in attrs:
        return float(attrs["voxel_size_nm"][0])
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        return None
    multiscale = multiscales[0]
    axes = multiscale.get("axes") or []
    names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes]
    if "z" not in names or not isinstance(axes[names.index("z")], dict):
        return None
    z = names.index("z")
    unit = axes[z].get("unit")
    if unit is None or str(unit).lower() not in _OME_UNIT_TO_NM:
        return None
    scale = 1.0
    dataset = multiscale["datasets"][0]
    for transforms in (dataset.get("coordinateTransformations", []),
                       multiscale.get("coordinateTransformations", [])):
        for transform in transforms:
            if transform.get("type") == "scale":
                scale *= float(transform["scale"][z])
    return scale * _OME_UNIT_TO_NM[str(unit).lower()]
