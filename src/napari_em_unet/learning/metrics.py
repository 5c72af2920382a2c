"""ISBI 2012 challenge scores (Arganda-Carreras et al. 2015), per slice.

Definitions used throughout the project (benchmarks, ``em-unet evaluate``, the napari table):

* Objects are the 4-connected components of equal non-zero value, per slice, in both the
  ground truth and the prediction (so a 0/255 membrane mask and instance labels both work).
* The predicted objects are grown into the predicted membrane pixels (each takes its nearest
  object), so the thickness of predicted boundaries is not scored.
* Only pixels where the ground truth is not membrane count (foreground restriction).
* ``V_rand = 2 sum p_ij^2 / (sum_i s_i^2 + sum_j t_j^2)`` and
  ``V_info = 2 I(S;T) / (H(S) + H(T))`` over the joint distribution p of predicted S and
  true T; both are in [0, 1], higher is better.
* ``pixel_error`` is the fraction of all pixels whose membrane/interior class differs,
  from the raw (not grown) prediction.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


@dataclass(frozen=True)
class SliceScore:
    v_rand: float
    v_info: float
    pixel_error: float


@dataclass(frozen=True)
class StackScore:
    v_rand: float
    v_info: float
    pixel_error: float
    per_slice: list[SliceScore] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "v_rand": self.v_rand,
            "v_info": self.v_info,
            "pixel_error": self.pixel_error,
            "per_slice": {
                "v_rand": [s.v_rand for s in self.per_slice],
                "v_info": [s.v_info for s in self.per_slice],
                "pixel_error": [s.pixel_error for s in self.per_slice],
            },
        }


def objects(labels: np.ndarray) -> np.ndarray:
    """4-connected components of equal non-zero value (0 stays 0)."""
    from skimage.measure import label

    return label(np.asarray(labels), background=0, connectivity=1)


def grow_into_membrane(labels: np.ndarray) -> np.ndarray:
    """Give every 0 pixel the label of its nearest non-zero pixel."""
    from scipy import ndimage

    background = labels == 0
    if not background.any() or background.all():
        return labels
    _, (rows, cols) = ndimage.distance_transform_edt(background, return_indices=True)
    return labels[rows, cols]


def membrane_mask_of(prediction: np.ndarray) -> np.ndarray:
    """Interpret a prediction as labels: float maps are membrane probabilities (>= 0.5 membrane)."""
    prediction = np.asarray(prediction)
    if np.issubdtype(prediction.dtype, np.floating):
        return np.where(np.nan_to_num(prediction, nan=1.0) >= 0.5, 0, 1).astype(np.uint8)
    return prediction


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@dataclass(frozen=True)
class Truth:
    """A ground-truth slice with its objects computed once (for scoring many predictions)."""

    membrane: np.ndarray
    objects: np.ndarray


def prepare_truth(ground_truth: np.ndarray) -> Truth:
    ground_truth = np.asarray(ground_truth)
    return Truth(ground_truth == 0, objects(ground_truth))


def score_slice(prediction: np.ndarray, ground_truth: np.ndarray | Truth) -> SliceScore:
    """Scores of one 2D predicted labelling against its ground truth."""
    from scipy import sparse

    prediction = membrane_mask_of(prediction)
    truth = ground_truth if isinstance(ground_truth, Truth) else prepare_truth(ground_truth)
    if prediction.shape != truth.objects.shape:
        raise InputError(
            f"prediction {prediction.shape} and ground truth {truth.objects.shape} differ in shape"
        )
    pixel_error = float(np.mean((prediction == 0) != truth.membrane))
    true = truth.objects
    pred = grow_into_membrane(objects(prediction))
    fg = true > 0
    if not fg.any():  # nothing to score: an all-membrane truth
        return SliceScore(1.0, 1.0, pixel_error)
    s, t = pred[fg].astype(np.int64), true[fg].astype(np.int64)
    n = s.size
    table = sparse.coo_matrix((np.ones(n), (s, t))).tocsr()
    table.sum_duplicates()
    p_ij = table.data / n
    s_i = np.asarray(table.sum(axis=1)).ravel() / n
    t_j = np.asarray(table.sum(axis=0)).ravel() / n
    sum_p2 = float((p_ij**2).sum())
    v_rand = 2 * sum_p2 / (float((s_i**2).sum()) + float((t_j**2).sum()))
    h_s, h_t, h_st = _entropy(s_i), _entropy(t_j), _entropy(p_ij)
    mutual = h_s + h_t - h_st
    v_info = 1.0 if h_s + h_t == 0 else 2 * mutual / (h_s + h_t)
    return SliceScore(float(v_rand), float(np.clip(v_info, 0.0, 1.0)), pixel_error)


def score_stack(prediction: np.ndarray, ground_truth: np.ndarray) -> StackScore:
    """Per-slice scores of a 2D image or ZYX stack, and their means."""
    prediction, ground_truth = np.asarray(prediction), np.asarray(ground_truth)
    if prediction.shape != ground_truth.shape:
        raise InputError(
            f"prediction shape {prediction.shape} differs from ground truth {ground_truth.shape}"
        )
    if prediction.ndim == 2:
        prediction, ground_truth = prediction[None], ground_truth[None]
    if prediction.ndim != 3:
        raise InputError(f"expected 2D or ZYX arrays, got shape {prediction.shape}")
    scores = [score_slice(p, g) for p, g in zip(prediction, ground_truth, strict=True)]
    return StackScore(
        v_rand=float(np.mean([s.v_rand for s in scores])),
        v_info=float(np.mean([s.v_info for s in scores])),
        pixel_error=float(np.mean([s.pixel_error for s in scores])),
        per_slice=scores,
    )


@dataclass(frozen=True)
class SliceScored:
    index: int
    done: int
    total: int
    score: SliceScore


def score_slices(prediction: np.ndarray, truth: np.ndarray, slices: tuple[int, ...]
                 ) -> Generator[SliceScored, None, None]:
    """Yield the ISBI scores of each slice (prediction and truth: ZYX copies, or zarr/dask
    arrays read here one slice at a time).

    No TensorFlow: this one runs in a napari thread worker.
    """
    for done, index in enumerate(slices, start=1):
        yield SliceScored(index, done, len(slices), score_slice(np.asarray(prediction[index]),
                                                      np.asarray(truth[index])))


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


def _scores_from_pairs(predicted: np.ndarray, true: np.ndarray, count: np.ndarray
                       ) -> VolumeScore:
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
        v_rand=float(2 / (1 / split + 1 / merge)), v_info=float(np.clip(v_info, 0, 1)),
        v_rand_split=float(split), v_rand_merge=float(merge),
        v_info_split=float(np.clip(info_split, 0, 1)),
        v_info_merge=float(np.clip(info_merge, 0, 1)), voxels=n)
