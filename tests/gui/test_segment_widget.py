"""The Segment widget in a real viewer: results, progress, Stop, corrections kept, reasons."""

from __future__ import annotations

import numpy as np
import pytest

from napari_em_unet._widgets.layer_meta import META_KEY
from napari_em_unet._widgets.segment_widget import NEW_LAYER, SegmentWidget
from napari_em_unet._widgets.session import session_for

TIMEOUT_MS = 240_000


@pytest.fixture
def widget(sample_viewer, gui_models):
    widget = SegmentWidget(sample_viewer)
    sample_viewer.window.add_dock_widget(widget)
    session_for(sample_viewer).models.add_file(gui_models["threshold"])
    return widget


def _run(qtbot, widget):
    widget.run()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=TIMEOUT_MS)


def test_segment_all_slices(qtbot, sample_viewer, widget, gui_models):
    assert widget._model.value == gui_models["threshold"].resolve()  # an added model is selected
    assert widget.problem() is None and widget._run.enabled
    written, progress = [], []
    widget.runner.slice_written.connect(written.append)
    widget._probability.value = True
    widget.run()
    assert widget._run.text == "Stop"
    pbar = widget.runner._pbar
    assert pbar.total == 9  # model loading + 8 slices, shown in the activity dock
    widget.runner.slice_written.connect(lambda i: progress.append(pbar.n))
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=TIMEOUT_MS)

    assert widget._run.text == "Run"
    assert written == list(range(8))
    assert progress == sorted(progress) and progress[-1] == 9
    labels = sample_viewer.layers["synthetic ssTEM segmentation"]
    assert labels.data.shape == (8, 512, 512) and labels.data.dtype == np.uint32
    meta = labels.metadata[META_KEY]
    assert meta["role"] == "segmentation" and meta["model"] == "dark-is-membrane"
    for z in range(8):
        cells = np.unique(labels.data[z])
        assert cells[0] == 0 and 20 < cells.size < 400, (z, cells.size)
        membrane = np.mean(labels.data[z] == 0)
        assert 0.05 < membrane < 0.6, (z, membrane)
    probability = sample_viewer.layers["synthetic ssTEM segmentation probability"]
    assert probability.data.dtype == np.float32
    assert probability.data.min() >= 0.0 and probability.data.max() <= 1.0
    assert probability.data.std() > 0.1
    # Every slice got an uncertainty, and the suggestions list the most uncertain first.
    assert set(meta["uncertainty"]) == set(range(8))
    ranked = widget.suggestions.ranked
    assert len(ranked) == 5
    assert [s for _, s in ranked] == sorted((s for _, s in ranked), reverse=True)
    # The ground truth (the user's layer) is never offered as an output.
    targets = list(widget._target.choices)
    assert NEW_LAYER in targets and labels in targets
    assert sample_viewer.layers["synthetic ssTEM ground truth"] not in targets


def test_stop_keeps_what_is_done(qtbot, sample_viewer, widget):
    written = []
    widget.runner.slice_written.connect(written.append)
    # Stop as soon as the first slice arrives, the way pressing the button does.
    widget.runner.slice_written.connect(lambda i: widget._on_run() if i == 0 else None)
    _run(qtbot, widget)
    assert widget._run.text == "Run"
    assert 1 <= len(written) < 8
    assert "Stopped" in widget._message.value
    labels = widget.runner.labels_layer
    assert labels.data[0].any() and not labels.data[7].any()


def test_current_slice_and_range(qtbot, sample_viewer, widget):
    sample_viewer.dims.set_current_step(0, 5)
    widget._scope.value = "current slice"
    assert widget.slices_to_segment() == [5]
    assert widget._first.native.isHidden()
    widget._scope.value = "range"
    assert not widget._first.native.isHidden() and not widget._last.native.isHidden()
    widget._first.value, widget._last.value = 2, 3
    assert widget.slices_to_segment() == [2, 3]
    widget._first.value = 4
    assert not widget._run.enabled and "range is empty" in widget._message.value
    widget._first.value = 2
    _run(qtbot, widget)
    labels = widget.runner.labels_layer
    assert [z for z in range(8) if labels.data[z].any()] == [2, 3]


def test_writing_into_a_plugin_layer_keeps_corrected_slices(qtbot, sample_viewer, widget):
    _run(qtbot, widget)
    labels = widget.runner.labels_layer
    # A correction with napari's own brush on slice 2 ...
    sample_viewer.dims.set_current_step(0, 2)
    labels.brush_size = 9
    labels.paint((2, 100, 100), 4242)
    corrected_before = labels.data[2].copy()
    assert session_for(sample_viewer).corrected(labels) == {2}
    # ... and a slice emptied by a script (not a correction) on slice 3.
    labels.data[3] = 0
    widget._target.value = labels
    _run(qtbot, widget)
    assert widget.runner.labels_layer is labels
    np.testing.assert_array_equal(labels.data[2], corrected_before)
    assert labels.data[3].any()
    assert "kept your corrections on slice(s) 2" in widget._message.value
    outputs = [layer for layer in sample_viewer.layers if layer.name.endswith("segmentation")]
    assert len(outputs) == 1


def test_reasons_instead_of_errors(sample_viewer, widget):
    sample_viewer.add_image(np.zeros((2, 3, 16, 16), np.uint8), name="4d")
    widget._image.value = sample_viewer.layers["4d"]
    assert not widget._run.enabled
    assert "4 dimensions" in widget._message.value
    sample_viewer.layers.clear()
    assert widget._image.value is None
    assert not widget._run.enabled and "Open an image" in widget._message.value


def test_without_any_model(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.uint8), name="plain")
    widget = SegmentWidget(viewer)
    if widget._model.value is None:  # the bundled model is not installed in this checkout
        assert not widget._run.enabled and "No model available" in widget._message.value
    else:
        assert widget.problem() is None


def test_dock_through_the_manifest(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-em-unet", "synthetic_sstem")
    for name in ("Segment (U-Net)", "Fine-tune (U-Net)", "Evaluate segmentation"):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-em-unet", name)
        assert widget is not None
    assert viewer.layers["synthetic ssTEM"] is not None
