"""Lazy volumes: every input kind gives the same slices as the in-memory reader, one at a time."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tifffile

from napari_em_unet.errors import InputError
from napari_em_unet.io.tiff import read_tiff
from napari_em_unet.io.volumes import Volume, open_volume
from napari_em_unet.segmentation.preprocessing import as_stack

STACK = np.random.default_rng(0).integers(0, 255, (6, 40, 50), dtype=np.uint8)


class CountingArray:
    """An array-like that records which slices are read and refuses to be loaded whole."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.reads = data, data.shape, data.dtype, []
        self.ndim = data.ndim

    def __getitem__(self, key):
        self.reads.append(key)
        return self.data[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole array was loaded")


def _ome_zarr(path, data, *, scale_um=0.004, version="0.4"):
    import zarr

    group = zarr.open_group(str(path), mode="w", zarr_format=2 if version == "0.4" else 3)
    full = group.create_array(
        "0", shape=(1, 1, *data.shape), chunks=(1, 1, 1, *data.shape[1:]), dtype=data.dtype
    )
    full[0, 0] = data
    group.create_array("1", shape=(1, 1, data.shape[0], 2, 2), dtype=data.dtype)
    axes = [{"name": "t", "type": "time"}, {"name": "c", "type": "channel"}] + [
        {"name": n, "type": "space", "unit": "micrometer"} for n in "zyx"
    ]
    multiscales = [
        {
            "version": version,
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1, 1, 0.05, scale_um, scale_um]}
                    ],
                },
                {
                    "path": "1",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1, 1, 0.05, 20 * scale_um, 25 * scale_um]}
                    ],
                },
            ],
        }
    ]
    if version == "0.4":
        group.attrs["multiscales"] = multiscales
    else:
        group.attrs["ome"] = {"version": version, "multiscales": multiscales}
    return path


@pytest.mark.parametrize(
    ("name", "kwargs", "source"),
    [
        (
            "imagej.tif",
            {
                "imagej": True,
                "resolution": (250.0, 250.0),
                "metadata": {"unit": "um", "axes": "ZYX"},
            },
            "_TiffContiguousSource",
        ),
        ("zlib.tif", {"compression": "zlib"}, "_TiffPageSource"),
        ("bigendian.tif", {"byteorder": ">"}, "_TiffContiguousSource"),
        ("bigtiff.tif", {"bigtiff": True}, "_TiffContiguousSource"),
    ],
)
def test_tiff_slices_match_the_in_memory_reader(tmp_path, name, kwargs, source):
    path = tmp_path / name
    tifffile.imwrite(path, STACK, **kwargs)
    volume = open_volume(path)
    assert type(volume._source).__name__ == source
    assert volume.shape == STACK.shape and volume.dtype == np.uint8 and not volume.was_2d
    expected, _ = as_stack(read_tiff(path).data)
    for z in (0, 3, -1):
        np.testing.assert_array_equal(volume[z], expected[z])
    np.testing.assert_array_equal(volume[1:4, 5:9, -3:], expected[1:4, 5:9, -3:])
    np.testing.assert_array_equal(np.asarray(volume), expected)
    assert volume.pixel_size_nm == (4.0 if "imagej" in name else None)


def test_2d_rgb_and_5d_tiffs(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    volume = open_volume(tmp_path / "rgb.tif")
    assert volume.was_2d and volume.shape == (1, 30, 40) and volume.dtype == np.float32
    np.testing.assert_allclose(volume[0], as_stack(rgb)[0][0])

    tifffile.imwrite(tmp_path / "tzcyx.tif", STACK[None, :, None], imagej=True)
    volume = open_volume(tmp_path / "tzcyx.tif")
    assert volume.shape == STACK.shape
    np.testing.assert_array_equal(volume[4], STACK[4])


def test_tiff_reads_only_the_pages_asked_for(tmp_path):
    """A slice read decodes one page: the rest of a huge file is never touched."""
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, STACK, compression="zlib")
    volume = open_volume(path)
    calls = []
    original = volume._source._tif
    assert original is None  # opening read metadata only
    import tifffile as tf

    real = tf.TiffFile.asarray

    def spy(self, *args, **kwargs):
        calls.append(kwargs.get("key"))
        return real(self, *args, **kwargs)

    tf.TiffFile.asarray = spy
    try:
        volume[4]
        volume[1]
    finally:
        tf.TiffFile.asarray = real
    assert calls == [4, 1]


