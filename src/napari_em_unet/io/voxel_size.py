"""The section spacing (z voxel size) recorded in a TIFF or zarr, which linking needs.

The XY pixel size is read by :func:`~napari_em_unet.io.volumes.open_volume`; how far apart
the sections are is read here, for a file or a volume, from where microscopy files keep
it: ImageJ's ``spacing`` (:func:`napari_em_unet.io.tiff.section_spacing_nm`), OME-XML
``PhysicalSizeZ``, the z scale of an OME-Zarr image, or a ``voxel_size_nm`` attribute
([z, y, x]) on a zarr array or group. Never fails: a file without it (or with nonsense in
it) gives None.
"""

from __future__ import annotations

import re
from pathlib import Path

from .units import UNIT_TO_NM


def section_spacing_of(source) -> float | None:
    """Distance between sections in nm recorded with ``source`` (a path or a Volume)."""
    path = getattr(source, "path", source)
    if path is None:
        return None
    path = Path(path)
    try:
        if path.suffix.lower() == ".zarr" or path.is_dir():
            value = _zarr_spacing(path)
        else:
            value = _tiff_spacing(path)
    except Exception:  # metadata is a bonus: never fail a run because of it
        return None
    return value if value is not None and 0.01 < value < 1e6 else None


def _tiff_spacing(path: Path) -> float | None:
    import tifffile

    from .tiff import section_spacing_nm

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome and tif.ome_metadata:
            match = re.search(r'PhysicalSizeZ="([0-9.eE+-]+)"', tif.ome_metadata)
            if match:
                unit = re.search(r'PhysicalSizeZUnit="([^"]+)"', tif.ome_metadata)
                scale = UNIT_TO_NM.get(unit.group(1).lower() if unit else "\u00b5m")
                return float(match.group(1)) * scale if scale else None
        return section_spacing_nm(tif)  # ImageJ's spacing


def _zarr_spacing(path: Path) -> float | None:
    import zarr

    node = zarr.open(str(path), mode="r")
    nodes = [node]
    if isinstance(node, zarr.Group):
        nodes += [node[k] for k in sorted(node.array_keys())[:1]]
    for item in nodes:
        attrs = dict(item.attrs)
        if isinstance(attrs.get("voxel_size_nm"), (list, tuple)) and attrs["voxel_size_nm"]:
            return float(attrs["voxel_size_nm"][0])
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if not multiscales:
        return None
    multiscale = multiscales[0]
    axes = multiscale.get("axes") or []
    names = [a.get("name") if isinstance(a, dict) else str(a) for a in axes]
    if "z" not in names:
        return None
    index = names.index("z")
    scale = 1.0
    for transforms in (
        multiscale["datasets"][0].get("coordinateTransformations", []),
        multiscale.get("coordinateTransformations", []),
    ):
        for t in transforms:
            if t.get("type") == "scale":
                scale *= float(t["scale"][index])
    unit = axes[index].get("unit") if isinstance(axes[index], dict) else None
    factor = UNIT_TO_NM.get(str(unit).lower()) if unit else None
    return scale * factor if factor else None


def read_voxel_size_nm(path) -> tuple[float | None, float | None, float | None]:
    """``(Z, Y, X)`` in nm as the file at ``path`` records them (None where it does not):
    Z from :func:`section_spacing_of`, XY as :func:`~napari_em_unet.io.volumes.open_volume`
    reads it. Z is never guessed from XY (sections are often ten times thicker than a
    pixel). An unreadable file raises :class:`~napari_em_unet.errors.InputError` as
    ``open_volume`` does; missing metadata never does.
    """
    from .volumes import open_volume

    xy = open_volume(path).pixel_size_nm
    return (section_spacing_of(path), xy, xy)
