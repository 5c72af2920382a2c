"""Link per-section labels into 3D objects: one id per object through all its sections.

The segmentation numbers cells 1..n in every section on its own. Linking decides which
2D labels of neighbouring sections are the same object, in two passes over the sections:

1. **Graph** (:mod:`.link_graph`): every 2D label is a node. Labels of nearby sections that
   overlap are joined by an edge weighted by how well they overlap; labels of one section
   that face each other across a membrane by an edge weighted by the membrane probability
   between them (:mod:`.link_evidence`). A 2D label that joins two cells of the sections
   around it is first split along the probability map (:mod:`.link_split`).
2. **Objects** (:mod:`.link_cluster`): the graph is partitioned by greedy additive edge
   contraction, the objects are numbered 1..n in order of first appearance (section, then
   label), and each section is written with its 3D ids.

Memory depends on a few sections (the window each decision looks at) plus the graph, not
on the number of sections times their size. Reading, splitting and weighting a section only
ever looks at a fixed window of sections around it, so chunks of sections processed
separately (:mod:`.link_distributed`) give the same graph, and the same objects, as one run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..io.writers import SliceWriter
from .link_graph import (
    Geometry,
    Objects,
    SectionRecord,
    SectionWindow,
    as_labels,
    section_graph,
    solve,
)
from .link_split import SplitRule
from .streaming import Progress

DEFAULT_VOXEL_NM = (50.0, 4.0, 4.0)
"""Assumed when the voxel size is not known: ssTEM sections at the bundled model's pixel size."""


@dataclass(frozen=True)
class LinkParams:
    """How 2D labels are linked into 3D objects.

    Only ``bias`` and ``min_sections`` are meant to be changed; the others are documented
    defaults (chosen on synthetic volumes, see docs/linking.md).
    """

    bias: float = 0.3
    """The split/merge control, in (0, 1). Every edge's evidence is shifted by logit(bias):
    **higher joins more** (fewer split objects, more merged ones), lower splits more.
    0.5 adds nothing. The default, 0.3, had the best mean 3D V_rand on the tuning volumes
    with the shipped model (0.879 against 0.873 at 0.4 with the two-view model of
    2026-12-06; benchmarks/linking.py, docs/linking.md)."""
    min_sections: int = 1
    """Objects present in fewer sections are dropped (their voxels become 0)."""
    max_gap_nm: float = 50.0
    """Labels up to this far apart in depth are compared directly (at least the adjacent
    section), which bridges sections where a cell was lost or mis-segmented."""
    skip_iou: float = 0.3
    """Intersection over union above which labels two or more sections apart attract."""
    skip_repulsion: float = 0.15
    """Share of its weight with which such an edge repels below ``skip_iou``."""
    sharpness: float = 8.0
    """Weight of the overlap evidence per unit of intersection over union."""
    boundary_weight: float = 1.0
    """Weight of a within-section membrane edge per pixel of boundary, relative to the
    overlap edges (which count the square root of the smaller label's area)."""
    assumed_membrane: float = 0.9
    """Membrane probability assumed between touching labels when no map is given."""
    reach_nm: float = 16.0
    """Labels within this distance of each other across a membrane are neighbours."""
    split_merged: bool = True
    """Split 2D labels that join two cells of the neighbouring sections (needs a map)."""
    split_window_nm: float = 100.0
    """How far up and down the stack a merged label looks for the cells it joins."""
    split_rule: SplitRule = field(default_factory=SplitRule)

    def __post_init__(self):
        if not 0 < self.bias < 1:
            raise InputError(f"the bias must be between 0 and 1 (exclusive); got {self.bias}")
        if int(self.min_sections) != self.min_sections or self.min_sections < 1:
            raise InputError(f"min_sections must be a whole number >= 1; got {self.min_sections}")

    def geometry(self, voxel_size_nm) -> Geometry:
        """Sections and pixels for a voxel size (z, y, x) in nm."""
        dz, _, dx = voxel_size_nm
        return Geometry(
            gap=max(1, math.floor(self.max_gap_nm / dz + 1e-6)),
            split_window=max(1, math.floor(self.split_window_nm / dz + 1e-6)),
            reach_px=max(2.0, self.reach_nm / dx),
        )


@dataclass(frozen=True)
class LinkProgress(Progress):
    """One section done in one of the two passes.

    ``done`` and ``total`` count steps over both passes (``total`` = 2 x sections), so a
    progress bar fills once; ``index`` is the section just read (pass 1) or written (2).
    """

    pass_number: int = 1
    passes: int = 2
    objects: int | None = None
    """Number of 3D objects, known from pass 2 on."""


