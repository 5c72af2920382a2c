"""Probability of a slice in rows: equal to the whole-slice path, reading only rows."""

from __future__ import annotations

import numpy as np
import pytest

from napari_em_unet.io.volumes import open_volume
from napari_em_unet.segmentation.bands import (
    READ_ROWS,
    RowBuffer,
    _mirror,
    predict_rows,
    slice_levels,
    source_rows,
    zoom_rows,
)
from napari_em_unet.segmentation.preprocessing import apply_normalization, normalize, zoom_to
from napari_em_unet.segmentation.tiling import predict_stack


class Rows:
    """A sink that keeps what it is given."""

    def __init__(self):
        self.chunks, self.closed = [], False

    def push(self, rows):
        assert not self.closed
        self.chunks.append(np.array(rows))

    def close(self):
        self.closed = True

    @property
    def array(self):
        return np.concatenate(self.chunks)


class RowsOnly:
    """A volume that may be read by rows only, and logs the rows read."""

    def __init__(self, volume):
        self.volume, self.shape, self.dtype, self.reads = volume, volume.shape, volume.dtype, []

    def read_rows(self, index, start, stop):
        self.reads.append(stop - start)
        return self.volume.read_rows(index, start, stop)

    def __getitem__(self, key):
        raise AssertionError("a whole slice was read")


def _image(shape, seed=2):
    from napari_em_unet.learning.synthetic import make_synthetic_stack

    return make_synthetic_stack((1, *shape), seed=seed, cell_size=24)[0][0]


def _with_holes(image):
    out = image.astype(np.float32)
    out[10:20, 30:50] = np.nan
    out[0, :7] = np.inf
    return out


@pytest.mark.parametrize("pixel_size", [None, 5.3, 3.1])
@pytest.mark.parametrize("kind", ["uint8", "float with NaN"])
@pytest.mark.parametrize("tile_size", [64, 1024])
def test_probability_in_rows_equals_the_whole_slice(tiny_model, pixel_size, kind, tile_size):
    image = _image((150, 130))
    image = image if kind == "uint8" else _with_holes(image)
    volume = open_volume(image)
    expected = next(
        predict_stack(
            tiny_model,
            volume,
            pixel_size_nm=pixel_size,
            tile_size=tile_size,
            overlap=16,
            batch_size=3,
        )
    ).probability
    sink, source = Rows(), RowsOnly(volume)
    records = list(
        predict_rows(
            tiny_model,
            source,
            0,
            sink,
            pixel_size_nm=pixel_size,
            tile_size=tile_size,
            overlap=16,
            batch_size=3,
        )
    )
    got = sink.array
    assert sink.closed and got.shape == expected.shape and got.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got, expected, atol=1e-6, equal_nan=True)
    assert records[-1][0] == records[-1][1] and len(records) >= 1 + (tile_size == 64)
    assert max(source.reads) <= READ_ROWS


def test_flips_in_rows_equal_flips_on_the_whole_slice(tiny_model):
    volume = open_volume(_image((150, 130)))
    expected = next(
        predict_stack(tiny_model, volume, tile_size=64, overlap=16, flips=True)
    ).probability
    sink = Rows()
    list(predict_rows(tiny_model, volume, 0, sink, tile_size=64, overlap=16, flips=True))
    np.testing.assert_allclose(sink.array, expected, atol=1e-6)


def test_several_rows_of_tiles_are_really_used(tiny_model):
    """The test above would prove little if one tile covered the image."""
    sink = Rows()
    records = list(
        predict_rows(
            tiny_model,
            open_volume(_image((150, 130))),
            0,
            sink,
            tile_size=64,
            overlap=16,
            batch_size=3,
        )
    )
    assert records[-1] == (9, 9) and len(sink.chunks) == 3  # one chunk of rows per row of tiles


