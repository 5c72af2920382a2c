"""Screenshots of the real window with the widgets docked, after a segmentation and a
fine-tuning run (what docs/images shows).

Images go to ``$EM_UNET_SCREENSHOT_DIR`` when set (``EM_UNET_SCREENSHOT_DIR=docs/images``
refreshes the documentation), else to the test's temporary folder.
``EM_UNET_SCREENSHOT_MODEL=bundled`` (or a path) segments with that model instead of the
small test model, for pictures that show real results.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtGui import QImage

from napari_em_unet._widgets.demo import build_demo, wait_for
from napari_em_unet._widgets.session import session_for

TIMEOUT_MS = 300_000


@pytest.fixture
def out_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("EM_UNET_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_png(path: Path, min_size: tuple[int, int]) -> np.ndarray:
    image = QImage(str(path))
    assert not image.isNull(), path
    assert image.width() >= min_size[0] and image.height() >= min_size[1], path
    ptr = image.convertToFormat(QImage.Format.Format_Grayscale8)
    raw = np.frombuffer(ptr.constBits().asstring(ptr.sizeInBytes()), np.uint8)
    assert raw.std() > 10, f"{path} looks blank"
    return raw


def _model(gui_models) -> Path:
    chosen = os.environ.get("EM_UNET_SCREENSHOT_MODEL")
    if chosen == "bundled":
        from napari_em_unet.model.files import bundled_model_path

        return bundled_model_path()
    return Path(chosen) if chosen else gui_models["threshold"]


def test_window_screenshots(qtbot, make_napari_viewer, engine, gui_models, out_dir, request):
    # With a real model (refreshing the docs), the pictures show the real verdict; with the
    # tests' tiny models, fine-tuning keeps whatever it learns, so a saved model is shown.
    real = bool(os.environ.get("EM_UNET_SCREENSHOT_MODEL"))
    if not real:
        request.getfixturevalue("accept_any_finetune")
    viewer = make_napari_viewer(show=True)
    session_for(viewer).use_engine(engine, for_training=True)
    viewer.window.resize(1500, 950)
    widgets = build_demo(viewer, model=_model(gui_models))
    segment, finetune = widgets["segment"], widgets["finetune"]

    segment.run()
    qtbot.waitUntil(lambda: not segment.runner.running, timeout=TIMEOUT_MS)
    labels = segment.runner.labels_layer
    viewer.layers.selection = {labels}
    viewer.dims.set_current_step(0, 2)
    # A correction: draw a missed membrane with the eraser (label 0), as a user would.
    labels.brush_size = 3
    for y in range(150, 330, 2):
        labels.paint((2, y, 240), 0)
    assert session_for(viewer).corrected(labels) == {2}
    finetune._epochs.value, finetune._steps.value = 2, 3
    finetune._batch.value, finetune._patch.value = 1, 64
    finetune.run()
    qtbot.waitUntil(lambda: not finetune.runner.running, timeout=TIMEOUT_MS)
    assert real or finetune.last_outcome is not None, finetune._message.value
    wait_for(lambda: False, timeout=0.3)

    window = out_dir / "napari-em-unet-window.png"
    viewer.screenshot(str(window), canvas_only=False, flash=False)
    _check_png(window, (1200, 800))
    for name, widget in (("segment", segment), ("finetune", finetune)):
        path = out_dir / f"{name}-widget.png"
        assert widget.form.grab().save(str(path))  # the whole form, not its scroll view
        _check_png(path, (250, 250))
