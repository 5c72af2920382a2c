"""ISBI 2012 challenge scores, the leaderboard's way (Arganda-Carreras et al. 2015).

``v_rand`` and ``v_info`` are the challenge's final metrics, "foreground-restricted Rand /
information theoretic scoring after border thinning", as Fiji's Trainable_Segmentation
computes them (``RandError.getMaximalVRandAfterThinning`` and
``VariationOfInformation.getMaximalVInfoAfterThinning``):

* The proposal (high = cell) is binarised at each threshold ``0.0, 0.1, ...`` as Java
  accumulates them (``th += 0.1`` while ``th <= 1.0``: 11 values, the last one
  0.9999999999999999): cell = value > threshold. The ground truth is binarised the same way;
  for 0/255 or instance labels every threshold gives the same mask (value > 0).
* Ground-truth objects are its 4-connected cell components; ground-truth membrane pixels
  are left out of the score.
* The proposal's borders are thinned: a binary watershed floods the border from the
  proposal's 4-connected cell components, so a thick border collapses to a one-pixel line
  (a "dam") where two floods meet. Dam pixels that fall inside the ground-truth foreground
  count as singletons (each its own object).
* Per slice, with p_ij the joint distribution over ground-truth foreground pixels:
  ``V_rand = 2 sum p_ij^2 / (sum s_i^2 + sum t_j^2)`` and
  ``V_info = 2 I(S;T) / (H(S) + H(T))``.
* Per-slice scores are averaged over the stack at each threshold; the best threshold is
  taken separately for each score.

What is scored: instance labels (integers: 0 = membrane, cells any other value) get a border
(0) drawn wherever two different labels touch, then count as a binary proposal (one
threshold is enough: all give the same mask). A float array is a membrane probability map
(the product's own probability output) and is scored as proposal = 1 - probability.

The earlier "grown membrane" variant (predicted objects grown over predicted membrane, no
thinning, no singletons) stays available as ``v_rand_grown`` / ``v_info_grown``, and
``pixel_error`` is the fraction of pixels whose membrane/interior class differs (membrane:
label 0, or probability >= 0.5).
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


def _java_thresholds(start: float = 0.0, stop: float = 1.0, step: float = 0.1) -> tuple:
    """The thresholds Fiji's ``for (double th = start; th <= stop; th += step)`` visits."""
    values, th = [], start
    while th <= stop:
        values.append(th)
        th += step
    return tuple(values)


THRESHOLDS: tuple[float, ...] = _java_thresholds()
"""0.0, 0.1, 0.2, 0.30000000000000004, ..., 0.9999999999999999 (11 values, as in Java)."""


@dataclass(frozen=True)
class SliceScore:
    v_rand: float
    """Official (thinned) V_rand of this slice, at the best threshold for the slice or, in a
    :class:`StackScore`, at the stack's best threshold."""
    v_info: float
    pixel_error: float
    v_rand_grown: float = float("nan")
    v_info_grown: float = float("nan")
    v_rand_by_threshold: tuple = ()
    """Official V_rand at each of :data:`THRESHOLDS` (one value for a binary proposal)."""
    v_info_by_threshold: tuple = ()


@dataclass(frozen=True)
class StackScore:
    v_rand: float
    v_info: float
    pixel_error: float
    per_slice: list[SliceScore] = field(default_factory=list)
    v_rand_grown: float = float("nan")
    v_info_grown: float = float("nan")
    v_rand_threshold: float | None = None
    """The proposal threshold of the best mean V_rand (None for a binary proposal)."""
    v_info_threshold: float | None = None

    def to_dict(self) -> dict:
        keys = ("v_rand", "v_info", "pixel_error", "v_rand_grown", "v_info_grown")
        return {
            **{k: getattr(self, k) for k in keys},
            "thresholds": {"v_rand": self.v_rand_threshold, "v_info": self.v_info_threshold},
            "per_slice": {k: [getattr(s, k) for s in self.per_slice] for k in keys},
        }


# ----------------------------------------------------------------------------- inputs
def touching_borders(labels: np.ndarray) -> np.ndarray:
    """Pixels where two different non-zero labels touch (4-neighbourhood), one pixel wide."""
    from .targets import derived_borders

    return derived_borders(labels)


def is_probability(prediction: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(prediction).dtype, np.floating)


def cell_mask(labels: np.ndarray) -> np.ndarray:
    """Instance labels or a 0/255 mask -> cells (True), with borders drawn between touching
    labels so that two cells never share an edge."""
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.copy()
    return (labels != 0) & ~touching_borders(labels)


