"""Object-level corrections of a labels volume: merge, split at a section, delete small.

Each correction is planned first (:func:`plan_merge`, :func:`plan_split`,
:func:`plan_delete_small`): a generator that reads the volume one slice at a time and
returns an :class:`Edit`, the voxels that change (per slice, a bounding box and a mask),
their previous values and the one value they all get. Nothing is written while planning,
so a plan can run in a napari thread worker while the viewer shows the layer. Applying an
edit (:func:`apply_edit`) and undoing it (:func:`revert_edit`) touch only those voxels;
the napari widget applies it through ``Labels.data_setitem`` instead, so that napari's own
undo (Ctrl+Z) and the correction tracker see it like a brush stroke.

:func:`merge_objects`, :func:`split_object` and :func:`delete_small_objects` plan and
apply in one call, for scripts.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..generators import drain
from .measure import measure_objects
from .progress import Progress
from .slices import check_labels_dtype, depth_of, read_labels_plane


@dataclass(frozen=True)
class SliceEdit:
    """The voxels of one slice that an edit changes.

    Attributes
    ----------
    z : int
        Slice index (0 for a 2D volume).
    box : (int, int, int, int)
        ``(y0, y1, x0, x1)``, the bounding box of the changed voxels.
    mask : numpy.ndarray of bool
        Box-shaped: which voxels of the box change.
    old : numpy.ndarray
        Their values before the edit, in ``mask`` order.
    """

    z: int
    box: tuple[int, int, int, int]
    mask: np.ndarray
    old: np.ndarray

    @property
    def window(self) -> tuple[slice, slice]:
        y0, y1, x0, x1 = self.box
        return slice(y0, y1), slice(x0, x1)


@dataclass(frozen=True)
class Edit:
    """A planned or applied correction: every voxel listed gets ``value``.

    Attributes
    ----------
    kind : str
        ``"merge"``, ``"split"`` or ``"delete small"``.
    value : int
        The label the changed voxels get (0 when deleting).
    slices : tuple of SliceEdit
        One entry per slice with a change, in slice order.
    summary : str
        What the edit does, as a sentence for the user.
    labels : tuple of int
        The object ids involved (merged, split or deleted).
    """

    kind: str
    value: int
    slices: tuple[SliceEdit, ...]
    summary: str
    labels: tuple[int, ...] = ()

    @property
    def voxels(self) -> int:
        return int(sum(int(s.mask.sum()) for s in self.slices))

    @property
    def sections(self) -> tuple[int, ...]:
        return tuple(s.z for s in self.slices)

    def indices(self, ndim: int = 3) -> tuple[np.ndarray, ...]:
        """Index arrays of every changed voxel (``(z, y, x)``, or ``(y, x)`` for 2D data),
        the form ``Labels.data_setitem`` takes."""
        zs, ys, xs = [], [], []
        for part in self.slices:
            y, x = np.nonzero(part.mask)
            ys.append(y + part.box[0])
            xs.append(x + part.box[2])
            zs.append(np.full(len(y), part.z, dtype=np.int64))
        empty = np.empty(0, dtype=np.int64)
        z, y, x = (np.concatenate(a) if a else empty for a in (zs, ys, xs))
        return (y, x) if ndim == 2 else (z, y, x)

    def old_values(self) -> np.ndarray:
        """Previous values of the voxels of :meth:`indices`, in the same order."""
        if not self.slices:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([part.old for part in self.slices])


def _slice_edit(z: int, plane: np.ndarray, mask: np.ndarray) -> SliceEdit | None:
    """The change of one slice where ``mask`` is set (None when nothing changes)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    box_mask = mask[y0:y1, x0:x1].copy()
    return SliceEdit(z, (y0, y1, x0, x1), box_mask, plane[y0:y1, x0:x1][box_mask].copy())


