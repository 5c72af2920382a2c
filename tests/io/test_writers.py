"""The streaming writers: TIFF laid out first and filled slice by slice, zarr one slice per
chunk, both renamed into place only when complete."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_em_unet.errors import InputError
from napari_em_unet.io.tiff import read_tiff
from napari_em_unet.io.volumes import open_volume
from napari_em_unet.io.writers import TiffSliceWriter, ZarrSliceWriter, create_zarr_output


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "part" in p.name or ".old-" in p.name)


def test_tiff_writer_any_order_unwritten_slices_zero_and_metadata(tmp_path):
    out = tmp_path / "out.tif"
    data = np.arange(4 * 20 * 30, dtype=np.uint32).reshape(4, 20, 30)
    with TiffSliceWriter(out, data.shape, np.uint32, pixel_size_nm=4.0) as writer:
        for z in (3, 0, 2):  # slice 1 never written
            writer.write(z, data[z])
        assert not out.exists() and len(leftovers(tmp_path)) == 1
    assert leftovers(tmp_path) == []
    image = read_tiff(out)
    expected = data.copy()
    expected[1] = 0
    np.testing.assert_array_equal(image.data, expected)
    assert image.pixel_size_nm == pytest.approx(4.0)

    with TiffSliceWriter(tmp_path / "m.tif", (20, 30), np.uint8, pixel_size_nm=5.0) as writer:
        writer.write(0, np.full((20, 30), 255, np.uint8))
    with tifffile.TiffFile(tmp_path / "m.tif") as tif:  # ImageJ-style, as write_tiff makes
        assert tif.is_imagej and tif.series[0].shape == (20, 30)
    assert read_tiff(tmp_path / "m.tif").pixel_size_nm == pytest.approx(5.0)


def test_tiff_writer_switches_to_bigtiff_past_4_gb(tmp_path):
    """A 4.6 GB stack: only the slices written take disk space (the file is sparse)."""
    shape = (1100, 2048, 2048)
    out = tmp_path / "big.tif"
    last = np.random.default_rng(0).integers(0, 255, shape[1:], dtype=np.uint8)
    with TiffSliceWriter(out, shape, np.uint8) as writer:
        assert writer.bigtiff
        writer.write(1099, last)  # its offset lies beyond 4 GiB
    with tifffile.TiffFile(out) as tif:
        assert tif.is_bigtiff and tif.series[0].shape == shape
    volume = open_volume(out)
    np.testing.assert_array_equal(volume[1099], last)
    assert not volume[3].any()
    out.unlink()


def test_writers_reject_wrong_slices(tmp_path):
    writer = TiffSliceWriter(tmp_path / "o.tif", (2, 8, 8), np.uint8)
    with pytest.raises(IndexError):
        writer.write(2, np.zeros((8, 8)))
    with pytest.raises(ValueError):
        writer.write(0, np.zeros((8, 9)))
    writer.abort()
    assert list(tmp_path.iterdir()) == []


def test_zarr_writer_replaces_only_zarr_and_cleans_up(tmp_path):
    out = tmp_path / "out.zarr"
    data = np.random.default_rng(0).integers(0, 9, (3, 20, 30)).astype(np.uint32)
    for attempt in range(2):  # the second run replaces the first store
        with ZarrSliceWriter(out, data.shape, np.uint32, pixel_size_nm=4.0) as writer:
            for z in range(3):
                writer.write(z, data[z] + attempt)
            [partial] = [p for p in tmp_path.iterdir() if p.name.startswith(".out.zarr.")]
            assert partial.is_dir() and partial.name.endswith(".part")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    volume = open_volume(out)
    assert volume.kind == "ome-zarr" and volume.pixel_size_nm == pytest.approx(4.0)
    np.testing.assert_array_equal(np.asarray(volume), data + 1)

    with pytest.raises(RuntimeError), ZarrSliceWriter(out, data.shape, np.uint32) as writer:
        writer.write(0, data[0])
        raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]  # old result kept
    np.testing.assert_array_equal(open_volume(out)[0], data[0] + 1)

    (tmp_path / "precious.zarr").mkdir()
    (tmp_path / "precious.zarr" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a zarr"):
        ZarrSliceWriter(tmp_path / "precious.zarr", data.shape, np.uint32)
    assert (tmp_path / "precious.zarr" / "notes.txt").exists()


def test_zarr_output_is_chunked_one_slice_deep(tmp_path):
    import zarr

    array = create_zarr_output(tmp_path / "l.zarr", (5, 3000, 40), np.uint32)
    assert array.chunks == (1, 1024, 40) and array.fill_value == 0
    group = zarr.open_group(str(tmp_path / "l.zarr"), mode="r")
    assert group.metadata.zarr_format == 2
    assert group.attrs["multiscales"][0]["datasets"][0]["path"] == "0"
    with pytest.raises(InputError, match="already exists"):
        create_zarr_output(tmp_path / "l.zarr", (5, 3000, 40), np.uint32)


# ----------------------------------------------------------------------------- segmenting
