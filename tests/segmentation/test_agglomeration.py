"""Merging cells over faint borders: hand-made label maps whose borders' means are known."""

import numpy as np

from napari_em_unet.learning.metrics import score_slice
from napari_em_unet.segmentation.agglomeration import border_statistics, faint_border_merges
from napari_em_unet.segmentation.watershed import (
    WatershedParams,
    instances_from_probability,
    tune_watershed,
)


def three_columns(a_b: float, b_c: float, size: int = 10):
    """Cells 1 | 2 | 3 side by side (columns of width ``size``); the probability is
    ``a_b`` on the two pixel columns at the 1|2 border, ``b_c`` on those at 2|3."""
    labels = np.repeat(np.repeat(np.array([[1, 2, 3]]), size, axis=1), size, axis=0)
    probability = np.full(labels.shape, 0.05, np.float32)
    probability[:, size - 1 : size + 1] = a_b
    probability[:, 2 * size - 1 : 2 * size + 1] = b_c
    return labels, probability


def test_border_statistics_sum_the_larger_probability_of_each_pixel_pair():
    labels, probability = three_columns(0.3, 0.9)
    borders = border_statistics(labels, probability)
    assert sorted(borders) == [1, 2, 3]
    total, count = borders[1][2]
    assert count == 10 and np.isclose(total, 3.0)
    assert np.isclose(borders[2][3][0] / borders[2][3][1], 0.9)
    assert 3 not in borders[1]
    assert borders[2][1] is borders[1][2]  # one record for both directions


def test_only_borders_fainter_than_the_threshold_merge():
    labels, probability = three_columns(0.3, 0.9)
    lut = faint_border_merges(labels, probability, 0.5)
    assert lut[1] == lut[2] != lut[3]
    assert len(set(faint_border_merges(labels, probability, 0.2)[1:])) == 3
    assert len(set(faint_border_merges(labels, probability, 0.95)[1:])) == 1


def test_a_merged_cell_borders_its_neighbour_with_the_mean_of_its_parts():
    """1|2 is faint (0.1), 2|3 is 0.3 and 1|3 (below them, 10 pixel pairs) is 0.9: after
    1 and 2 merge, their border with 3 has the mean (10 x 0.3 + 10 x 0.9) / 20 = 0.6."""
    labels = np.zeros((20, 20), np.int64)
    labels[:10, :10], labels[:10, 10:], labels[10:, :] = 1, 2, 3
    probability = np.full(labels.shape, 0.05, np.float32)
    probability[:10, 9:11] = 0.1
    probability[9:11, 10:] = 0.3
    probability[9:11, :10] = 0.9
    below_mean = faint_border_merges(labels, probability, 0.55)
    assert below_mean[1] == below_mean[2] != below_mean[3]
    above_mean = faint_border_merges(labels, probability, 0.65)
    assert above_mean[1] == above_mean[2] == above_mean[3]


def test_the_watershed_mends_a_cell_split_along_a_faint_line():
    """Two cells parted by a real membrane (0.95); the left one crossed by a faint line
    (0.45, five pixels wide: no smoothing or seed threshold the tuner may try joins its
    seeds). Without merging the left cell comes out in two."""
    probability = np.full((40, 81), 0.05, np.float32)
    probability[:, 40] = 0.95
    probability[:, 18:23] = 0.45
    truth = np.where(np.arange(81) < 40, 1, 2)[None].repeat(40, axis=0)
    truth[:, 40] = 0
    plain = instances_from_probability(probability, WatershedParams(sigma=0))
    merged = instances_from_probability(probability, WatershedParams(sigma=0, merge_below=0.6))
    assert len(np.unique(plain[plain > 0])) == 3
    assert len(np.unique(merged[merged > 0])) == 2
    assert np.all(merged[:, 40] == 0)
    assert len(np.unique(merged[:, :40])) == 1
    assert score_slice(merged, truth).v_rand == 1.0

    params, tuned = tune_watershed([probability], [truth], WatershedParams(sigma=0))
    assert params.merge_below > 0.45
    assert tuned == 1.0


def test_every_merged_cell_is_one_piece():
    """Borders are measured on a flood of the whole slice, cells cut out of the masked
    one: a seedless pocket walled off by membrane inside a merged cell stays membrane
    instead of becoming a detached piece of the cell."""
    from scipy import ndimage

    probability = np.full((40, 81), 0.05, np.float32)
    probability[:, 40] = 0.95
    probability[:, 18:23] = 0.45  # a faint line: the left cell is merged
    probability[8:17, 5:14] = 0.95  # a ring of membrane...
    probability[10:15, 7:12] = 0.3  # ...around a pocket too bright for a seed
    params = WatershedParams(sigma=0, min_seed_size=2, min_size=2, merge_below=0.6)
    labels = instances_from_probability(probability, params)
    assert len(np.unique(labels[labels > 0])) == 2
    assert np.all(labels[10:15, 7:12] == 0)
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        assert ndimage.label(labels[box] == index)[1] == 1