def proposal_of(prediction: np.ndarray) -> tuple[np.ndarray, bool]:
    """(proposal, is_binary): a bool cell mask for labels, ``1 - p`` (float32) for a
    membrane probability map (NaN, where nothing was predicted, counts as membrane)."""
    prediction = np.asarray(prediction)
    if is_probability(prediction):
        p = np.nan_to_num(prediction.astype(np.float32), nan=1.0)
        return np.float32(1.0) - p, False
    return cell_mask(prediction), True


def membrane_mask_of(prediction: np.ndarray) -> np.ndarray:
    """The prediction as 0 = membrane / 1 = cell (probability >= 0.5 is membrane)."""
    prediction = np.asarray(prediction)
    if is_probability(prediction):
        return np.where(np.nan_to_num(prediction, nan=1.0) >= 0.5, 0, 1).astype(np.uint8)
    return prediction


# ----------------------------------------------------------------------------- thinning
_FOUR = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], dtype=bool)


def objects(labels: np.ndarray) -> np.ndarray:
    """4-connected components of equal non-zero value (0 stays 0)."""
    from skimage.measure import label

    return label(np.asarray(labels), background=0, connectivity=1)


def thin_borders(cells: np.ndarray) -> np.ndarray:
    """Binary watershed of a cell mask: labels of its 4-connected components flooded over
    the border pixels; 0 only on one-pixel dams where two floods meet.

    The flood runs breadth-first, one distance layer at a time, with the rule of a
    sequential marker-controlled watershed with dams: a pixel whose already-labelled
    neighbours disagree is a dam, and of two neighbours of the same layer that receive
    different labels the later one in raster order is (as if processed second).
    """
    from scipy import ndimage

    comp, n = ndimage.label(cells, structure=_FOUR)
    if n == 0 or cells.all():
        return comp.astype(np.int32)
    h, w = comp.shape
    lab = np.full((h + 2, w + 2), -2, dtype=np.int32)  # -2 outside, -1 not yet flooded
    lab[1:-1, 1:-1] = np.where(cells, comp, -1)
    flat = lab.ravel()
    offsets = np.array([-(w + 2), -1, 1, w + 2])
    unflooded = np.flatnonzero(flat == -1)
    near = (flat[unflooded[:, None] + offsets] > 0).any(axis=1)
    frontier = unflooded[near]
    scratch = np.zeros(flat.size, dtype=np.int64)  # per-layer bookkeeping, reset after use
    while frontier.size:
        frontier = _flood_layer(flat, frontier, offsets, scratch)
    lab[lab < 0] = 0  # never reached (enclosed by dams): like a dam
    return lab[1:-1, 1:-1]


def _flood_layer(
    flat: np.ndarray, frontier: np.ndarray, offsets: np.ndarray, scratch: np.ndarray
) -> np.ndarray:
    """Label one distance layer in place and return the next one."""
    neigh = flat[frontier[:, None] + offsets]
    positive = neigh > 0
    high = np.where(positive, neigh, 0).max(axis=1)
    low = np.where(positive, neigh, np.iinfo(np.int32).max).min(axis=1)
    flat[frontier] = np.where(low == high, high, 0)
    scratch[frontier] = 1
    for step in offsets[2:]:  # same-layer neighbours with different labels: later is a dam
        later = frontier + step
        clash = (flat[frontier] > 0) & (flat[later] > 0) & (flat[later] != flat[frontier])
        clash &= scratch[later] == 1
        flat[later[clash]] = 0
    scratch[frontier] = 0
    grown = frontier[flat[frontier] > 0]
    candidates = (grown[:, None] + offsets).ravel()
    candidates = candidates[flat[candidates] == -1]
    # Keep each pixel once (its last occurrence), without sorting.
    order = np.arange(1, candidates.size + 1)
    scratch[candidates] = order
    unique = candidates[scratch[candidates] == order]
    scratch[candidates] = 0
    return unique


# ----------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class Truth:
    """A ground-truth slice with its objects computed once (for scoring many predictions)."""

    membrane: np.ndarray
    objects: np.ndarray


