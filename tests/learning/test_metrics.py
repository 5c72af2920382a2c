"""ISBI scores on hand-made cases whose values can be worked out on paper."""

import numpy as np
import pytest

from napari_em_unet.errors import InputError
from napari_em_unet.learning.metrics import grow_into_membrane, score_slice, score_stack


def two_cells(width=10):
    """A 10 x 20 slice: left cell 1, right cell 2, a one-pixel membrane column between."""
    gt = np.ones((10, 2 * width + 1), dtype=np.uint8) * 255
    gt[:, width] = 0
    return gt


def test_perfect_prediction_scores_one():
    gt = two_cells()
    s = score_slice(gt, gt)
    assert s.v_rand == pytest.approx(1.0)
    assert s.v_info == pytest.approx(1.0)
    assert s.pixel_error == 0.0


def test_instance_labels_and_membrane_mask_are_equivalent():
    gt = two_cells()
    labels = np.where(gt > 0, 1, 0).astype(np.uint32)
    labels[:, 11:] *= 2
    assert score_slice(labels, gt) == score_slice(gt, gt)


def test_known_merge():
    gt = two_cells()
    merged = np.ones_like(gt)  # one object everywhere, no membrane predicted
    s = score_slice(merged, gt)
    # Foreground: two true objects of 100 pixels each, one predicted object.
    # sum p_ij^2 = 2 * 0.5^2 = 0.5, sum s^2 = 1, sum t^2 = 0.5 -> V_rand = 1 / 1.5.
    assert s.v_rand == pytest.approx(2 * 0.5 / 1.5)
    assert s.pixel_error == pytest.approx(10 / gt.size)


def test_known_merge_v_info_value():
    gt = two_cells()
    s = score_slice(np.ones_like(gt), gt)
    h_t, h_s, mutual = np.log(2), 0.0, 0.0
    assert s.v_info == pytest.approx(2 * mutual / (h_s + h_t))


def test_known_split():
    gt = np.full((10, 20), 255, dtype=np.uint8)  # one true cell
    split = np.ones((10, 20), dtype=np.uint32)
    split[:, 10:] = 2  # predicted as two halves
    s = score_slice(split, gt)
    # sum p^2 = 0.5, sum s^2 = 0.5, sum t^2 = 1 -> V_rand = 1 / 1.5
    assert s.v_rand == pytest.approx(1 / 1.5)
    assert s.v_info == pytest.approx(0.0)
    assert s.pixel_error == 0.0


def test_predicted_membrane_thickness_is_not_scored():
    gt = two_cells()
    thick = gt.copy()
    thick[:, 8:13] = 0  # a 5-pixel predicted membrane instead of 1
    s = score_slice(thick, gt)
    assert s.v_rand == pytest.approx(1.0)
    assert s.pixel_error == pytest.approx(40 / gt.size)


def test_grow_into_membrane_takes_nearest_label():
    labels = np.array([[1, 0, 0, 0, 0, 2]])
    assert grow_into_membrane(labels).tolist() == [[1, 1, 1, 2, 2, 2]]


def test_probability_maps_are_thresholded():
    gt = two_cells()
    prob = np.where(gt == 0, 0.9, 0.1).astype(np.float32)
    assert score_slice(prob, gt).v_rand == pytest.approx(1.0)


def test_stack_means_and_per_slice():
    gt = np.stack([two_cells(), two_cells()])
    pred = gt.copy()
    pred[1] = 1
    scores = score_stack(pred, gt)
    assert len(scores.per_slice) == 2
    assert scores.per_slice[0].v_rand == pytest.approx(1.0)
    assert scores.v_rand == pytest.approx((1 + 2 / 3) / 2)
    d = scores.to_dict()
    assert set(d) == {"v_rand", "v_info", "pixel_error", "per_slice"}
    assert len(d["per_slice"]["v_rand"]) == 2


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(InputError, match="shape"):
        score_stack(np.zeros((2, 5, 5)), np.zeros((2, 5, 6)))
