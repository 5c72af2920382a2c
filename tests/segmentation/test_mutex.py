"""The mutex watershed: hand-made graphs and slices whose right answer is known."""

from dataclasses import replace

import numpy as np

from napari_em_unet.segmentation.mutex import mutex_merges, mutex_watershed
from napari_em_unet.segmentation.watershed import (
    UNSEEN_DATA_MAX_MERGE,
    WatershedParams,
    instances_from_probability,
    merged_fragments_as_cells,
    mutex_fragments,
    tune_instance_step,
    tune_watershed,
    watershed_labels,
)


def test_a_dark_border_keeps_apart_what_a_chain_of_faint_ones_would_join():
    # a - b faint, b - c faint, a - c dark and the most certain: a and c must stay apart,
    # so b joins a (its border is the more certain of the two faint ones) and c stays alone.
    u, v = np.array([0, 1, 0]), np.array([1, 2, 2])
    weight = np.array([0.3, 0.2, -0.5])  # > 0 attracts, <= 0 repels
    clusters = mutex_watershed(3, u, v, weight)
    assert clusters[0] == clusters[1] != clusters[2]


def test_without_repulsion_every_attracting_chain_joins():
    clusters = mutex_watershed(4, np.array([0, 1, 2]), np.array([1, 2, 3]), np.full(3, 0.1))
    assert len(set(clusters.tolist())) == 1


def test_borders_are_the_mean_of_each_pixel_pairs_larger_probability():
    labels = np.repeat(np.repeat(np.array([[1, 2, 3]]), 10, axis=1), 10, axis=0)
    probability = np.full(labels.shape, 0.05, np.float32)
    probability[:, 9:11] = 0.5  # 1 | 2: mean 0.5
    probability[:, 19:21] = 0.9  # 2 | 3: mean 0.9
    lut = mutex_merges(labels, probability, 0.6)
    assert lut[1] == lut[2] != lut[3]
    assert len(set(mutex_merges(labels, probability, 0.4)[1:].tolist())) == 3
    assert len(set(mutex_merges(labels, probability, 0.95)[1:].tolist())) == 1
    assert lut[0] == 0  # membrane stays membrane


def two_cells_with_a_gap(gap: slice = slice(28, 37)) -> np.ndarray:
    """Two 63 x 63 cells side by side, parted by a membrane column that has a gap."""
    probability = np.full((64, 128), 0.05, np.float32)
    probability[:, 63:65] = 1.0
    probability[gap, 63:65] = 0.05
    probability[[0, -1], :] = 1.0
    return probability


def two_cells_truth() -> np.ndarray:
    """The ground truth of :func:`two_cells_with_a_gap`: two cells, the membrane between."""
    truth = np.zeros((64, 128), np.uint8)
    truth[1:-1, :63] = 255
    truth[1:-1, 65:] = 255
    return truth


def test_cut_seeds_and_the_mutex_part_two_cells_a_gap_in_their_membrane_joins():
    probability = two_cells_with_a_gap()
    classic = WatershedParams(threshold=0.9, seed_threshold=0.2, sigma=0.0)
    assert instances_from_probability(probability, classic).max() == 1  # one seed, one cell
    mutex = WatershedParams(
        threshold=0.9, seed_threshold=0.2, sigma=0.0, seed_spacing=16, merge_below=0.7, mutex=True
    )
    labels = instances_from_probability(probability, mutex)
    assert labels.max() == 2
    assert len(np.unique(labels[1:-1, 5:60])) == 1 and len(np.unique(labels[1:-1, 68:123])) == 1
    assert labels[1, 5] != labels[1, 120]
    assert (labels[:, 63:65][probability[:, 63:65] >= 0.9] == 0).all()  # membrane is 0


def test_the_mutex_joins_the_pieces_of_one_cell_cut_for_nothing():
    probability = two_cells_with_a_gap(gap=slice(1, 63))  # no membrane at all: one cell
    mutex = WatershedParams(
        threshold=0.9, seed_threshold=0.2, sigma=0.0, seed_spacing=16, merge_below=0.7, mutex=True
    )
    assert instances_from_probability(probability, mutex).max() == 1