def prepare_truth(ground_truth: np.ndarray | Truth) -> Truth:
    if isinstance(ground_truth, Truth):
        return ground_truth
    ground_truth = np.asarray(ground_truth)
    if is_probability(ground_truth):
        if not np.all(np.isfinite(ground_truth)) or np.any(ground_truth != np.round(ground_truth)):
            raise InputError("ground truth must be labels (0 = membrane), not probabilities")
        ground_truth = ground_truth.astype(np.int64)
    cells = cell_mask(ground_truth)
    return Truth(~cells, objects(cells))


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _pairs(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The non-empty cells of the contingency table: (true label, pred label, count)."""
    cols = int(pred.max()) + 1
    keys = true.astype(np.int64) * cols + pred
    size = (int(true.max()) + 1) * cols
    if size <= 4 * keys.size + 4096:  # a dense count is much faster than sorting
        counts = np.bincount(keys, minlength=size)
        keys = np.flatnonzero(counts)
        counts = counts[keys]
    else:
        keys, counts = np.unique(keys, return_counts=True)
    return keys // cols, keys % cols, counts.astype(np.float64)


def _official_pair(truth_objects: np.ndarray, thinned: np.ndarray) -> tuple[float, float]:
    """Thinned V_rand and V_info of one slice, dam pixels as singletons (Fiji's formulas)."""
    fg = truth_objects > 0
    n = int(fg.sum())
    if n == 0:
        return 1.0, 1.0  # nothing to score: an all-membrane truth
    true, pred, counts = _pairs(truth_objects[fg], thinned[fg])
    rows = np.bincount(true, weights=counts) / n
    dam = pred == 0
    singles = float(counts[dam].sum()) / n
    pij = counts[~dam] / n
    cols = np.bincount(pred[~dam], weights=counts[~dam]) / n if pij.size else np.zeros(1)
    sum_a2, sum_b2 = float((rows**2).sum()), float((cols**2).sum()) + singles / n
    sum_ab2 = float((pij**2).sum()) + singles / n
    v_rand = 2 * sum_ab2 / (sum_a2 + sum_b2)
    h_a = _entropy(rows)
    h_b = _entropy(cols) + singles * np.log(n)
    h_ab = _entropy(pij) + singles * np.log(n)
    return float(v_rand), _info_f_score(h_a, h_b, h_a + h_b - h_ab)


def _info_f_score(h_a: float, h_b: float, mutual: float) -> float:
    """2 I / (H_A + H_B), with Fiji's conventions when one side has a single object."""
    if h_a == 0 or h_b == 0:  # Fiji: precision or recall taken as 0, F = 0
        return 0.0
    precision, recall = mutual / h_b, mutual / h_a
    if precision + recall <= 0:
        return 0.0
    return float(np.clip(2 * precision * recall / (precision + recall), 0.0, 1.0))


def official_scores(prediction: np.ndarray, truth: np.ndarray | Truth) -> tuple[tuple, tuple]:
    """Official V_rand and V_info of one slice at each threshold (one value if binary)."""
    truth = prepare_truth(truth)
    proposal, binary = proposal_of(prediction)
    if binary:
        v_rand, v_info = _official_pair(truth.objects, thin_borders(proposal))
        return (v_rand,), (v_info,)
    rands, infos = [], []
    as_double = proposal.astype(np.float64)  # Java compares a float pixel with a double
    previous, result = None, (0.0, 0.0)
    for th in THRESHOLDS:
        cells = as_double > th
        if previous is None or not np.array_equal(cells, previous):
            previous, result = cells, _official_pair(truth.objects, thin_borders(cells))
        rands.append(result[0])
        infos.append(result[1])
    return tuple(rands), tuple(infos)


def grow_into_membrane(labels: np.ndarray) -> np.ndarray:
    """Give every 0 pixel the label of its nearest non-zero pixel."""
    from scipy import ndimage

    background = labels == 0
    if not background.any() or background.all():
        return labels
    _, (rows, cols) = ndimage.distance_transform_edt(background, return_indices=True)
    return labels[rows, cols]


def grown_scores(prediction: np.ndarray, truth: Truth) -> tuple[float, float]:
    """The earlier variant: predicted objects grown over predicted membrane, no singletons."""
    from scipy import sparse

    pred = grow_into_membrane(objects(membrane_mask_of(prediction)))
    fg = truth.objects > 0
    if not fg.any():
        return 1.0, 1.0
    s, t = pred[fg].astype(np.int64), truth.objects[fg].astype(np.int64)
    table = sparse.coo_matrix((np.ones(s.size), (s, t))).tocsr()
    table.sum_duplicates()
    p_ij = table.data / s.size
    s_i = np.asarray(table.sum(axis=1)).ravel() / s.size
    t_j = np.asarray(table.sum(axis=0)).ravel() / s.size
    v_rand = 2 * float((p_ij**2).sum()) / (float((s_i**2).sum()) + float((t_j**2).sum()))
    h_s, h_t, h_st = _entropy(s_i), _entropy(t_j), _entropy(p_ij)
    v_info = 1.0 if h_s + h_t == 0 else 2 * (h_s + h_t - h_st) / (h_s + h_t)
    return float(v_rand), float(np.clip(v_info, 0.0, 1.0))


def score_slice(
    prediction: np.ndarray, ground_truth: np.ndarray | Truth, *, grown: bool = True
) -> SliceScore:
    """Scores of one 2D prediction (labels or membrane probability) against its truth.

    ``grown=False`` skips the grown-membrane variant (the watershed tuner's fast path).
    """
    prediction = np.asarray(prediction)
    truth = prepare_truth(ground_truth)
    if prediction.shape != truth.objects.shape:
        raise InputError(
            f"prediction {prediction.shape} and ground truth {truth.objects.shape} differ in shape"
        )
    if prediction.ndim != 2:
        raise InputError(f"expected a 2D slice, got shape {prediction.shape}")
    pixel_error = float(np.mean((membrane_mask_of(prediction) == 0) != truth.membrane))
    rands, infos = official_scores(prediction, truth)
    g_rand, g_info = grown_scores(prediction, truth) if grown else (float("nan"),) * 2
    return SliceScore(max(rands), max(infos), pixel_error, g_rand, g_info, rands, infos)


def combine(scores: list[SliceScore]) -> StackScore:
    """Stack scores from per-slice ones: per-threshold means, best threshold per score."""
    if not scores:
        raise InputError("no slice to score")
    rand_table = np.array([s.v_rand_by_threshold for s in scores], dtype=float)
    info_table = np.array([s.v_info_by_threshold for s in scores], dtype=float)
    # Java keeps the first threshold reaching the maximum (strict '>' while scanning up).
    best_rand, best_info = int(np.argmax(rand_table.mean(0))), int(np.argmax(info_table.mean(0)))
    binary = rand_table.shape[1] == 1
    per_slice = [
        SliceScore(
            float(r[best_rand]),
            float(i[best_info]),
            s.pixel_error,
            s.v_rand_grown,
            s.v_info_grown,
            s.v_rand_by_threshold,
            s.v_info_by_threshold,
        )
        for s, r, i in zip(scores, rand_table, info_table, strict=True)
    ]
    return StackScore(
        v_rand=float(rand_table.mean(0)[best_rand]),
        v_info=float(info_table.mean(0)[best_info]),
        pixel_error=float(np.mean([s.pixel_error for s in scores])),
        per_slice=per_slice,
        v_rand_grown=float(np.mean([s.v_rand_grown for s in scores])),
        v_info_grown=float(np.mean([s.v_info_grown for s in scores])),
        v_rand_threshold=None if binary else THRESHOLDS[best_rand],
        v_info_threshold=None if binary else THRESHOLDS[best_info],
    )


def score_stack(
    prediction: np.ndarray, ground_truth: np.ndarray, *, grown: bool = True
) -> StackScore:
    """Scores of a 2D image or ZYX stack: the official stack score and per-slice values."""
    prediction, ground_truth = np.asarray(prediction), np.asarray(ground_truth)
    if prediction.shape != ground_truth.shape:
        raise InputError(
            f"prediction shape {prediction.shape} differs from ground truth {ground_truth.shape}"
        )
    if prediction.ndim == 2:
        prediction, ground_truth = prediction[None], ground_truth[None]
    if prediction.ndim != 3:
        raise InputError(f"expected 2D or ZYX arrays, got shape {prediction.shape}")
    return combine(
        [score_slice(p, g, grown=grown) for p, g in zip(prediction, ground_truth, strict=True)]
    )


@dataclass(frozen=True)
class SliceScored:
    index: int
    done: int
    total: int
    score: SliceScore


def score_slices(
    prediction: np.ndarray, truth: np.ndarray, slices: tuple[int, ...]
) -> Generator[SliceScored, None, None]:
    """Yield the ISBI scores of each slice (prediction and truth: ZYX copies, or zarr/dask
    arrays read here one slice at a time).

    No TensorFlow: this one runs in a napari thread worker.
    """
    for done, index in enumerate(slices, start=1):
        yield SliceScored(
            index,
            done,
            len(slices),
            score_slice(np.asarray(prediction[index]), np.asarray(truth[index])),
        )


# ----------------------------------------------------------------------------- 3D objects
@dataclass(frozen=True)
class VolumeScore:
    """3D scores of labelled objects against ground-truth objects (ids through sections).

    ``v_rand = 2 / (1 / v_rand_split + 1 / v_rand_merge)``: ``v_rand_split`` falls when a
    true object is cut into several predicted ones, ``v_rand_merge`` when a predicted object
    covers several true ones; likewise for V_info.
    """

    v_rand: float
    v_info: float
    v_rand_split: float
    v_rand_merge: float
    v_info_split: float
    v_info_merge: float
    voxels: int
    """Voxels scored (ground truth not 0)."""

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


class _PairCounts:
    """Voxel counts per (predicted id, true id) pair, summed slice by slice.

    Each slice adds its distinct pairs; the list is reduced every ``every`` slices, so
    memory depends on the number of distinct pairs, not on the number of voxels.
    """

    def __init__(self, every: int = 32):
        self.keys: list[np.ndarray] = []
        self.counts: list[np.ndarray] = []
        self.every = every

    def add(self, predicted: np.ndarray, true: np.ndarray) -> None:
        key = (predicted.astype(np.uint64) << np.uint64(32)) | true.astype(np.uint64)
        key, count = np.unique(key, return_counts=True)
        self.keys.append(key)
        self.counts.append(count)
        if len(self.keys) >= self.every:
            self.reduce()

    def reduce(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.keys:
            return np.zeros(0, np.uint64), np.zeros(0, np.int64)
        key, inverse = np.unique(np.concatenate(self.keys), return_inverse=True)
        count = np.bincount(inverse, weights=np.concatenate(self.counts)).astype(np.int64)
        self.keys, self.counts = [key], [count]
        return key, count


def score_volume_3d(prediction, ground_truth) -> VolumeScore:
    """3D V_rand and V_info of predicted objects against true objects, slice by slice.

    Objects are the ids themselves, through all sections (no connected components). As in
    the 2D scores, only voxels where the ground truth is not 0 count, and predicted 0
    voxels (membrane) take the id of the nearest predicted object *within their slice*, so
    the thickness of predicted membranes is not scored. ``prediction`` and ``ground_truth``
    are ZYX array-likes read one slice at a time (numpy, zarr, dask, a Volume).
    """
    shape_p, shape_t = tuple(prediction.shape), tuple(ground_truth.shape)
    if shape_p != shape_t:
        raise InputError(f"prediction shape {shape_p} differs from ground truth {shape_t}")
    if len(shape_p) != 3:
        raise InputError(f"3D scores need ZYX volumes; got shape {shape_p}")
    pairs = _PairCounts()
    for z in range(shape_p[0]):
        predicted, true = np.asarray(prediction[z]), np.asarray(ground_truth[z])
        for name, plane in (("prediction", predicted), ("ground truth", true)):
            if not (np.issubdtype(plane.dtype, np.integer) or plane.dtype == bool):
                raise InputError(f"the {name} must hold integer object ids, not {plane.dtype}")
        foreground = true != 0
        if foreground.any():
            pairs.add(grow_into_membrane(predicted)[foreground], true[foreground])
    key, count = pairs.reduce()
    return _scores_from_pairs(key >> np.uint64(32), key & np.uint64(0xFFFFFFFF), count)


def _scores_from_pairs(predicted: np.ndarray, true: np.ndarray, count: np.ndarray) -> VolumeScore:
    """V_rand / V_info and their split and merge parts from a sparse contingency table."""
    n = int(count.sum())
    if n == 0:  # nothing to score: an all-membrane truth
        return VolumeScore(1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0)
    p_ij = count / n
    s_i = np.bincount(np.unique(predicted, return_inverse=True)[1], weights=p_ij)
    t_j = np.bincount(np.unique(true, return_inverse=True)[1], weights=p_ij)
    sum_p2 = float((p_ij**2).sum())
    split, merge = sum_p2 / float((t_j**2).sum()), sum_p2 / float((s_i**2).sum())
    h_s, h_t, h_st = _entropy(s_i), _entropy(t_j), _entropy(p_ij)
    mutual = h_s + h_t - h_st
    info_split = 1.0 if h_s == 0 else mutual / h_s  # H(S) grows when true objects are cut
    info_merge = 1.0 if h_t == 0 else mutual / h_t
    v_info = 1.0 if h_s + h_t == 0 else 2 * mutual / (h_s + h_t)
    return VolumeScore(
        v_rand=float(2 / (1 / split + 1 / merge)),
        v_info=float(np.clip(v_info, 0, 1)),
        v_rand_split=float(split),
        v_rand_merge=float(merge),
        v_info_split=float(np.clip(info_split, 0, 1)),
        v_info_merge=float(np.clip(info_merge, 0, 1)),
        voxels=n,
    )
