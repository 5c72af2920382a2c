"""The widgets' plain-Python helpers: slice lists, history atoms, ranking, model registry,
and the TensorFlow process's error handling."""

from __future__ import annotations

import json
import time
import zipfile

import numpy as np
import pytest

from napari_em_unet._widgets.corrections import slices_in_history_item
from napari_em_unet._widgets.model_registry import ModelRegistry
from napari_em_unet._widgets.suggestions import rank_slices
from napari_em_unet.engine.client import segment_remote
from napari_em_unet.engine.protocol import JobFailed, SegmentRequest
from napari_em_unet.errors import ModelFileError
from napari_em_unet.generators import drain
from napari_em_unet.model.info import METADATA_ENTRY
from napari_em_unet.slices import format_slices, parse_slices


def test_parse_and_format_slices():
    assert parse_slices("0, 3, 5-7", 10) == [0, 3, 5, 6, 7]
    assert parse_slices(" 2;2 ,1 ", 3) == [1, 2]
    assert parse_slices("", 3) == []
    assert format_slices([7, 0, 1, 2, 5, 6]) == "0-2, 5-7"
    for text, message in (
        ("a", "not a slice number"),
        ("5-2", "not a slice number"),
        ("12", r"slice 12 is outside the stack \(0-9\)"),
        ("-1", "outside"),
    ):
        with pytest.raises(ValueError, match=message):
            parse_slices(text, 10)


class _Atom:
    def __init__(self, key):
        self.slice_key = key


def test_history_atoms_of_both_kinds():
    masked = [_Atom((slice(3, 4), slice(10, 20), slice(5, 9)))]
    assert slices_in_history_item(masked, 3) == {3}
    volume_brush = [_Atom((slice(1, 4), slice(0, 5), slice(0, 5)))]  # n_edit_dimensions=3
    assert slices_in_history_item(volume_brush, 3) == {1, 2, 3}
    fancy = [((np.array([2, 2, 5]), np.array([0, 1, 2]), np.array([0, 0, 0])), None, 1)]
    assert slices_in_history_item(fancy, 3) == {2, 5}
    assert slices_in_history_item(masked, 2) == {0}  # a 2D layer is slice 0
    assert slices_in_history_item([], 3) == set()


def test_rank_slices():
    scores = {"0": 0.1, "1": 0.5, "2": 0.3, "3": 0.5, "4": 0.9}
    assert rank_slices(scores, exclude={4}, limit=3) == [(1, 0.5), (3, 0.5), (2, 0.3)]
    assert rank_slices({}, exclude=()) == []


def _fake_model(path, name, created):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr(
            METADATA_ENTRY, json.dumps({"name": name, "created": created, "pixel_size_nm": 4.0})
        )
    return path


def test_model_registry(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    bundled = _fake_model(tmp_path / "bundled.keras", "isbi", "2026-01-01T00:00:00+00:00")
    _fake_model(folder / "old.keras", "old", "2026-02-01T00:00:00+00:00")
    _fake_model(folder / "new.keras", "new", "2026-03-01T00:00:00+00:00")
    (folder / "broken.keras").write_bytes(b"not a zip")
    _fake_model(folder / ".new.part.keras", "saving", "2026-04-01T00:00:00+00:00")
    registry = ModelRegistry(folder, bundled)
    assert [(e.name, e.kind) for e in registry.entries] == [
        ("new", "user"),
        ("old", "user"),
        ("isbi", "bundled"),
    ]
    changes, added = [], []
    registry.changed.connect(lambda: changes.append(1))
    registry.added.connect(added.append)
    elsewhere = _fake_model(tmp_path / "mine.keras", "mine", "2026-05-01T00:00:00+00:00")
    entry = registry.add_file(elsewhere)
    assert entry.kind == "file" and registry.entries[0] == entry and added == [entry]
    session_model = _fake_model(folder / "tuned.keras", "tuned", "2026-06-01T00:00:00+00:00")
    entry = registry.add_session_model(session_model)
    assert registry.entries[0].name == "tuned" and entry.kind == "session"
    assert "this session" in entry.label
    assert len(changes) == 2
    with pytest.raises(ModelFileError):
        registry.add_file(folder / "broken.keras")
    assert registry.new_model_path("new") == folder / "new-2.keras"
    assert registry.new_model_path("a b/c") == folder / "a-b-c.keras"
    registry.refresh()
    assert len(changes) == 2  # nothing changed, no signal


def test_bundled_model_missing(tmp_path):
    registry = ModelRegistry(tmp_path / "none", tmp_path / "missing.keras")
    assert registry.entries == []


def _drain(gen):
    records = []
    return records, drain(gen, records.append)


def test_engine_reports_errors_and_keeps_serving(engine, gui_models):
    import threading

    with pytest.raises(RuntimeError, match=r"(?s)KeyError.*in the TensorFlow process"):
        _drain(engine.run("no such job", None))
    # A missing model file is the user's problem: one sentence, not a traceback.
    request = SegmentRequest(
        image=np.zeros((2, 32, 32), np.uint8),
        slices=(0, 1),
        model_path=gui_models["tiny"].with_name("gone.keras"),
    )
    records, result = _drain(segment_remote(engine, request, threading.Event()))
    assert records == [] and isinstance(result, JobFailed)
    assert "model file not found" in result.message
    # And the same process still segments.
    request = SegmentRequest(
        image=np.zeros((2, 40, 40), np.uint8),
        slices=(0, 1),
        model_path=gui_models["threshold"],
        probability=True,
    )
    started = time.perf_counter()
    records, result = _drain(
        segment_remote(engine, request, threading.Event(), chunk_bytes=1)
    )  # one slice per message
    assert [type(r).__name__ for r in records] == ["ModelReady", "SliceDone", "SliceDone"]
    assert [r.done for r in records[1:]] == [1, 2] and records[2].total == 2
    assert records[1].result.shape == (40, 40) and records[1].probability.shape == (40, 40)
    assert result.total == 2 and not result.stopped
    assert time.perf_counter() - started < 120
