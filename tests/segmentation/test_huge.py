"""Huge slices in bands, end to end: the whole-slice result, rows in and out, progress."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_em_unet.cli import main
from napari_em_unet.generators import drain
from napari_em_unet.io.volumes import open_volume
from napari_em_unet.segmentation import huge, streaming
from napari_em_unet.segmentation.huge import BandProgress, Bands
from napari_em_unet.segmentation.pipeline import segment_stack
from napari_em_unet.segmentation.streaming import Progress, segment_into, segment_to

# Bands of 48 rows with 32 rows of halo: a 200-row crop is cut in 5 bands, and every cell
# of the synthetic sample (about 50 pixels across) crosses a band border.
FORCED = Bands(above_pixels=0, band_rows=48, halo=32)
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data" / "synthetic-sstem.tif"


@pytest.fixture(scope="module")
def bundled():
    from napari_em_unet.model.files import load_model

    return load_model()  # a real model, so that the cells are real cells


@pytest.fixture(scope="module")
def crops():
    return np.ascontiguousarray(tifffile.imread(SAMPLE)[:2, 40:240, 30:250])  # 2 x 200 x 220


def whole(model, image, output="instances", **kwargs):
    return np.stack([s.result for s in segment_stack(model, image, output=output, **kwargs)])


def same_up_to_renumbering(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a.ravel(), b.ravel()]), axis=1)
    zero_ok = np.array_equal(a == 0, b == 0)
    return zero_ok and pairs.shape[1] == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
@pytest.mark.parametrize("pixel_size", [None, 5.0])
def test_cells_in_bands_are_the_whole_slice_cells(bundled, crops, tmp_path, suffix, pixel_size):
    expected = whole(bundled, crops, pixel_size_nm=pixel_size)
    out = drain(
        segment_to(bundled, crops, tmp_path / f"o{suffix}", bands=FORCED, pixel_size_nm=pixel_size)
    )
    got = np.asarray(open_volume(out))
    assert got.dtype == np.uint32 and got.shape == expected.shape
    for z in range(len(crops)):
        assert expected[z].max() > 15  # real cells, every one cut by band borders
        assert same_up_to_renumbering(got[z], expected[z])
        assert set(np.unique(got[z])) == set(range(int(got[z].max()) + 1))  # 1..n, 0 kept


@pytest.mark.parametrize("output", ["probabilities", "membranes"])
def test_probabilities_and_membranes_in_bands(bundled, crops, tmp_path, output):
    expected = whole(bundled, crops, output)
    got = np.asarray(
        open_volume(
            drain(segment_to(bundled, crops, tmp_path / "o.tif", output=output, bands=FORCED))
        )
    )
    if output == "probabilities":
        np.testing.assert_allclose(got, expected, atol=1e-5)
    else:
        np.testing.assert_array_equal(got, expected)


def test_normal_stacks_keep_todays_path(tiny_model, small_stack, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a small slice went into bands")

    monkeypatch.setattr(streaming, "segment_slice_in_bands", refuse)
    records = list(segment_to(tiny_model, small_stack[0], tmp_path / "o.tif"))
    assert all(isinstance(r, Progress) for r in records)
    np.testing.assert_array_equal(
        np.asarray(open_volume(tmp_path / "o.tif")), whole(tiny_model, small_stack[0])
    )
    assert not Bands().applies((2048, 4096)) and Bands().applies((2049, 4096))
    assert Bands().rows_for(6000) == 1024 and Bands().rows_for(20000) == 419
    assert not Bands(above_pixels=None).applies((10**5, 10**5))


class RowsOnly:
    """An input array that may be read a few rows at a time only."""

    def __init__(self, data):
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        assert isinstance(key[1], slice) and key[1].stop - key[1].start <= 256, key
        return self.data[key]


class RowTarget:
    """An output that takes rows only, and keeps them."""

    def __init__(self, shape):
        self.shape, self.data, self.writes = shape, np.zeros(shape, np.uint32), []

    def __setitem__(self, key, value):
        index, rows = key
        assert isinstance(rows, slice) and rows.stop - rows.start < self.shape[1], key
        self.writes.append((index, rows.start))
        self.data[key] = value


def test_rows_in_rows_out_and_progress_inside_each_slice(bundled, crops):
    target = RowTarget(crops.shape)
    records = list(
        segment_into(
            bundled,
            RowsOnly(crops),
            target,
            bands=Bands(above_pixels=0, band_rows=48, halo=32, write_rows=64),
        )
    )
    assert same_up_to_renumbering(target.data[1], whole(bundled, crops[1:2])[0])
    assert [i for i, start in target.writes] == [0] * 4 + [1] * 4  # 4 writes of 64 rows
    for z in range(2):
        ours = [r for r in records if getattr(r, "index", None) == z]
        bands, end = ours[:-1], ours[-1]
        assert all(isinstance(r, BandProgress) for r in bands) and isinstance(end, Progress)
        fractions = [r.fraction for r in bands]
        assert fractions == sorted(fractions) and fractions[-1] == 1.0
        assert bands[-1].bands_done == bands[-1].bands == 5 and end.done == z + 1


def test_a_lost_section_in_bands_has_no_cells_and_says_so(bundled, crops):
    image = np.full((2, *crops.shape[1:]), np.nan, dtype=np.float32)
    image[1] = crops[1]
    target = np.ones(image.shape, np.uint32)
    records = list(segment_into(bundled, image, target, bands=FORCED))
    assert not target[0].any() and target[1].max() > 15
    ends = [r for r in records if isinstance(r, Progress)]
    assert [r.no_signal for r in ends] == [True, False]
    assert all(r.no_signal == (r.index == 0) for r in records if isinstance(r, BandProgress))


def test_stopping_early_leaves_no_output_and_no_scratch(bundled, crops, tmp_path):
    progress = segment_to(bundled, crops, tmp_path / "o.tif", bands=FORCED)
    next(progress)
    progress.close()
    assert list(tmp_path.iterdir()) == []


def test_cli_in_bands_with_progress_per_tile(crops, tmp_path, capsys, monkeypatch, bundled):
    source = tmp_path / "big.tif"
    tifffile.imwrite(
        source, crops[0], imagej=True, resolution=(250.0, 250.0), metadata={"unit": "um"}
    )
    monkeypatch.setenv("EM_UNET_PROGRESS", "1")
    assert (
        main(
            [
                "segment",
                str(source),
                "-o",
                str(tmp_path / "cells.tif"),
                "--bands-above",
                "0",
                "--tile-size",
                "128",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert "tiles, band" in err and "wrote" in err
    expected = whole(bundled, crops[0], tile_size=128)[0]
    assert same_up_to_renumbering(tifffile.imread(tmp_path / "cells.tif"), expected)


def test_cli_says_when_the_disk_is_too_full(crops, tmp_path, capsys, monkeypatch):
    source = tmp_path / "big.tif"
    tifffile.imwrite(source, crops[0])
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    out = tmp_path / "cells.tif"
    assert main(["segment", str(source), "-o", str(out), "--bands-above", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: not enough disk space in ") and len(err) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tif"]


@pytest.mark.parametrize("views", [[1.0], [1.0, 0.67]])
def test_a_huge_slice_needs_no_more_memory_than_a_band(bundled, crops, monkeypatch, views):
    """numpy allocations traced: a slice 4x as tall peaks like the short one (same width).

    What does grow is a few bytes per cell (the table of ids), not per pixel. A second,
    resampled view holds up to a chunk of rows more at the start of its pass, which the
    short slice's rows do not fill (+11 % from 800 to 3200 rows, +3 % from 3200 to 6400);
    a copy of the slice would add 2.8 MB, over 60 %.
    """
    import contextlib
    import gc
    import tracemalloc
    from dataclasses import replace

    from napari_em_unet.segmentation import preprocessing

    # The percentile sample grows up to a million values (4 MB), then stays: cap it lower
    # here so that anything else growing with the height would show.
    monkeypatch.setattr(preprocessing, "PERCENTILE_SAMPLE", 5000)
    bands = Bands(above_pixels=0, band_rows=48, halo=32, write_rows=48)
    short = np.concatenate([crops[0], crops[0][::-1]] * 2)  # 800 x 220
    tall = np.concatenate([short, short[::-1]] * 2)  # 3200 x 220

    def peak(image):
        target = np.zeros(image.shape, np.uint32)
        gc.collect()
        tracemalloc.start()
        try:
            drain(segment_into(bundled, image, target, bands=bands, tile_size=256))
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    # Normally a band's watershed runs in a thread while the next band is predicted, so
    # what is alive at one moment depends on timing, and the tall slice, with more bands,
    # has more chances to catch the unluckiest moment (+10% once on a loaded CI machine).
    # Without the thread the peak is what the code needs, the same in every run.
    monkeypatch.setattr(huge, "ThreadPoolExecutor", lambda *a, **k: contextlib.nullcontext())
    bundled = replace(bundled, info=replace(bundled.info, view_scales=views))
    peak(short)  # warm-up (with 256-pixel tiles, both have several rows of tiles)
    small, large = peak(short), peak(tall)
    assert large < small * (1.1 if len(views) == 1 else 1.2), (small, large)
    assert huge.Bands().batch_size == 1
