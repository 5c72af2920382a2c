"""The graph of 2D labels, built section by section over a small window, and its 3D ids.

:class:`SectionWindow` reads the labels (and membrane probability) a few sections around
the one being processed and forgets the rest, so memory depends on the window, not on the
depth. :func:`section_graph` yields, section by section, the labels present there and the
edges from that section to the next ones; :func:`solve` turns the collected graph into
one id per object. A chunk of sections processed anywhere (a dask worker) gives exactly the
records the same sections give in a local run, because every record depends only on the
sections within a fixed distance of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .link_cluster import contract_edges
from .link_evidence import Edges, between_sections, logit, within_section
from .link_split import split_merged

_MAX_LABEL = 2**32 - 1


@dataclass(frozen=True)
class Geometry:
    """What the voxel size means for linking, in sections and pixels."""

    gap: int
    """Longest edge between sections (1 = adjacent sections only)."""
    split_window: int
    """How many sections on each side a merged label looks for its parts."""
    reach_px: float
    """How far into the membrane labels are grown to find their neighbours."""


def as_labels(plane, z: int) -> np.ndarray:
    """One section of labels as uint32, or one clear error (negative, fractional, too big)."""
    plane = np.asarray(plane)
    if plane.ndim != 2:
        raise InputError(f"labels section {z} has shape {plane.shape}; expected a 2D plane")
    if plane.dtype == bool:
        return plane.astype(np.uint32)
    if np.issubdtype(plane.dtype, np.floating):
        if not np.isfinite(plane).all() or not np.array_equal(plane, np.round(plane)):
            raise InputError(
                f"labels section {z} holds fractional or missing values; "
                "labels must be whole numbers (0 = membrane)"
            )
    elif not np.issubdtype(plane.dtype, np.integer):
        raise InputError(f"labels section {z} has type {plane.dtype}; expected integers")
    if plane.size and (plane.min() < 0 or plane.max() > _MAX_LABEL):
        raise InputError(f"labels section {z} has values outside 0..{_MAX_LABEL}")
    return plane.astype(np.uint32, copy=False)


class SectionWindow:
    """Sections read on demand and kept while they are within reach of the current one."""

    def __init__(self, labels, probability, depth: int, params, geometry: Geometry):
        self.labels, self.probability = labels, probability
        self.depth, self.params, self.geometry = depth, params, geometry
        self._original: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}
        self._refined: dict[int, tuple[np.ndarray, int]] = {}
        self.shape: tuple[int, int] | None = None

    def original(self, z: int) -> tuple[np.ndarray, np.ndarray | None]:
        if z not in self._original:
            labels = as_labels(self.labels[z], z)
            if self.shape is None:
                self.shape = labels.shape
            elif labels.shape != self.shape:
                raise InputError(
                    f"labels section {z} has shape {labels.shape}, the others {self.shape}"
                )
            probability = None
            if self.probability is not None:
                probability = np.asarray(self.probability[z], dtype=np.float32)
                if probability.shape != labels.shape:
                    raise InputError(
                        f"probability section {z} has shape {probability.shape}"
                        f", the labels {labels.shape}"
                    )
            self._original[z] = (labels, probability)
        return self._original[z]

    def refined(self, z: int) -> tuple[np.ndarray, int]:
        """Section ``z`` with merged labels split (when a probability map is given)."""
        if z not in self._refined:
            labels, probability = self.original(z)
            cuts = 0
            if probability is not None and self.params.split_merged:
                w = self.geometry.split_window
                before = [self.original(k)[0] for k in range(z - 1, max(-1, z - w - 1), -1)]
                after = [self.original(k)[0] for k in range(z + 1, min(self.depth, z + w + 1))]
                labels, cuts = split_merged(
                    labels, probability, before, after, self.params.split_rule
                )
            self._refined[z] = (labels, cuts)
        return self._refined[z]

    def forget_before(self, z: int) -> None:
        """Drop what no section from ``z`` on can need."""
        keep_from = z - self.geometry.split_window
        for cache, limit in ((self._original, keep_from), (self._refined, z)):
            for k in [k for k in cache if k < limit]:
                del cache[k]


@dataclass(frozen=True)
class Patch:
    """The pixels a split changed in one section, compressed (kept until pass 2)."""

    data: bytes

    @staticmethod
    def between(original: np.ndarray, refined: np.ndarray) -> Patch:
        import zlib

        where = np.flatnonzero(refined != original)
        steps = np.diff(where, prepend=0).astype(np.uint32)  # small numbers compress well
        values = refined.ravel()[where].astype(np.uint32)
        return Patch(zlib.compress(np.concatenate([steps, values]).tobytes(), 1))

    def apply(self, original: np.ndarray) -> np.ndarray:
        import zlib

        both = np.frombuffer(zlib.decompress(self.data), dtype=np.uint32)
        half = len(both) // 2
        out = original.copy()
        out.ravel()[np.cumsum(both[:half], dtype=np.int64)] = both[half:]
        return out


@dataclass(frozen=True)
class SectionRecord:
    """What pass 1 keeps of one section: its labels (after splits), their sizes, its edges."""

    z: int
    labels: np.ndarray
    sizes: np.ndarray
    patch: Patch | None
    """How the section's labels were split (None: not at all)."""
    edges: Edges


