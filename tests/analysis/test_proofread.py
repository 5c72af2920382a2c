"""Object corrections: merge, split at a section, delete small; each undone exactly."""

from __future__ import annotations

import numpy as np
import pytest

from napari_em_unet.analysis.proofread import (
    apply_edit,
    delete_small_objects,
    merge_objects,
    plan_delete_small,
    plan_merge,
    plan_split,
    revert_edit,
    split_object,
)
from napari_em_unet.errors import InputError
from napari_em_unet.generators import drain


def volume() -> np.ndarray:
    """Object 1 runs through sections 0-3, object 2 through 1-2, object 9 is 2 voxels."""
    labels = np.zeros((4, 8, 8), dtype=np.uint16)
    labels[:, 1:3, 1:3] = 1
    labels[1:3, 5:7, 5:8] = 2
    labels[3, 7, 0:2] = 9
    return labels


def test_merge_and_undo():
    labels = volume()
    before = labels.copy()
    edit = merge_objects(labels, 1, 2)
    expected = before.copy()
    expected[before == 2] = 1
    np.testing.assert_array_equal(labels, expected)
    assert edit.kind == "merge" and edit.value == 1 and edit.labels == (1, 2)
    assert edit.sections == (1, 2) and edit.voxels == 12
    assert edit.slices[0].box == (5, 7, 5, 8)  # only the bounding box is stored
    assert edit.summary == "merged object 2 into 1 (12 voxels relabelled)"
    revert_edit(labels, edit)
    np.testing.assert_array_equal(labels, before)


def test_split_gives_the_part_from_the_section_on_a_new_id():
    labels = volume()
    before = labels.copy()
    edit = split_object(labels, 1, 2)
    assert edit.value == 10  # one above the largest id (9)
    assert (labels[:2][before[:2] == 1] == 1).all()
    assert (labels[2:][before[2:] == 1] == 10).all()
    assert ((labels == before) | (before == 1)).all()  # nothing else changed
    assert "sections 2-3 are now object 10" in edit.summary
    revert_edit(labels, edit)
    np.testing.assert_array_equal(labels, before)


def test_delete_small_counts_voxels_in_3d():
    labels = volume()
    before = labels.copy()
    # Object 2 has 6 voxels per section but 12 in all: a 3D count keeps it at 10.
    edit = delete_small_objects(labels, 10)
    assert edit.labels == (9,) and edit.value == 0 and edit.voxels == 2
    assert set(np.unique(labels)) == {0, 1, 2}
    revert_edit(labels, edit)
    np.testing.assert_array_equal(labels, before)
    edit = delete_small_objects(labels, 13)
    assert edit.labels == (2, 9) and set(np.unique(labels)) == {0, 1}
    nothing = delete_small_objects(labels, 1)
    assert nothing.slices == () and "nothing deleted" in nothing.summary


def test_plans_write_nothing_and_report_progress():
    labels = volume()
    before = labels.copy()
    steps = plan_delete_small(labels, 5)
    done = []
    while True:
        try:
            done.append(next(steps).done)
        except StopIteration as end:
            edit = end.value
            break
    assert done == list(range(1, 9))  # two passes over 4 sections
    np.testing.assert_array_equal(labels, before)
    apply_edit(labels, edit)
    assert 9 not in labels


def test_indices_are_what_napari_data_setitem_takes():
    labels = volume()
    edit = drain(plan_merge(labels, 1, 2))
    z, y, x = edit.indices()
    assert (labels[z, y, x] == 2).all() and len(z) == edit.voxels
    np.testing.assert_array_equal(edit.old_values(), labels[z, y, x])
    flat = drain(plan_merge(labels[1], 1, 2))
    assert len(flat.indices(ndim=2)) == 2


def test_zarr_labels(tmp_path):
    import zarr

    store = zarr.open_array(
        str(tmp_path / "l.zarr"), mode="w", shape=(4, 8, 8), chunks=(1, 8, 8), dtype=np.uint16
    )
    store[:] = volume()
    edit = split_object(store, 2, 2)
    assert (store[2][volume()[2] == 2] == 10).all()
    revert_edit(store, edit)
    np.testing.assert_array_equal(store[:], volume())


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (lambda v: plan_merge(v, 1, 1), "two different objects"),
        (lambda v: plan_merge(v, 1, 5), "object 5 is not in the labels"),
        (lambda v: plan_merge(v, 0, 1), "above 0"),
        (lambda v: plan_split(v, 2, 1), "object 2 has no voxel before section 1"),
        (lambda v: plan_split(v, 2, 3), "no voxel on or after section 3"),
        (lambda v: plan_split(v, 1, 0), "pick one of 1-3"),
        (lambda v: plan_split(v, 4, 2), "object 4 is not in the labels"),
        (lambda v: plan_split(v[0], 1, 1), "Z x Y x X volume"),
        (lambda v: plan_delete_small(v, 0), "at least 1 voxel"),
        (lambda v: plan_merge(v.astype(np.float32), 1, 2), "whole numbers"),
    ],
)
def test_bad_requests_are_one_sentence(plan, message):
    with pytest.raises(InputError, match=message):
        drain(plan(volume()))


def test_split_with_no_free_id():
    labels = volume().astype(np.uint8)
    labels[0, 0, 7] = 255
    with pytest.raises(InputError, match="no free object id left"):
        split_object(labels, 1, 2)
