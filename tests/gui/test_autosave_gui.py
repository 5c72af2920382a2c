"""No lost edits in napari: corrections are autosaved while the user works and offered back
when the same image is opened again (the store itself is tested in tests/io/test_autosave.py)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from napari.utils.notifications import notification_manager

from napari_em_unet._widgets.session import session_for
from napari_em_unet.io.autosave import find_autosave, list_autosaves
from napari_em_unet.learning.synthetic import make_synthetic_stack


@pytest.fixture
def stack_files(tmp_path):
    image, labels = make_synthetic_stack((3, 96, 96), seed=2, cell_size=24)
    image_path, labels_path = tmp_path / "stack.tif", tmp_path / "stack-labels.tif"
    tifffile.imwrite(image_path, image)
    tifffile.imwrite(labels_path, labels.astype(np.uint16))
    return image_path, labels_path


def _open(viewer, *paths):
    for path in paths:
        viewer.open(str(path), plugin="napari-em-unet")
    return session_for(viewer)


def _paint(layer, index: int, value: int) -> None:
    layer.brush_size = 9
    for x in range(20, 70, 4):
        layer.paint((index, 40, x), value)


@pytest.fixture
def notifications():
    seen = []
    notification_manager.notification_ready.connect(seen.append)
    yield seen
    notification_manager.notification_ready.disconnect(seen.append)


def test_edits_are_autosaved_minutes_later_and_offered_back(
    qtbot, make_napari_viewer, stack_files, monkeypatch, notifications
):
    monkeypatch.setenv("NAPARI_EM_UNET_AUTOSAVE_SECONDS", "0.5")
    image_path, labels_path = stack_files
    viewer = make_napari_viewer()
    session = _open(viewer, image_path, labels_path)
    labels = viewer.layers["stack-labels"]
    original = np.array(labels.data, copy=True)
    _paint(labels, 2, 0)
    edited = np.array(labels.data, copy=True)
    assert not np.array_equal(edited, original)
    assert session.autosave.saved == []  # not at once: a timer, restarted by no later edit

    qtbot.waitUntil(
        lambda: len(session.autosave.saved) == 1 and session.autosave.pending == 0, timeout=20_000
    )
    saved = find_autosave(image_path)
    assert saved.image_path == str(image_path.resolve())
    assert saved.corrected_slices == (2,) and not saved.image_changed
    np.testing.assert_array_equal(saved.load_labels(), edited)

    # napari crashes; next day the user opens the same image: the corrections are offered.
    viewer2 = make_napari_viewer()
    session2 = _open(viewer2, image_path)
    assert [(a.file, img.name) for a, img in session2.autosave.offers] == [(saved.file, "stack")]
    offer = [n for n in notifications if n.actions]
    assert len(offer) == 1 and "slice(s) 2" in offer[0].message
    name, restore = offer[0].actions[0]
    assert name == "Restore"
    restore(None)  # what the notification's button does
    restored = viewer2.layers[-1]
    assert restored.name.startswith("stack corrections (autosaved on ")
    np.testing.assert_array_equal(restored.data, edited)
    assert session2.corrected(restored) == {2}  # ready to fine-tune on
    assert [layer.name for layer in viewer2.layers] == ["stack", restored.name]


def test_a_deleted_layer_is_saved_first_and_uncorrected_layers_never(
    make_napari_viewer, stack_files, monkeypatch
):
    monkeypatch.setenv("NAPARI_EM_UNET_AUTOSAVE_SECONDS", "0")  # timer off
    image_path, labels_path = stack_files
    viewer = make_napari_viewer()
    session = _open(viewer, image_path, labels_path)
    labels = viewer.layers["stack-labels"]
    viewer.layers.remove(labels)  # never edited: nothing to keep
    assert list_autosaves(image_path) == []

    viewer.open(str(labels_path), plugin="napari-em-unet")
    labels = viewer.layers["stack-labels"]
    _paint(labels, 0, 5)
    edited = np.array(labels.data, copy=True)
    viewer.layers.remove(labels)
    saved = find_autosave(image_path)
    assert saved is not None and saved.corrected_slices == (0,)
    np.testing.assert_array_equal(saved.load_labels(), edited)
    assert len(session.autosave.saved) == 1
