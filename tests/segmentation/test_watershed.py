"""Watershed post-processing on synthetic probability maps with a known answer."""

import numpy as np

from napari_em_unet.learning.metrics import score_slice
from napari_em_unet.segmentation.watershed import (
    WatershedParams,
    instances_from_probability,
    membranes_from_labels,
    tune_watershed,
)


def probability_of(labels):
    from skimage.segmentation import find_boundaries

    p = np.where(labels == 0, 0.95, 0.05).astype(np.float32)
    p[find_boundaries(labels)] = 0.95
    return p


def test_watershed_recovers_cells_from_a_clean_map(small_stack):
    truth = small_stack[1][0]
    labels = instances_from_probability(probability_of(truth))
    assert labels.dtype == np.uint32
    assert score_slice(labels, truth).v_rand > 0.95
    assert set(np.unique(membranes_from_labels(labels))) == {0, 255}


def test_a_gap_in_a_membrane_does_not_merge_two_cells():
    truth = np.ones((40, 81), dtype=np.uint8)
    truth[:, 40] = 0
    p = probability_of(truth * np.where(np.arange(81) > 40, 2, 1))
    p[18:22, 38:43] = 0.35  # a faint stretch of membrane
    labels = instances_from_probability(p, WatershedParams(seed_threshold=0.2))
    assert len(np.unique(labels[labels > 0])) == 2


def test_tuning_finds_seeds_the_defaults_miss(small_stack):
    """Interiors at 0.3, above the default seed threshold (0.2): the defaults find no seed,
    hence no cell; the tuner must raise the seed threshold and recover the cells."""
    truth = small_stack[1][0]
    uncertain = np.where(probability_of(truth) > 0.5, 0.95, 0.3).astype(np.float32)
    default = score_slice(instances_from_probability(uncertain), truth).v_rand
    params, tuned = tune_watershed([uncertain], [truth])
    assert default < 0.5
    assert 0.3 < params.seed_threshold < params.threshold
    assert tuned > 0.95
    assert score_slice(instances_from_probability(uncertain, params), truth).v_rand == tuned
