"""Erosion and dilation by taxicab diamonds equal scipy's erosion and distance transforms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_em_unet.segmentation.morphology import dilate, erode


def _masks():
    rng = np.random.default_rng(3)
    blobs = ndimage.gaussian_filter(rng.random((70, 90)), 3) > 0.5
    yield blobs
    yield rng.random((33, 41)) > 0.2
    yield np.ones((12, 9), bool)
    yield np.zeros((5, 5), bool)
    yield np.eye(6, dtype=bool)


@pytest.mark.parametrize("mask", list(_masks()))
def test_one_erosion_is_scipys_with_the_border_counted_in(mask):
    expected = ndimage.binary_erosion(mask, border_value=1)
    np.testing.assert_array_equal(erode(mask), expected)


@pytest.mark.parametrize("mask", list(_masks()))
@pytest.mark.parametrize("radius", [0, 1, 3, 8])
def test_diamonds_are_taxicab_distances(mask, radius):
    depth = ndimage.distance_transform_cdt(mask, metric="taxicab")
    if mask.all():  # no background: scipy says -1 everywhere, every diamond lies in the mask
        depth = np.full(mask.shape, radius + 1)
    np.testing.assert_array_equal(erode(mask, radius), depth > radius)
    if mask.any():
        near = ndimage.distance_transform_cdt(~mask, metric="taxicab") <= radius
        np.testing.assert_array_equal(dilate(mask, radius), near)
    else:
        assert not dilate(mask, radius).any()


def test_the_input_is_left_as_it_was():
    mask = np.eye(5, dtype=bool)
    erode(mask, 2)
    dilate(mask, 2)
    np.testing.assert_array_equal(mask, np.eye(5, dtype=bool))
