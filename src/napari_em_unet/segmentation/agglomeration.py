"""Merging over-split cells: neighbours whose common border is faint in the probability map.

A seeded watershed splits a cell wherever the network left a faint line inside it (an
organelle's edge, a streak of the microscope): two seeds, two cells. The border between
two such halves is faint along most of its length, while a real membrane between two
cells is dark along most of it. So neighbours are merged, faintest border first, while
the mean probability along their common border stays below a threshold; after each merge
the merged cell's borders with its neighbours are the union of its parts' (average
agglomeration on the region adjacency graph, as in the connectomics literature).

On the fine-tuned models of the FIB-SEM-like proxy, where splits are most of the error,
it lifted the far slices by 0.01-0.03 V_rand (docs/design.md, "Merging faint borders").
"""

from __future__ import annotations

import heapq

import numpy as np


def border_statistics(labels: np.ndarray, probability: np.ndarray) -> dict[int, dict]:
    """For every pair of touching labels (0 excluded), the sum and count of the border's
    probability: each 4-neighbour pixel pair across the border adds the larger of its two
    probabilities (the border runs between the pixels). ``{a: {b: [sum, count]}}``, both
    directions sharing one list."""
    low, high, value = pixel_pairs_across_borders(labels, probability, np.maximum)
    n = int(labels.max()) + 1
    keys, inverse = np.unique(low * n + high, return_inverse=True)
    sums = np.bincount(inverse, value.astype(np.float64))
    counts = np.bincount(inverse)
    borders: dict[int, dict] = {}
    for key, total, count in zip(keys.tolist(), sums.tolist(), counts.tolist(), strict=True):
        a, b = divmod(key, n)
        shared = [total, count]
        borders.setdefault(a, {})[b] = shared
        borders.setdefault(b, {})[a] = shared
    return borders


def pixel_pairs_across_borders(
    labels: np.ndarray, values: np.ndarray, combine
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of 4-neighbour pixels with two different labels (0 excluded): the lower
    label (int64), the higher, and ``combine`` of the two pixels' ``values``."""
    pairs = []
    for before, after in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),  # left | right
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),  # above / below
    ):
        a, b = labels[before], labels[after]
        across = (a != b) & (a > 0) & (b > 0)
        value = combine(values[before][across], values[after][across])
        pairs.append((a[across], b[across], value))
    first, second, value = (np.concatenate(p) for p in zip(*pairs, strict=True))
    return np.minimum(first, second).astype(np.int64), np.maximum(first, second), value


def faint_border_merges(
    labels: np.ndarray, probability: np.ndarray, below: float, groups: np.ndarray | None = None
) -> np.ndarray:
    """A lookup table (index: label, value: the label it is merged into) that merges
    touching labels while the mean probability along their common border is below
    ``below``, faintest first; with ``groups`` (a group per label), only labels of one
    group are merged."""
    borders = border_statistics(labels, probability)
    parent = np.arange(int(labels.max()) + 1)
    same = (lambda a, b: True) if groups is None else (lambda a, b: groups[a] == groups[b])
    queue = [
        (total / count, a, b)
        for a, neighbours in borders.items()
        for b, (total, count) in neighbours.items()
        if a < b and same(a, b)
    ]
    heapq.heapify(queue)
    while queue:
        mean, a, b = heapq.heappop(queue)
        if mean >= below:
            break
        shared = borders.get(a, {}).get(b)
        if shared is None or shared[0] / shared[1] != mean:
            continue  # stale: one side was merged since
        _merge(borders, parent, a, b, queue, same)
    return _roots(parent)


def _merge(borders: dict, parent: np.ndarray, a: int, b: int, queue: list, same) -> None:
    """Merge ``b`` into ``a``: ``a`` takes over ``b``'s borders, adding up shared ones."""
    parent[b] = a
    del borders[a][b]
    for c, (total, count) in borders.pop(b).items():
        if c == a:
            continue
        del borders[c][b]
        shared = borders[a].get(c)
        if shared is None:
            shared = borders[a][c] = borders[c][a] = [0.0, 0]
        shared[0] += total
        shared[1] += count
        if same(a, c):
            heapq.heappush(queue, (shared[0] / shared[1], min(a, c), max(a, c)))


def _roots(parent: np.ndarray) -> np.ndarray:
    roots = parent.copy()
    while True:
        up = roots[roots]
        if np.array_equal(up, roots):
            return roots
        roots = up
