"""Cutting a 2D label that joins two cells of the sections around it."""

import numpy as np

from napari_em_unet.segmentation.link_split import split_merged


def sections():
    """Cells A (columns 2-11) and B (13-27) in the neighbours; one label over both here."""
    neighbour = np.zeros((20, 30), dtype=np.uint32)
    neighbour[2:18, 2:12] = 5
    neighbour[2:18, 13:28] = 8
    merged = np.zeros((20, 30), dtype=np.uint32)
    merged[2:18, 2:28] = 3
    merged[2:18, 28] = 4  # another label, untouched
    probability = np.full((20, 30), 0.05, dtype=np.float32)
    probability[:, 9] = 0.4  # the faint membrane is at column 9 here (the cells moved)
    return neighbour, merged, probability


def test_two_cells_on_both_sides_cut_the_label_along_the_probability_map():
    neighbour, merged, probability = sections()
    out, cuts = split_merged(merged, probability, [neighbour], [neighbour])
    assert cuts == 1
    # Part 1 keeps the label, part 2 gets the next free one (max 4 + 1); the watershed
    # floods from the marks and meets on the ridge at column 9 (the ridge itself goes to
    # the first basin that reaches it).
    assert set(np.unique(out[2:18, 2:9])) == {3}
    assert set(np.unique(out[2:18, 10:28])) == {5}
    assert set(np.unique(out[2:18, 28])) == {4}


def test_two_cells_on_one_side_only_is_a_branch_and_is_left_alone():
    neighbour, merged, probability = sections()
    one_cell = np.where(merged > 0, 7, 0).astype(np.uint32)
    out, cuts = split_merged(merged, probability, [neighbour], [one_cell])
    assert cuts == 0 and out is merged


def test_parts_are_looked_for_in_further_sections():
    neighbour, merged, probability = sections()
    # The merge lasts two sections: the nearest neighbour above is merged too.
    out, cuts = split_merged(merged, probability, [merged, neighbour], [neighbour])
    assert cuts == 1 and len(np.unique(out)) == 4


def test_small_marks_do_not_cut():
    neighbour, merged, probability = sections()
    tiny = np.zeros_like(neighbour)
    tiny[5:8, 5:8] = 1  # 9 pixels, under min_part_px
    tiny[5:8, 20:23] = 2
    out, cuts = split_merged(merged, probability, [tiny], [tiny])
    assert cuts == 0
