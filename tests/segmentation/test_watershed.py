"""Watershed post-processing on synthetic probability maps with a known answer."""

import numpy as np
import pytest

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


@pytest.mark.parametrize("seed", range(6))
def test_the_fast_flood_gives_skimages_labels(seed):
    """Seed interiors left out of the flood change nothing, whatever the map: smooth or
    noisy, seeds above the mask threshold, seeds at the border, a band without data. On
    plateaus (equal values meeting) a tie may go to the other neighbour, as skimage's own
    choice there depends on its queue's internals; the flood is otherwise the same."""
    from scipy import ndimage
    from skimage.segmentation import watershed

    from napari_em_unet.segmentation.watershed import _flood

    rng = np.random.default_rng(seed)
    noise = rng.random((96, 120)).astype(np.float32)
    image = ndimage.gaussian_filter(noise, sigma=seed % 3 * 2).astype(np.float32)
    image = (image - image.min()) / (image.max() - image.min())
    plateaus = seed % 2 == 1
    if plateaus:
        image = np.round(image * 8) / 8
    seed_threshold, threshold = (0.3, 0.7) if seed < 4 else (0.6, 0.4)
    seeds, _ = ndimage.label(image < seed_threshold)
    mask = image < threshold
    mask[:5] &= seed != 2
    fast, reference = _flood(image, seeds, mask), watershed(image, seeds, mask=mask)
    if not plateaus:
        np.testing.assert_array_equal(fast, reference)
        return
    np.testing.assert_array_equal(fast > 0, reference > 0)
    differ = fast != reference
    assert differ.mean() < 0.02
    # Only pixels that the reference's own labels could have reached at the same level.
    for y, x in zip(*np.nonzero(differ), strict=True):
        around = reference[max(0, y - 2) : y + 3, max(0, x - 2) : x + 3]
        assert fast[y, x] in around


def _dark_cell_among_four_cells():
    """A 40 x 40 block that the map calls membrane (a dark cell: grainy inside, a little
    less sure than a real membrane) in the middle of four cells parted by thin membranes."""
    p = np.full((100, 100), 0.05, dtype=np.float32)
    p[30:70, 30:70] = 0.85
    p[:30, 49:51] = p[70:, 49:51] = p[49:51, :30] = p[49:51, 70:] = 0.95
    return p


def test_a_membrane_blob_wider_than_twice_the_radius_becomes_a_cell():
    p = _dark_cell_among_four_cells()
    off = instances_from_probability(p, WatershedParams(sigma=0, dark_cell_radius=0))
    on = instances_from_probability(p, WatershedParams(sigma=0, dark_cell_radius=8))
    assert off.max() == 4 and off[50, 50] == 0
    assert on.max() == 5
    dark = on == on[50, 50]
    assert on[50, 50] > 0
    # the block, less its outermost pixels (cells stay parted by a membrane) but where
    # the thin membranes meet it, and less its corners (a diamond opening rounds them)
    assert dark[30:70, 30:70].sum() == dark.sum() > 0.9 * 38 * 38
    assert not dark[30, 30:49].any()
    assert dark[35:65, 35:65].all()
    assert (on[~dark] == off[~dark]).all()  # the other cells are untouched


def test_membranes_thinner_than_twice_the_radius_stay_membrane():
    p = _dark_cell_among_four_cells()
    on = instances_from_probability(p, WatershedParams(sigma=0, dark_cell_radius=24))
    assert on.max() == 4 and on[50, 50] == 0


def test_a_blob_inside_one_cell_or_between_two_stays_membrane():
    """A dark organelle inside one cell, or a smear along the border of two, is no cell."""
    inside = np.full((80, 80), 0.05, dtype=np.float32)
    inside[25:55, 25:55] = 0.85
    between = np.full((40, 100), 0.05, dtype=np.float32)
    between[:, 30:70] = 0.85
    for p, cells in ((inside, 1), (between, 2)):
        on = instances_from_probability(p, WatershedParams(sigma=0, dark_cell_radius=8))
        assert on.max() == cells


def test_a_band_without_data_never_becomes_a_dark_cell():
    p = _dark_cell_among_four_cells()
    p[30:70, 30:70] = np.nan
    on = instances_from_probability(p, WatershedParams(sigma=0, dark_cell_radius=8))
    assert on.max() == 4 and (on[30:70, 30:70] == 0).all()


def test_the_dark_cell_radius_follows_the_pixel_size():
    params = WatershedParams(dark_cell_radius=8)
    assert params.at_scale(2.0).dark_cell_radius == 4
    assert params.at_scale(20.0).dark_cell_radius == 1  # never switched off by scaling
    assert WatershedParams().at_scale(2.0).dark_cell_radius == 0
    old_model = {"threshold": 0.7, "seed_threshold": 0.1, "sigma": 0.0}
    assert WatershedParams.from_dict(old_model).dark_cell_radius == 0
