"""ISBI scores on hand-made cases whose values can be worked out on paper.

The official scores (``v_rand`` / ``v_info``) follow Fiji's "after thinning" definition:
4-connected objects, ground-truth membrane left out, the proposal's borders thinned to
one-pixel dams, dam pixels inside the ground-truth foreground counted as singletons.
"""

import math

import numpy as np
import pytest

from napari_em_unet.errors import InputError
from napari_em_unet.learning.metrics import (
    THRESHOLDS,
    SliceScore,
    combine,
    grow_into_membrane,
    score_slice,
    score_stack,
    thin_borders,
)


def cells_with_membranes(*columns, width=32):
    """A 10-row 0/255 slice with one-pixel membrane columns at ``columns``."""
    gt = np.full((10, width), 255, dtype=np.uint8)
    gt[:, list(columns)] = 0
    return gt


def two_cells():
    """Left cell: columns 0-9 (100 px), membrane column 10, right cell: 11-20 (100 px)."""
    return cells_with_membranes(10, width=21)


def entropy(*counts):
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts)


def test_thresholds_are_javas_accumulated_doubles():
    assert len(THRESHOLDS) == 11
    assert THRESHOLDS[0] == 0.0 and THRESHOLDS[3] == 0.30000000000000004
    assert THRESHOLDS[-1] == 0.9999999999999999  # never exactly 1.0


def test_perfect_prediction_scores_one():
    gt = two_cells()
    s = score_slice(gt, gt)
    assert s.v_rand == pytest.approx(1.0)
    assert s.v_info == pytest.approx(1.0)
    assert s.pixel_error == 0.0


def test_touching_instance_labels_get_a_border_and_score_like_the_mask():
    gt = two_cells()
    labels = np.ones(gt.shape, dtype=np.uint32)  # no membrane painted: 1 | 2 touch,
    labels[:, 11:] = 2  # the border is drawn on the lower side, column 10
    s = score_slice(labels, gt)
    assert s.v_rand == pytest.approx(1.0) and s.v_info == pytest.approx(1.0)


def test_one_merge():
    gt = cells_with_membranes(10, 21)  # cells A, B, C of 100 px
    merged = cells_with_membranes(21)  # A and B predicted as one
    s = score_slice(merged, gt)
    # p_ij = 1/3 each; rows 1/3 each; columns 2/3, 1/3:
    # V_rand = 2 (1/3) / (1/3 + 5/9) = 3/4.  I = H(pred), so V_info = 2 H_B / (H_A + H_B).
    assert s.v_rand == pytest.approx(0.75)
    h_a, h_b = entropy(100, 100, 100), entropy(200, 100)
    assert s.v_info == pytest.approx(2 * h_b / (h_a + h_b))


def test_one_split_counts_the_dam_pixels_as_singletons():
    gt = cells_with_membranes(10)  # A: 100 px, B: columns 11-31, 210 px
    split = cells_with_membranes(10, 21)  # B cut by a one-pixel line at column 21
    s = score_slice(split, gt)
    # n = 310; predicted A', B1, B2 of 100 px and 10 singletons (the line inside B):
    # sum_AB = sum_B = (3 * 100^2 + 10) / n^2, sum_A = (100^2 + 210^2) / n^2.
    assert s.v_rand == pytest.approx(2 * 30010 / (54100 + 30010))
    h_a = entropy(100, 210)
    h_b = 3 * (-100 / 310 * math.log(100 / 310)) + 10 / 310 * math.log(310)
    assert s.v_info == pytest.approx(2 * h_a / (h_a + h_b))


def test_line_inside_the_foreground_costs_singletons_not_a_split():
    gt = two_cells()
    shifted = cells_with_membranes(9, width=21)  # the line one pixel into the left cell
    s = score_slice(shifted, gt)
    # n = 200: A' 90 px, 10 singletons, B' 100 px (column 10 is ground-truth membrane).
    assert s.v_rand == pytest.approx(2 * 18110 / (20000 + 18110))


def test_thick_borders_score_like_thin_ones():
    gt = two_cells()
    thick = gt.copy()
    thick[:, 8:13] = 0  # five pixels centred on the true membrane
    assert score_slice(thick, gt).v_rand == pytest.approx(1.0)
    off_thin = cells_with_membranes(9, width=21)
    off_thick = gt.copy()
    off_thick[:, 7:12] = 0  # five pixels centred one pixel left of the true membrane
    a, b = score_slice(off_thin, gt), score_slice(off_thick, gt)
    assert (a.v_rand, a.v_info) == pytest.approx((b.v_rand, b.v_info))
    assert a.v_rand < 0.96


def test_thinning_leaves_one_pixel_dams_between_cells_only():
    cells = np.ones((6, 9), dtype=bool)
    cells[:, 3:7] = False  # a 4-pixel border between two cells
    cells[2:4, 0] = False  # a notch touching one cell only
    thinned = thin_borders(cells)
    assert (thinned == 0).sum() == 6  # one dam column, the notch is filled
    assert set(np.unique(thinned[:, :3])) == {1} and set(np.unique(thinned[:, 7:])) == {2}


