"""Measurements per object: rows equal to hand-computed values, streaming, CSV."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_em_unet.analysis.measure import COLUMNS, measure_objects, measure_table, write_csv
from napari_em_unet.errors import InputError


def hand_made() -> tuple[np.ndarray, np.ndarray]:
    """Three objects whose measurements are easy to do by hand (see test_rows_by_hand)."""
    labels = np.zeros((4, 6, 8), dtype=np.uint32)
    labels[0, 0:2, 0:2] = 5  # 4 voxels on section 0
    labels[1, 0:2, 0:3] = 5  # 6 voxels on section 1
    labels[3, 5, 7] = 2  # one voxel, last section, last corner
    labels[1, 4, 0:4] = 70000  # a large id (above uint16), 4 voxels in a row
    image = np.arange(4 * 6 * 8, dtype=np.float32).reshape(4, 6, 8)
    return labels, image


def test_rows_by_hand():
    labels, image = hand_made()
    table = measure_table(labels, image, voxel_size_nm=(50, 4, 5))
    assert table.names == COLUMNS
    # Object 5: section 0 holds y,x in {0,1}x{0,1}; section 1 holds {0,1}x{0,1,2}.
    # centroid_z = (4*0 + 6*1)/10; centroid_y = (2*0+2*1 + 3*0+3*1)/10;
    # centroid_x = (2*(0+1) + 2*(0+1+2))/10; image value = z*48 + y*8 + x.
    mean5 = (
        sum(0 * 48 + y * 8 + x for y in (0, 1) for x in (0, 1))
        + sum(48 + y * 8 + x for y in (0, 1) for x in (0, 1, 2))
    ) / 10
    voxel_um3 = 50 * 4 * 5 / 1e9
    assert table.rows() == [
        (2, 1, voxel_um3, 3, 3, 3.0, 5.0, 7.0, 3 * 48 + 5 * 8 + 7),
        (5, 10, 10 * voxel_um3, 0, 1, 0.6, 0.5, 0.8, mean5),
        (70000, 4, 4 * voxel_um3, 1, 1, 1.0, 4.0, 1.5, 48 + 32 + 1.5),
    ]
    assert table.row_of(5)["voxels"] == 10 and table.row_of(6) is None


def test_without_image_or_voxel_size():
    labels, _ = hand_made()
    table = measure_table(labels)
    assert table.names == COLUMNS[:-1]  # no mean_intensity without an image
    assert np.isnan(table.columns["volume_um3"]).all()
    assert measure_table(np.zeros((2, 3, 3), np.uint8)).rows() == []


def test_matches_whole_volume_computation_on_random_labels():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 40, (7, 30, 25)).astype(np.uint16)
    labels[rng.random(labels.shape) < 0.3] = 0
    image = rng.normal(100, 20, labels.shape)
    table = measure_table(labels, image, voxel_size_nm=(40, 4, 4))
    ids = np.unique(labels[labels > 0])
    assert table.columns["label"].tolist() == ids.tolist()
    for i, label in enumerate(ids):
        where = np.argwhere(labels == label)
        assert table.columns["voxels"][i] == len(where)
        assert table.columns["z_first"][i] == where[:, 0].min()
        assert table.columns["z_last"][i] == where[:, 0].max()
        np.testing.assert_allclose(
            [table.columns[f"centroid_{a}"][i] for a in "zyx"], where.mean(axis=0), rtol=1e-12
        )
        np.testing.assert_allclose(
            table.columns["mean_intensity"][i], image[labels == label].mean(), rtol=1e-12
        )
        np.testing.assert_allclose(
            table.columns["volume_um3"][i], len(where) * 40 * 4 * 4 / 1e9, rtol=1e-12
        )


class SliceOnly:
    """A volume that can only be read one slice at a time (as a file on disk would be)."""

    def __init__(self, data):
        self._data, self.shape, self.dtype = data, data.shape, data.dtype
        self.reads: list[int] = []

    def __getitem__(self, key):
        assert isinstance(key, int), f"read more than one slice at once: {key!r}"
        self.reads.append(key)
        return self._data[key].copy()

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole volume was loaded")


def test_streams_one_slice_at_a_time_with_progress():
    labels, image = hand_made()
    source, pixels = SliceOnly(labels), SliceOnly(image)
    records = []
    steps = measure_objects(source, pixels)
    while True:
        try:
            records.append(next(steps))
        except StopIteration as done:
            table = done.value
            break
    assert [(r.done, r.total) for r in records] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert source.reads == [0, 1, 2, 3] and pixels.reads == [0, 1, 2, 3]
    np.testing.assert_equal(table.rows(), measure_table(labels, image).rows())


def test_zarr_2d_and_bool_labels(tmp_path):
    import zarr

    labels, image = hand_made()
    store = zarr.open_array(
        str(tmp_path / "l.zarr"), mode="w", shape=labels.shape, chunks=(1, 6, 8), dtype=labels.dtype
    )
    store[:] = labels
    np.testing.assert_equal(measure_table(store).rows(), measure_table(labels).rows())
    flat = measure_table(labels[1])  # 2D: one section, z = 0
    assert [(r[0], r[1], r[3], r[5]) for r in flat.rows()] == [(5, 6, 0, 0.0), (70000, 4, 0, 0.0)]
    assert measure_table(labels > 0).columns["voxels"].tolist() == [15]


@pytest.mark.parametrize(
    ("labels", "image", "voxel", "message"),
    [
        (np.zeros((2, 4, 4), np.float32), None, None, "whole numbers"),
        (np.full((2, 4, 4), -1, np.int16), None, None, "must not be negative"),
        (np.zeros((2, 4, 4), np.uint8), np.zeros((3, 4, 4)), None, "same shape"),
        (np.zeros((2, 4, 4), np.uint8), None, (1, 2), "three"),
        (np.zeros((2, 4, 4), np.uint8), None, (0, 4, 4), "positive"),
        (np.zeros((2, 2, 4, 4), np.uint8), None, None, "Z x Y x X"),
    ],
)
def test_bad_input_is_one_sentence(labels, image, voxel, message):
    with pytest.raises(InputError, match=message):
        measure_table(labels, image, voxel_size_nm=voxel)


def test_csv_round_trips_every_digit(tmp_path):
    labels, image = hand_made()
    table = measure_table(labels, image, voxel_size_nm=(50, 4, 5))
    path = write_csv(table, tmp_path / "sub" / "objects.csv")
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == list(COLUMNS)
    assert [tuple(float(v) for v in row) for row in rows[1:]] == [
        tuple(float(v) for v in row) for row in table.rows()
    ]
    assert rows[1][:5] == ["2", "1", repr(50 * 4 * 5 / 1e9), "3", "3"]
    assert not list(tmp_path.glob("sub/.*"))  # no temporary left behind
    empty = write_csv(measure_table(labels), tmp_path / "novoxel.csv").read_text()
    assert empty.splitlines()[1].split(",")[2] == ""  # unknown volume: empty cell
