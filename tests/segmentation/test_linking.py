"""Linking per-section labels into 3D objects, on hand-made stacks whose answer is known.

The stacks are tiny (a few sections of 20-30 pixels): each test says which 3D objects the
sections hold, and the linked labels must be exactly those, numbered 1..n in order of first
appearance (section, then the label's value in that section).
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_em_unet.errors import InputError
from napari_em_unet.segmentation.linking import (
    LinkParams,
    LinkProgress,
    link_into,
    link_labels,
    resolve_voxel_size,
)

SSTEM = (50.0, 4.0, 4.0)  # adjacent sections only (max_gap_nm 50)
FIBSEM = (10.0, 10.0, 10.0)  # edges up to 5 sections apart


def two_cells(n_sections: int = 3) -> np.ndarray:
    """Left cell and right cell (rows 2-17, columns 2-12 and 16-27), numbered differently
    in every section (as the per-section segmentation numbers them)."""
    stack = np.zeros((n_sections, 20, 30), dtype=np.uint32)
    for z in range(n_sections):
        left, right = (1, 2) if z % 2 == 0 else (7, 3)
        stack[z, 2:18, 2:13] = left
        stack[z, 2:18, 16:28] = right
    return stack


def test_two_cells_through_three_sections_get_one_id_each():
    stack = two_cells(3)
    linked = link_labels(stack, voxel_size_nm=SSTEM)
    assert linked.dtype == np.uint32 and linked.shape == stack.shape
    expected = np.zeros_like(stack)
    expected[:, 2:18, 2:13] = 1  # the left cell appears first in raster order
    expected[:, 2:18, 16:28] = 2
    np.testing.assert_array_equal(linked, expected)


def test_numbering_follows_first_appearance_section_then_label():
    stack = np.zeros((2, 10, 30), dtype=np.uint16)
    stack[0, 2:8, 20:28] = 5  # a cell with the larger label comes second in section 0
    stack[0, 2:8, 2:8] = 9
    stack[1, 2:8, 11:17] = 4  # a new cell appears in section 1
    linked = link_labels(stack, voxel_size_nm=SSTEM)
    # Section 0 in label order: 5 -> 1, 9 -> 2; the new cell of section 1 -> 3.
    assert linked[0, 3, 24] == 1 and linked[0, 3, 4] == 2 and linked[1, 3, 13] == 3


def test_a_branch_is_one_object():
    """One cell (sections 0-3) forks into two halves (sections 4-5) across a membrane.

    Hand count at bias 0.5, which shifts no edge (FIB-SEM, 10 nm: edges up to 5 sections
    apart; no probability map, so the
    membrane between the halves counts as p = 0.9). Each half overlaps the parent with
    IoU 180/400 = 0.45: sqrt(180) x 8 x 0.45 = 48.3 from the adjacent section, and
    sqrt(180) x 8 x (0.45 - 0.3) = 16.1 from each of the 7 longer edges that reach it
    from sections 0-3: 161 in all. The membrane between the halves, 22 pixel pairs long
    once grown, repels by 22 x logit(0.9) = 48.3 in each of the two sections: 96.6.
    Attraction wins, so the fork is one object. (With the fork right after the first two
    sections, attraction and repulsion are equal, 96.6 each, and the halves stay apart:
    a fork is only joined when enough of the parent is seen.)
    """
    stack = np.zeros((6, 24, 24), dtype=np.uint32)
    stack[0:4, 2:22, 2:22] = 1
    stack[4:6, 2:22, 2:11] = 1  # the two halves lie inside the parent's footprint
    stack[4:6, 2:22, 13:22] = 2
    neutral = LinkParams(bias=0.5)
    linked = link_labels(stack, voxel_size_nm=FIBSEM, params=neutral)
    assert set(np.unique(linked)) == {0, 1}
    early = link_labels(stack[2:], voxel_size_nm=FIBSEM, params=neutral)
    assert set(np.unique(early)) == {0, 1, 2}


def test_an_object_that_ends_keeps_its_id_and_a_later_one_gets_a_new_one():
    stack = np.zeros((5, 20, 30), dtype=np.uint32)
    stack[:, 2:18, 16:28] = 1  # a long cell on the right, all five sections
    stack[0:2, 2:18, 2:13] = 2  # a cell on the left that ends after section 1 ...
    stack[4, 2:18, 2:13] = 2  # ... and another one at the same place in section 4
    linked = link_labels(stack, voxel_size_nm=SSTEM)
    right, left_early, left_late = linked[0, 5, 20], linked[0, 5, 5], linked[4, 5, 5]
    assert (right, left_early) == (1, 2)  # section 0 in label order: 1 (right), 2 (left)
    assert left_late == 3  # two sections apart at 50 nm: a new object, not the old id
    assert np.all(linked[2:4, 2:18, 2:13] == 0)
    assert np.all(linked[:, 2:18, 16:28] == 1)


def test_an_empty_section_is_bridged_within_the_gap_and_splits_beyond_it():
    stack = np.zeros((3, 20, 20), dtype=np.uint32)
    stack[0, 2:18, 2:18] = 4
    stack[2, 2:18, 2:18] = 6  # section 1 is empty (a lost section)
    # FIB-SEM: sections 0 and 2 are 20 nm apart, within max_gap_nm: one object.
    fib = link_labels(stack, voxel_size_nm=FIBSEM)
    assert set(np.unique(fib[0])) == set(np.unique(fib[2])) == {0, 1}
    assert not fib[1].any()
    # ssTEM: 100 nm apart, beyond it: two objects, neither reusing the other's id.
    sstem = link_labels(stack, voxel_size_nm=SSTEM)
    assert sstem[0, 5, 5] == 1 and sstem[2, 5, 5] == 2


def test_a_merged_label_is_split_along_the_probability_map():
    """Two cells in sections 0 and 2; section 1's segmentation merged them into one label.

    The membrane between them is columns 11-13 (left cell 2-10, right cell 14-27); in
    section 1 the probability map shows it faintly, at column 12 only. The split must follow
    the map, not the middle of the label (column 14.5), and each half must join its own cell.
    """
    stack = np.zeros((3, 20, 30), dtype=np.uint32)
    stack[[0, 2], 2:18, 2:11] = 1
    stack[[0, 2], 2:18, 14:28] = 2
    stack[1, 2:18, 2:28] = 1  # merged
    probability = np.full(stack.shape, 0.05, dtype=np.float32)
    probability[stack == 0] = 0.95
    probability[1, 2:18, 12] = 0.45  # a faint membrane, below the watershed's threshold
    linked = link_labels(stack, probability, voxel_size_nm=SSTEM)
    assert set(np.unique(linked)) == {0, 1, 2}
    np.testing.assert_array_equal(linked[1, 2:18, 2:12], 1)
    np.testing.assert_array_equal(linked[1, 2:18, 13:28], 2)
    # Without the map the merged label cannot be split: it joins one cell, and the
    # repulsion between the two cells keeps the other one separate.
    plain = link_labels(stack, voxel_size_nm=SSTEM)
    assert len(np.unique(plain[1])) == 2


def test_min_sections_drops_short_objects_and_numbers_without_gaps():
    stack = two_cells(3)
    stack[1, 18:20, 0:6] = 9  # a one-section fragment
    linked = link_labels(stack, voxel_size_nm=SSTEM, params=LinkParams(min_sections=2))
    assert set(np.unique(linked)) == {0, 1, 2}
    assert np.all(linked[1, 18:20, 0:6] == 0)
    kept = link_labels(stack, voxel_size_nm=SSTEM)
    assert set(np.unique(kept)) == {0, 1, 2, 3}


def test_ids_are_unique_and_deterministic_on_a_random_stack():
    rng = np.random.default_rng(0)
    stack = np.zeros((6, 40, 40), dtype=np.uint32)
    for z in range(6):  # shifted blocks: cells that move, some that vanish
        for i, (y, x) in enumerate([(2, 2), (2, 22), (22, 2), (22, 22)]):
            if rng.random() < 0.85:
                dy, dx = rng.integers(0, 3, 2)
                stack[z, y + dy : y + dy + 14, x + dx : x + dx + 14] = 10 * (i + 1) + z
    probability = rng.uniform(0, 0.3, stack.shape).astype(np.float32)
    first = link_labels(stack, probability, voxel_size_nm=FIBSEM)
    again = link_labels(stack, probability, voxel_size_nm=FIBSEM)
    np.testing.assert_array_equal(first, again)
    ids = np.unique(first)
    np.testing.assert_array_equal(ids, np.arange(ids.size))  # 0, 1..n without gaps
    # Every 2D label got exactly one id, and 0 stays 0.
    for z in range(6):
        for label in np.unique(stack[z])[1:]:
            assert len(np.unique(first[z][stack[z] == label])) == 1
        assert np.all(first[z][stack[z] == 0] == 0)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.int64, np.float32, bool])
def test_any_integer_like_dtype_is_accepted(dtype):
    stack = (two_cells(3) > 0) if dtype is bool else two_cells(3).astype(dtype)
    linked = link_labels(stack, voxel_size_nm=SSTEM)
    assert linked.dtype == np.uint32
    assert len(np.unique(linked)) == (2 if dtype is bool else 3)


def test_a_section_of_another_dtype_among_the_others():
    sections = [
        two_cells(1)[0].astype(np.uint16),
        two_cells(1)[0].astype(np.float64),
        two_cells(1)[0].astype(np.int64),
    ]

    class Mixed:  # e.g. a stack assembled from files written by different tools
        shape = (3, 20, 30)

        def __getitem__(self, z):
            return sections[z]

    linked = link_labels(Mixed(), voxel_size_nm=SSTEM)
    assert set(np.unique(linked)) == {0, 1, 2}


@pytest.mark.parametrize(
    ("value", "message"),
    [(-1, "outside"), (1.5, "fractional"), (np.nan, "fractional"), (2**33, "outside")],
)
def test_impossible_labels_are_one_clear_error(value, message):
    stack = two_cells(3).astype(np.float64)
    stack[1, 0, 0] = value
    with pytest.raises(InputError, match=message):
        link_labels(stack, voxel_size_nm=SSTEM)


def test_parameters_and_shapes_are_checked():
    with pytest.raises(InputError, match="bias"):
        LinkParams(bias=1.0)
    with pytest.raises(InputError, match="min_sections"):
        LinkParams(min_sections=0)
    with pytest.raises(InputError, match="probability shape"):
        link_labels(two_cells(3), np.zeros((2, 20, 30), np.float32))
    with pytest.raises(InputError, match="voxel"):
        link_labels(two_cells(3), voxel_size_nm=(0, 4, 4))


def test_voxel_size_defaults():
    assert resolve_voxel_size() == (50.0, 4.0, 4.0)
    assert resolve_voxel_size(None, 10.0, 10.0) == (10.0, 10.0, 10.0)
    assert resolve_voxel_size(8) == (8.0, 8.0, 8.0)
    assert LinkParams().geometry((10, 10, 10)).gap == 5
    assert LinkParams().geometry((50, 4, 4)).gap == 1


def test_link_into_streams_two_passes_into_any_target(tmp_path):
    import zarr

    from napari_em_unet.io.writers import open_writer

    stack = two_cells(4)
    reads = []

    class Counting:
        shape, dtype = stack.shape, stack.dtype

        def __getitem__(self, z):
            reads.append(z)
            return stack[z]

    target = zarr.create_array(
        str(tmp_path / "t.zarr"), shape=stack.shape, chunks=(1, 20, 30), dtype=np.uint32
    )
    records = list(link_into(Counting(), target, voxel_size_nm=SSTEM))
    assert all(isinstance(r, LinkProgress) for r in records)
    assert [r.pass_number for r in records] == [1] * 4 + [2] * 4
    assert [r.done for r in records] == list(range(1, 9)) and records[-1].total == 8
    assert records[-1].eta_s == 0
    assert sorted(reads) == [0, 0, 1, 1, 2, 2, 3, 3]  # each section read once per pass
    np.testing.assert_array_equal(target[:], link_labels(stack, voxel_size_nm=SSTEM))
    with open_writer(tmp_path / "out.tif", stack.shape, np.uint32) as writer:
        for _ in link_into(stack, writer, voxel_size_nm=SSTEM):
            pass
    import tifffile

    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out.tif"), target[:])


def test_a_single_2d_image_is_one_section():
    plane = two_cells(1)[0]
    linked = link_labels(plane)
    assert linked.shape == plane.shape and set(np.unique(linked)) == {0, 1, 2}


def test_the_window_holds_a_few_sections_not_the_stack():
    """Memory: while linking 30 sections, at most window-many planes are held at once."""
    from napari_em_unet.segmentation import link_graph

    stack = np.repeat(two_cells(1), 30, axis=0)
    probability = np.full(stack.shape, 0.1, dtype=np.float32)
    held = []
    original = link_graph.SectionWindow.forget_before

    def spy(self, z):
        original(self, z)
        held.append(len(self._original))

    link_graph.SectionWindow.forget_before = spy
    try:
        link_labels(stack, probability, voxel_size_nm=FIBSEM)
    finally:
        link_graph.SectionWindow.forget_before = original
    geometry = LinkParams().geometry(FIBSEM)
    assert max(held) <= 2 * geometry.split_window + geometry.gap + 1 < 30


def test_labels_changed_between_the_passes_do_not_fail_the_run():
    """napari's layer can be painted while linking runs: pass 2 then meets a label pass 1
    never saw. It gets no object (the widget keeps such a result out of the layer)."""
    stack = np.zeros((2, 20, 20), dtype=np.uint32)
    stack[:, 2:18, 2:18] = 1

    class Painted:
        shape, dtype, ndim = stack.shape, stack.dtype, stack.ndim
        reads = 0

        def __getitem__(self, z):
            self.reads += 1
            plane = stack[z].copy()
            if self.reads > 2:  # pass 2: the user painted a new label meanwhile
                plane[10, 10] = 9
            return plane

    target = np.zeros(stack.shape, dtype=np.uint32)
    for _ in link_into(Painted(), target, voxel_size_nm=SSTEM):
        pass
    assert target[0, 10, 10] == 0 and target[0, 5, 5] == target[1, 5, 5] == 1
