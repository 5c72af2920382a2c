"""The labels -> training-target rule.

A labels slice can be an ISBI-style mask (0 = membrane, 255 = interior) or napari instance
labels painted by a user (cells with different ids that touch). The rule is the same for
both: **0 is membrane, any non-zero value is cell interior, and the border between two
different non-zero labels is membrane too.**

Borders derived from touching labels are one pixel wide, while real membranes are several
pixels wide at the model's scale. Training on one-pixel borders literally teaches the
network thin membranes; the watershed then leaks through them and the segmentation gets
worse while the pixel error improves. So derived borders are widened to the membrane width
the model was trained with, and, as in the U-Net paper, the loss is weighted up around
them so that separating touching cells matters more than the bulk of the interior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Target:
    membrane: np.ndarray
    """float32, 1 = membrane, 0 = interior."""
    weight: np.ndarray
    """float32 per-pixel loss weight (mean about 1)."""


def derived_borders(labels: np.ndarray) -> np.ndarray:
    """Pixels where two different non-zero labels touch (4-neighbourhood), one pixel wide."""
    labels = np.asarray(labels)
    border = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        a = labels.take(np.arange(labels.shape[axis] - 1), axis=axis)
        b = labels.take(np.arange(1, labels.shape[axis]), axis=axis)
        touching = (a != b) & (a != 0) & (b != 0)
        # Mark the pixel on the "lower" side only, so the border is one pixel wide.
        index = [slice(None), slice(None)]
        index[axis] = slice(0, labels.shape[axis] - 1)
        border[tuple(index)] |= touching
    return border


def membrane_width(labels: np.ndarray) -> float:
    """Typical width, in pixels, of the explicit (0-valued) membranes of a labels stack.

    Twice the median distance-to-interior along the membrane's medial axis. Used to widen
    derived borders to what the model has learned. 3.0 when there are no explicit membranes.
    """
    from scipy import ndimage
    from skimage.morphology import skeletonize

    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 2 else labels
    widths = []
    for plane in labels:
        membrane = (plane == 0) & ~np.all(plane == 0)
        if membrane.sum() < 50:
            continue
        distance = ndimage.distance_transform_edt(membrane)
        axis = skeletonize(membrane)
        if axis.any():
            widths.append(2.0 * np.median(distance[axis]) - 1.0)
    return float(np.clip(np.median(widths), 1.0, 25.0)) if widths else 3.0


def separation_map(cells: np.ndarray, sigma: float = 5.0) -> np.ndarray:
    """The U-Net paper's separation term exp(-(d1 + d2)^2 / (2 sigma^2)), float32.

    d1 and d2 are each pixel's distances to its nearest and second-nearest cell (non-zero
    labels of ``cells``), so the term is high on thin membranes between two cells, where a
    missed membrane merges them. A cell is only measured within 3 sigma of its bounding box:
    beyond that the term is below exp(-4.5).
    """
    from scipy import ndimage

    first = np.full(cells.shape, np.inf, dtype=np.float32)
    second = np.full(cells.shape, np.inf, dtype=np.float32)
    pad = int(np.ceil(3 * sigma))
    for label, box in enumerate(ndimage.find_objects(cells), start=1):
        if box is None:
            continue
        box = tuple(
            slice(max(0, b.start - pad), min(n, b.stop + pad))
            for b, n in zip(box, cells.shape, strict=True)
        )
        distance = ndimage.distance_transform_edt(cells[box] != label).astype(np.float32)
        second[box] = np.minimum(second[box], np.maximum(first[box], distance))
        first[box] = np.minimum(first[box], distance)
    return np.exp(-((first + second) ** 2) / (2 * sigma**2)).astype(np.float32)


def _cells(labels: np.ndarray, membrane: np.ndarray) -> np.ndarray:
    """Cells as separate labels: a mask's 4-connected interiors, or the instances given."""
    from scipy import ndimage

    interior = (labels != 0) & ~membrane
    if np.unique(labels[interior]).size <= 1:
        return ndimage.label(interior)[0]
    return np.where(interior, labels, 0).astype(np.int64)


def training_target(
    labels: np.ndarray,
    membrane_width_px: float = 3.0,
    border_weight: float = 5.0,
    separation_weight: float = 0.0,
    separation_sigma: float = 5.0,
) -> Target:
    """The membrane target and loss weights for one 2D labels slice.

    ``separation_weight`` (the U-Net paper's w0; 0: off) weights membrane pixels up where two
    cells come close (:func:`separation_map`), for masks as well as instance labels.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    membrane = labels == 0
    border = derived_borders(labels)
    weight = np.ones(labels.shape, dtype=np.float32)
    if border.any():
        distance = ndimage.distance_transform_edt(~border)
        half = max(0.0, (membrane_width_px - 1.0) / 2.0)
        membrane |= distance <= half
        sigma = max(1.0, membrane_width_px)
        weight += border_weight * np.exp(-(distance**2) / (2 * sigma**2)).astype(np.float32)
    if separation_weight > 0 and membrane.any() and not membrane.all():
        close = separation_map(_cells(labels, membrane), separation_sigma)
        weight += separation_weight * close * membrane
    # Balance classes so that the (minority) membrane class is not ignored.
    fraction = membrane.mean()
    if 0 < fraction < 0.5:
        weight[membrane] *= min(3.0, 0.5 / fraction)
    weight /= weight.mean()
    return Target(membrane.astype(np.float32), weight)


def labelled_slices(labels: np.ndarray) -> list[int]:
    """Default training slices: those whose labels are not all 0."""
    labels = np.asarray(labels)
    labels = labels[None] if labels.ndim == 2 else labels
    return [i for i, plane in enumerate(labels) if np.any(plane != 0)]
