"""Seeds cut at distance-transform peaks and rejoined: hand-made maps whose answer is known."""

from dataclasses import replace

import numpy as np
from scipy import ndimage

from napari_em_unet.segmentation.agglomeration import faint_border_merges
from napari_em_unet.segmentation.splitting import split_seeds
from napari_em_unet.segmentation.watershed import WatershedParams, instances_from_probability


def two_cells_with_a_gap(gap: int = 4):
    """Two 40 x 40 cells side by side, parted by a membrane 3 pixels wide (0.95) with a gap
    of ``gap`` pixels in its middle, where the network saw interior (0.05)."""
    probability = np.full((60, 100), 0.05, np.float32)
    probability[:, :8] = probability[:, -8:] = 0.95  # outer walls
    probability[:8], probability[-8:] = 0.95, 0.95
    probability[:, 48:51] = 0.95
    probability[28 : 28 + gap, 48:51] = 0.05
    return probability


def test_a_seed_with_two_round_parts_is_cut_in_two_and_one_without_is_not():
    seeds = np.zeros((40, 76), np.int32)
    seeds[5:35, 5:35] = seeds[5:35, 41:71] = 1  # two squares ...
    seeds[18:22, 35:41] = 1  # ... joined by a short neck
    pieces, origin = split_seeds(seeds, spacing=8)
    left, right = pieces[20, 20], pieces[20, 56]
    assert left != right and origin[left] == origin[right] == 1
    assert set(np.unique(pieces)) == {0, left, right}
    assert (pieces > 0).sum() == (seeds > 0).sum()  # nothing lost, nothing added
    single = np.zeros_like(seeds)
    single[5:35, 5:35] = 1
    same, origin = split_seeds(single, spacing=8)
    assert same is single and list(origin) == [0, 1]


def disks(*centres_x: int, radius: int = 30) -> np.ndarray:
    yy, xx = np.mgrid[:80, :220]
    inside = np.zeros(yy.shape, bool)
    for x in centres_x:
        inside |= (yy - 40) ** 2 + (xx - x) ** 2 < radius**2
    return inside.astype(np.int32)


def test_a_neck_wide_against_the_peaks_is_not_cut():
    """Two disks of radius 30 whose centres are 40 apart: one seed with two peaks of height
    about 30 and a neck about 20 high (0.7 of them), a bent cell rather than two."""
    overlapping = disks(70, 110)
    assert np.unique(split_seeds(overlapping, spacing=10)[0]).size == 3  # cut: 0 + 2 pieces
    pieces, _ = split_seeds(overlapping, spacing=10, neck=0.6)
    assert np.unique(pieces).size == 2 and (pieces > 0).sum() == overlapping.sum()
    assert np.unique(split_seeds(overlapping, spacing=10, neck=0.8)[0]).size == 3


def test_a_narrow_neck_is_cut_whatever_the_neck_threshold():
    """Two disks joined by a bridge 5 pixels wide: the gap in a membrane. The bridge, far
    from both disks, holds peaks of its own; joined to one disk first, it must not then
    carry the other disk with it (it did when each pair was judged on its own)."""
    dumbbell = disks(40, 150)
    dumbbell[38:43, 40:150] = 1
    for neck in (1.0, 0.6, 0.3):
        pieces, _ = split_seeds(dumbbell, spacing=10, neck=neck)
        assert pieces[40, 40] != pieces[40, 150]


def test_cut_and_rejoined_cells_match_the_membranes():
    """With the gap, the plain watershed makes one cell of two; cut seeds make two. A lone
    cell, cut too, is joined again: its pieces' border is interior."""
    probability = two_cells_with_a_gap()
    plain = instances_from_probability(probability, WatershedParams(sigma=0))
    assert plain[30, 25] == plain[30, 75] != 0
    params = WatershedParams(sigma=0, seed_spacing=10, rejoin_below=0.6)
    cut = instances_from_probability(probability, params)
    assert cut[30, 25] != cut[30, 75] and cut.max() == 2
    lone = probability.copy()
    lone[:, 48:51] = 0.05  # no membrane at all: one wide cell
    rejoined = instances_from_probability(lone, params)
    assert rejoined.max() == 1
    necked = instances_from_probability(probability, replace(params, cut_neck=0.5))
    assert necked[30, 25] != necked[30, 75]  # a gap of 4 pixels is a narrow neck


def test_pieces_of_different_seeds_never_rejoin():
    labels = np.repeat(np.array([[1, 2, 3]]), 10, axis=1).repeat(10, axis=0)
    probability = np.full(labels.shape, 0.05, np.float32)  # every border is faint
    groups = np.array([0, 7, 7, 8])
    lut = faint_border_merges(labels, probability, 0.5, groups=groups)
    assert lut[1] == lut[2] != lut[3]


def test_seed_spacing_scales_with_the_pixel_size():
    assert WatershedParams(seed_spacing=24).at_scale(2.0).seed_spacing == 12
    assert WatershedParams().at_scale(2.0).seed_spacing == 0


def test_cut_pieces_are_connected():
    rng = np.random.default_rng(0)
    noise = ndimage.gaussian_filter(rng.random((128, 128)), 4)
    seeds, _ = ndimage.label(noise < np.quantile(noise, 0.6))
    pieces, origin = split_seeds(seeds, spacing=6)
    assert (pieces > 0).sum() == (seeds > 0).sum()
    for label in np.unique(pieces[pieces > 0]):
        assert ndimage.label(pieces == label)[1] == 1
        assert np.all(seeds[pieces == label] == origin[label])
