"""The whole loop in one viewer: segment, correct with the brush, fine-tune, re-segment.

Also: Stop during fine-tuning keeps (and saves) the best weights, closing napari during
fine-tuning ends the training process and saves nothing half-made, corrections made with
each of napari's label tools are tracked, and the Evaluate table scores the result.
"""

from __future__ import annotations

import numpy as np
import pytest
from napari.utils.notifications import notification_manager

from napari_em_unet._widgets.evaluate_widget import EvaluateWidget
from napari_em_unet._widgets.finetune_widget import FineTuneWidget
from napari_em_unet._widgets.layer_meta import META_KEY
from napari_em_unet._widgets.segment_widget import SegmentWidget
from napari_em_unet._widgets.session import session_for
from napari_em_unet.io.autosave import find_autosave
from napari_em_unet.model.files import read_info

TIMEOUT_MS = 300_000


def _small_training(finetune: FineTuneWidget, epochs=1, steps=2) -> None:
    finetune._epochs.value = epochs
    finetune._steps.value = steps
    finetune._batch.value = 1
    finetune._patch.value = 64


@pytest.fixture
def widgets(sample_viewer, gui_models):
    segment = SegmentWidget(sample_viewer)
    finetune = FineTuneWidget(sample_viewer)
    evaluate = EvaluateWidget(sample_viewer)
    for widget in (segment, finetune, evaluate):
        sample_viewer.window.add_dock_widget(widget)
    session_for(sample_viewer).models.add_file(gui_models["tiny"])
    return segment, finetune, evaluate


def test_segment_correct_finetune_resegment(
    qtbot, sample_viewer, widgets, plugin_home, accept_any_finetune
):
    segment, finetune, evaluate = widgets
    segment.run()
    qtbot.waitUntil(lambda: not segment.runner.running, timeout=TIMEOUT_MS)
    labels = sample_viewer.layers["synthetic ssTEM segmentation"]
    assert finetune._labels_layer.value is labels  # the fresh segmentation is preselected
    assert finetune._slices.value == ""
    assert not finetune._run.enabled and "No training slice" in finetune._message.value

    # Correct slice 1 with napari's own brush: the tracker sees it, the form follows.
    sample_viewer.dims.set_current_step(0, 1)
    labels.brush_size = 40
    for x in range(60, 300, 20):
        labels.paint((1, 200, x), 7)
    painted = labels.data[1].copy()
    assert session_for(sample_viewer).corrected(labels) == {1}
    assert finetune._slices.value == "1"
    assert finetune.problem() is None

    _small_training(finetune)
    models_before = {e.path for e in session_for(sample_viewer).models.entries}
    epochs = []
    finetune.run()
    finetune.runner.worker.yielded.connect(lambda r: epochs.append(type(r).__name__))
    assert finetune._run.text == "Stop"
    qtbot.waitUntil(lambda: not finetune.runner.running, timeout=TIMEOUT_MS)

    outcome = finetune.last_outcome
    assert outcome is not None, finetune._message.value
    assert outcome.path.parent == plugin_home / "models" and outcome.path.is_file()
    # Pressing Run autosaved the corrections first.
    keeper = session_for(sample_viewer).autosave
    qtbot.waitUntil(lambda: keeper.pending == 0, timeout=TIMEOUT_MS)
    saved = find_autosave("synthetic sample")
    assert saved is not None and saved.corrected_slices == (1,)
    np.testing.assert_array_equal(saved.load_labels()[1], painted)
    assert "StepProgress" in epochs and "EpochProgress" in epochs
    assert "FineTunePlan" in epochs
    # Progress over every step of the run, validation at step 0 (the base) and at the end.
    assert finetune.plot.steps == [1, 2] and finetune.plot.total == 2
    assert [r.step for r in finetune.plot.rounds] == [0, 2]
    assert finetune.plot.final is not None and finetune.plot.final[0]
    assert "before" in finetune.validation_text.value
    assert "after" in finetune.validation_text.value
    info = read_info(outcome.path)
    assert info.base_model == "tiny" and info.name == "synthetic ssTEM-finetuned"
    assert info.trained_on[-1]["slices"] == [1]
    # Listed at once, newest first, and selected in the Segment widget.
    entries = session_for(sample_viewer).models.entries
    assert entries[0].path == outcome.path.resolve() and entries[0].kind == "session"
    assert outcome.path.resolve() not in models_before
    assert segment._model.value == outcome.path.resolve()

    # Re-segment the rest: every slice but the corrected one, with the new model.
    written = []
    finetune.resegment_runner.slice_written.connect(written.append)
    assert finetune._resegment.enabled
    finetune.resegment()
    qtbot.waitUntil(lambda: not finetune.resegment_runner.running, timeout=TIMEOUT_MS)
    assert sorted(written) == [0, 2, 3, 4, 5, 6, 7]
    assert finetune.resegment_runner.labels_layer is labels
    assert labels.metadata[META_KEY]["model"] == info.name
    np.testing.assert_array_equal(labels.data[1], painted)

    # Segmenting from the Segment widget now uses the new model too.
    segment.run()
    qtbot.waitUntil(lambda: not segment.runner.running, timeout=TIMEOUT_MS)
    assert segment.runner.labels_layer.metadata[META_KEY]["model"] == info.name

    # Evaluate: the first segmentation against the ground truth, one row per slice + mean.
    evaluate._prediction.value = labels
    evaluate._truth.value = sample_viewer.layers["synthetic ssTEM ground truth"]
    evaluate.run()
    qtbot.waitUntil(lambda: evaluate.worker is None, timeout=TIMEOUT_MS)
    table = evaluate.table.value
    assert list(table["index"]) == [f"slice {z}" for z in range(8)] + ["mean"]
    scores = np.array(table["data"], dtype=float)
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[-1, 0] == pytest.approx(scores[:-1, 0].mean(), abs=1e-3)
    assert evaluate.history[-1][0].startswith(labels.name)  # + "(model ...)"


