"""The napari reader and writer, called as napari calls them (no viewer needed)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_em_unet import _reader
from napari_em_unet._reader import napari_get_reader
from napari_em_unet._writer import write_image, write_labels


def _read(path):
    reader = napari_get_reader(str(path))
    assert callable(reader)
    layers = reader(str(path))
    assert len(layers) == 1
    return layers[0]


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((40, 50), np.uint8),
        ((3, 40, 50), np.uint16),
        ((3, 40, 50), np.float32),
        ((2, 40, 50), np.int16),
    ],
)
def test_image_round_trip(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    data = (rng.random(shape) * 1000).astype(dtype)
    paths = write_image(str(tmp_path / "stack"), data, {"metadata": {"pixel_size_nm": 4.0}})
    assert paths == [str(tmp_path / "stack.tif")]
    array, kwargs, kind = _read(paths[0])
    assert kind == "image"
    assert kwargs["name"] == "stack"
    assert kwargs["rgb"] is False
    assert array.dtype == dtype
    np.testing.assert_array_equal(array, data)
    assert kwargs["metadata"]["pixel_size_nm"] == pytest.approx(4.0, rel=1e-4)


def test_labels_round_trip_compacts_dtype(tmp_path):
    labels = np.zeros((3, 30, 30), dtype=np.int64)
    labels[:, 5:10, 5:10] = 7
    labels[1, 20:25, 20:25] = 300
    path = write_labels(
        str(tmp_path / "cells-labels.tiff"), labels, {"metadata": {"pixel_size_nm": 5.0}}
    )[0]
    stored = tifffile.imread(path)
    assert stored.dtype == np.uint16  # int64 in memory, 300 needs 16 bits
    array, kwargs, kind = _read(path)
    assert kind == "labels"
    np.testing.assert_array_equal(array, labels)
    assert kwargs["metadata"]["pixel_size_nm"] == pytest.approx(5.0, rel=1e-4)


def test_large_uint32_labels_and_bool(tmp_path):
    labels = np.zeros((20, 20), dtype=np.uint64)
    labels[3, 3] = 70_000
    path = write_labels(str(tmp_path / "big_seg.tif"), labels, {})[0]
    assert tifffile.imread(path).dtype == np.uint32
    mask = np.eye(8, dtype=bool)
    path = write_labels(str(tmp_path / "mask.tif"), mask, {})[0]
    np.testing.assert_array_equal(tifffile.imread(path), mask.astype(np.uint8))


def test_rgb_stack(tmp_path):
    data = np.random.default_rng(1).integers(0, 255, (2, 32, 40, 3), dtype=np.uint8)
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data, photometric="rgb")
    array, kwargs, kind = _read(path)
    assert kind == "image" and kwargs["rgb"] is True
    np.testing.assert_array_equal(array, data)


def test_ome_tiff_with_pixel_size(tmp_path):
    data = np.arange(2 * 16 * 16, dtype=np.uint16).reshape(2, 16, 16)
    path = tmp_path / "volume.ome.tif"
    tifffile.imwrite(
        path,
        data,
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.006, "PhysicalSizeXUnit": "µm"},
    )
    array, kwargs, kind = _read(path)
    assert kwargs["name"] == "volume"
    np.testing.assert_array_equal(array, data)
    assert kwargs["metadata"]["pixel_size_nm"] == pytest.approx(6.0)


def test_integer_image_named_like_labels_opens_as_labels(tmp_path):
    data = np.zeros((2, 8, 8), np.uint8)
    for name in ("train-labels.tif", "gt.tif", "cells_mask.tif", "membranes.tif"):
        tifffile.imwrite(tmp_path / name, data)
        assert _read(tmp_path / name)[2] == "labels", name
    tifffile.imwrite(tmp_path / "segment-me.tif", data)  # "seg" inside a word: an image
    assert _read(tmp_path / "segment-me.tif")[2] == "image"


def test_large_file_opens_lazily(tmp_path, monkeypatch):
    data = np.random.default_rng(2).integers(0, 255, (4, 64, 48), dtype=np.uint8)
    plain, packed = tmp_path / "plain.tif", tmp_path / "packed.tif"
    tifffile.imwrite(plain, data, photometric="minisblack")
    tifffile.imwrite(packed, data, compression="zlib", photometric="minisblack")
    monkeypatch.setattr(_reader, "LARGE_FILE_BYTES", 0)
    for path in (plain, packed):
        array, _, kind = _read(path)
        assert kind == "image"
        assert not isinstance(array, np.ndarray)  # a dask array, read when shown
        assert array.shape == data.shape
        np.testing.assert_array_equal(np.asarray(array[2]), data[2])


def test_reader_declines_what_it_cannot_read(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "fake.tif").write_text("this is not a TIFF")
    (tmp_path / "empty.tif").write_bytes(b"")
    (tmp_path / "random.tiff").write_bytes(np.random.default_rng(3).bytes(4096))
    (tmp_path / "folder.tif").mkdir()
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, np.zeros((4, 4), np.uint8))
    for name in ("notes.txt", "fake.tif", "empty.tif", "random.tiff", "folder.tif", "missing.tif"):
        assert napari_get_reader(str(tmp_path / name)) is None, name
    assert napari_get_reader([str(good), str(tmp_path / "notes.txt")]) is None
    assert napari_get_reader([]) is None
    assert callable(napari_get_reader([str(good), str(good)]))


def test_truncated_tiff_is_declined(tmp_path):
    path = tmp_path / "cut.tif"
    tifffile.imwrite(path, np.zeros((3, 64, 64), np.uint8), photometric="minisblack")
    raw = path.read_bytes()
    path.write_bytes(raw[:100])
    assert napari_get_reader(str(path)) is None


def test_writer_keeps_multiscale_level_zero(tmp_path):
    levels = [np.ones((8, 8), np.uint8), np.ones((4, 4), np.uint8)]
    path = write_image(str(tmp_path / "pyramid.tif"), levels, {"multiscale": True})[0]
    assert tifffile.imread(path).shape == (8, 8)


def test_the_layer_scale_is_the_pixel_size_in_nm(tmp_path):
    """napari's scale bar then shows nm, and 3D views keep the sections' thickness."""
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 16, 16), np.uint8),
        imagej=True,
        resolution=(250.0, 250.0),
        metadata={"unit": "um", "spacing": 0.05, "axes": "ZYX"},
    )
    [(data, kwargs, kind)] = _reader.read_tiff_layers(str(path))
    assert kind == "image" and data.shape == (3, 16, 16)
    assert kwargs["scale"] == pytest.approx((50.0, 4.0, 4.0))
    assert kwargs["units"] == "nm" and kwargs["metadata"]["pixel_size_nm"] == pytest.approx(4)
    tifffile.imwrite(tmp_path / "plain.tif", np.zeros((3, 16, 16), np.uint8))
    [(_, plain, _)] = _reader.read_tiff_layers(str(tmp_path / "plain.tif"))
    assert "scale" not in plain  # no pixel size: napari's pixel grid
