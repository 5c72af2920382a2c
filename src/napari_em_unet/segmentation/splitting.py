"""Seeds that a gap in a membrane joined: cut at distance-transform peaks, rejoined where
no membrane parts the pieces.

A seed is a connected region of confident interior. Where the network leaves a gap in a
membrane, the interiors of two cells touch, make one seed, and the watershed gives the two
cells one label: a merge, the error V_rand punishes most. Cutting each seed around the
peaks of its distance transform (the classic distance-transform watershed: one piece per
roughly round part) undoes such merges, and cuts many single cells for nothing. So the
pieces of one seed are joined again, faintest border first, while the mean probability
along their common border stays below a threshold. That border is measured on a flood of
the whole slice, where two real cells meet along their whole membrane and the halves of
one cell along a line of interior (docs/design.md, "Cut seeds": +0.008 and -0.001 V_rand on
the two held-out halves of ISBI, at 1.5-1.7x the watershed's time, so off by default).

On confident maps most seeds are whole cells, and a cell with two round parts was cut and
not always joined again (its border can run along an organelle). ``neck`` keeps such a
seed whole when the neck between the peaks is wide against them; a gap in a membrane
makes a neck a few pixels wide between cells tens of pixels wide (docs/design.md, "A
neck criterion for cut seeds").

Only seeds with two peaks or more go through the distance watershed, so a slice where
nothing needs cutting costs a distance transform and a maximum filter (a few ms).
"""

from __future__ import annotations

import numpy as np


def split_seeds(
    seeds: np.ndarray, spacing: int, neck: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """``seeds`` (int, 0 = none) with every region holding several peaks of its distance
    transform, at least ``spacing`` pixels apart, cut into one piece per peak.

    With ``neck`` below 1, two pieces stay one where the neck between them is at least
    ``neck`` times as wide as the lower of their two peaks: a gap in a membrane makes a
    narrow neck between two wide cells, a long or bent cell a neck nearly as wide as
    itself.

    Returns the pieces (uncut regions keep their label; pieces get labels above
    ``seeds.max()``) and ``origin``: for each label of the pieces, the seed it came from.
    """
    from scipy import ndimage

    inside = seeds > 0
    n_seeds = int(seeds.max()) if seeds.size else 0
    # A taxicab distance, smoothed so that its plateaus and ridges do not make a peak at
    # every pixel: 2 + 1 ms per 512 x 512 slice, where the Euclidean one takes 13.
    distance = ndimage.uniform_filter(
        ndimage.distance_transform_cdt(inside, "taxicab").astype(np.float32), 3
    )
    peaks = (distance == ndimage.maximum_filter(distance, 2 * spacing + 1)) & inside
    markers, n_markers = ndimage.label(peaks)
    region_of = np.zeros(n_markers + 1, np.int64)
    region_of[markers[peaks]] = seeds[peaks]
    origin = np.concatenate([np.arange(n_seeds + 1), region_of[1:]])
    many = np.flatnonzero(np.bincount(region_of[1:], minlength=n_seeds + 1) >= 2)
    if many.size == 0:
        return seeds, origin[: n_seeds + 1]
    from skimage.segmentation import watershed

    cut_flag = np.zeros(n_seeds + 1, bool)
    cut_flag[many] = True
    cut_here = cut_flag[seeds]  # a lookup, not np.isin's sort: 0.5 instead of 3 ms
    cut = watershed(-distance, np.where(cut_here, markers, 0), mask=cut_here)
    if neck < 1.0:
        cut = _wide_necks_joined(cut, distance, neck)[cut]
    return np.where(cut_here, cut + n_seeds, seeds), origin


def _wide_necks_joined(cut: np.ndarray, distance: np.ndarray, neck: float) -> np.ndarray:
    """A lookup table joining touching pieces of ``cut`` whose neck, the highest distance
    along their common border, reaches ``neck`` times the lower of their two peaks.

    Widest necks first, and a joined group's peak is its highest: a thin bridge between
    two cells, cut into a piece of its own, joins the first cell and then stands against
    the second with that cell's height (the watershed's "dynamics")."""
    from .agglomeration import pixel_pairs_across_borders

    n = int(cut.max()) + 1
    peak = np.zeros(n, np.float32)
    inside = cut > 0  # ndimage.maximum sorts the whole slice: 0.1 s where this takes 3 ms
    np.maximum.at(peak, cut[inside], distance[inside])
    low, high, width = pixel_pairs_across_borders(cut, distance, np.minimum)
    keys, inverse = np.unique(low * n + high, return_inverse=True)
    widest = np.zeros(keys.size, np.float32)
    np.maximum.at(widest, inverse, width)
    parent = np.arange(n)
    for key in np.argsort(-widest, kind="stable").tolist():
        a, b = (_root(parent, int(x)) for x in divmod(int(keys[key]), n))
        if a != b and widest[key] >= neck * min(peak[a], peak[b]):
            parent[b] = a
            peak[a] = max(peak[a], peak[b])
    return np.array([_root(parent, i) for i in range(n)])


def _root(parent: np.ndarray, i: int) -> int:
    while parent[i] != i:
        i = parent[i]
    return i
