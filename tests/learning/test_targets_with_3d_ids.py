"""Fine-tuning reads linked and proofread labels: 3D ids are cells like per-slice ids."""

from __future__ import annotations

import numpy as np

from napari_em_unet.analysis.proofread import merge_objects
from napari_em_unet.learning.targets import training_target


def test_3d_ids_give_the_same_training_targets_as_per_slice_ids(small_stack):
    _, per_slice = small_stack
    # What linking does to a slice: a one-to-one renumbering into large uint32 ids.
    rng = np.random.default_rng(0)
    linked = np.zeros(per_slice.shape, dtype=np.uint32)
    for z, plane in enumerate(per_slice):
        ids = np.unique(plane[plane > 0])
        new = rng.choice(np.arange(10**6, 4 * 10**9, 997), size=len(ids), replace=False)
        lookup = dict(zip(ids.tolist(), new.tolist(), strict=True))
        linked[z] = np.vectorize(lambda v, lookup=lookup: lookup.get(v, 0))(plane)
    for z in range(per_slice.shape[0]):
        expected, got = training_target(per_slice[z]), training_target(linked[z])
        np.testing.assert_array_equal(got.membrane, expected.membrane)
        np.testing.assert_array_equal(got.weight, expected.weight)


def test_a_merge_of_touching_objects_removes_only_their_border():
    labels = np.zeros((1, 20, 20), dtype=np.uint32)
    labels[0, 2:18, 2:10] = 4
    labels[0, 2:18, 10:18] = 9  # touching 4: a border the target makes membrane
    before = training_target(labels[0]).membrane
    merge_objects(labels, 4, 9)
    after = training_target(labels[0]).membrane
    assert before[10, 9:11].all() and not after[10, 9:11].any()
    np.testing.assert_array_equal(after, labels[0] == 0)