def section_graph(window: SectionWindow, start: int, stop: int) -> Iterator[SectionRecord]:
    """Records of sections ``start .. stop - 1`` (edges reach up to ``gap`` sections beyond)."""
    params, geometry = window.params, window.geometry
    bias = float(logit(params.bias))
    for z in range(start, stop):
        labels, cuts = window.refined(z)
        patch = Patch.between(window.original(z)[0], labels) if cuts else None
        sizes = np.bincount(labels.ravel())
        present = np.flatnonzero(sizes)
        present = present[present != 0]
        parts = [
            within_section(
                labels,
                window.original(z)[1],
                z,
                reach_px=geometry.reach_px,
                assumed_membrane=params.assumed_membrane,
                scale=params.boundary_weight,
                bias_logit=bias,
            )
        ]
        for d in range(1, geometry.gap + 1):
            if z + d >= window.depth:
                break
            other, _ = window.refined(z + d)
            parts.append(
                between_sections(
                    labels,
                    other,
                    z,
                    z + d,
                    sizes,
                    np.bincount(other.ravel()),
                    threshold=0.0 if d == 1 else params.skip_iou,
                    sharpness=params.sharpness,
                    bias_logit=bias,
                    repulsion=1.0 if d == 1 else params.skip_repulsion,
                )
            )
        window.forget_before(z + 1)
        yield SectionRecord(z, present, sizes[present], patch, Edges.concat(parts))


@dataclass(frozen=True)
class Objects:
    """The solved linking: the 3D id of every (section, label) node."""

    node_z: np.ndarray
    node_label: np.ndarray
    node_id: np.ndarray
    starts: np.ndarray
    """``starts[z]:starts[z + 1]`` are the nodes of section z."""
    patches: dict[int, Patch]
    """Sections where pass 1 split labels, and how."""

    @property
    def count(self) -> int:
        return int(self.node_id.max()) if len(self.node_id) else 0

    def ids_of(self, z: int, original: np.ndarray) -> np.ndarray:
        """Section ``z`` (its original labels) with 3D ids, split as in pass 1."""
        patch = self.patches.get(z)
        plane = original if patch is None else patch.apply(original)
        table = self.lookup(z)
        top = int(plane.max()) if plane.size else 0
        if top >= len(table):
            # A label pass 1 never saw: the labels changed between the passes (a user
            # painting in napari while linking ran). It gets no object rather than
            # failing the run; the napari side then keeps the result out of the layer.
            table = np.concatenate([table, np.zeros(top + 1 - len(table), np.uint32)])
        return table[plane]

    def lookup(self, z: int) -> np.ndarray:
        """Table from section ``z``'s (split) labels to 3D ids."""
        lo, hi = self.starts[z], self.starts[z + 1]
        labels = self.node_label[lo:hi]
        table = np.zeros(int(labels.max()) + 1 if len(labels) else 1, dtype=np.uint32)
        table[labels] = self.node_id[lo:hi]
        return table


def solve(records: list[SectionRecord], depth: int, min_sections: int) -> Objects:
    """Partition the graph and number the objects 1..n by first appearance (section, label).

    Objects present in fewer than ``min_sections`` sections get id 0.
    """
    records = sorted(records, key=lambda r: r.z)
    node_z = np.concatenate([np.full(len(r.labels), r.z) for r in records] or [[]]).astype(np.int64)
    node_label = np.concatenate([r.labels for r in records] or [[]]).astype(np.int64)
    counts = np.bincount(node_z, minlength=depth) if len(node_z) else np.zeros(depth, int)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    keys = (node_z << 32) | node_label  # sorted: sections in order, labels sorted within
    edges = Edges.concat([r.edges for r in records])
    u = np.searchsorted(keys, (edges.za << 32) | edges.la)
    v = np.searchsorted(keys, (edges.zb << 32) | edges.lb)
    cluster = contract_edges(len(keys), u, v, edges.weight)
    sections = (
        np.bincount(
            np.unique(cluster * max(depth, 1) + node_z) // max(depth, 1), minlength=len(keys)
        )
        if len(keys)
        else np.zeros(0, int)
    )
    kept = sections[cluster] >= min_sections
    # A cluster is named by its first node in (section, label) order: numbering the kept
    # names in increasing order numbers the objects by first appearance.
    names = np.unique(cluster[kept])
    node_id = np.zeros(len(keys), dtype=np.uint32)
    node_id[kept] = (np.searchsorted(names, cluster[kept]) + 1).astype(np.uint32)
    patches = {r.z: r.patch for r in records if r.patch is not None}
    return Objects(node_z, node_label, node_id, starts, patches)
