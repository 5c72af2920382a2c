"""3D V_rand / V_info over objects, on volumes whose scores can be worked out on paper."""

import numpy as np
import pytest

from napari_em_unet.errors import InputError
from napari_em_unet.learning.metrics import score_volume_3d


def one_object(depth=2):
    """One true object: a 4 x 5 block (20 voxels) in each of ``depth`` sections."""
    truth = np.zeros((depth, 4, 6), dtype=np.uint16)
    truth[:, :, :5] = 1
    return truth


def test_perfect_linking_scores_one():
    truth = one_object()
    score = score_volume_3d(truth.astype(np.uint32) * 7, truth)
    assert score.v_rand == pytest.approx(1) and score.v_info == pytest.approx(1)
    assert score.voxels == 40


def test_an_object_split_between_sections():
    truth = one_object()
    pred = truth.astype(np.uint32)
    pred[1] *= 2  # section 1 gets another id: two predicted objects of 20 voxels
    score = score_volume_3d(pred, truth)
    # p = (1/2, 1/2); sum p^2 = 1/2 = sum s^2; sum t^2 = 1 -> V_rand = 2 * 0.5 / 1.5.
    assert score.v_rand == pytest.approx(2 / 3)
    assert score.v_rand_split == pytest.approx(0.5) and score.v_rand_merge == pytest.approx(1)
    # I(S;T) = 0, H(S) = log 2, H(T) = 0 -> V_info = 0; merge part I/H(T) counts as 1.
    assert score.v_info == pytest.approx(0) and score.v_info_merge == pytest.approx(1)


def test_two_objects_merged_through_sections():
    truth = one_object(4)
    truth[2:] *= 2  # two true objects, sections 0-1 and 2-3
    pred = (truth > 0).astype(np.uint32)  # predicted as one
    score = score_volume_3d(pred, truth)
    assert score.v_rand == pytest.approx(2 / 3)
    assert score.v_rand_merge == pytest.approx(0.5) and score.v_rand_split == pytest.approx(1)


def test_predicted_membrane_grows_within_its_section_only():
    truth = one_object()
    pred = truth.astype(np.uint32) * 3
    pred[0, :, 4] = 0  # a membrane column inside the object: grown from column 3 -> id 3
    pred[1] = 0
    pred[1, 0, 0] = 9  # section 1: one voxel of id 9; all the rest grows into 9, not 3
    score = score_volume_3d(pred, truth)
    # Two predicted objects of 20 voxels (3 in section 0, 9 in section 1): split in two.
    assert score.v_rand == pytest.approx(2 / 3)


def test_ground_truth_zero_is_left_out_and_an_empty_truth_scores_one():
    truth = one_object()
    pred = np.ones(truth.shape, dtype=np.uint32)  # also covers truth's 0 column
    assert score_volume_3d(pred, truth).v_rand == pytest.approx(1)
    empty = np.zeros_like(truth)
    assert score_volume_3d(pred, empty).voxels == 0


def test_bad_inputs():
    truth = one_object()
    with pytest.raises(InputError, match="differs"):
        score_volume_3d(truth[:1], truth)
    with pytest.raises(InputError, match="ZYX"):
        score_volume_3d(truth[0], truth[0])
    with pytest.raises(InputError, match="integer"):
        score_volume_3d(truth.astype(np.float32), truth)