def test_stop_during_finetuning_saves_the_weights_so_far(
    qtbot, sample_viewer, widgets, accept_any_finetune
):
    segment, finetune, _ = widgets
    truth = sample_viewer.layers["synthetic ssTEM ground truth"]
    finetune._labels_layer.value = truth
    # Not made by the plugin and nothing corrected: every labelled slice is proposed.
    assert finetune._slices.value == "0-7"
    finetune._slices.value = "0, 2"
    finetune._validation.value = "5"
    _small_training(finetune, epochs=50, steps=200)
    steps = []
    finetune.run()
    finetune.runner.worker.yielded.connect(
        lambda r: (steps.append(r), finetune.stop() if len(steps) == 3 else None)
    )
    qtbot.waitUntil(lambda: not finetune.runner.running, timeout=TIMEOUT_MS)
    outcome = finetune.last_outcome
    assert outcome is not None, finetune._message.value
    assert outcome.stopped and outcome.path.is_file()
    assert outcome.epochs_run <= 1
    assert "Stopped early" in finetune._message.value
    info = read_info(outcome.path)
    assert info.trained_on[-1]["slices"] == [0, 2]
    assert info.trained_on[-1]["validation_slices"] == [5]

    # The user's own labels layer is never written: re-segmenting makes a new layer.
    before = truth.data.copy()
    finetune.resegment()
    qtbot.waitUntil(lambda: not finetune.resegment_runner.running, timeout=TIMEOUT_MS)
    np.testing.assert_array_equal(truth.data, before)
    result = finetune.resegment_runner.labels_layer
    assert result is not truth and result.name.startswith("synthetic ssTEM ground truth +")
    for z in (0, 2, 5):  # trained-on and validation slices are copied, not predicted
        np.testing.assert_array_equal(result.data[z], truth.data[z])


