"""The Measure widget in a real viewer: table values and sorting, clicking a row, CSV export
(the same file as ``em-unet measure``), hover features, and measuring again after edits."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from qtpy.QtCore import QPoint, Qt

from napari_em_unet._widgets.measure_widget import MeasureWidget
from napari_em_unet.analysis.measure import COLUMNS
from napari_em_unet.cli import main

TIMEOUT_MS = 30_000
VOXEL = (50.0, 4.0, 5.0)


def objects() -> tuple[np.ndarray, np.ndarray]:
    """Object 3: 24 voxels on sections 1-2; object 8: 9 voxels on section 4; object 20:
    a single voxel on section 0; object 5: 60 voxels through every section."""
    labels = np.zeros((5, 40, 60), dtype=np.uint32)
    labels[1:3, 10:14, 20:23] = 3
    labels[4, 30:33, 50:53] = 8
    labels[0, 0, 0] = 20
    labels[:, 20:22, 5:11] = 5
    image = np.zeros(labels.shape, dtype=np.uint8)
    image[labels == 3] = 120
    image[labels == 5] = 40
    return labels, image


@pytest.fixture
def viewer_and_widget(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)  # shown: the tests click the table and its header
    labels, image = objects()
    viewer.add_image(image, name="em", scale=(50, 4, 5))
    layer = viewer.add_labels(
        labels,
        name="cells",
        scale=(50, 4, 5),
        metadata={"voxel_size_nm": VOXEL, "pixel_size_nm": 4.0},
    )
    widget = MeasureWidget(viewer)
    viewer.window.add_dock_widget(widget)
    return viewer, layer, widget


def measure(qtbot, widget):
    widget.run()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=TIMEOUT_MS)


def test_table_values_and_sorting(qtbot, viewer_and_widget):
    viewer, layer, widget = viewer_and_widget
    assert widget._labels_layer.value is layer
    assert [box.value for box in widget._voxel] == list(VOXEL)  # from the layer's metadata
    widget._image.value = viewer.layers["em"]
    measure(qtbot, widget)
    table = widget.table
    assert table.labels_in_view_order() == [3, 5, 8, 20]
    assert [
        table.model_.headerData(c, Qt.Orientation.Horizontal)
        for c in range(table.model_.columnCount())
    ] == list(COLUMNS)
    assert table.column_text("voxels") == ["24", "60", "9", "1"]
    assert table.column_text("z_first") == ["1", "0", "4", "0"]
    assert table.column_text("z_last") == ["2", "4", "4", "0"]
    assert table.column_text("centroid_z") == ["1.50", "2.00", "4.00", "0.00"]
    assert table.column_text("centroid_y") == ["11.50", "20.50", "31.00", "0.00"]
    assert table.column_text("mean_intensity") == ["120.00", "40.00", "0.00", "0.00"]
    assert table.column_text("volume_um3") == [
        f"{24 * 1e-6:.4g}",
        f"{60 * 1e-6:.4g}",
        f"{9 * 1e-6:.4g}",
        f"{1e-6:.4g}",
    ]
    assert "4 objects" in widget._message.value

    # A real click on the "voxels" header sorts by it; a second click reverses.
    header = table.horizontalHeader()
    column = COLUMNS.index("voxels")
    where = QPoint(header.sectionViewportPosition(column) + 5, header.height() // 2)
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=where)
    first = table.labels_in_view_order()
    qtbot.mouseClick(header.viewport(), Qt.MouseButton.LeftButton, pos=where)
    second = table.labels_in_view_order()
    assert {tuple(first), tuple(second)} == {(20, 8, 3, 5), (5, 3, 8, 20)}
    # The sort survives a new measurement.
    measure(qtbot, widget)
    assert table.labels_in_view_order() == second


def test_clicking_a_row_selects_the_object_and_moves_the_view(qtbot, viewer_and_widget):
    viewer, layer, widget = viewer_and_widget
    measure(qtbot, widget)
    viewer.dims.set_point(0, 0)
    row = widget.table.row_of(8)
    rect = widget.table.visualRect(widget.table.model_.index(row, 0))
    qtbot.mouseClick(widget.table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())
    assert layer.selected_label == 8
    assert viewer.dims.point[0] == pytest.approx(4 * 50)  # section 4, in world units
    assert viewer.camera.center[-2:] == pytest.approx((31 * 4, 51 * 5))
    # Shown alone on request (napari's own "show selected label").
    widget.view_controls.alone.value = True
    assert layer.show_selected_label
    # A 3D view is one click away, and back.
    widget.view_controls.view_3d.native.click()
    assert viewer.dims.ndisplay == 3 and widget.view_controls.view_3d.text == "2D view"
    widget.select_object(3)  # in 3D the camera centres on the object in all three axes
    assert viewer.camera.center == pytest.approx((1.5 * 50, 11.5 * 4, 21 * 5))
    widget.view_controls.view_3d.native.click()
    assert viewer.dims.ndisplay == 2


def test_features_on_the_layer_show_on_hover(qtbot, viewer_and_widget):
    viewer, layer, widget = viewer_and_widget
    measure(qtbot, widget)
    features = layer.features
    assert features["index"].tolist() == [3, 5, 8, 20]
    assert features["voxels"].tolist() == [24, 60, 9, 1]
    assert "label" not in features and list(features)[1:] == list(COLUMNS[1:-1])
    status = layer.get_status((1 * 50, 11 * 4, 21 * 5), world=True)
    assert "voxels: 24" in str(status) and "z_last: 2" in str(status)


def test_export_csv_is_the_file_the_command_line_writes(
    qtbot, viewer_and_widget, tmp_path, monkeypatch
):
    from qtpy.QtWidgets import QFileDialog

    viewer, layer, widget = viewer_and_widget
    widget._image.value = viewer.layers["em"]
    measure(qtbot, widget)
    target = tmp_path / "gui.csv"
    monkeypatch.setattr(
        QFileDialog,
        "getSaveFileName",
        staticmethod(lambda *a, **k: (str(target), "CSV files (*.csv)")),
    )
    widget._export.native.click()
    assert target.exists() and "wrote 4 rows" in widget._message.value

    labels, image = objects()
    meta = {"unit": "um", "spacing": 0.05, "axes": "ZYX"}
    tifffile.imwrite(
        tmp_path / "l.tif",
        labels,
        imagej=False,
        resolution=(2500, 2500),
        resolutionunit="CENTIMETER",
    )
    tifffile.imwrite(tmp_path / "i.tif", image, imagej=True, metadata=meta)
    assert (
        main(
            [
                "measure",
                str(tmp_path / "l.tif"),
                "--image",
                str(tmp_path / "i.tif"),
                "--voxel-size",
                "50,4,5",
                "-o",
                str(tmp_path / "cli.csv"),
            ]
        )
        == 0
    )
    assert target.read_text() == (tmp_path / "cli.csv").read_text()
    assert target.read_text().splitlines()[1].startswith("3,24,2.4e-05,1,2,1.5,11.5,21.0,120.0")

    # An unwritable place: one sentence, the table stays.
    monkeypatch.setattr(
        QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (str(target / "x.csv"), ""))
    )
    widget._export.native.click()
    assert widget._message.value.startswith("Not exported:")
    assert widget.table.model_.rowCount() == 4


def test_measured_again_after_an_edit(qtbot, viewer_and_widget):
    viewer, layer, widget = viewer_and_widget
    measure(qtbot, widget)
    viewer.dims.set_point(0, 3 * 50)
    layer.brush_size = 1
    layer.paint((3, 35, 40), 42)  # a user's brush stroke: a new object 42 on section 3
    qtbot.waitUntil(lambda: 42 in widget.table.labels_in_view_order(), timeout=TIMEOUT_MS)
    assert widget.result.row_of(42)["z_first"] == 3
    assert 42 in layer.features["index"].tolist()
    layer.data = np.where(layer.data == 20, 0, layer.data)  # new data, e.g. after linking
    qtbot.waitUntil(lambda: 20 not in widget.table.labels_in_view_order(), timeout=TIMEOUT_MS)


def test_unusable_choices_explain_themselves(qtbot, viewer_and_widget):
    viewer, layer, widget = viewer_and_widget
    viewer.add_image(np.zeros((3, 40, 60), np.uint8), name="short")
    widget._image.value = viewer.layers["short"]
    assert not widget._run.enabled
    assert "'short' is 3 x 40 x 60 but 'cells' is 5 x 40 x 60" in widget._message.value
    widget._image.value = None
    for box in widget._voxel:
        box.value = 0.0
    measure(qtbot, widget)
    assert widget.voxel_size() is None and "enter the voxel size" in widget._message.value
    assert widget.table.column_text("volume_um3") == [""] * 4
    negative = viewer.add_labels(np.full((5, 40, 60), -3, np.int32), name="negative")
    widget._labels_layer.value = negative
    measure(qtbot, widget)  # refused in one sentence, in place; no task failed
    assert widget._message.value == ("Not measured: labels must not be negative (slice 0 holds -3)")
    assert negative.features.shape[1] == 0
    viewer.layers.remove(negative)
    viewer.layers.remove(layer)  # the user's other layers are untouched, nothing breaks
    assert widget._labels_layer.value is None and not widget._run.enabled
    assert [lay.name for lay in viewer.layers] == ["em", "short"]
