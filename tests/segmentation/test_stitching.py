"""Cells of a slice in bands: the watershed of band + halo, ids joined across band borders."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
import pytest

from napari_em_unet.io.scratch import ScratchRows
from napari_em_unet.segmentation.stitching import BandStitcher, join_ids, seam_pairs
from napari_em_unet.segmentation.watershed import WatershedParams, instances_from_probability

PARAMS = WatershedParams(threshold=0.5, seed_threshold=0.2, sigma=1.0, min_seed_size=4, min_size=10)


def same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    """One-to-one correspondence of ids, 0 to 0."""
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    zero_ok = np.array_equal(a == 0, b == 0)
    return zero_ok and pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


def membrane_map(labels: np.ndarray) -> np.ndarray:
    """A clean probability map: 1 on the borders between cells, low inside, smoothed."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    border = find_boundaries(labels, mode="thick").astype(np.float32)
    return np.clip(ndimage.gaussian_filter(border, 1.0) * 2.5, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def cells():
    from napari_em_unet.learning.synthetic import make_synthetic_stack

    truth = make_synthetic_stack((1, 150, 120), seed=4, cell_size=24)[1][0]
    probability = membrane_map(truth)
    probability[:, 55:65] = 0.05  # a tall cell through every band
    probability[:, 52:55] = probability[:, 65:68] = 1.0
    return probability


def run_bands(probability, band_rows, halo, *, chunk=7, pool=None, params=PARAMS):
    with ScratchRows(probability.shape, np.uint32) as store:
        stitcher = BandStitcher(
            params, probability.shape, store, band_rows=band_rows, halo=halo, pool=pool
        )
        for start in range(0, len(probability), chunk):  # rows arrive in uneven pieces
            stitcher.push(probability[start : start + chunk])
        stitcher.close()
        provisional = store.read(0, probability.shape[0])
        return stitcher.final_ids()[provisional], provisional, stitcher


@pytest.mark.parametrize("band_rows", [16, 23, 40, 150])
def test_bands_give_the_whole_slice_cells(cells, band_rows):
    expected = instances_from_probability(cells, PARAMS)
    with ThreadPoolExecutor(1) as pool:
        labels, provisional, stitcher = run_bands(cells, band_rows, halo=32, pool=pool)
    assert stitcher.bands_done == stitcher.bands == -(-150 // band_rows)
    assert same_up_to_renumbering(labels, expected)
    assert labels.max() == expected.max() > 20 and set(np.unique(labels)) == set(
        range(labels.max() + 1)
    )  # numbered 1..n, 0 = membrane kept
    tall = np.unique(labels[:, 58:62])
    assert len(tall) == 1 and tall[0] > 0  # one id for the cell through every band


def test_a_dark_cell_through_every_band_keeps_one_id(cells):
    """Thick "membrane" (a dark cell) is found in each band's window with its halo and
    joined across borders like any cell: the bands give the whole slice's labels."""
    dark = cells.copy()
    dark[:, 85:105] = 0.9  # 20 pixels wide, through every band
    params = replace(PARAMS, dark_cell_radius=5)
    expected = instances_from_probability(dark, params)
    labels, _, _ = run_bands(dark, 23, halo=32, params=params)
    assert same_up_to_renumbering(labels, expected)
    inside = np.unique(labels[:, 90:100])
    assert len(inside) == 1 and inside[0] > 0


def test_provisional_ids_are_unique_across_bands(cells):
    _, provisional, _ = run_bands(cells, 30, halo=32)
    seen: set[int] = set()
    for start in range(0, 150, 30):
        ids = set(np.unique(provisional[start : start + 30])) - {0}
        assert not ids & seen
        seen |= ids


def test_a_halo_smaller_than_a_cell_changes_cells(cells):
    """The documented limit: a band's watershed floods from the seeds it sees. With a halo
    of 2 rows, seeds a few rows beyond a border are out of sight and some cells come out
    differently; with 32 rows (above) they are the whole slice's cells."""
    expected = instances_from_probability(cells, PARAMS)
    tiny_halo, _, _ = run_bands(cells, 16, halo=2)
    assert not same_up_to_renumbering(tiny_halo, expected)


def test_seam_pairs_join_split_cells_but_not_disputed_pixels():
    above = np.array([[1, 1, 1, 1, 1, 1, 0, 2, 2, 2, 2]] * 2, dtype=np.uint32)
    below = np.array([[5, 5, 5, 6, 6, 6, 0, 6, 7, 7, 7]] * 2, dtype=np.uint32)
    # 1 is 5 and 6 below (its own watershed split it there); 2 -> 7; the one pixel of 2
    # that the band below gives to 6 is a disagreement, not a reason to merge 2 with 6.
    pairs = {tuple(p) for p in seam_pairs(above, below)}
    assert pairs == {(1, 5), (1, 6), (2, 7)}


def test_join_ids_chains_sizes_and_numbering():
    sizes = np.array([5, 3, 0, 40, 2, 9])  # ids 1..6
    pairs = np.array([[1, 4], [4, 6], [2, 5]], dtype=np.uint32)  # 1-4-6 one cell, 2-5 another
    lut = join_ids(sizes, pairs, min_size=6)
    assert lut[0] == 0
    assert lut[1] == lut[4] == lut[6] == 1  # 54 pixels, numbered first (smallest id 1)
    assert lut[2] == lut[5] == 0  # 5 pixels in all: too small once joined
    assert lut[3] == 0  # only ever seen in halos
    lut = join_ids(sizes, pairs, min_size=5)
    assert (lut[2], lut[5]) == (2, 2)


@pytest.mark.parametrize("band_rows", [23, 40])
def test_bands_merge_faint_borders_as_the_whole_slice_does(cells, band_rows):
    """Faint lines cross the cells (one through the tall cell, across band borders);
    merging them band by band must give the whole slice's cells."""
    probability = cells.copy()
    probability[:, 40:42] = np.maximum(probability[:, 40:42], 0.45)
    probability[70:72, :] = np.maximum(probability[70:72, :], 0.45)
    params = replace(PARAMS, merge_below=0.6)
    expected = instances_from_probability(probability, params)
    unmerged = instances_from_probability(probability, PARAMS)
    labels, _, _ = run_bands(probability, band_rows, halo=32, params=params)
    assert expected.max() < unmerged.max()
    assert same_up_to_renumbering(labels, expected)


@pytest.mark.parametrize("band_rows", [23, 40])
def test_bands_give_the_whole_slices_cells_with_the_mutex_watershed(cells, band_rows):
    """The mutex watershed decides within a band's window, where a cell crossing the
    window's edge shows only part of its borders: bands may leave such a cell in two
    pieces (one of 43 cells here with 40-row bands), and must never merge two cells that
    the whole slice parts."""
    probability = cells.copy()
    probability[:, 40:42] = np.maximum(probability[:, 40:42], 0.45)
    probability[70:72, :] = np.maximum(probability[70:72, :], 0.45)
    params = replace(PARAMS, merge_below=0.6, mutex=True)
    expected = instances_from_probability(probability, params)
    labels, _, _ = run_bands(probability, band_rows, halo=32, params=params)
    assert expected.max() > 30 and np.array_equal(labels == 0, expected == 0)
    pairs = np.unique(np.stack([labels.ravel(), expected.ravel()]), axis=1)
    assert len(np.unique(pairs[0])) == pairs.shape[1]  # each band cell within one cell
    pieces = np.bincount(pairs[1], minlength=expected.max() + 1)[1:]
    assert (pieces > 1).sum() <= 1