def test_invalid_training_input_is_explained(sample_viewer, widgets):
    _, finetune, _ = widgets
    truth = sample_viewer.layers["synthetic ssTEM ground truth"]
    finetune._labels_layer.value = truth
    finetune._slices.value = "0, 9"
    assert not finetune._run.enabled and "outside the stack" in finetune._message.value
    finetune._slices.value = "0, 1"
    finetune._validation.value = "1"
    assert "both a training and a validation slice" in finetune._message.value
    finetune._validation.value = ""
    sample_viewer.add_labels(np.zeros((8, 64, 64), np.uint8), name="small")
    finetune._labels_layer.value = sample_viewer.layers["small"]
    assert "must match" in finetune._message.value
    empty = sample_viewer.add_labels(np.zeros((8, 512, 512), np.uint8), name="empty")
    finetune._labels_layer.value = empty
    finetune._slices.value = "3"
    assert "has no cell labelled" in finetune._message.value
    assert not finetune._run.enabled


def test_every_label_tool_counts_as_a_correction(sample_viewer):
    from napari_em_unet._widgets.session import session_for

    labels = sample_viewer.add_labels(np.zeros((6, 64, 64), np.uint32), name="edits")
    tracker = session_for(sample_viewer).tracker(labels)
    seen = []
    tracker.changed.connect(lambda slices: seen.append(sorted(slices)))
    sample_viewer.dims.set_current_step(0, 1)
    labels.paint((1, 10, 10), 3)  # brush
    sample_viewer.dims.set_current_step(0, 2)
    labels.fill((2, 30, 30), 5)  # bucket fill
    sample_viewer.dims.set_current_step(0, 3)
    labels.paint_polygon(np.array([[3, 5, 5], [3, 5, 20], [3, 20, 20]]), 6)  # polygon
    sample_viewer.dims.set_current_step(0, 1)
    labels.paint((1, 10, 10), 0)  # eraser (already counted)
    labels.data_setitem((np.array([4]), np.array([1]), np.array([1])), 9)  # scripted edit
    labels.data[5] = 1  # plain write: not a correction
    assert tracker.corrected == {1, 2, 3, 4}
    assert seen == [[1], [1, 2], [1, 2, 3], [1, 2, 3, 4]]


def test_closing_napari_during_finetuning_ends_training_cleanly(
    qtbot, make_napari_viewer, engine, gui_models, plugin_home
):
    import hashlib
    import os

    viewer = make_napari_viewer()
    viewer.open_sample("napari-em-unet", "synthetic_sstem")
    session = session_for(viewer)
    session.use_engine(engine)  # segmentation only: training gets a process of its own
    session.models.add_file(gui_models["tiny"])
    finetune = FineTuneWidget(viewer)
    viewer.window.add_dock_widget(finetune)
    finetune._labels_layer.value = viewer.layers["synthetic ssTEM ground truth"]
    finetune._base.value = gui_models["tiny"]
    finetune._slices.value = "1"
    _small_training(finetune, epochs=50, steps=200)
    base_digest = hashlib.sha256(gui_models["tiny"].read_bytes()).hexdigest()
    steps, notes = [], []
    notification_manager.notification_ready.connect(notes.append)
    finetune.run()
    finetune.runner.worker.yielded.connect(steps.append)
    qtbot.waitUntil(lambda: len(steps) >= 3, timeout=TIMEOUT_MS)  # training, not starting
    child = finetune.runner.engine.pid
    assert child is not None and child != engine.pid

    viewer.close()

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        # A zombie is gone too (the engine's Popen reaps it when it is waited on).
        with open(f"/proc/{child}/stat") as fh:
            return fh.read().split()[2] == "Z"

    qtbot.waitUntil(gone, timeout=30_000)
    qtbot.waitUntil(lambda: not finetune.runner.running, timeout=30_000)
    assert any("Fine-tuning was cancelled" in str(n.message) for n in notes)
    assert finetune.last_outcome is None
    models = plugin_home / "models"
    assert not models.exists() or list(models.iterdir()) == []  # nothing half-written
    assert hashlib.sha256(gui_models["tiny"].read_bytes()).hexdigest() == base_digest
    assert engine.alive  # the segmentation process of other viewers is not touched
    notification_manager.notification_ready.disconnect(notes.append)
