"""Streaming segmentation: same result as in memory, one slice in flight, nothing partial left."""

from __future__ import annotations

import gc
import os
import tracemalloc

import numpy as np
import pytest
import tifffile

from napari_em_unet.cli import main
from napari_em_unet.generators import drain
from napari_em_unet.io.volumes import open_volume
from napari_em_unet.io.writers import TiffSliceWriter, ZarrSliceWriter, create_zarr_output
from napari_em_unet.segmentation.parallel import SLICE_WORKERS
from napari_em_unet.segmentation.pipeline import Output, segment_stack
from napari_em_unet.segmentation.streaming import segment_into, segment_to
from napari_em_unet.segmentation.watershed import WatershedParams


@pytest.fixture(scope="module")
def model(tiny_model_path):
    from napari_em_unet.model.files import load_model

    return load_model(tiny_model_path)


@pytest.fixture(scope="module")
def params(model, small_stack):
    """Thresholds around the untrained tiny model's output, so that instances are non-trivial."""
    prob = next(segment_stack(model, small_stack[0], output="probabilities")).result
    low, high = np.percentile(prob, [30, 60])
    return WatershedParams(
        threshold=float(high), seed_threshold=float(low), min_seed_size=4, min_size=4
    )


@pytest.fixture()
def stack_tif(tmp_path, small_stack):
    path = tmp_path / "in.tif"
    tifffile.imwrite(
        path,
        small_stack[0],
        imagej=True,
        resolution=(250.0, 250.0),
        metadata={"unit": "um", "axes": "ZYX"},
    )
    return path


def in_memory(model, image, output, params=None):
    return np.stack([s.result for s in segment_stack(model, image, output=output, params=params)])


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if "part" in p.name or ".old-" in p.name)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
@pytest.mark.parametrize("kind", ["instances", "membranes", "probabilities"])
def test_streaming_output_equals_in_memory_output(
    model, params, stack_tif, small_stack, tmp_path, suffix, kind
):
    expected = in_memory(model, small_stack[0], kind, params)
    out = drain(
        segment_to(
            model, open_volume(stack_tif), tmp_path / f"out{suffix}", output=kind, params=params
        )
    )
    result = open_volume(out)
    assert result.shape == expected.shape and result.dtype == Output(kind).dtype
    assert result.pixel_size_nm == pytest.approx(4.0)
    np.testing.assert_array_equal(np.asarray(result), expected)
    if kind == "instances":
        assert expected.max() > 3  # the comparison is not between two blank stacks


def test_progress_records_and_eta(model, small_stack, tmp_path):
    records = list(segment_to(model, small_stack[0], tmp_path / "o.tif"))
    assert [r.index for r in records] == [0, 1, 2]
    assert [r.done for r in records] == [1, 2, 3] and {r.total for r in records} == {3}
    assert records[0].eta_s > 0 and records[-1].eta_s == 0
    assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(records, records[1:], strict=False))


def test_2d_image_gives_a_2d_output(model, small_stack, tmp_path):
    out = drain(segment_to(model, small_stack[0][1], tmp_path / "one.zarr", output="membranes"))
    import zarr

    array = zarr.open_array(str(out / "0"), mode="r")
    assert array.shape == (96, 96) and array.dtype == np.uint8
    np.testing.assert_array_equal(array[:], in_memory(model, small_stack[0][1], "membranes")[0])


class Probe:
    """An array-like input that logs reads and refuses to be loaded whole."""

    def __init__(self, data, log):
        self.data, self.shape, self.dtype, self.ndim, self.log = (
            data,
            data.shape,
            data.dtype,
            data.ndim,
            log,
        )

    def __getitem__(self, key):
        index = key[0] if isinstance(key, tuple) else key
        assert isinstance(index, (int, np.integer)), f"read more than one slice: {key}"
        self.log.append(("read", int(index)))
        return self.data[key]

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole input was loaded")


class ProbeTarget:
    """An output that logs writes and keeps only the running sum of what it got."""

    def __init__(self, shape, log):
        self.shape, self.log, self.checksum = shape, log, 0

    def __setitem__(self, index, value):
        self.log.append(("write", int(index)))
        self.checksum += int(np.asarray(value, dtype=np.int64).sum())


def test_slices_in_flight_stay_bounded(model, small_stack):
    """Reads run at most a fixed few slices ahead of writes, whatever the number of slices.

    segment_stack works on SLICE_WORKERS slices at once and reads one more while the oldest
    is written, so that many may be in flight; never more, and each is written as soon
    as it is done.
    """
    log: list = []
    stack = np.concatenate([small_stack[0]] * 3)  # 9 slices
    target = ProbeTarget(stack.shape, log)
    drain(segment_into(model, Probe(stack, log), target, output="membranes"))
    reads = writes = 0
    for event, _ in log:
        reads += event == "read"
        writes += event == "write"
        assert reads - writes <= SLICE_WORKERS + 1, log
    assert [i for e, i in log if e == "write"] == list(range(9))
    assert target.checksum == int(in_memory(model, stack, "membranes").astype(np.int64).sum())


