"""The Proofread widget in a real viewer: merge by two clicks, split at the section shown,
delete small objects; each undone by napari's history, marked as corrected slices, and
followed by the Measure table."""

from __future__ import annotations

import numpy as np
import pytest

from napari_em_unet._widgets.measure_widget import MeasureWidget
from napari_em_unet._widgets.proofread_widget import IDLE, MERGE, SPLIT, ProofreadWidget
from napari_em_unet._widgets.session import session_for

TIMEOUT_MS = 30_000
SCALE = (50.0, 4.0, 4.0)


def objects() -> np.ndarray:
    """3: sections 1-2; 5: sections 0-4; 8: 9 voxels on section 4; 20: one voxel."""
    labels = np.zeros((5, 40, 60), dtype=np.uint32)
    labels[1:3, 10:14, 20:23] = 3
    labels[4, 30:33, 50:53] = 8
    labels[0, 0, 0] = 20
    labels[:, 20:22, 5:11] = 5
    return labels


class Click:
    """What napari hands a mouse callback (world position, the axes on screen)."""

    def __init__(self, viewer, zyx, button=1):
        self.position = tuple(float(v) * s for v, s in zip(zyx, SCALE, strict=True))
        self.view_direction = None
        self.dims_displayed = list(viewer.dims.displayed)
        self.button = button
        viewer.dims.set_point(0, self.position[0])


def click(viewer, layer, zyx) -> None:
    """Deliver a press at data position ``zyx`` to the layer's mouse callbacks."""
    event = Click(viewer, zyx)
    for callback in list(layer.mouse_drag_callbacks):
        callback(layer, event)


@pytest.fixture
def setup(make_napari_viewer):
    viewer = make_napari_viewer()
    layer = viewer.add_labels(objects(), name="cells", scale=SCALE)
    layer.mode = "paint"
    widget = ProofreadWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, layer, widget


def wait(qtbot, widget):
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def test_merge_by_clicking_two_objects_then_undo(qtbot, setup):
    viewer, layer, widget = setup
    before = layer.data.copy()
    widget._merge.native.click()
    assert widget.mode == MERGE and layer.mode == "pan_zoom"  # clicks choose, not paint
    click(viewer, layer, (1, 11, 21))  # object 3: kept
    assert widget.picked == [3] and layer.selected_label == 3
    click(viewer, layer, (3, 20, 6))  # object 5: merged into 3
    wait(qtbot, widget)
    expected = before.copy()
    expected[before == 5] = 3
    np.testing.assert_array_equal(layer.data, expected)
    assert widget.mode == IDLE and layer.mode == "paint"
    assert widget._message.value == "Merged object 5 into 3 (60 voxels relabelled)."
    assert session_for(viewer).corrected(layer) == {0, 1, 2, 3, 4}  # every section of 5
    widget._undo.native.click()  # napari's own undo history
    np.testing.assert_array_equal(layer.data, before)
    assert session_for(viewer).corrected(layer) == set()  # undone: no longer a correction
    layer.redo()
    np.testing.assert_array_equal(layer.data, expected)
    assert session_for(viewer).corrected(layer) == {0, 1, 2, 3, 4}


def test_split_at_the_section_on_screen_then_undo(qtbot, setup):
    viewer, layer, widget = setup
    before = layer.data.copy()
    widget._split.native.click()
    assert widget.mode == SPLIT
    click(viewer, layer, (2, 21, 7))  # object 5, clicked on section 2
    wait(qtbot, widget)
    assert layer.selected_label == 21  # the new object, one above the largest id (20)
    assert (layer.data[:2][before[:2] == 5] == 5).all()
    assert (layer.data[2:][before[2:] == 5] == 21).all()
    assert session_for(viewer).corrected(layer) == {2, 3, 4}
    assert "sections 2-4 are now object 21" in widget._message.value
    layer.undo()  # Ctrl+Z does the same
    np.testing.assert_array_equal(layer.data, before)


