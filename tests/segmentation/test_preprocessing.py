"""Normalisation and input shapes: every dtype the user can bring gives sane network input."""

import numpy as np
import pytest

from napari_em_unet.errors import InputError
from napari_em_unet.segmentation.preprocessing import (
    as_stack,
    normalize,
    resample_factor,
    to_grey,
    zoom_to,
)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_normalize_maps_percentiles_to_unit_range(dtype):
    rng = np.random.default_rng(0)
    image = (rng.random((50, 60)) * 200 + 10).astype(dtype)
    out = normalize(image)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.percentile(out, 1) == pytest.approx(0, abs=0.02)
    assert np.percentile(out, 99) == pytest.approx(1, abs=0.02)


def test_normalize_handles_nans_constant_and_all_nan():
    image = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    image[0, :5] = np.nan
    image[1, 0] = np.inf
    out = normalize(image)
    assert np.isfinite(out).all()
    assert (out[0, :5] == 0.5).all()
    assert (normalize(np.full((4, 4), 7.0)) == 0.5).all()
    assert (normalize(np.full((4, 4), np.nan)) == 0.5).all()


def test_rgb_becomes_grey_and_shapes_become_stacks():
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[..., 1] = 100
    grey = to_grey(rgb)
    assert grey.shape == (10, 12) and grey.max() == pytest.approx(58.7, abs=0.1)
    stack, was_2d = as_stack(rgb)
    assert stack.shape == (1, 10, 12) and was_2d
    stack, was_2d = as_stack(np.zeros((3, 10, 12)))
    assert stack.shape == (3, 10, 12) and not was_2d
    with pytest.raises(InputError, match="2D image or a ZYX stack"):
        as_stack(np.zeros((2, 3, 10, 12)))


def test_resampling():
    assert resample_factor(4.6, 4.0) == pytest.approx(1.15)
    assert resample_factor(4.05, 4.0) == 1.0  # within 3 %: not worth it
    assert resample_factor(None, 4.0) == 1.0
    out = zoom_to(np.ones((10, 13), dtype=np.float32), (23, 30), order=1)
    assert out.shape == (23, 30)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int8, np.int16])
@pytest.mark.parametrize("size", [1, 2, 7, 5000])
def test_integer_percentiles_from_a_histogram_equal_numpys(dtype, size):
    from napari_em_unet.segmentation.preprocessing import percentiles_of

    info = np.iinfo(dtype)
    rng = np.random.default_rng(size)
    values = rng.integers(info.min, info.max, size=size, endpoint=True).astype(dtype)
    values[: size // 3] = values[0]  # repeated values, as in real images
    qs = (0.0, 0.5, 1.0, 37.5, 99.0, 99.5, 100.0)
    # (numpy on int8 itself overflows between far-apart values: compare in float)
    expected = np.percentile(values.astype(np.float64), qs)
    np.testing.assert_allclose(percentiles_of(values, qs), expected, rtol=1e-12)