def test_another_merge_rule_sees_the_fragments_the_mutex_watershed_merges():
    probability = two_cells_with_a_gap()
    probability[:, 120:] = np.nan
    params = WatershedParams(sigma=0.0, seed_spacing=16, merge_below=0.7, mutex=True)
    pieces = mutex_fragments(probability, params)
    assert (pieces.labels[:, 120:] == 0).all() and (pieces.labels[:, :120] > 0).all()
    merged = mutex_merges(pieces.labels, pieces.probability, params.merge_below)
    shipped = merged_fragments_as_cells(merged[pieces.labels], pieces, params)
    assert np.array_equal(shipped, watershed_labels(probability, params))
    assert len(np.unique(shipped[shipped > 0])) == 2
    one_cell = merged_fragments_as_cells(np.minimum(pieces.labels, 1), pieces, params)
    assert np.unique(one_cell).tolist() == [0, 1] and (one_cell[:, 120:] == 0).all()


def test_pixels_without_data_stay_unlabelled():
    probability = two_cells_with_a_gap()
    probability[:, 100:] = np.nan
    labels = instances_from_probability(probability, WatershedParams(mutex=True, merge_below=0.7))
    assert (labels[:, 100:] == 0).all() and labels[:, :60].max() > 0


def test_the_tuner_can_tune_the_mutex_watershed():
    probability = two_cells_with_a_gap()
    truth = two_cells_truth()
    params, score = tune_watershed([probability], [truth], mutex=True)
    assert params.mutex and score > 0.99
    labels = instances_from_probability(probability, params)
    assert labels.max() == 2


def test_a_mutex_base_is_tuned_as_a_mutex_watershed():
    # Fine-tuning re-tunes from the base model's parameters: a mutex model stays one.
    probability = two_cells_with_a_gap()
    truth = two_cells_truth()
    base = WatershedParams(mutex=True, merge_below=0.7, seed_spacing=24, sigma=0.0)
    params, score = tune_watershed([probability], [truth], base)
    assert params.mutex and params.merge_below in (0.6, 0.65, 0.7, 0.75, 0.8)
    assert score > 0.99


def test_the_instance_step_tuner_keeps_the_better_of_the_two_steps():
    probability = two_cells_with_a_gap()
    truth = two_cells_truth()
    seeded = tune_watershed([probability], [truth])
    mutex = tune_watershed([probability], [truth], mutex=True)
    params, score = tune_instance_step([probability], [truth])
    assert score == max(seeded[1], mutex[1])
    assert params == (mutex[0] if mutex[1] > seeded[1] else seeded[0])


def test_parameters_for_unseen_data_do_not_merge_above_0_7_where_tuning_slices_would():
    # One cell crossed by a line of 0.72: merging below 0.75 joins it and scores 1 on this
    # slice, but such borders part true cells on data the network was not trained on.
    probability = np.full((64, 128), 0.05, np.float32)
    probability[[0, -1], :] = 1.0
    probability[:, 63:65] = 0.72
    truth = np.zeros(probability.shape, np.uint8)
    truth[1:-1, :] = 255
    free, score = tune_watershed([probability], [truth], mutex=True)
    assert free.merge_below == 0.75 and score > 0.99
    capped, _ = tune_watershed([probability], [truth], mutex=True, max_merge=UNSEEN_DATA_MAX_MERGE)
    assert capped.mutex and capped.merge_below == 0.7
    assert instances_from_probability(probability, capped).max() == 2
    assert instances_from_probability(probability, replace(capped, merge_below=0.75)).max() == 1


def test_a_base_merging_above_the_cap_is_tuned_from_the_cap():
    probability = two_cells_with_a_gap()
    truth = two_cells_truth()
    base = WatershedParams(mutex=True, merge_below=0.8, seed_spacing=24, sigma=0.0)
    params, _ = tune_watershed([probability], [truth], base, max_merge=0.7)
    assert params.mutex and params.merge_below <= 0.7
