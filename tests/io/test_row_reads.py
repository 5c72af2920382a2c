"""Rows of a slice without the slice: Volume.read_rows, row writes, scratch rows on disk."""

from __future__ import annotations

import shutil
from collections import namedtuple

import numpy as np
import pytest
import tifffile

from napari_em_unet.errors import InputError
from napari_em_unet.io.scratch import ScratchRows
from napari_em_unet.io.volumes import open_volume
from napari_em_unet.io.writers import TiffSliceWriter, ZarrSliceWriter

RNG = np.random.default_rng(3)
STACK = RNG.integers(0, 255, (3, 70, 50), dtype=np.uint8)
RGB = RNG.integers(0, 255, (70, 50, 3), dtype=np.uint8)
SPANS = [(0, 70), (3, 17), (69, 70), (8, 16), (10, 10)]


def _tiff(tmp_path, name, data, **kwargs):
    path = tmp_path / name
    tifffile.imwrite(path, data, **kwargs)
    return path


SOURCES = {
    "tiff uncompressed stack": lambda p: _tiff(p, "a.tif", STACK, imagej=True),
    "tiff float 2D": lambda p: _tiff(p, "b.tif", STACK[0].astype(np.float32)),
    "tiff RGB": lambda p: _tiff(p, "c.tif", RGB, photometric="rgb"),
    "tiff zlib strips": lambda p: _tiff(p, "d.tif", STACK[1], compression="zlib", rowsperstrip=8),
    "tiff zlib RGB strips": lambda p: _tiff(
        p, "e.tif", RGB, compression="zlib", rowsperstrip=5, photometric="rgb"
    ),
    "tiff zlib tiles": lambda p: _tiff(p, "f.tif", STACK[2], compression="zlib", tile=(16, 16)),
    "numpy": lambda p: STACK,
    "memmap": lambda p: _memmap(p),
    "zarr": lambda p: _zarr(p),
    "dask": lambda p: __import__("dask.array").array.from_array(STACK, chunks=(1, 20, 20)),
}


def _memmap(tmp_path):
    data = np.memmap(tmp_path / "m.raw", dtype=np.uint8, mode="w+", shape=STACK.shape)
    data[:] = STACK
    return data


def _zarr(tmp_path):
    import zarr

    array = zarr.create_array(
        str(tmp_path / "z.zarr"), shape=STACK.shape, chunks=(1, 32, 32), dtype=np.uint8
    )
    array[:] = STACK
    return array


@pytest.mark.parametrize("name", list(SOURCES))
def test_rows_equal_the_rows_of_the_slice(tmp_path, name):
    volume = open_volume(SOURCES[name](tmp_path))
    for z in range(volume.shape[0]):
        whole = volume[z]
        for start, stop in SPANS:
            rows = volume.read_rows(z, start, stop)
            assert rows.dtype == whole.dtype and rows.shape == (stop - start, volume.shape[2])
            np.testing.assert_array_equal(rows, whole[start:stop])


def test_striped_compressed_tiff_decodes_only_the_strips_asked_for(tmp_path, monkeypatch):
    volume = open_volume(_tiff(tmp_path, "s.tif", STACK[0], compression="zlib", rowsperstrip=8))
    volume.read_rows(0, 0, 1)  # opens the file
    page = volume._source._tif.series[0].pages[0]
    decoded = []
    original = type(page).decode.func  # a cached_property's function

    def counting(self):
        decode = original(self)
        return lambda data, index, **kw: (decoded.append(index), decode(data, index, **kw))[1]

    monkeypatch.setattr(type(page), "decode", property(counting))
    np.testing.assert_array_equal(volume.read_rows(0, 20, 30), STACK[0, 20:30])
    assert decoded == [2, 3] and volume._source._page_cache is None


def test_row_reads_check_their_range(tmp_path):
    volume = open_volume(STACK)
    with pytest.raises(IndexError):
        volume.read_rows(3, 0, 1)
    with pytest.raises(IndexError):
        volume.read_rows(0, 5, 71)
    with pytest.raises(IndexError):
        volume.read_rows(0, 6, 5)


def test_a_truncated_tiff_says_so_for_rows(tmp_path):
    path = _tiff(tmp_path, "t.tif", STACK, imagej=True)
    volume = open_volume(path)
    with open(path, "r+b") as fh:
        fh.truncate(path.stat().st_size - 2 * 70 * 50)
    with pytest.raises(InputError, match="truncated"):
        volume.read_rows(2, 0, 70)


# ----------------------------------------------------------------------------- row writes
@pytest.mark.parametrize("cls", [TiffSliceWriter, ZarrSliceWriter])
@pytest.mark.parametrize("shape", [(4, 70, 50), (70, 50)])
def test_writers_take_rows_at_their_place(tmp_path, cls, shape):
    data = RNG.integers(0, 2**31, shape, dtype=np.uint32)
    out = tmp_path / ("o.tif" if cls is TiffSliceWriter else "o.zarr")
    with cls(out, shape, np.uint32) as writer:
        for z in range(1 if len(shape) == 2 else shape[0]):
            plane = data if len(shape) == 2 else data[z]
            for start, stop in [(40, 70), (0, 13), (13, 40)]:  # any order
                writer.write_rows(z, start, plane[start:stop])
    np.testing.assert_array_equal(np.asarray(open_volume(out)).reshape(shape), data)


def test_row_writes_are_checked(tmp_path):
    with TiffSliceWriter(tmp_path / "o.tif", (2, 10, 8), np.uint8) as writer:
        with pytest.raises(ValueError):
            writer.write_rows(0, 5, np.zeros((6, 8)))  # past the last row
        with pytest.raises(ValueError):
            writer.write_rows(0, 0, np.zeros((2, 7)))  # wrong width
        with pytest.raises(IndexError):
            writer.write_rows(2, 0, np.zeros((2, 8)))


# ----------------------------------------------------------------------------- scratch
def test_scratch_rows_round_trip_and_leave_nothing(tmp_path):
    data = RNG.integers(0, 2**32, (30, 20), dtype=np.uint32)
    with ScratchRows((30, 20), np.uint32, tmp_path) as store:
        store.write(10, data[10:30])
        assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing even after kill -9
        np.testing.assert_array_equal(store.read(12, 30), data[12:30])
        assert not store.read(0, 10).any()  # never written: 0


def test_scratch_rows_refuse_a_full_disk(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(InputError, match="not enough disk space .* 0.0 GiB needed"):
        ScratchRows((100, 100), np.uint32, tmp_path)
