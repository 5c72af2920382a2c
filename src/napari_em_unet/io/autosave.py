"""No lost edits: a small on-disk store of corrected labels, keyed by the image they belong to.

The napari plugin calls :func:`save_corrections` before fine-tuning and every few minutes
while the user edits, and :func:`find_autosave` when an image is opened, to offer the
labels back. Pure Python (numpy, platformdirs): no Qt, no napari, safe to call from a
worker thread.

Layout: ``<data folder>/autosave/<key>/labels-<time>.npz``, where the data folder is
``$NAPARI_EM_UNET_HOME`` if set, else the user data folder from platformdirs, and ``key``
is derived from the image's absolute path. Each autosave is one ``.npz`` holding the
labels and a JSON description, written under a temporary name, flushed to disk and renamed
into place: a crash or a kill at any moment leaves the previous autosaves intact and never
a half-written one. The newest :data:`KEEP` autosaves of an image are kept, so an
accidental erase that got autosaved can still be undone from the one before.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import InputError
from .atomic import atomic_path, remove_stale_temporaries
from .paths import data_home

FORMAT = 1
KEEP = 3
"""Autosaves kept per image (newest first)."""


@dataclass(frozen=True)
class Autosave:
    """One autosave found on disk (its labels are read only by :meth:`load_labels`)."""

    file: Path
    image_path: str
    corrected_slices: tuple[int, ...]
    saved: str
    """ISO 8601 time (UTC) of the save."""
    shape: tuple[int, ...]
    dtype: str
    image_changed: bool
    """The image file's size or modification time differs from when the labels were saved."""

    def load_labels(self) -> np.ndarray:
        """The labels as they were saved (slices that were not stored come back as 0)."""
        with np.load(self.file, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            stored = data["labels"]
        if meta["all_slices"]:
            return stored
        labels = np.zeros(tuple(meta["shape"]), dtype=np.dtype(meta["dtype"]))
        for plane, index in zip(stored, meta["stored_slices"], strict=True):
            labels[index] = plane
        return labels


def autosave_folder(image_path: str | os.PathLike) -> Path:
    """Where the autosaves of one image live."""
    ident = _identity(image_path)
    key = hashlib.sha256(ident.encode("utf-8")).hexdigest()[:20]
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(ident).stem)[:40]
    return data_home() / "autosave" / f"{stem}-{key}"


def save_corrections(
    labels,
    image_path: str | os.PathLike,
    corrected_slices: Iterable[int],
    *,
    all_slices: bool = True,
) -> Path:
    """Autosave ``labels`` for the image at ``image_path``; return the file written.

    Parameters
    ----------
    labels : array-like
        2D or ZYX integer labels (0 = membrane, the napari Labels layer's data); a lazy
        array (zarr, dask) is only read where it is stored.
    image_path : str or path
        The image the labels belong to; any string for images without a file (e.g.
        ``"sample:synthetic-sstem"``).
    corrected_slices : iterable of int
        The slices the user corrected, kept with the labels.
    all_slices : bool
        Store every slice (default), or only the corrected ones (much smaller for big
        stacks: the rest is the model's output and can be recomputed).
    """
    labels, corrected = _checked(labels, corrected_slices)
    dtype = np.dtype(labels.dtype)
    all_slices = bool(all_slices or labels.ndim == 2)
    stored_slices = list(range(_depth(labels))) if all_slices else corrected
    stored = np.asarray(labels) if all_slices else _some_slices(labels, stored_slices)
    size, mtime = _fingerprint(image_path)
    meta = {
        "format": FORMAT,
        "image_path": _identity(image_path),
        "corrected_slices": corrected,
        "saved": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "shape": list(labels.shape),
        "dtype": dtype.str,
        "all_slices": all_slices,
        "stored_slices": stored_slices,
        "image_size": size,
        "image_mtime_ns": mtime,
        "package_version": __version__,
    }
    folder = autosave_folder(image_path)
    folder.mkdir(parents=True, exist_ok=True)
    # Nanoseconds in the name order the saves and keep two writers (two napari windows)
    # from ever choosing the same file.
    final = folder / f"labels-{time.time_ns():020d}-{os.getpid()}.npz"
    with atomic_path(final) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, labels=stored, meta=np.array(json.dumps(meta)))
    _prune(folder)
    return final


def _checked(labels, corrected_slices) -> tuple[object, list[int]]:
    """The labels (lazy arrays stay lazy: with all_slices=False only the corrected slices
    are ever read) and the sorted corrected slices, or a one-line InputError."""
    if not (hasattr(labels, "shape") and hasattr(labels, "dtype")):
        labels = np.asarray(labels)
    if labels.ndim not in (2, 3) or math.prod(labels.shape) == 0:
        raise InputError(f"labels must be a 2D image or a ZYX stack, got shape {labels.shape}")
    dtype = np.dtype(labels.dtype)
    if not (np.issubdtype(dtype, np.integer) or dtype.kind == "b"):
        raise InputError(f"labels must be integers, got {labels.dtype}")
    depth = _depth(labels)
    corrected = sorted({int(s) for s in corrected_slices})
    if any(not 0 <= s < depth for s in corrected):
        raise InputError(f"corrected slices {corrected} outside the stack (0..{depth - 1})")
    return labels, corrected


def _depth(labels) -> int:
    return 1 if labels.ndim == 2 else labels.shape[0]


def _some_slices(labels, slices: list[int]) -> np.ndarray:
    if not slices:
        return np.zeros((0, *labels.shape[1:]), dtype=labels.dtype)
    return np.stack([np.asarray(labels[i]) for i in slices])


def find_autosave(image_path: str | os.PathLike) -> Autosave | None:
    """The newest readable autosave for ``image_path``, or None."""
    found = list_autosaves(image_path)
    return found[0] if found else None


def list_autosaves(image_path: str | os.PathLike) -> list[Autosave]:
    """All readable autosaves for ``image_path``, newest first (damaged files are skipped)."""
    folder = autosave_folder(image_path)
    if not folder.is_dir():
        return []
    size, mtime = _fingerprint(image_path)
    found = []
    for file in sorted(folder.glob("labels-*.npz"), reverse=True):
        try:
            with np.load(file, allow_pickle=False) as data:
                meta = json.loads(str(data["meta"]))
            if meta.get("format", 0) > FORMAT:
                continue
            changed = (size, mtime) != (meta.get("image_size"), meta.get("image_mtime_ns"))
            found.append(
                Autosave(
                    file=file,
                    image_path=meta["image_path"],
                    corrected_slices=tuple(meta["corrected_slices"]),
                    saved=meta["saved"],
                    shape=tuple(meta["shape"]),
                    dtype=np.dtype(meta["dtype"]).name,
                    image_changed=changed,
                )
            )
        except Exception:  # a damaged autosave must not hide the older, good ones
            continue
    return found


def _identity(image_path) -> str:
    """The absolute path of a file, or the string itself for images without one."""
    text = os.fspath(image_path)
    path = Path(text).expanduser()
    if path.exists():
        return str(path.resolve())
    return text


def _fingerprint(image_path) -> tuple[int | None, int | None]:
    try:
        stat = Path(os.fspath(image_path)).expanduser().stat()
    except (OSError, ValueError):
        return None, None
    return stat.st_size, stat.st_mtime_ns


def _prune(folder: Path) -> None:
    """Keep the newest :data:`KEEP` autosaves and forget temporaries of crashed writers."""
    files = sorted(folder.glob("labels-*.npz"), reverse=True)
    for old in files[KEEP:]:
        old.unlink(missing_ok=True)
    remove_stale_temporaries(folder)