def _object_id(value, what: str) -> int:
    try:
        label = int(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be an object id (a whole number); got {value!r}") from None
    if label <= 0 or label != value:
        raise InputError(f"{what} must be an object id above 0; got {value!r}")
    return label


# ----------------------------------------------------------------------------- plans
def plan_merge(labels, keep: int, absorb: int) -> Generator[Progress, None, Edit]:
    """Plan giving object ``absorb`` the id ``keep`` (they become one object).

    Raises
    ------
    InputError
        The ids are equal, 0, or one of them has no voxel.
    """
    keep, absorb = _object_id(keep, "the object to keep"), _object_id(absorb, "the object")
    if keep == absorb:
        raise InputError(f"both clicks were on object {keep}; pick two different objects")
    check_labels_dtype(labels)
    depth, found_keep, parts = depth_of(labels), False, []
    for z in range(depth):
        plane = read_labels_plane(labels, z)
        found_keep = found_keep or bool(np.any(plane == keep))
        part = _slice_edit(z, plane, plane == absorb)
        if part is not None:
            parts.append(part)
        yield Progress(z + 1, depth)
    missing = [label for label, found in ((keep, found_keep), (absorb, bool(parts))) if not found]
    if missing:
        raise InputError(f"object {missing[0]} is not in the labels (it has no voxel)")
    voxels = sum(int(part.mask.sum()) for part in parts)
    summary = f"merged object {absorb} into {keep} ({voxels} voxels relabelled)"
    return Edit("merge", keep, tuple(parts), summary, (keep, absorb))


def plan_split(labels, label: int, section: int) -> Generator[Progress, None, Edit]:
    """Plan giving the part of object ``label`` from ``section`` on a new id, one above the
    largest id in the volume.

    Parameters
    ----------
    labels : array-like
        ZYX labels.
    label : int
        The object to split.
    section : int
        The first slice of the part that gets the new id.

    Raises
    ------
    InputError
        2D labels, a section outside the volume, an object with no voxel before or
        from ``section``, or no free id left in the labels' data type.
    """
    label = _object_id(label, "the object to split")
    check_labels_dtype(labels)
    depth = depth_of(labels)
    if len(labels.shape) != 3 or depth < 2:
        raise InputError("splitting at a section needs a Z x Y x X volume of 2 or more slices")
    section = int(section)
    if not 0 < section < depth:
        raise InputError(
            f"section {section} cannot split anything: pick one of 1-{depth - 1} "
            "(the part from that section on gets the new id)"
        )
    largest, before, parts = 0, False, []
    for z in range(depth):
        plane = read_labels_plane(labels, z)
        largest = max(largest, int(plane.max()) if plane.size else 0)
        mask = plane == label
        if z < section:
            before = before or bool(mask.any())
        else:
            part = _slice_edit(z, plane, mask)
            if part is not None:
                parts.append(part)
        yield Progress(z + 1, depth)
    if not before and not parts:
        raise InputError(f"object {label} is not in the labels (it has no voxel)")
    if not before or not parts:
        where = "before" if not before else "on or after"
        raise InputError(
            f"object {label} has no voxel {where} section {section}; nothing to split there"
        )
    value = _free_label(labels, largest)
    voxels = sum(int(part.mask.sum()) for part in parts)
    summary = (
        f"split object {label} at section {section}: sections {parts[0].z}-"
        f"{parts[-1].z} are now object {value} ({voxels} voxels)"
    )
    return Edit("split", value, tuple(parts), summary, (label, value))


def _free_label(labels, largest: int) -> int:
    dtype = np.dtype(labels.dtype)
    limit = 1 if dtype.kind == "b" else int(np.iinfo(dtype).max)
    if largest >= limit:
        raise InputError(
            f"no free object id left in these {dtype} labels (largest is "
            f"{largest}); convert them to uint32 first"
        )
    return largest + 1


def plan_delete_small(labels, min_voxels: int) -> Generator[Progress, None, Edit]:
    """Plan setting every object of fewer than ``min_voxels`` voxels (in 3D) to 0.

    Two passes over the slices: one counting each object's voxels, one collecting the
    small objects' voxels. Progress counts both.
    """
    min_voxels = int(min_voxels)
    if min_voxels < 1:
        raise InputError(f"the minimum size must be at least 1 voxel; got {min_voxels}")
    depth = depth_of(labels)
    counting = measure_objects(labels)
    while True:
        try:
            step = next(counting)
        except StopIteration as done:
            table = done.value
            break
        yield Progress(step.done, 2 * depth)
    small = table.columns["label"][table.columns["voxels"] < min_voxels]
    parts = []
    for z in range(depth):
        if small.size:
            plane = read_labels_plane(labels, z)
            part = _slice_edit(z, plane, np.isin(plane, small))
            if part is not None:
                parts.append(part)
        yield Progress(depth + z + 1, 2 * depth)
    if not small.size:
        summary = f"no object is smaller than {min_voxels} voxels; nothing deleted"
    else:
        voxels = int(sum(int(p.mask.sum()) for p in parts))
        summary = (
            f"deleted {small.size} object(s) smaller than {min_voxels} voxels "
            f"({voxels} voxels set to 0)"
        )
    return Edit("delete small", 0, tuple(parts), summary, tuple(int(v) for v in small))


# ----------------------------------------------------------------------------- writing
def _write(labels, edit: Edit, *, undo: bool) -> None:
    two_d = len(labels.shape) == 2
    for part in edit.slices:
        key = part.window if two_d else (part.z, *part.window)
        region = np.array(labels[key], copy=True)
        region[part.mask] = part.old if undo else edit.value
        labels[key] = region


def apply_edit(labels, edit: Edit) -> None:
    """Write ``edit`` into ``labels`` (numpy or zarr), touching only its bounding boxes."""
    _write(labels, edit, undo=False)


def revert_edit(labels, edit: Edit) -> None:
    """Undo :func:`apply_edit`: the changed voxels get their previous values back."""
    _write(labels, edit, undo=True)


def merge_objects(labels, keep: int, absorb: int) -> Edit:
    """Merge object ``absorb`` into ``keep``, in place; return the edit (for undo)."""
    edit = drain(plan_merge(labels, keep, absorb))
    apply_edit(labels, edit)
    return edit


def split_object(labels, label: int, section: int) -> Edit:
    """Give the part of ``label`` from ``section`` on a new id, in place; return the edit."""
    edit = drain(plan_split(labels, label, section))
    apply_edit(labels, edit)
    return edit


def delete_small_objects(labels, min_voxels: int) -> Edit:
    """Set objects of fewer than ``min_voxels`` voxels to 0, in place; return the edit."""
    edit = drain(plan_delete_small(labels, min_voxels))
    apply_edit(labels, edit)
    return edit
