"""Large volumes in napari: lazy images in, zarr-backed labels out, painting kept on disk.

The size above which a result goes to disk is forced down with
``NAPARI_EM_UNET_ZARR_LABELS_BYTES`` (and the reader's ``LARGE_FILE_BYTES``), so the 8-slice
synthetic sample takes the large-volume paths.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile
import zarr

from napari_em_unet import _reader
from napari_em_unet._sample_data import make_synthetic_sample
from napari_em_unet._widgets.layer_meta import META_KEY
from napari_em_unet._widgets.layers import ENV_ZARR_LAYER_BYTES
from napari_em_unet._widgets.segment_widget import NEW_LAYER, SegmentWidget
from napari_em_unet._widgets.session import session_for
from napari_em_unet.io.writers import create_zarr_output

TIMEOUT_MS = 240_000


def _widget(viewer, gui_models):
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget)
    session_for(viewer).models.add_file(gui_models["threshold"])
    return widget


def _run(qtbot, widget):
    widget._target.value = NEW_LAYER
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=TIMEOUT_MS)
    qtbot.waitUntil(lambda: widget._run.text == "Run", timeout=5_000)
    return widget.runner.labels_layer


def test_large_result_is_a_zarr_store_on_disk(
    qtbot, sample_viewer, gui_models, monkeypatch, plugin_home
):
    widget = _widget(sample_viewer, gui_models)
    in_memory = _run(qtbot, widget)
    assert isinstance(in_memory.data, np.ndarray)  # small stacks are unchanged
    assert "store" not in in_memory.metadata[META_KEY]
    expected = np.array(in_memory.data)

    monkeypatch.setenv(ENV_ZARR_LAYER_BYTES, "1000")
    widget._probability.value = True
    labels = _run(qtbot, widget)
    assert labels is not in_memory
    assert isinstance(labels.data, zarr.Array) and not isinstance(labels.data, np.ndarray)
    store = Path(labels.metadata[META_KEY]["store"])
    assert store.parent == plugin_home / "segmentations" and store.suffix == ".zarr"
    assert store.name.startswith("synthetic_ssTEM_segmentation")
    assert str(store) in widget._message.value
    assert labels.data.shape == expected.shape and labels.data.dtype == expected.dtype
    assert labels.data.chunks == (1, 512, 512)
    on_disk = zarr.open_array(str(store / "0"), mode="r")
    for z in range(8):
        np.testing.assert_array_equal(labels.data[z], expected[z])
        np.testing.assert_array_equal(on_disk[z], expected[z])
        assert np.unique(on_disk[z]).size > 20, z
    probability = widget.runner.probability_layer
    assert isinstance(probability.data, zarr.Array)
    probability_store = Path(probability.metadata[META_KEY]["store"])
    assert probability_store.is_dir() and probability_store != store
    assert probability.data[4].min() >= 0.0 and probability.data[4].max() <= 1.0
    assert probability.data[4].std() > 0.1
    # The suggestions work on the metadata only.
    assert len(widget.suggestions.ranked) == 5

    # napari's brush writes through to the store, and counts as a correction.
    sample_viewer.dims.set_current_step(0, 3)
    labels.brush_size = 9
    labels.paint((3, 100, 100), 4242)
    assert session_for(sample_viewer).corrected(labels) == {3}
    assert zarr.open_array(str(store / "0"), mode="r")[3, 100, 100] == 4242
    assert labels.data[3, 100, 100] == 4242
    # A later run into that layer keeps the painted slice.
    widget._probability.value = False
    widget._target.value = labels
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=TIMEOUT_MS)
    assert widget.runner.labels_layer is labels
    assert labels.data[3, 100, 100] == 4242
    assert "kept your corrections on slice(s) 3" in widget._message.value

    # One slice segmented is one chunk written: nothing else is touched on disk.
    sample_viewer.dims.set_current_step(0, 5)
    widget._scope.value = "current slice"
    one = _run(qtbot, widget)
    assert isinstance(one.data, zarr.Array)
    assert one.data.nchunks_initialized == 1
    assert np.unique(one.data[5]).size > 20 and not one.data[4].any()


def test_lazy_images_stay_lazy_and_get_zarr_labels(
    qtbot, make_napari_viewer, engine, gui_models, monkeypatch, tmp_path
):
    (image, meta, _), (truth, _, _) = make_synthetic_sample()
    tif = tmp_path / "stack.tif"
    tifffile.imwrite(tif, image, photometric="minisblack")
    raw = create_zarr_output(
        tmp_path / "raw.zarr",
        image.shape,
        image.dtype,
        pixel_size_nm=meta["metadata"]["pixel_size_nm"],
    )
    for z in range(image.shape[0]):
        raw[z] = image[z]
    gt = create_zarr_output(tmp_path / "gt.zarr", truth.shape, truth.dtype)
    gt[...] = truth
    monkeypatch.setattr(_reader, "LARGE_FILE_BYTES", 1000)

    viewer = make_napari_viewer()
    session_for(viewer).use_engine(engine, for_training=True)
    [from_tif] = viewer.open(str(tif), plugin="napari-em-unet")
    [from_zarr] = viewer.open(str(tmp_path / "raw.zarr"), plugin="napari-em-unet")
    [labels_zarr] = viewer.open(str(tmp_path / "gt.zarr"), plugin="napari-em-unet")
    for layer in (from_tif, from_zarr, labels_zarr):
        assert not isinstance(layer.data, np.ndarray), layer.name
    assert from_zarr.name == "raw" and from_zarr.metadata["pixel_size_nm"] == 4.0
    assert labels_zarr.name == "gt" and type(labels_zarr).__name__ == "Labels"
    np.testing.assert_array_equal(np.asarray(from_zarr.data[6]), image[6])
    np.testing.assert_array_equal(np.asarray(labels_zarr.data[2]), truth[2])

    widget = _widget(viewer, gui_models)
    widget._image.value = from_zarr
    assert widget.problem() is None
    assert widget._pixel_size.value == 4.0
    # No size override: a lazy image's result goes to disk whatever its size.
    labels = _run(qtbot, widget)
    assert isinstance(labels.data, zarr.Array)
    assert Path(labels.metadata[META_KEY]["store"]).is_dir()
    assert labels.data.shape == image.shape and labels.data.dtype == np.uint32
    for z in range(8):
        assert np.unique(labels.data[z]).size > 20, z
    assert not isinstance(from_zarr.data, np.ndarray)


def test_zarr_reader_declines_what_it_cannot_show(tmp_path):
    group = zarr.open_group(str(tmp_path / "two.zarr"), mode="w")
    group.create_array("a", shape=(4, 4), dtype="uint8")
    group.create_array("b", shape=(4, 4), dtype="uint8")
    (tmp_path / "plain").mkdir()
    (tmp_path / "empty.zarr").mkdir()
    for name in ("two.zarr", "plain", "empty.zarr", "missing.zarr"):
        assert _reader.napari_get_reader(str(tmp_path / name)) is None, name
    # ... but an array named inside the group opens.
    assert callable(_reader.napari_get_reader(str(tmp_path / "two.zarr" / "a")))
    small = create_zarr_output(tmp_path / "small.zarr", (2, 16, 16), "uint8")
    small[1] = 7
    [(data, kwargs, kind)] = _reader.napari_get_reader(str(tmp_path / "small.zarr"))(
        str(tmp_path / "small.zarr")
    )
    assert isinstance(data, np.ndarray) and kind == "image" and kwargs["name"] == "small"
    assert data[1].sum() == 7 * 256


@pytest.mark.parametrize("probability", [False, True])
def test_an_unwritable_data_folder_starts_nothing(
    qtbot, sample_viewer, gui_models, monkeypatch, tmp_path, probability
):
    widget = _widget(sample_viewer, gui_models)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the data folder should be")
    monkeypatch.setenv("NAPARI_EM_UNET_HOME", str(blocked))
    monkeypatch.setenv(ENV_ZARR_LAYER_BYTES, "1000")
    before = list(sample_viewer.layers)
    finished = []
    widget.runner.finished.connect(finished.append)
    widget._probability.value = probability
    if probability:
        # The membranes (uint8) fit in memory, the probability map (float32) does not: the
        # labels layer already added is taken away again.
        widget._output.value = "membranes"
        monkeypatch.setenv(ENV_ZARR_LAYER_BYTES, str(8 * 512 * 512 * 4 - 1))
    widget._target.value = NEW_LAYER
    widget.run()
    assert not widget.runner.running
    assert list(sample_viewer.layers) == before  # nothing added, nothing left behind
    assert widget._message.value.startswith("Not started")
    assert str(blocked) in widget._message.value
    qtbot.waitUntil(lambda: finished == [None], timeout=5_000)
    assert widget._run.text == "Run" and widget._run.enabled
    assert widget._message.value.startswith("Not started")


class _CountingReads:
    """An array-like that records which slices were read (and refuses to be read whole)."""

    def __init__(self, data):
        self._data, self.read = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, key):
        assert isinstance(key, (int, np.integer)), f"read more than a slice: {key!r}"
        self.read.append(int(key))
        return self._data[key]

    def __array__(self, dtype=None, copy=None):
        raise AssertionError("the whole volume was loaded")


def test_initial_labels_are_copied_slice_by_slice(qtbot, sample_viewer, gui_models, monkeypatch):
    # What "re-segment the rest" does for a user's own layer: a new layer that starts as a
    # copy of it, with the slices it keeps protected.
    from napari_em_unet._widgets.segment_runner import SegmentRunner
    from napari_em_unet.engine.protocol import SegmentRequest

    monkeypatch.setenv(ENV_ZARR_LAYER_BYTES, "1000")
    image = sample_viewer.layers["synthetic ssTEM"]
    truth = sample_viewer.layers["synthetic ssTEM ground truth"].data
    init = _CountingReads(truth)
    runner = SegmentRunner(sample_viewer, session_for(sample_viewer))
    request = SegmentRequest(
        image=image.data, slices=(2, 3, 4), pixel_size_nm=4.0, model_path=gui_models["threshold"]
    )
    assert runner.start(request, image_layer=image, init_labels=init, protect={2}, name="copy")
    qtbot.waitUntil(lambda: not runner.running, timeout=TIMEOUT_MS)
    labels = runner.labels_layer
    assert isinstance(labels.data, zarr.Array)
    assert sorted(init.read) == list(range(8))
    for z in (0, 1, 2, 5, 6, 7):  # copied, or protected
        np.testing.assert_array_equal(labels.data[z], truth[z])
    for z in (3, 4):
        assert not np.array_equal(labels.data[z], truth[z])
        assert np.unique(labels.data[z]).size > 20
    assert session_for(sample_viewer).corrected(labels) == {2}


def test_a_failed_write_stops_with_one_message(qtbot, sample_viewer, gui_models, monkeypatch):
    from napari_em_unet._widgets.segment_runner import SegmentRunner

    monkeypatch.setenv(ENV_ZARR_LAYER_BYTES, "1000")
    widget = _widget(sample_viewer, gui_models)
    real_write = SegmentRunner._write

    def write(self, layer, index, values):
        if index >= 2:
            raise OSError(28, "No space left on device")
        real_write(self, layer, index, values)

    monkeypatch.setattr(SegmentRunner, "_write", write)
    labels = _run(qtbot, widget)
    assert labels.data[0].any() and labels.data[1].any() and not labels.data[2].any()
    message = widget._message.value
    assert message.startswith("Stopped: slice 2 could not be written to ")
    assert "No space left on device" in message and "2 slice(s) written" in message
