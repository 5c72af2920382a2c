"""The evidence that two 2D labels are one object or two, as signed edge weights.

Two kinds of edge, each weighted ``size * (evidence + logit(bias))`` so that the one
``bias`` moves every decision the same way (see :class:`~.linking.LinkParams`):

* **Between sections** (a label in section z and one in z + d, wherever they overlap): the
  evidence is ``sharpness * (IoU - threshold)`` on their intersection over union. Adjacent
  sections (d = 1, threshold 0) attract whenever they overlap at all. The longer edges that
  bridge a section where a cell was lost or mis-segmented (d > 1, up to ``max_gap_nm``)
  attract above ``skip_iou`` and repel below it at a fraction (``skip_repulsion``) of their
  weight: a branch or a 2D merge also overlaps its neighbours poorly over a few sections,
  and at full weight that repulsion, repeated over every bridged distance, cut every branch.
  The size is the square root of the smaller label's area (a length, like the boundary
  below).
* **Within a section** (two labels that face each other across a membrane): the evidence
  is the membrane probability along their shared boundary, ``-logit(p)``: a clear membrane
  repels strongly, a faint one (where the 2D segmentation may have cut a cell in two)
  attracts. The size is the boundary's length. Without a probability map, a boundary
  counts as a membrane of probability ``assumed_membrane``.

Labels are compared exactly where they are: no alignment, the stack is assumed registered.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_SHIFT = np.uint64(32)
_LOW = np.uint64(0xFFFFFFFF)


def pair_counts(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Overlapping (label in ``a``, label in ``b``) pairs and their pixel counts (0 ignored).

    Pairs come sorted by (label in ``a``, label in ``b``).
    """
    both = (a != 0) & (b != 0)
    first, second = a[both].astype(np.int64), b[both].astype(np.int64)
    if not first.size:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    width = int(second.max()) + 1
    if (int(first.max()) + 1) * width <= 1 << 22:
        # Few labels (the usual case): counting into a dense table beats sorting pixels.
        table = np.bincount(first * width + second)
        key = np.flatnonzero(table)
        return key // width, key % width, table[key]
    key, count = np.unique(
        (first.astype(np.uint64) << _SHIFT) | second.astype(np.uint64), return_counts=True
    )
    return (key >> _SHIFT).astype(np.int64), (key & _LOW).astype(np.int64), count


def logit(p) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))


@dataclass(frozen=True)
class Edges:
    """Edges between (section, label) nodes; ``za``/``zb`` are section indices."""

    za: np.ndarray
    la: np.ndarray
    zb: np.ndarray
    lb: np.ndarray
    weight: np.ndarray

    @staticmethod
    def empty() -> Edges:
        i = np.zeros(0, dtype=np.int64)
        return Edges(i, i, i, i, np.zeros(0, dtype=np.float64))

    @staticmethod
    def concat(parts: list[Edges]) -> Edges:
        if not parts:
            return Edges.empty()
        return Edges(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("za", "la", "zb", "lb", "weight")
            )
        )

    def __len__(self) -> int:
        return len(self.weight)


def between_sections(
    a: np.ndarray,
    b: np.ndarray,
    za: int,
    zb: int,
    sizes_a: np.ndarray,
    sizes_b: np.ndarray,
    *,
    threshold: float,
    sharpness: float,
    bias_logit: float,
    repulsion: float = 1.0,
) -> Edges:
    """Overlap edges from section ``za`` to ``zb``, weighted by intersection over union;
    negative evidence (a poor overlap) counts ``repulsion`` times."""
    la, lb, overlap = pair_counts(a, b)
    area_a, area_b = sizes_a[la], sizes_b[lb]
    iou = overlap / (area_a + area_b - overlap)
    evidence = sharpness * (iou - threshold) + bias_logit
    evidence = np.where(evidence < 0, repulsion * evidence, evidence)
    weight = np.sqrt(np.minimum(area_a, area_b)) * evidence
    return Edges(np.full(len(la), za), la, np.full(len(la), zb), lb, weight)


def within_section(
    labels: np.ndarray,
    probability: np.ndarray | None,
    z: int,
    *,
    reach_px: float,
    assumed_membrane: float,
    scale: float,
    bias_logit: float,
) -> Edges:
    """Edges between labels of one section that face each other across a membrane.

    Each label is grown into the membrane (0) around it by up to ``reach_px`` pixels; labels
    whose grown areas touch are neighbours, and where they touch is the middle of the
    membrane between them, where its probability is read (the larger value of the two
    pixels that face each other there).
    """
    grown = _grow(labels, reach_px)
    keys, values = [], []
    for first, second, axis in ((grown[:, :-1], grown[:, 1:], 1), (grown[:-1], grown[1:], 0)):
        facing = (first != second) & (first != 0) & (second != 0)
        low = np.minimum(first[facing], second[facing]).astype(np.uint64)
        high = np.maximum(first[facing], second[facing]).astype(np.uint64)
        keys.append((low << _SHIFT) | high)
        if probability is not None:
            p = np.nan_to_num(probability, nan=1.0)
            near = p[:, :-1] if axis == 1 else p[:-1]
            far = p[:, 1:] if axis == 1 else p[1:]
            # The larger of the two: with a thin membrane only one of them lies on it.
            values.append(np.maximum(near[facing], far[facing]))
    key = np.concatenate(keys)
    if key.size == 0:
        return Edges.empty()
    key, inverse, length = np.unique(key, return_inverse=True, return_counts=True)
    if probability is None:
        membrane = np.full(len(key), assumed_membrane)
    else:
        membrane = np.bincount(inverse, weights=np.concatenate(values)) / length
    weight = scale * length * (-logit(membrane) + bias_logit)
    n = len(key)
    return Edges(
        np.full(n, z),
        (key >> _SHIFT).astype(np.int64),
        np.full(n, z),
        (key & _LOW).astype(np.int64),
        weight,
    )


def _grow(labels: np.ndarray, reach_px: float) -> np.ndarray:
    """Give membrane pixels within ``reach_px`` of a label the nearest label's value."""
    from scipy import ndimage

    membrane = labels == 0
    if not membrane.any() or membrane.all():
        return labels
    distance, (rows, cols) = ndimage.distance_transform_edt(membrane, return_indices=True)
    grown = labels[rows, cols]
    grown[distance > reach_px] = 0
    return grown
