"""From a membrane probability map to cells: seeded watershed, per slice.

Seeds are the confidently-interior regions (probability below ``seed_threshold`` after a
light Gaussian smoothing), so a faint gap in a membrane does not merge two cells the way
a plain threshold would; the watershed then floods the probability map from the seeds and
everything above ``threshold`` is membrane (label 0). Membrane far thicker than a
membrane can be is a dark cell the network took for membrane, and becomes a cell
(``dark_cell_radius``). With ``mutex`` the seeds, cut at their distance peaks, flood the
whole slice and a mutex watershed on the regions' borders decides which belong to one
cell (:mod:`.mutex`; the shipped model's instance step since 2026-12-05). The defaults
are a reasonable start; every trained model stores the values tuned on its validation
slices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import NamedTuple

import numpy as np

from .edge_rule import EdgeRule
from .morphology import dilate, erode


@dataclass(frozen=True)
class WatershedParams:
    threshold: float = 0.5
    """Probability above which a pixel is membrane (label 0)."""
    seed_threshold: float = 0.2
    """Probability below which a pixel may seed a cell."""
    sigma: float = 1.0
    """Gaussian smoothing of the probability map, in pixels (0: none)."""
    min_seed_size: int = 20
    """Seed regions smaller than this (pixels) are dropped, so noise does not split cells."""
    min_size: int = 30
    """Cells smaller than this (pixels) are merged into the membrane."""
    dark_cell_radius: int = 0
    """Membrane wider than twice this (pixels) is a cell, not membrane (0: off).

    Some cells have a dark, grainy cytoplasm the network calls membrane; they come out
    as thick blobs of "membrane", when real membranes are a few pixels wide. The parts
    of the membrane mask that survive an opening by a diamond of this radius, and border
    three or more cells, become cells. Held-out ISBI slices: official V_rand 0.9537 ->
    0.9627 (docs/design.md, "Dark cells")."""
    merge_below: float = 0.0
    """Neighbouring cells whose common border has a mean probability below this are merged,
    faintest first (0: off; :mod:`.agglomeration`). Mends cells the watershed split along a
    faint line: on the FIB-SEM-like proxy after fine-tuning, far slices +0.01 to +0.03
    V_rand; on ISBI no gain beside dark cells (docs/design.md, "Merging faint borders")."""
    seed_spacing: int = 0
    """Seeds holding several peaks of their distance transform at least this far apart
    (pixels) are cut into one piece per peak, so that a gap in a membrane no longer merges
    two cells (0: off; :mod:`.splitting`). Pieces are joined again where their common
    border is fainter than ``rejoin_below``."""
    rejoin_below: float = 0.6
    """With ``seed_spacing``: pieces of one seed whose common border has a mean probability
    below this are joined again, faintest first."""
    cut_neck: float = 1.0
    """With ``seed_spacing``: a seed is cut only where its neck is narrower than this
    fraction of the lower of the two peaks it parts (1: wherever it has peaks)."""
    mutex: bool = False
    """Merge by a mutex watershed instead (:mod:`.mutex`): the seeds, cut at their distance
    peaks when ``seed_spacing`` is set, flood the whole slice; touching regions whose
    border's mean probability is below ``merge_below`` join, most certain first, unless a
    darker border already parts them; then everything at or above ``threshold`` is
    membrane. Held-out ISBI: official V_rand 0.970 against 0.9654 (docs/design.md)."""
    edge_rule: EdgeRule | None = field(default=None, compare=False, repr=False)
    """With ``mutex``: a learned rule (:mod:`.edge_rule`) decides which touching regions
    are one cell instead of ``merge_below``; its weights are shifted by ``edge_bias``."""
    edge_bias: float = 0.0
    """With ``edge_rule``: added to the rule's logit (higher: more merging)."""
    edge_scale: float = 1.0
    """With ``edge_rule``: how many model pixels one data pixel is (set by :meth:`at_scale`)."""

    def to_dict(self) -> dict:
        data = asdict(replace(self, edge_rule=None))
        del data["edge_rule"]
        if self.edge_rule is not None:
            data["edge_rule"] = self.edge_rule.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict | None) -> WatershedParams:
        """Parameters from a model file's ``postprocessing``; ValueError when they are
        not parameters (a damaged file)."""
        if not data:
            return cls()
        names = cls.__dataclass_fields__
        values = {k: v for k, v in data.items() if k in names}
        if values.get("edge_rule") is not None:
            values["edge_rule"] = EdgeRule.from_dict(values["edge_rule"])
        try:
            return cls(**values)
        except TypeError as exc:
            raise ValueError(f"unusable watershed parameters ({exc})") from None

    def at_scale(self, factor: float) -> WatershedParams:
        """These parameters, chosen at the model's pixel size, for data whose pixels are
        ``factor`` times larger (the watershed runs at the data's scale): lengths divide by
        ``factor``, areas by its square, so that a sigma of 2 model pixels does not blur the
        thinner membranes of 10 nm data."""
        if factor == 1.0:
            return self
        return replace(
            self,
            sigma=self.sigma / factor,
            min_seed_size=max(1, round(self.min_seed_size / factor**2)),
            min_size=max(1, round(self.min_size / factor**2)),
            seed_spacing=max(1, round(self.seed_spacing / factor)) if self.seed_spacing else 0,
            dark_cell_radius=(
                max(1, round(self.dark_cell_radius / factor)) if self.dark_cell_radius else 0
            ),
            edge_scale=self.edge_scale * factor,
        )


