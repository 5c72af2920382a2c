"""A learned rule for the mutex watershed: are two touching fragments one cell?

The plain mutex step (:mod:`.mutex`) decides from each border's mean probability alone.
Deciding every edge by the truth would take held-out ISBI slices from 0.970 to 0.985 on the
same fragments (docs/design.md, "A learned edge rule"), so the decisions, not the
fragments, are what is left to mend. This rule decides from 15 measurements of the border
and its two fragments on the same probability map (the border's mean, spread, quantiles
and length, the fragments' sizes and mean probabilities) with boosted decision trees
fitted on out-of-fold maps of the bundled model's recipe (``scripts/fit_edge_rule.py``,
scikit-learn at build time only). The trees travel in the model file as plain lists and
are evaluated here in numpy; the mutex weight of an edge is the trees' logit plus a bias.
Only the map is measured, never the image, so that the rule does not learn one
microscope's grey values.
"""

from __future__ import annotations

import numpy as np

from .agglomeration import pixel_pairs_across_borders

QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
N_FEATURES = 8 + len(QUANTILES)


def edge_features(
    fragments: np.ndarray, probability: np.ndarray, pixel_factor: float = 1.0
) -> tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """The touching pairs ``(u, v)`` of ``fragments`` (0 excluded), the node count and, per
    pair, the rule's measurements (float64, ``N_FEATURES`` columns). ``pixel_factor``: how
    many of the model's pixels one pixel of the data is, so that lengths and areas are
    measured in the model's pixels whatever the data's pixel size."""
    n = int(fragments.max()) + 1 if fragments.size else 1
    low, high, value = pixel_pairs_across_borders(fragments, probability, np.maximum)
    if low.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, n, np.zeros((0, N_FEATURES))
    keys, inverse = np.unique(low * n + high, return_inverse=True)
    value = value.astype(np.float64)
    count = np.bincount(inverse)
    mean = np.bincount(inverse, value) / count
    spread = np.sqrt(np.maximum(np.bincount(inverse, value**2) / count - mean**2, 0))
    order = np.lexsort((value, inverse))
    starts = np.concatenate([[0], np.cumsum(count)[:-1]])
    quantiles = [value[order][starts + np.floor(q * (count - 1)).astype(int)] for q in QUANTILES]
    u, v = keys // n, keys % n
    size = np.bincount(fragments.ravel(), minlength=n).astype(np.float64)
    inside = np.bincount(fragments.ravel(), probability.ravel().astype(np.float64), minlength=n)
    inside /= np.maximum(size, 1)
    size *= pixel_factor**2
    length = np.log(count * pixel_factor)
    small, large = np.log1p(np.minimum(size[u], size[v])), np.log1p(np.maximum(size[u], size[v]))
    features = [
        mean,
        spread,
        *quantiles,
        length,
        small,
        large,
        np.minimum(inside[u], inside[v]),
        np.maximum(inside[u], inside[v]),
        length - 0.5 * small,
    ]
    return u, v, n, np.stack(features, 1)


class EdgeRule:
    """Boosted trees over :func:`edge_features`: ``logit(x)`` is their summed output.

    Trees are stored padded to one node count: per tree and node the feature tested, the
    threshold (``x <= threshold`` goes left), the left and right children and the value a
    leaf adds (a node whose children are both 0 is a leaf)."""

    def __init__(self, baseline, feature, threshold, left, right, value):
        self.baseline = float(baseline)
        self.feature = np.asarray(feature, np.int64)
        self.threshold = np.asarray(threshold, np.float64)
        self.left = np.asarray(left, np.int64)
        self.right = np.asarray(right, np.int64)
        self.value = np.asarray(value, np.float64)
        shapes = {a.shape for a in (self.feature, self.threshold, self.left, self.right)}
        if len(shapes | {self.value.shape}) != 1 or self.value.ndim != 2:
            raise ValueError("an edge rule's tree arrays must share one (trees, nodes) shape")
        if self.feature.size and (self.feature.max() >= N_FEATURES or self.feature.min() < 0):
            raise ValueError("an edge rule tests a measurement it does not know")
        width = self.value.shape[1]
        if self.left.size and (
            min(self.left.min(), self.right.min()) < 0
            or max(self.left.max(), self.right.max()) >= width
        ):
            raise ValueError("an edge rule's children must be nodes of their tree")
        self._flatten()

    def logit(self, x: np.ndarray) -> np.ndarray:
        """The trees' summed output for each row of ``x``: all trees walked at once, one
        level per step, leaves pointing at themselves (1-D gathers: 2x faster than
        indexing the (trees, nodes) arrays)."""
        n_trees, width = self.value.shape
        if len(x) == 0 or n_trees == 0:
            return np.full(len(x), self.baseline)
        node = np.repeat(np.arange(n_trees) * width, len(x)).reshape(n_trees, len(x))
        column = np.arange(len(x)) * N_FEATURES
        flat_x = np.ascontiguousarray(x, np.float64).ravel()
        for _ in range(self._depth):
            go_left = flat_x[column + self._feature[node]] <= self._threshold[node]
            node = np.where(go_left, self._left[node], self._right[node])
        return self.baseline + self._value[node].sum(axis=0)

    def _flatten(self) -> None:
        """Global node ids, leaves as their own children, and the deepest leaf's depth."""
        n_trees, width = self.value.shape
        own = np.arange(n_trees * width).reshape(n_trees, width)
        offset = (np.arange(n_trees) * width)[:, None]
        leaf = (self.left == 0) & (self.right == 0)
        self._left = np.where(leaf, own, self.left + offset).ravel()
        self._right = np.where(leaf, own, self.right + offset).ravel()
        self._feature = np.where(leaf, 0, self.feature).ravel()
        self._threshold = self.threshold.ravel()
        self._value = self.value.ravel()
        flat_leaf = leaf.ravel()
        node, self._depth = offset.ravel(), 0
        while (inner := node[~flat_leaf[node]]).size:
            if self._depth > width:
                raise ValueError("an edge rule's trees must not loop")
            node = np.concatenate([self._left[inner], self._right[inner]])
            self._depth += 1

    def to_dict(self) -> dict:
        return {
            "baseline": self.baseline,
            "feature": self.feature.tolist(),
            "threshold": self.threshold.tolist(),
            "left": self.left.tolist(),
            "right": self.right.tolist(),
            "value": self.value.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> EdgeRule:
        try:
            return cls(**{k: data[k] for k in _KEYS})
        except (KeyError, TypeError) as exc:
            raise ValueError(f"an edge rule needs {', '.join(_KEYS)}") from exc

    def __eq__(self, other) -> bool:
        return isinstance(other, EdgeRule) and self.to_dict() == other.to_dict()

    __hash__ = None


_KEYS = ("baseline", "feature", "threshold", "left", "right", "value")


def learned_merges(
    fragments: np.ndarray, probability: np.ndarray, rule: EdgeRule, bias: float, pixel_factor: float
) -> np.ndarray:
    """A lookup table (label -> the label it ends in) from a mutex watershed whose edge
    weights are ``rule``'s logit plus ``bias`` (positive: one cell)."""
    from .mutex import mutex_watershed

    u, v, n, x = edge_features(fragments, probability, pixel_factor)
    if u.size == 0:
        return np.arange(n)
    return mutex_watershed(n, u, v, rule.logit(x) + bias)
