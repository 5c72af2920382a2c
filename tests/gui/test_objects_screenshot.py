"""The picture for docs/objects.md: the sample segmented, linked into 3D objects, shown in
3D next to the Measure widget's table, in a real window.

Images go to ``$EM_UNET_SCREENSHOT_DIR`` when set (``EM_UNET_SCREENSHOT_DIR=docs/images``
refreshes the documentation), else to the test's temporary folder;
``EM_UNET_SCREENSHOT_MODEL=bundled`` segments with the bundled model (see
test_screenshots.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_em_unet._widgets.demo import PLUGIN, SEGMENT, wait_for
from napari_em_unet._widgets.layer_meta import META_KEY
from napari_em_unet._widgets.session import session_for

TIMEOUT_MS = 300_000


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("EM_UNET_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _model(gui_models) -> Path:
    chosen = os.environ.get("EM_UNET_SCREENSHOT_MODEL")
    if chosen == "bundled":
        from napari_em_unet.model.files import bundled_model_path

        return bundled_model_path()
    return Path(chosen) if chosen else gui_models["threshold"]


def _check_png(path: Path, min_size: tuple[int, int]) -> None:
    from qtpy.QtGui import QImage

    image = QImage(str(path))
    assert not image.isNull(), path
    assert image.width() >= min_size[0] and image.height() >= min_size[1], path
    grey = image.convertToFormat(QImage.Format.Format_Grayscale8)
    raw = np.frombuffer(grey.constBits().asstring(grey.sizeInBytes()), np.uint8)
    assert raw.std() > 10, f"{path} looks blank"


def test_linked_volume_in_3d_with_the_measure_table(
    qtbot, make_napari_viewer, engine, gui_models, linking, out_dir
):
    viewer = make_napari_viewer(show=True)
    session_for(viewer).use_engine(engine, for_training=True)
    viewer.window.resize(1500, 950)
    viewer.open_sample(PLUGIN, "synthetic_sstem")
    segment_dock, segment = viewer.window.add_plugin_dock_widget(PLUGIN, SEGMENT)
    session_for(viewer).models.add_file(_model(gui_models))
    segment.linking.wanted.value = True
    segment._probability.value = True
    segment.run()
    qtbot.waitUntil(
        lambda: not segment.runner.running and not segment.linking.running, timeout=TIMEOUT_MS
    )
    labels = segment.runner.labels_layer
    assert "linked" in labels.metadata[META_KEY]

    # The Segment dock makes way for the Measure widget in the picture.
    viewer.window.remove_dock_widget(segment_dock)
    viewer.layers.selection.active = labels
    _, measure = viewer.window.add_plugin_dock_widget(PLUGIN, "Measure objects")
    measure.run()
    qtbot.waitUntil(lambda: measure.worker is None, timeout=TIMEOUT_MS)
    assert len(measure.result) == labels.metadata[META_KEY]["linked"]["objects"]
    table = measure.table
    table.sortByColumn(list(measure.result.names).index("voxels"), Qt.SortOrder.DescendingOrder)
    biggest = table.labels_in_view_order()[0]
    table.selectRow(0)
    measure.select_object(biggest)
    assert labels.selected_label == biggest

    # 3D (the layers are in nm, so sections show at their 50 nm thickness), the image and
    # the probability map out of the way.
    assert tuple(labels.scale) == (50.0, 4.0, 4.0)
    for layer in viewer.layers:
        layer.visible = layer is labels
    measure.view_controls.view_3d.native.click()
    assert viewer.dims.ndisplay == 3
    viewer.reset_view()
    viewer.camera.angles = (-20, 35, -55)  # tilted, so that the sections' depth shows
    viewer.camera.zoom *= 0.9
    wait_for(lambda: False, timeout=0.5)

    window = out_dir / "objects-3d-window.png"
    viewer.screenshot(str(window), canvas_only=False, flash=False)
    _check_png(window, (1200, 800))
    path = out_dir / "measure-widget.png"
    assert measure.native.grab().save(str(path))
    _check_png(path, (250, 250))