def resolve_voxel_size(
    voxel_size_nm=None, pixel_size_nm: float | None = None, spacing_nm: float | None = None
) -> tuple[float, float, float]:
    """(z, y, x) in nm: ``voxel_size_nm`` if given (one value: isotropic), else the pixel
    size and section spacing that are known, else :data:`DEFAULT_VOXEL_NM`."""
    if voxel_size_nm is not None:
        values = tuple(float(v) for v in np.broadcast_to(voxel_size_nm, (3,)))
        if not all(v > 0 and math.isfinite(v) for v in values):
            raise InputError(f"voxel sizes must be positive; got {voxel_size_nm}")
        return values
    xy = float(pixel_size_nm) if pixel_size_nm else DEFAULT_VOXEL_NM[2]
    return (float(spacing_nm) if spacing_nm else DEFAULT_VOXEL_NM[0], xy, xy)


def link_into(
    labels, target, *, probability=None, voxel_size_nm=None, params: LinkParams = LinkParams()
) -> Iterator[LinkProgress]:
    """Link ``labels`` section by section into ``target``, yielding progress.

    Parameters
    ----------
    labels : array-like, ZYX
        Per-section instance labels (0 = membrane), indexable by section: numpy, zarr, dask,
        a :class:`~napari_em_unet.io.volumes.Volume`. Any integer (or whole-valued float)
        type; ids need not be consecutive. A 2D array is one section.
    target : SliceWriter or array-like
        A streaming writer (:func:`~napari_em_unet.io.writers.open_writer`) or anything
        supporting ``target[z] = plane`` (a zarr or numpy array), shaped like ``labels``;
        written with uint32 3D ids in pass 2.
    probability : array-like, optional
        The membrane probability (0..1) of the same sections, e.g. the segmentation's
        probability output. Used to weigh boundaries and split merged labels.
    voxel_size_nm : (z, y, x) or float, optional
        Default: read from ``labels.pixel_size_nm`` for y and x when present, else
        :data:`DEFAULT_VOXEL_NM`.
    params : LinkParams

    Yields
    ------
    LinkProgress
        After each section of each pass.
    """
    two_d = len(labels.shape) == 2
    depth = 1 if two_d else int(labels.shape[0])
    if probability is not None and tuple(probability.shape) != tuple(labels.shape):
        raise InputError(
            f"probability shape {tuple(probability.shape)} differs from the "
            f"labels {tuple(labels.shape)}"
        )
    source = _Sections(labels, two_d)
    prob = None if probability is None else _Sections(probability, two_d)
    voxel = resolve_voxel_size(voxel_size_nm, getattr(labels, "pixel_size_nm", None))
    geometry = params.geometry(voxel)
    put = _writer(target, labels.shape, two_d)
    clock, records = LinkClock(depth), []
    window = SectionWindow(source, prob, depth, params, geometry)
    for record in section_graph(window, 0, depth):
        records.append(record)
        yield clock.tick(record.z, 1)
    objects = solve(records, depth, params.min_sections)
    del records, window
    count = objects.count
    for z, plane in write_sections(source, objects, 0, depth):
        put(z, plane)
        yield clock.tick(z, 2, count)


def write_sections(
    labels, objects: Objects, start: int, stop: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Pass 2: sections ``start .. stop - 1`` with their 3D ids (uint32)."""
    for z in range(start, stop):
        yield z, objects.ids_of(z, as_labels(labels[z], z))


def link_labels(
    labels, probability=None, *, voxel_size_nm=None, params: LinkParams = LinkParams()
) -> np.ndarray:
    """Link ``labels`` in memory and return the 3D labels (uint32, the shape of ``labels``)."""
    out = np.zeros(tuple(labels.shape), dtype=np.uint32)
    for _ in link_into(
        labels, out, probability=probability, voxel_size_nm=voxel_size_nm, params=params
    ):
        pass
    return out


class _Sections:
    """``labels[z]`` for a stack, or the one plane of a 2D array as section 0."""

    def __init__(self, array, two_d: bool):
        self.array, self.two_d = array, two_d

    def __getitem__(self, z: int):
        plane = self.array[...] if self.two_d else self.array[z]
        if hasattr(plane, "compute"):  # dask: read here, synchronously
            plane = plane.compute(scheduler="sync")
        return np.asarray(plane)


def _writer(target, shape, two_d: bool):
    if isinstance(target, SliceWriter):
        return target.write
    if tuple(target.shape) != tuple(shape):
        raise InputError(
            f"the output has shape {tuple(target.shape)} but the labels {tuple(shape)}"
        )

    def put(z: int, plane: np.ndarray) -> None:
        if two_d:
            target[...] = plane
        else:
            target[z] = plane

    return put


class LinkClock:
    """Elapsed time and ETA over both passes (two steps per section)."""

    def __init__(self, depth: int):
        self.total = 2 * depth
        self.start = time.perf_counter()
        self.done = 0

    def tick(self, index: int, pass_number: int, objects: int | None = None) -> LinkProgress:
        self.done += 1
        elapsed = time.perf_counter() - self.start
        eta = elapsed / self.done * (self.total - self.done)
        return LinkProgress(
            index, self.done, self.total, elapsed, eta, pass_number=pass_number, objects=objects
        )


__all__ = [
    "LinkParams",
    "LinkProgress",
    "link_into",
    "link_labels",
    "resolve_voxel_size",
    "write_sections",
    "SectionRecord",
    "DEFAULT_VOXEL_NM",
]
