"""The defects of a first afternoon with the plugin (issue 11), each in a real viewer:
undo follows corrections, "Correct next" survives layer changes, the docks fit a laptop
screen, Evaluate preselects what a user would pick and shows readable numbers."""

from __future__ import annotations

import numpy as np

from napari_em_unet._widgets.evaluate_widget import COLUMNS, EvaluateWidget
from napari_em_unet._widgets.finetune_widget import FineTuneWidget
from napari_em_unet._widgets.layer_meta import SEGMENTATION, new_layer_metadata
from napari_em_unet._widgets.segment_widget import SegmentWidget
from napari_em_unet._widgets.session import session_for


def _segmentation(viewer, uncertainty=None):
    """A labels layer as the Segment widget makes it (without running a model)."""
    image = viewer.layers["synthetic ssTEM"]
    truth = viewer.layers["synthetic ssTEM ground truth"].data
    metadata = new_layer_metadata(
        image, SEGMENTATION, model="tiny", output="instances", uncertainty=uncertainty
    )
    return viewer.add_labels(
        np.array(truth, copy=True),
        name="synthetic ssTEM segmentation",
        scale=image.scale,
        metadata=metadata,
    )


def test_undo_unmarks_a_slice_and_redo_marks_it_again(sample_viewer):
    labels = _segmentation(sample_viewer)
    tracker = session_for(sample_viewer).tracker(labels)
    labels.brush_size = 5
    labels.paint((2, 100, 100), 7)
    labels.paint((2, 300, 300), 7)
    labels.paint((4, 50, 50), 7)
    assert tracker.corrected == {2, 4}
    labels.undo()
    assert tracker.corrected == {2}
    labels.undo()
    assert tracker.corrected == {2}  # slice 2 still has its first edit
    labels.undo()
    assert tracker.corrected == set()  # every edit undone: not a correction any more
    labels.redo()
    assert tracker.corrected == {2}
    finetune = FineTuneWidget(sample_viewer)
    finetune._labels_layer.value = labels
    assert finetune.default_slices() == [2]
    sample_viewer.dims.set_current_step(0, 2)
    finetune._unmark.clicked.emit()  # the way to un-mark a slice by hand
    assert tracker.corrected == set() and finetune.default_slices() == []
    assert np.count_nonzero(labels.data[2] == 7) > 0  # the edit itself stays


def test_correct_next_survives_layer_changes(sample_viewer):
    widget = SegmentWidget(sample_viewer)
    sample_viewer.window.add_dock_widget(widget)
    labels = _segmentation(sample_viewer, uncertainty={0: 0.1, 3: 0.5, 5: 0.3, 6: 0.2})
    suggestions = widget.suggestions
    suggestions.show_for(labels)
    expected = [3, 5, 6, 0]
    for change in ("add", "move", "remove"):
        if change == "add":
            extra = sample_viewer.add_labels(
                np.zeros((8, 512, 512), np.uint8), name="extra", scale=labels.scale
            )
        elif change == "move":
            sample_viewer.layers.move(len(sample_viewer.layers) - 1, 0)
        else:
            sample_viewer.layers.remove(extra)
        assert [i for i, _ in suggestions.ranked] == expected, change
        assert [v for v in suggestions._choice.choices if v is not None] == expected, change
        assert suggestions._choice.value in expected
        suggestions._choice.value = 5
        suggestions._go.clicked.emit()
        assert sample_viewer.dims.current_step[0] == 5
        suggestions._next.clicked.emit()  # raised "5 is not a valid choice" before
        assert sample_viewer.dims.current_step[0] == 6
    texts = [
        suggestions._choice.native.itemText(i) for i in range(suggestions._choice.native.count())
    ]
    assert "slice 3  (uncertainty 50 %)" in texts


def test_docked_widgets_fit_a_1366_x_768_screen(qtbot, sample_viewer):
    window = sample_viewer.window
    for widget in (
        SegmentWidget(sample_viewer),
        FineTuneWidget(sample_viewer),
        EvaluateWidget(sample_viewer),
    ):
        window.add_dock_widget(widget)
    qt_window = window._qt_window
    qtbot.wait(50)
    assert qt_window.minimumSizeHint().height() <= 768
    qt_window.showNormal()
    qt_window.resize(1366, 768)
    qtbot.waitUntil(lambda: qt_window.height() <= 768, timeout=5000)


def test_evaluate_preselects_two_layers_and_a_truth_opened_later(qtbot, make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-em-unet", "synthetic_sstem")
    truth = viewer.layers["synthetic ssTEM ground truth"]
    viewer.layers.remove(truth)  # the user opens the ground truth later
    segmentation = _segmentation_of(viewer, truth)
    widget = EvaluateWidget(viewer)
    assert widget._prediction.value is segmentation
    assert widget._truth.value is None and not widget._run.enabled
    assert widget.table.column_headers == COLUMNS  # empty, yet headed by the scores
    viewer.add_layer(truth)
    assert widget._truth.value is truth and widget._prediction.value is segmentation
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    cells = list(widget.table.data)
    assert len(cells) == 9 and all(
        len(text) == 6 and text[1] == "." for row in cells for text in row
    )  # "0.9876", never "7.340e-02"
    assert widget.table.row_headers[-1] == "mean"
    assert "(model tiny)" in widget._history.value


def _segmentation_of(viewer, truth):
    image = viewer.layers["synthetic ssTEM"]
    data = np.array(truth.data, copy=True)
    data[:, :40] = 0  # not a perfect score
    return viewer.add_labels(
        data,
        name="synthetic ssTEM segmentation",
        scale=image.scale,
        metadata=new_layer_metadata(image, SEGMENTATION, model="tiny"),
    )