def test_probability_map_takes_the_best_java_threshold():
    gt = two_cells()
    prob = np.where(gt == 0, 0.9, 0.1).astype(np.float32)
    s = score_slice(prob, gt)
    assert s.v_rand == pytest.approx(1.0)
    # Threshold 0 calls everything a cell: the two cells merge (V_rand 2/3, V_info 0).
    assert s.v_rand_by_threshold[0] == pytest.approx(2 / 3)
    assert s.v_info_by_threshold[0] == 0.0
    stack = score_stack(prob, gt)
    assert stack.v_rand == pytest.approx(1.0) and stack.v_rand_threshold == THRESHOLDS[2]


def test_stack_takes_one_threshold_for_all_slices():
    a = SliceScore(0, 0, 0.1, v_rand_by_threshold=(0.9, 0.5), v_info_by_threshold=(0.2, 0.8))
    b = SliceScore(0, 0, 0.3, v_rand_by_threshold=(0.6, 0.8), v_info_by_threshold=(0.6, 0.5))
    s = combine([a, b])
    assert s.v_rand == pytest.approx(0.75)  # threshold 0 (means 0.75 / 0.65), not 0.85
    assert s.v_info == pytest.approx(0.65)  # threshold 1, chosen separately
    assert [p.v_rand for p in s.per_slice] == [0.9, 0.6]
    assert s.pixel_error == pytest.approx(0.2)


def test_grown_variant_is_kept_under_its_own_name():
    gt = two_cells()
    thick = gt.copy()
    thick[:, 8:13] = 0
    s = score_slice(thick, gt)
    assert s.v_rand_grown == pytest.approx(1.0)
    assert s.pixel_error == pytest.approx(40 / gt.size)
    merged = score_slice(np.ones_like(gt), gt)
    assert merged.v_rand_grown == pytest.approx(2 / 3)


def test_grow_into_membrane_takes_nearest_label():
    labels = np.array([[1, 0, 0, 0, 0, 2]])
    assert grow_into_membrane(labels).tolist() == [[1, 1, 1, 2, 2, 2]]


def test_stack_means_and_per_slice():
    gt = np.stack([two_cells(), two_cells()])
    pred = gt.copy()
    pred[1] = 1
    scores = score_stack(pred, gt)
    assert len(scores.per_slice) == 2
    assert scores.per_slice[0].v_rand == pytest.approx(1.0)
    assert scores.v_rand == pytest.approx((1 + 2 / 3) / 2)
    d = scores.to_dict()
    assert {"v_rand", "v_info", "pixel_error", "v_rand_grown", "per_slice"} <= set(d)
    assert d["thresholds"] == {"v_rand": None, "v_info": None}  # labels: one threshold
    assert len(d["per_slice"]["v_rand"]) == 2


def test_all_membrane_truth_scores_one():
    gt = np.zeros((8, 8), dtype=np.uint8)
    assert score_slice(np.ones((8, 8), np.uint8), gt).v_rand == 1.0


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(InputError, match="shape"):
        score_stack(np.zeros((2, 5, 5)), np.zeros((2, 5, 6)))


def test_probability_ground_truth_is_a_clear_error():
    with pytest.raises(InputError, match="ground truth"):
        score_slice(np.ones((4, 4), np.uint8), np.full((4, 4), 0.5))


def sequential_thinning(cells):
    """Reference: a marker-controlled watershed with dams processed one pixel at a time
    (first in, first out), as MorphoLibJ floods a binary image in Fiji."""
    from collections import deque

    from scipy import ndimage

    comp, _ = ndimage.label(cells)
    lab = np.where(cells, comp, -1).astype(np.int64)
    h, w = lab.shape
    steps = ((-1, 0), (0, -1), (0, 1), (1, 0))

    def neighbours(y, x):
        return [(y + dy, x + dx) for dy, dx in steps if 0 <= y + dy < h and 0 <= x + dx < w]

    queue = deque()
    for y, x in zip(*np.nonzero(cells), strict=True):
        for v, u in neighbours(y, x):
            if lab[v, u] == -1:
                lab[v, u] = -3
                queue.append((v, u))
    while queue:
        y, x = queue.popleft()
        seen = set()
        for v, u in neighbours(y, x):
            if lab[v, u] > 0:
                seen.add(lab[v, u])
            elif lab[v, u] == -1:
                lab[v, u] = -3
                queue.append((v, u))
        lab[y, x] = seen.pop() if len(seen) == 1 else 0
    lab[lab < 0] = 0
    return lab


@pytest.mark.data
def test_thinning_agrees_with_a_sequential_watershed_on_isbi(shared_data):
    """Fast layer-by-layer thinning vs the pixel-by-pixel reference, scored on real labels
    with membranes thickened by 0-4 pixels: within 0.002 (measured: 1e-4)."""
    import tifffile
    from scipy import ndimage

    from napari_em_unet.learning.metrics import _official_pair, prepare_truth

    gt = tifffile.imread(shared_data / "isbi2012" / "train-labels.tif")[3, :200, :200]
    truth = prepare_truth(gt)
    for erosion in (0, 2, 4):
        cells = ndimage.binary_erosion(gt > 0, iterations=erosion) if erosion else gt > 0
        fast = _official_pair(truth.objects, thin_borders(cells))
        reference = _official_pair(truth.objects, sequential_thinning(cells))
        assert fast == pytest.approx(reference, abs=0.002)