@pytest.mark.parametrize(
    "image",
    [
        np.full((40, 30), np.nan, dtype=np.float32),  # no finite pixel
        np.full((40, 30), 7, dtype=np.uint16),  # constant
        np.random.default_rng(0).integers(0, 4, (40, 30), dtype=np.uint8),  # black, some noise
    ],
    ids=["NaN", "constant", "black"],
)
def test_a_slice_without_signal_gets_no_probability_and_no_tiles(tiny_model, image):
    """As in the whole-slice path (preprocessing.has_signal): NaN everywhere, no network."""
    sink = Rows()
    volume = open_volume(image)
    records = list(predict_rows(tiny_model, volume, 0, sink))
    expected = next(predict_stack(tiny_model, volume))
    assert records == [(0, 0)] and expected.no_signal
    assert sink.array.shape == (40, 30) and np.isnan(sink.array).all()


@pytest.mark.parametrize("kind", ["uint16", "float with NaN"])
def test_normalisation_uses_the_whole_slices_percentile_sample(kind):
    """Over a million pixels normalize() samples; the row pass picks the same pixels."""
    rng = np.random.default_rng(0)
    image = rng.gamma(2.0, 300.0, (1100, 1013)).astype(np.uint16)
    image = image if kind == "uint16" else _with_holes(image)
    levels = slice_levels(open_volume(image), 0, (1.0, 99.0), rows=97)
    assert levels.finite == np.isfinite(image.astype(np.float32)).sum()
    np.testing.assert_array_equal(
        apply_normalization(image, levels.value_range), normalize(image, (1.0, 99.0))
    )


@pytest.mark.parametrize(
    "shapes",
    [((100, 80), (115, 92)), ((100, 80), (87, 70)), ((37, 41), (50, 33)), ((9, 9), (31, 4))],
)
def test_resampling_rows_equals_resampling_the_image(shapes):
    (height, width), out_shape = shapes
    image = np.random.default_rng(1).random((height, width), dtype=np.float32)
    expected = zoom_to(image, out_shape, order=1)
    for step in (1, 7, 13, out_shape[0]):
        parts = []
        for start in range(0, out_shape[0], step):
            stop = min(out_shape[0], start + step)
            first, last = source_rows(start, stop, height, out_shape[0])
            parts.append(
                zoom_rows(image[first:last], first, start, stop, (height, width), out_shape)
            )
        np.testing.assert_allclose(np.concatenate(parts), expected, atol=1e-6)


def test_row_buffer_keeps_only_what_is_still_needed():
    chunks = (np.full((5, 3), i, dtype=np.float32) for i in range(4))
    buffer = RowBuffer(chunks, 3)
    np.testing.assert_array_equal(buffer.rows(2, 7)[:, 0], [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(buffer.rows(6, 16)[:, 0], [1] * 4 + [2] * 5 + [3])
    assert buffer.rows(6, 6).shape == (0, 3)
    with pytest.raises(ValueError, match="already dropped"):
        buffer.rows(5, 8)


def test_mirror_indices_are_numpys_symmetric_padding():
    for length in (1, 2, 5):
        for before, after in ((0, 0), (3, 16), (16, 40)):
            positions = np.arange(-before, length + after)
            np.testing.assert_array_equal(
                np.arange(length)[_mirror(positions, length)],
                np.pad(np.arange(length), (before, after), mode="symmetric"),
            )


@pytest.mark.parametrize("pixel_size", [None, 5.3])
def test_a_model_with_two_views_in_rows_equals_the_whole_slice(tiny_model, pixel_size, tmp_path):
    from dataclasses import replace

    model = replace(tiny_model, info=replace(tiny_model.info, view_scales=[1.0, 0.6]))
    volume = open_volume(_with_holes(_image((150, 130))))
    options = {"pixel_size_nm": pixel_size, "tile_size": 64, "overlap": 16}
    expected = next(predict_stack(model, volume, **options)).probability
    one_view = next(predict_stack(tiny_model, volume, **options)).probability
    sink = Rows()
    records = list(predict_rows(model, volume, 0, sink, scratch_dir=tmp_path, **options))
    np.testing.assert_allclose(sink.array, expected, atol=1e-6, equal_nan=True)
    assert np.nanmax(np.abs(sink.array - one_view)) > 1e-3  # the second view is in it
    tiles = [total for _, total in records]
    assert records[-1][0] == tiles[0] and len(set(tiles)) == 1  # one count over both views
    assert list(tmp_path.iterdir()) == []  # the running sum's scratch file is gone