def test_zarr_array_group_and_ome_zarr(tmp_path):
    import zarr

    zarr.save_array(str(tmp_path / "plain.zarr"), STACK, zarr_format=3)
    group = zarr.open_group(str(tmp_path / "group.zarr"), mode="w", zarr_format=2)
    raw = group.create_array("raw", shape=STACK.shape, chunks=(1, 20, 25), dtype=np.uint8)
    raw[:] = STACK
    raw.attrs["pixel_size_nm"] = 5.0
    for path in (tmp_path / "plain.zarr", tmp_path / "group.zarr", tmp_path / "group.zarr/raw"):
        volume = open_volume(path)
        assert volume.shape == STACK.shape and volume.kind == "zarr"
        np.testing.assert_array_equal(volume[2], STACK[2])
    assert open_volume(tmp_path / "group.zarr").pixel_size_nm == 5.0

    for version in ("0.4", "0.5"):
        ome = _ome_zarr(tmp_path / f"img{version}.ome.zarr", STACK, version=version)
        volume = open_volume(ome)
        assert volume.kind == "ome-zarr" and volume.shape == STACK.shape  # level 0, t/c dropped
        assert volume.pixel_size_nm == pytest.approx(4.0)
        np.testing.assert_array_equal(volume[5], STACK[5])
    assert open_volume(ome, pixel_size_nm=6).pixel_size_nm == 6.0


def test_dask_and_numpy_arrays_are_read_slice_by_slice():
    import dask.array as da

    probe = CountingArray(STACK)
    volume = open_volume(da.from_array(probe, chunks=(1, 40, 50), asarray=False))
    assert volume.kind == "dask" and volume.shape == STACK.shape
    probe.reads.clear()  # dask reads an empty corner to learn the array type
    np.testing.assert_array_equal(volume[3], STACK[3])
    assert len(probe.reads) == 1  # one chunk: slice 3 only

    probe = CountingArray(STACK)
    volume = open_volume(probe)
    np.testing.assert_array_equal(volume[2, 10:20], STACK[2, 10:20])
    assert len(probe.reads) == 1
    assert open_volume(STACK[0]).was_2d


def test_to_dask_gives_a_lazy_array_for_a_viewer(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, STACK, imagej=True)
    lazy = open_volume(path).to_dask()
    assert lazy.shape == STACK.shape and lazy.chunksize == (1, 40, 50)
    np.testing.assert_array_equal(lazy[2:4].compute(), STACK[2:4])


def test_volumes_pickle_by_reference(tmp_path):
    """What a dask.distributed worker receives: a path, not the pixels."""
    path = tmp_path / "z.tif"
    tifffile.imwrite(path, np.zeros((50, 200, 200), np.uint8) + 7, compression="zlib")
    volume = open_volume(path)
    volume[0]  # opens the file handle, which must not travel
    blob = pickle.dumps(volume)
    assert len(blob) < 2000
    np.testing.assert_array_equal(pickle.loads(blob)[49], volume[49])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.tif", "not found"),
        (lambda p: p / "missing.zarr", "not found"),
        (lambda p: p, "folder"),
        (lambda p: _write(p / "x.tif", b"nope"), "not a readable"),
        (lambda p: _empty_group(p / "g.zarr"), "0 arrays"),
        (lambda p: _save(p / "4d.tif", np.zeros((2, 3, 9, 9), np.uint8)), "expected a 2D image"),
    ],
)
def test_bad_inputs_give_one_sentence(tmp_path, make, message):
    with pytest.raises(InputError, match=message):
        open_volume(make(tmp_path))


def _empty_group(path):
    import zarr

    zarr.open_group(str(path), mode="w")
    return path


def _write(path, content: bytes):
    path.write_bytes(content)
    return path


def _save(path, data):
    tifffile.imwrite(path, data)
    return path


def test_volume_indexing_edges():
    volume = open_volume(STACK)
    assert isinstance(volume, Volume) and len(volume) == 6
    with pytest.raises(IndexError):
        volume[6]
    assert volume[4:2].shape == (0, 40, 50)
    np.testing.assert_array_equal(volume[..., 3], STACK[..., 3])
    np.testing.assert_array_equal(volume[[0, 5]], STACK[[0, 5]])


def test_opening_a_volume_imports_neither_tensorflow_nor_napari(tmp_path):
    path = tmp_path / "s.tif"
    tifffile.imwrite(path, STACK, imagej=True)
    code = textwrap.dedent(f"""
        import sys
        from napari_em_unet.io.volumes import open_volume
        v = open_volume({str(path)!r}); v[2]; v.to_dask()[1].compute()
        print(",".join(m for m in ("tensorflow", "keras", "napari", "qtpy") if m in sys.modules)
              or "clean")
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "clean"
