"""The models a napari session can choose from: bundled, the user's model folder, added files.

Plain Python (no Qt, no TensorFlow): listing reads only each file's metadata
(:func:`napari_em_unet.model.files.read_info`, a zip entry). Fine-tuned models are saved
in the user's model folder, ``platformdirs.user_data_dir("napari-em-unet")/models`` (or
``$NAPARI_EM_UNET_HOME/models``), so they are still there in the next session and for
``em-unet segment --model``. Loading models is the TensorFlow process's business
(:mod:`napari_em_unet.engine.model_cache`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
from dataclasses import dataclass
from pathlib import Path

from psygnal import Signal

from ..errors import ModelFileError
from ..io.atomic import remove_stale_temporaries
from ..io.paths import models_dir


@dataclass(frozen=True)
class ModelEntry:
    """One choosable model.

    Attributes
    ----------
    path : Path
        The ``.keras`` file.
    name : str
        The model's name from its metadata (or the file name).
    kind : str
        ``"bundled"``, ``"user"`` (in the model folder), ``"session"`` (fine-tuned in this
        napari session) or ``"file"`` (added by the user from elsewhere).
    created : float
        POSIX time the model was made (metadata, else file time): the sort key.
    pixel_size_nm : float or None
        The pixel size the model was trained at.
    worse : bool
        Its own validation says it is not better than the model it was fine-tuned from:
        listed, but never chosen for the user.
    """

    path: Path
    name: str
    kind: str
    created: float
    pixel_size_nm: float | None = None
    worse: bool = False

    @property
    def label(self) -> str:
        when = _dt.datetime.fromtimestamp(self.created).strftime("%Y-%m-%d %H:%M")
        tag = {"bundled": "bundled", "session": "this session", "file": "file", "user": "saved"}[
            self.kind
        ]
        warning = ", not better than its base on validation" if self.worse else ""
        return f"{self.name} ({tag}, {when}{warning})"


class ModelRegistry:
    """Models to choose from, newest first; emits ``changed`` when the list changes.

    Parameters
    ----------
    folder : Path, optional
        The user's model folder (default :func:`napari_em_unet.io.paths.models_dir`).
    bundled : Path or None, optional
        The bundled model file (default: the package's); ignored when it does not exist.
    """

    changed = Signal()
    added = Signal(object)
    """A model was fine-tuned in this session or added by the user (the ModelEntry)."""

    def __init__(self, folder: Path | None = None, bundled: Path | None = None):
        from ..model.files import bundled_model_path

        self.folder = Path(folder) if folder is not None else models_dir()
        self.bundled = Path(bundled) if bundled is not None else bundled_model_path()
        self._extra: dict[Path, str] = {}  # path -> kind, for session models and added files
        self._entries: list[ModelEntry] = []
        self.refresh(emit=False)

    @property
    def entries(self) -> list[ModelEntry]:
        """All usable models, newest first."""
        return list(self._entries)

    def default_entry(self) -> ModelEntry | None:
        """The model to preselect: the newest one whose validation does not say it is worse
        than its base (a worse model stays listed for whoever wants to look at it)."""
        return next((e for e in self._entries if not e.worse), None) or next(
            iter(self._entries), None
        )

    def find(self, path: str | os.PathLike) -> ModelEntry | None:
        path = Path(path).resolve()
        return next((e for e in self._entries if e.path.resolve() == path), None)

    def refresh(self, emit: bool = True) -> None:
        """Re-read the model folder (models saved by the CLI or another session appear)."""
        remove_stale_temporaries(self.folder)  # saves that were killed
        entries: dict[Path, ModelEntry] = {}
        if self.bundled.is_file():
            entry = _entry(self.bundled, "bundled")
            if entry is not None:
                entries[self.bundled.resolve()] = entry
        if self.folder.is_dir():
            for path in self.folder.glob("*.keras"):
                if path.name.startswith("."):  # a save in progress (temporary name)
                    continue
                kind = self._extra.get(path.resolve(), "user")
                entry = _entry(path, kind)
                if entry is not None:
                    entries[path.resolve()] = entry
        for path, kind in list(self._extra.items()):
            if path not in entries and path.is_file():
                entry = _entry(path, kind)
                if entry is not None:
                    entries[path] = entry
        new = sorted(entries.values(), key=lambda e: e.created, reverse=True)
        if new != self._entries:
            self._entries = new
            if emit:
                self.changed.emit()

    def add_file(self, path: str | os.PathLike) -> ModelEntry:
        """Add a model file from anywhere; raises ModelFileError if it is not a model."""
        path = Path(path).resolve()
        entry = _entry(path, "file", strict=True)
        self._extra.setdefault(path, "file")
        self.refresh()
        entry = self.find(path) or entry
        self.added.emit(entry)
        return entry

    def add_session_model(self, path: str | os.PathLike) -> ModelEntry:
        """Register a model fine-tuned in this session."""
        path = Path(path).resolve()
        self._extra[path] = "session"
        self.refresh()
        entry = self.find(path)
        if entry is None:
            raise ModelFileError(f"the new model {path.name} could not be read back")
        self.added.emit(entry)
        return entry

    def new_model_path(self, name: str) -> Path:
        """A free file name in the model folder for a model called ``name``."""
        stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"
        path = self.folder / f"{stem}.keras"
        n = 2
        while path.exists():
            path = self.folder / f"{stem}-{n}.keras"
            n += 1
        return path


def _entry(path: Path, kind: str, strict: bool = False) -> ModelEntry | None:
    from ..model.files import read_info

    try:
        info = read_info(path)
    except ModelFileError:
        if strict:
            raise
        return None  # a damaged file in the folder must not hide the other models
    created = path.stat().st_mtime
    if info.created:
        with contextlib.suppress(ValueError):
            created = _dt.datetime.fromisoformat(info.created).timestamp()
    name = info.name if info.name and info.name != "unnamed" else path.stem
    return ModelEntry(path, name, kind, created, info.pixel_size_nm, validated_worse(info))


def validated_worse(info) -> bool:
    """Whether a model's own validation says it is not better than its base: the verdict of
    a fine-tuning run, or (models from before verdicts) a lower score than before."""
    validation = info.validation or {}
    if validation.get("accepted") is False:
        return True
    after, before = validation.get("v_rand"), validation.get("v_rand_before")
    return isinstance(after, (int, float)) and isinstance(before, (int, float)) and after < before