def _smooth(probability: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage

    probability = np.asarray(probability, dtype=np.float32)
    return ndimage.gaussian_filter(probability, sigma) if sigma > 0 else probability


def instances_from_probability(
    probability: np.ndarray, params: WatershedParams = WatershedParams()
) -> np.ndarray:
    """Label the cells of one 2D slice: uint32, 0 = membrane, cells numbered 1..n."""
    return without_small_cells(watershed_labels(probability, params), params.min_size)


def without_small_cells(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Cells under ``min_size`` pixels become membrane, the others are numbered 1..n in
    the order of their labels (uint32). One pass over the slice: ``labels`` are a
    watershed's, numbered up to the count of its seeds."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_size, 1)
    keep[0] = False
    lut = np.cumsum(keep, dtype=np.uint32) * keep
    return lut[labels]


def watershed_labels(
    probability: np.ndarray, params: WatershedParams = WatershedParams()
) -> np.ndarray:
    """The seeded watershed alone (int32, 0 = membrane), before small cells are removed.

    Separate because a huge slice, cut into bands, knows a cell's size only once the
    bands it spans are joined (:mod:`.stitching`).
    """
    if params.mutex:
        pieces = mutex_fragments(probability, params)
        merged = _mutex_lookup(pieces, params)
        return merged_fragments_as_cells(merged[pieces.labels], pieces, params)
    probability, missing = _with_missing_as_membrane(probability)
    smooth = _smooth(probability, params.sigma)
    labels = _flooded_and_merged(_seeds(smooth, params), smooth, params, missing)
    if params.dark_cell_radius > 0:
        labels = _with_dark_cells(labels, params.dark_cell_radius, missing)
    return labels


def _mutex_lookup(pieces: Fragments, params: WatershedParams) -> np.ndarray:
    """Which region each region of ``pieces`` ends in: by the learned edge rule when the
    parameters carry one, else by the border's mean probability."""
    if params.edge_rule is not None:
        from .edge_rule import learned_merges

        return learned_merges(
            pieces.labels, pieces.probability, params.edge_rule, params.edge_bias, params.edge_scale
        )
    from .mutex import mutex_merges

    return mutex_merges(pieces.labels, pieces.probability, params.merge_below)


class Fragments(NamedTuple):
    """What the mutex watershed merges: the regions flooded from the seeds over the whole
    slice (int32, 0 only where there is no data), and the maps they came from."""

    labels: np.ndarray
    probability: np.ndarray
    """The probability map, no data set to 1 (membrane); borders are measured on it,
    unsmoothed, where a thin membrane keeps its height."""
    smooth: np.ndarray
    """The smoothed map: seeds, flooding and the final membrane threshold use it."""
    missing: np.ndarray


def mutex_fragments(
    probability: np.ndarray, params: WatershedParams = WatershedParams(mutex=True)
) -> Fragments:
    """The regions the mutex watershed decides on: seeds (cut at their distance peaks with
    ``seed_spacing``) flooding the whole slice. Public so that another merge rule can be
    tried on the very same fragments (``benchmarks/learned_edges.py``)."""
    from .splitting import split_seeds

    probability, missing = _with_missing_as_membrane(probability)
    smooth = _smooth(probability, params.sigma)
    seeds = _seeds(smooth, params)
    if params.seed_spacing > 0:
        seeds, _ = split_seeds(seeds, params.seed_spacing, params.cut_neck)
    return Fragments(_flood(smooth, seeds, ~missing), probability, smooth, missing)


def merged_fragments_as_cells(
    merged: np.ndarray, pieces: Fragments, params: WatershedParams
) -> np.ndarray:
    """Fragments relabelled by a merge rule (one id per cell) made into
    :func:`watershed_labels`' output: at or above ``threshold`` is membrane, then dark
    cells are added."""
    labels = np.where(pieces.smooth < params.threshold, merged, 0)
    if params.dark_cell_radius > 0:
        labels = _with_dark_cells(labels, params.dark_cell_radius, pieces.missing)
    return labels


def _with_missing_as_membrane(probability: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The map as float32 with no data (NaN) set to 1, so that floods stop there, and the
    mask of no data, which stays unlabelled."""
    probability = np.asarray(probability, dtype=np.float32)
    missing = np.isnan(probability)
    if missing.any():
        probability = np.where(missing, np.float32(1.0), probability)
    return probability, missing


def _seeds(smooth: np.ndarray, params: WatershedParams) -> np.ndarray:
    """The confidently-interior regions, numbered, those under ``min_seed_size`` dropped."""
    from scipy import ndimage

    seeds, n_seeds = ndimage.label(smooth < params.seed_threshold)
    if n_seeds and params.min_seed_size > 1:
        sizes = np.bincount(seeds.ravel())
        small = sizes < params.min_seed_size
        small[0] = False
        if small.any():
            seeds[small[seeds]] = 0
    return seeds


def _flooded_and_merged(
    seeds: np.ndarray, smooth: np.ndarray, params: WatershedParams, missing: np.ndarray
) -> np.ndarray:
    """The seeded watershed (seeds cut and rejoined with ``seed_spacing``), faint borders
    merged with ``merge_below``."""
    everywhere = None  # a flood of the whole slice, where borders are measured
    if params.seed_spacing > 0:
        labels, everywhere = _split_and_rejoined(seeds, smooth, params, missing)
    else:
        labels = _flood(smooth, seeds, (smooth < params.threshold) & ~missing)
    if params.merge_below > 0:
        if everywhere is None:
            everywhere = _flood(smooth, labels, ~missing)  # labels' interiors stay out of the queue
        labels = _faint_borders_merged(labels, smooth, everywhere, params.merge_below)
    return labels


def _split_and_rejoined(
    seeds: np.ndarray, smooth: np.ndarray, params: WatershedParams, missing: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """Seeds cut at their distance-transform peaks (:mod:`.splitting`), the flood, and the
    pieces of one seed joined again where their border, on a flood of the whole slice, is
    faint. Returns the labels and that whole-slice flood with the same ids, which merging
    faint borders then reuses (None when nothing was cut or nothing is to be merged)."""
    from .agglomeration import faint_border_merges
    from .splitting import split_seeds

    pieces, origin = split_seeds(seeds, params.seed_spacing, params.cut_neck)
    labels = _flood(smooth, pieces, (smooth < params.threshold) & ~missing)
    if pieces is seeds:
        return labels, None
    everywhere = _flood(smooth, labels, ~missing)  # labels' interiors stay out of the queue
    joined = faint_border_merges(everywhere, smooth, params.rejoin_below, groups=origin)
    return joined[labels], joined[everywhere] if params.merge_below > 0 else None


def _faint_borders_merged(
    labels: np.ndarray, smooth: np.ndarray, everywhere: np.ndarray, below: float
) -> np.ndarray:
    """``labels`` with the cells that a faint border parts merged. The borders are measured
    on ``everywhere``, the flood of ``labels`` continued over the whole slice (same ids):
    in ``labels`` cells only touch where the border is too faint to be membrane, and the
    mean over those few pixels would merge nearly everything (tried: -0.02 to -0.05
    against this on the proxy)."""
    from .agglomeration import faint_border_merges

    return faint_border_merges(everywhere, smooth, below)[labels]


def _with_dark_cells(labels: np.ndarray, radius: int, missing: np.ndarray) -> np.ndarray:
    """``labels`` plus, as new cells, the membrane regions wider than ``2 * radius`` that
    border at least ``DARK_CELL_NEIGHBOURS`` cells: the membrane mask opened by a taxicab
    diamond of ``radius`` (:mod:`.morphology`, 2 ms per 512 x 512 slice; a Euclidean
    opening took 28 ms for the same held-out score), each connected piece one cell, less
    its outermost pixel so that a membrane still parts it from its neighbours. Pixels
    without data stay 0."""
    from scipy import ndimage

    membrane = (labels == 0) & ~missing
    inner = erode(membrane)  # the outermost pixel of every piece is left to the membrane
    cores = erode(inner, radius - 1)
    if not cores.any():
        return labels
    wide = dilate(cores, radius) & inner
    dark, n_dark = ndimage.label(wide)
    next_id = int(labels.max()) + 1
    out = labels.copy()  # neighbours are counted among the watershed's cells only
    for index, box in enumerate(ndimage.find_objects(dark), start=1):
        if _neighbour_cells(labels, dark, index, box) >= DARK_CELL_NEIGHBOURS:
            out[box][dark[box] == index] = next_id
            next_id += 1
    return out


DARK_CELL_NEIGHBOURS = 3
"""A dark cell lies among cells; a blob inside one cell (a dark organelle) or along the
border of two (a smeared membrane) is left to the membrane. Same held-out ISBI score as
no condition (0.9643); on vnc2013, where such blobs are common, a model that never saw it
lost 0.005 instead of 0.0085 (docs/design.md, "Dark cells")."""


def _neighbour_cells(labels: np.ndarray, dark: np.ndarray, index: int, box: tuple) -> int:
    """How many cells lie within 2 pixels of dark piece ``index`` (bounding box ``box``):
    its outermost pixel and the membrane's last one lie between them."""
    from scipy import ndimage

    rows, cols = box
    grown = (
        slice(max(rows.start - 2, 0), rows.stop + 2),
        slice(max(cols.start - 2, 0), cols.stop + 2),
    )
    near = ndimage.binary_dilation(dark[grown] == index, np.ones((5, 5), bool))
    found = np.unique(labels[grown][near])
    return int((found > 0).sum())


def _flood(image: np.ndarray, seeds: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``skimage.segmentation.watershed(image, seeds, mask=mask)``, the same labels 3-4x
    faster (12 vs 41 ms on a 512 x 512 ISBI slice, identical on all 20).

    skimage pushes every seed pixel onto its priority queue, and seeds are most of a slice.
    A seed pixel whose four neighbours are seeds too can only ever hold its own label (in a
    4-connected labelling its neighbours share it) and never floods anything new, so it is
    left out of the flood and given its label afterwards.
    """
    from skimage.segmentation import watershed

    seeds = np.where(mask, seeds, 0)  # as watershed does: no seed outside the mask
    interior = erode(seeds > 0)
    labels = watershed(image, np.where(interior, 0, seeds), mask=mask & ~interior)
    labels[interior] = seeds[interior]
    return labels


def params_for_data(
    postprocessing: dict | None, model_pixel_size_nm: float | None, pixel_size_nm: float | None
) -> WatershedParams:
    """A model's watershed parameters (its ``info.postprocessing``) for data at
    ``pixel_size_nm``, which the watershed runs at."""
    from .preprocessing import resample_factor

    return WatershedParams.from_dict(postprocessing).at_scale(
        resample_factor(pixel_size_nm, model_pixel_size_nm)
    )


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 1..n (0 stays 0) as uint32."""
    present = np.unique(labels)
    present = present[present != 0]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.uint32)
    lut[present] = np.arange(1, present.size + 1, dtype=np.uint32)
    return lut[labels]


def membranes_from_labels(labels: np.ndarray) -> np.ndarray:
    """ISBI convention mask: uint8, 0 = membrane, 255 = interior."""
    return np.where(labels > 0, 255, 0).astype(np.uint8)


def tune_watershed(
    probabilities: list[np.ndarray],
    ground_truths: list[np.ndarray],
    base: WatershedParams = WatershedParams(),
    *,
    cut_seeds: bool = False,
    mutex: bool = False,
    max_merge: float = 1.0,
) -> tuple[WatershedParams, float]:
    """Pick the watershed parameters with the best mean official V_rand on labelled slices.

    It matters because a model fine-tuned on new data produces probabilities of a new
    shape. Coordinate ascent from ``base`` (one parameter at a time over a few values, until
    nothing improves, at most 3 rounds of 26 values) needs a few dozen watersheds per slice
    instead of a full grid's 3 150. ``mutex``: tune the mutex watershed instead
    (:attr:`WatershedParams.mutex`), from ``MUTEX_START`` over its own values; a ``base``
    that is a mutex watershed is tuned over those values from where it is. ``max_merge``:
    no ``merge_below`` above it, for parameters meant for data nobody tuned on
    (:data:`UNSEEN_DATA_MAX_MERGE`).
    """
    from ..learning.metrics import prepare_truth, score_slice

    truths = [prepare_truth(gt) for gt in ground_truths]
    cache: dict[WatershedParams, float] = {}

    def evaluate(params: WatershedParams) -> float:
        if params not in cache:
            cache[params] = float(
                np.mean(
                    [
                        score_slice(
                            instances_from_probability(p, params), truth, grown=False
                        ).v_rand
                        for p, truth in zip(probabilities, truths, strict=True)
                    ]
                )
            )
        return cache[params]

    best = MUTEX_START if mutex and not base.mutex else base
    best = replace(best, merge_below=min(best.merge_below, max_merge))
    best_score = evaluate(best)
    for _ in range(3):
        improved = False
        for names, values in _tuned_values(best).items():
            if names == _CUT_SEEDS and not cut_seeds:
                continue  # 3-4x the tuning time, and the slowest watershed
            for value in values:
                candidate = replace(best, **_changes(names, value))
                if (
                    candidate.seed_threshold >= candidate.threshold
                    or candidate.merge_below > max_merge
                ):
                    continue
                score = evaluate(candidate)
                if score > best_score + 1e-6:
                    best, best_score, improved = candidate, score, True
        if not improved:
            break
    return best, best_score


def tune_instance_step(
    probabilities: list[np.ndarray],
    ground_truths: list[np.ndarray],
    *,
    cut_seeds: bool = False,
    max_merge: float = 1.0,
) -> tuple[WatershedParams, float]:
    """The better on these slices of the seeded watershed and the mutex watershed, each
    tuned (:func:`tune_watershed`). Neither wins on every network's maps: on held-out ISBI
    the mutex one gained 0.005-0.012 on three fold-model pairs and lost 0.003 on a fourth
    (docs/design.md, "A mutex watershed")."""
    seeded = tune_watershed(probabilities, ground_truths, cut_seeds=cut_seeds, max_merge=max_merge)
    mutex = tune_watershed(probabilities, ground_truths, mutex=True, max_merge=max_merge)
    return mutex if mutex[1] > seeded[1] else seeded


_CUT_SEEDS = ("seed_spacing", "rejoin_below")

UNSEEN_DATA_MAX_MERGE = 0.7
"""The highest ``merge_below`` for parameters a model stores, which meet data nobody tuned
on: a network's borders are fainter on data unlike its training data, and the mutex's
merging below 0.75-0.8, which ISBI's tuning slices sometimes prefer by 0.002-0.003, joined
true cells there (FIB-SEM-like proxy out of the box, the same networks: 0.48-0.76 against
0.67-0.81; docs/design.md, "Merging above 0.7")."""


def _tuned_values(params: WatershedParams) -> dict:
    """The values the tuner tries from ``params``: a learned edge rule is shifted by its
    bias where the border rule moves ``merge_below``."""
    if not params.mutex:
        return _TUNING_VALUES
    if params.edge_rule is None:
        return _MUTEX_VALUES
    others = {k: v for k, v in _MUTEX_VALUES.items() if k != "merge_below"}
    return {"edge_bias": EDGE_BIASES} | others


EDGE_BIASES = (-1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
"""The biases tried for a learned edge rule (docs/design.md, "A learned edge rule")."""


def _changes(names: str | tuple[str, ...], value) -> dict:
    """One step of the tuner: a parameter and its value, or several tuned together."""
    return dict(zip(names, value, strict=True)) if isinstance(names, tuple) else {names: value}


_TUNING_VALUES = {
    # Merging first: once the thresholds have moved to make up for over-split cells, a
    # merge threshold can no longer improve on them one parameter at a time (on the
    # proxy's held-out corrected slice: 0.9105 vs 0.9052 for one of three runs, the same
    # for the other two).
    "merge_below": (0.0, 0.5, 0.55, 0.6, 0.65, 0.7),
    # Together: cut seeds only pay once the cells cut for nothing are joined again.
    _CUT_SEEDS: ((0, 0.6),)
    + tuple((spacing, below) for spacing in (16, 24, 32) for below in (0.5, 0.6, 0.7, 0.8)),
    "seed_threshold": (0.05, 0.1, 0.2, 0.3, 0.4),
    "threshold": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "sigma": (0.0, 1.0, 2.0),
    "dark_cell_radius": (0, 6, 8, 10, 12),
}

MUTEX_START = WatershedParams(
    threshold=0.9, seed_threshold=0.2, sigma=1.0, merge_below=0.7, seed_spacing=16, mutex=True
)
"""Where the mutex watershed's tuning starts: the middle of the values below."""

_MUTEX_VALUES = {
    "merge_below": (0.6, 0.65, 0.7, 0.75, 0.8),
    "seed_spacing": (0, 8, 12, 16, 24),
    "seed_threshold": (0.1, 0.2, 0.3),
    "threshold": (0.8, 0.9, 0.95),
    "sigma": (0.0, 1.0),
    "dark_cell_radius": (0, 8),
}