def test_delete_small_objects_then_undo(qtbot, setup):
    viewer, layer, widget = setup
    before = layer.data.copy()
    widget._min_voxels.value = 10
    widget._delete.native.click()
    wait(qtbot, widget)
    assert set(np.unique(layer.data)) == {0, 3, 5}  # 8 (9 voxels) and 20 (1 voxel) gone
    assert session_for(viewer).corrected(layer) == {0, 4}
    assert widget.last_edit.labels == (8, 20)
    widget.undo()
    np.testing.assert_array_equal(layer.data, before)
    widget._min_voxels.value = 1
    widget._delete.native.click()
    wait(qtbot, widget)
    assert "nothing deleted" in widget._message.value
    np.testing.assert_array_equal(layer.data, before)


def test_the_measure_table_follows_the_corrections(qtbot, setup):
    viewer, layer, widget = setup
    measure = MeasureWidget(viewer)
    viewer.window.add_dock_widget(measure)
    measure.run()
    qtbot.waitUntil(lambda: measure.worker is None, timeout=TIMEOUT_MS)
    assert measure.table.labels_in_view_order() == [3, 5, 8, 20]
    widget.merge(3, 5)
    wait(qtbot, widget)
    qtbot.waitUntil(lambda: measure.table.labels_in_view_order() == [3, 8, 20], timeout=TIMEOUT_MS)
    assert measure.result.row_of(3)["voxels"] == 24 + 60
    assert layer.features["voxels"].tolist() == [84, 9, 1]


def test_wrong_clicks_and_impossible_requests_change_nothing(qtbot, setup):
    viewer, layer, widget = setup
    before = layer.data.copy()
    widget.start_picking(MERGE)
    click(viewer, layer, (0, 35, 2))  # background
    assert "background" in widget._message.value and widget.picked == []
    click(viewer, layer, (1, 11, 21))
    click(viewer, layer, (2, 12, 22))  # the same object again
    wait(qtbot, widget)
    assert widget._message.value == (
        "Not changed: both clicks were on object 3; pick two different objects"
    )
    widget.split(8, 4)  # object 8 lives on section 4 only
    wait(qtbot, widget)
    assert "object 8 has no voxel before section 4" in widget._message.value
    np.testing.assert_array_equal(layer.data, before)
    assert session_for(viewer).corrected(layer) == set()
    widget.start_picking(MERGE)  # pressing again cancels
    widget.start_picking(MERGE)
    assert (
        widget.mode == IDLE
        and layer.mode == "paint"
        and not any(callback == widget._on_click for callback in layer.mouse_drag_callbacks)
    )


def test_zarr_backed_layer(qtbot, make_napari_viewer, tmp_path):
    import zarr

    viewer = make_napari_viewer()
    store = zarr.open_array(
        str(tmp_path / "cells.zarr"),
        mode="w",
        shape=(5, 40, 60),
        chunks=(1, 40, 60),
        dtype=np.uint32,
    )
    store[:] = objects()
    layer = viewer.add_labels(store, name="on disk", scale=SCALE)
    widget = ProofreadWidget(viewer)
    widget.split(5, 3)
    wait(qtbot, widget)
    assert (store[3][objects()[3] == 5] == 21).all()  # written into the store itself
    layer.undo()
    np.testing.assert_array_equal(store[:], objects())


def test_read_only_layers_are_refused_with_a_reason(make_napari_viewer):
    import dask.array as da

    viewer = make_napari_viewer()
    viewer.add_labels(da.from_array(objects(), chunks=(1, 40, 60)), name="lazy")
    widget = ProofreadWidget(viewer)
    assert "read-only" in widget._message.value
    assert not widget._merge.enabled and not widget._delete.enabled


def test_fine_tuning_reads_the_corrected_linked_labels(qtbot, setup):
    from napari_em_unet._widgets.finetune_widget import FineTuneWidget

    viewer, layer, widget = setup
    viewer.add_image(np.full((5, 40, 60), 128, np.uint8), name="em", scale=SCALE)
    widget.merge(3, 5)
    wait(qtbot, widget)
    finetune = FineTuneWidget(viewer)
    finetune._labels_layer.value = layer
    # The merged sections are the training slices, and their 3D ids are read as cells.
    assert finetune.default_slices() == [0, 1, 2, 3, 4]
    assert finetune.problem() is None