def _peak_python_memory(model, stack, target_factory) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        drain(segment_into(model, stack, target_factory(stack.shape), output="instances"))
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("where", ["tiff", "zarr"])
def test_peak_memory_does_not_grow_with_the_number_of_slices(model, tmp_path, where):
    """numpy allocations are traced: 60 slices peak like 6. The peak is the worst moment of
    the run, when the working arrays of the SLICE_WORKERS slices in work happen to coincide
    (each holds about ten slice-sized arrays in the watershed), so it jitters by several
    slices' results, the more slices the more chances (24 slices once peaked 6.7 results
    above 6); memory that grew with depth would add at least 54 results."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (60, 128, 128), dtype=np.uint8)
    made = []

    def factory(shape):
        path = tmp_path / f"o{len(made)}.{'tif' if where == 'tiff' else 'zarr'}"
        cls = TiffSliceWriter if where == "tiff" else ZarrSliceWriter
        made.append(cls(path, shape, np.uint32))
        return made[-1]

    drain(segment_into(model, base[:2], factory(base[:2].shape)))  # warm-up: tracing, caches
    small = _peak_python_memory(model, base[:6], factory)
    large = _peak_python_memory(model, base, factory)
    slice_result = 128 * 128 * 4
    assert large - small < 20 * slice_result, (small, large)
    for writer in made:
        writer.abort()


# ----------------------------------------------------------------------------- failures
class Failing(Probe):
    def __getitem__(self, key):
        if (key[0] if isinstance(key, tuple) else key) == 2:
            raise OSError("disk unplugged")
        return super().__getitem__(key)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_failure_or_early_stop_leaves_no_output(model, small_stack, tmp_path, suffix):
    out = tmp_path / f"o{suffix}"
    with pytest.raises(OSError, match="disk unplugged"):
        drain(segment_to(model, Failing(small_stack[0], []), out))
    assert list(tmp_path.iterdir()) == []

    progress = segment_to(model, small_stack[0], out)
    next(progress)
    progress.close()  # the caller (e.g. a Cancel button) stops iterating
    assert list(tmp_path.iterdir()) == []


def test_zarr_target_for_a_viewer(model, params, small_stack, tmp_path):
    """What a napari labels layer would hold: a zarr array filled as slices finish."""
    expected = in_memory(model, small_stack[0], "instances", params)
    labels = create_zarr_output(tmp_path / "labels.zarr", small_stack[0].shape, np.uint32)
    seen = []
    for record in segment_into(model, small_stack[0], labels, slices=[2, 0], params=params):
        seen.append(record.index)
        np.testing.assert_array_equal(labels[record.index], expected[record.index])
    assert seen == [2, 0]
    assert not labels[1].any()  # not asked for: left as it was


# ----------------------------------------------------------------------------- CLI
def test_cli_segments_zarr_to_zarr_and_tiff_to_zarr(
    model, tiny_model_path, stack_tif, small_stack, tmp_path, capsys
):
    import zarr

    expected = in_memory(model, small_stack[0], "membranes")
    source = tmp_path / "in.zarr"
    zarr.save_array(str(source), small_stack[0], zarr_format=2)
    for inp in (source, stack_tif):
        out = tmp_path / f"{inp.stem}-{inp.suffix[1:]}.zarr"
        assert (
            main(
                [
                    "segment",
                    str(inp),
                    "-o",
                    str(out),
                    "--model",
                    str(tiny_model_path),
                    "--output-kind",
                    "membranes",
                ]
            )
            == 0
        )
        np.testing.assert_array_equal(np.asarray(open_volume(out)), expected)
    err = capsys.readouterr().err
    assert "slices/s" in err and "locally" in err
    assert leftovers(tmp_path) == []


def test_cli_refuses_to_overwrite_a_folder_that_is_not_zarr(
    tiny_model_path, stack_tif, tmp_path, capsys
):
    target = tmp_path / "results.zarr"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    for extra, reason in (([], "--overwrite"), (["--overwrite"], "not a zarr")):
        assert (
            main(
                [
                    "segment",
                    str(stack_tif),
                    "-o",
                    str(target),
                    "--model",
                    str(tiny_model_path),
                    *extra,
                ]
            )
            != 0
        )
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and reason in err[0]
        assert os.listdir(target) == ["keep.txt"] and leftovers(tmp_path) == []
