"""One row of measurements per object of a labels volume, read one slice at a time.

Columns (:data:`COLUMNS`): ``label`` (the object's id), ``voxels``, ``volume_um3`` (voxels
times the voxel volume; empty when the voxel size is unknown), ``z_first`` and ``z_last``
(the first and last section holding the object), ``centroid_z``, ``centroid_y``,
``centroid_x`` (mean voxel coordinates, in voxels, not nm) and, with an image,
``mean_intensity`` (mean image value over the object's voxels).

Memory: the slice being read plus a few numbers per object, never the volume, so the
same code measures a stack held in napari and a zarr store larger than memory. The
``em-unet measure`` command, the napari Measure widget and the layer's hover features all
come from :func:`measure_objects`.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..generators import drain
from ..io.atomic import atomic_path
from .progress import Progress
from .slices import check_labels_dtype, depth_of, plane_shape, read_labels_plane, read_plane

COLUMNS = (
    "label",
    "voxels",
    "volume_um3",
    "z_first",
    "z_last",
    "centroid_z",
    "centroid_y",
    "centroid_x",
    "mean_intensity",
)
"""Column order of the table and of the CSV file."""
INTEGER_COLUMNS = frozenset({"label", "voxels", "z_first", "z_last"})


@dataclass(frozen=True)
class ObjectTable:
    """Measurements of every object, sorted by label; columns are numpy arrays.

    Attributes
    ----------
    columns : dict of str to numpy.ndarray
        In :data:`COLUMNS` order; ``mean_intensity`` only when an image was measured.
    voxel_size_nm : (float, float, float) or None
        ``(Z, Y, X)`` used for ``volume_um3`` (None: volumes are NaN).
    """

    columns: dict
    voxel_size_nm: tuple[float, float, float] | None = None

    def __len__(self) -> int:
        return len(self.columns["label"])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    def row_of(self, label: int) -> dict | None:
        """The measurements of object ``label`` as a dict, or None if it has no voxel."""
        labels = self.columns["label"]
        at = int(np.searchsorted(labels, label))
        if at >= len(labels) or labels[at] != label:
            return None
        return {name: _python(name, values[at]) for name, values in self.columns.items()}

    def rows(self) -> list[tuple]:
        """Every row as a tuple of Python numbers (NaN where a value is unknown)."""
        values = [self.columns[name] for name in self.names]
        return [
            tuple(_python(name, column[i]) for name, column in zip(self.names, values, strict=True))
            for i in range(len(self))
        ]


def _python(name: str, value):
    return int(value) if name in INTEGER_COLUMNS else float(value)


class _Sums:
    """Running per-object sums, merged slice by slice; one entry per object seen so far."""

    def __init__(self, with_intensity: bool):
        self.labels = np.empty(0, dtype=np.uint64)
        self.fields = {
            name: np.empty(0, dtype=np.float64) for name in ("voxels", "sum_z", "sum_y", "sum_x")
        }
        if with_intensity:
            self.fields["sum_intensity"] = np.empty(0, dtype=np.float64)
        self.z_first = np.empty(0, dtype=np.int64)
        self.z_last = np.empty(0, dtype=np.int64)

    def _make_room(self, labels: np.ndarray) -> np.ndarray:
        """Add entries for labels not seen before; return the positions of ``labels``."""
        merged = np.union1d(self.labels, labels)
        if len(merged) != len(self.labels):
            old = np.searchsorted(merged, self.labels)
            for name, values in self.fields.items():
                grown = np.zeros(len(merged), dtype=values.dtype)
                grown[old] = values
                self.fields[name] = grown
            first = np.full(len(merged), np.iinfo(np.int64).max, dtype=np.int64)
            last = np.full(len(merged), -1, dtype=np.int64)
            first[old], last[old] = self.z_first, self.z_last
            self.labels, self.z_first, self.z_last = merged, first, last
        return np.searchsorted(self.labels, labels)

    def add_slice(self, z: int, labels_plane: np.ndarray, image_plane) -> None:
        flat = labels_plane.ravel()
        where = np.flatnonzero(flat)
        if where.size == 0:
            return
        ids, inverse, counts = np.unique(
            flat[where].astype(np.uint64), return_inverse=True, return_counts=True
        )
        ys, xs = np.divmod(where, labels_plane.shape[1])
        at = self._make_room(ids)
        self.fields["voxels"][at] += counts
        self.fields["sum_z"][at] += counts * float(z)
        self.fields["sum_y"][at] += np.bincount(inverse, weights=ys, minlength=len(ids))
        self.fields["sum_x"][at] += np.bincount(inverse, weights=xs, minlength=len(ids))
        if image_plane is not None:
            values = image_plane.ravel()[where].astype(np.float64)
            self.fields["sum_intensity"][at] += np.bincount(
                inverse, weights=values, minlength=len(ids)
            )
        self.z_first[at] = np.minimum(self.z_first[at], z)
        self.z_last[at] = np.maximum(self.z_last[at], z)

    def table(self, voxel_size_nm) -> ObjectTable:
        voxels = self.fields["voxels"]
        divisor = np.maximum(voxels, 1)
        if voxel_size_nm is None:
            volume = np.full(len(voxels), np.nan)
        else:
            # nm^3 -> um^3: one um^3 is 1e9 nm^3.
            volume = voxels * (math.prod(voxel_size_nm) / 1e9)
        columns = {
            "label": self.labels.copy(),
            "voxels": voxels.astype(np.int64),
            "volume_um3": volume,
            "z_first": self.z_first.copy(),
            "z_last": self.z_last.copy(),
            "centroid_z": self.fields["sum_z"] / divisor,
            "centroid_y": self.fields["sum_y"] / divisor,
            "centroid_x": self.fields["sum_x"] / divisor,
        }
        if "sum_intensity" in self.fields:
            columns["mean_intensity"] = self.fields["sum_intensity"] / divisor
        return ObjectTable(columns, voxel_size_nm)


def check_voxel_size(voxel_size_nm) -> tuple[float, float, float] | None:
    """``(Z, Y, X)`` in nm as floats, or None; anything else is an :class:`InputError`."""
    if voxel_size_nm is None:
        return None
    try:
        values = tuple(float(v) for v in voxel_size_nm)
    except (TypeError, ValueError):
        raise InputError(
            f"the voxel size must be three numbers Z, Y, X in nm; got {voxel_size_nm!r}"
        ) from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(
            f"the voxel size must be three positive numbers Z, Y, X in nm; got {voxel_size_nm!r}"
        )
    return values


def measure_objects(
    labels, image=None, *, voxel_size_nm=None
) -> Generator[Progress, None, ObjectTable]:
    """Measure every non-zero label, reading one slice at a time.

    Parameters
    ----------
    labels : array-like
        2D or ZYX labels (numpy, zarr, dask, :class:`~napari_em_unet.io.volumes.Volume`);
        0 is background, every other value one object, wherever its voxels are.
    image : array-like, optional
        Image of the same shape; adds the ``mean_intensity`` column.
    voxel_size_nm : (float, float, float), optional
        ``(Z, Y, X)`` in nm, for ``volume_um3``.

    Yields
    ------
    Progress
        After each slice.

    Returns
    -------
    ObjectTable

    Raises
    ------
    InputError
        Labels that are not whole numbers or are negative, an image of another shape, a
        voxel size that is not three positive numbers.
    """
    voxel_size = check_voxel_size(voxel_size_nm)
    check_labels_dtype(labels)
    depth = depth_of(labels)
    if image is not None and (depth_of(image), plane_shape(image)) != (depth, plane_shape(labels)):
        raise InputError(
            f"the image ({_shape_text(image)}) and the labels "
            f"({_shape_text(labels)}) must have the same shape"
        )
    sums = _Sums(with_intensity=image is not None)
    for z in range(depth):
        image_plane = None if image is None else read_plane(image, z)
        sums.add_slice(z, read_labels_plane(labels, z), image_plane)
        yield Progress(z + 1, depth)
    return sums.table(voxel_size)


def measure_table(labels, image=None, *, voxel_size_nm=None) -> ObjectTable:
    """:func:`measure_objects` run to its end."""
    return drain(measure_objects(labels, image, voxel_size_nm=voxel_size_nm))


def _shape_text(array) -> str:
    shape = (depth_of(array), *plane_shape(array))
    return " x ".join(str(n) for n in shape)


def format_value(name: str, value) -> str:
    """A CSV cell: integers as integers, floats with every digit (round-trip exact),
    unknown values (NaN) empty."""
    if name in INTEGER_COLUMNS:
        return str(int(value))
    value = float(value)
    return "" if math.isnan(value) else repr(value)


def write_csv(table: ObjectTable, path: str | os.PathLike) -> Path:
    """Write ``table`` as CSV (header + one row per object), atomically.

    The file appears complete or not at all: it is written beside the target and renamed.
    """
    path = Path(path)
    names = table.names
    columns = [table.columns[name] for name in names]
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(names)
        for i in range(len(table)):
            writer.writerow(
                [format_value(name, column[i]) for name, column in zip(names, columns, strict=True)]
            )
    return path
