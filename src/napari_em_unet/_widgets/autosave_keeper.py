"""No lost edits in napari: when corrected labels are autosaved, and how they come back.

The store itself (atomic files, the newest few kept per image) is the core module
:mod:`napari_em_unet.io.autosave`. This module decides *when*, for every Labels layer of the
viewer on which the user corrected slices with napari's label tools:

* :data:`DEFAULT_SECONDS` after the first edit not yet saved (so edits are on disk a couple of
  minutes after they are made, however long the user keeps painting);
* right before fine-tuning starts (the Fine-tune widget calls :meth:`AutosaveKeeper.save_now`);
* when the layer is deleted or the viewer closes (``viewer.close()`` removes every layer).

The layer is copied on the main thread (a memory copy: milliseconds); compressing and
writing happen in a napari thread worker. Layers bigger than :data:`WHOLE_LAYER_BYTES`, or not
in memory (zarr, dask), store their corrected slices only.

When an image layer appears whose file (or sample) has an autosave of the same shape, a
notification offers **Restore**: the labels come back as a *new* layer with their corrected
slices marked, so fine-tuning picks them up; no existing layer is touched.
"""

from __future__ import annotations

import datetime as _dt
import os
import weakref

import numpy as np

from ..slices import format_slices
from .layer_meta import SEGMENTATION, new_layer_metadata, plugin_meta, unwrap
from .layers import spatial_shape

ENV_SECONDS = "NAPARI_EM_UNET_AUTOSAVE_SECONDS"
DEFAULT_SECONDS = 120.0
"""Seconds from the first unsaved edit to its autosave (``$NAPARI_EM_UNET_AUTOSAVE_SECONDS``;
0 turns the timed autosave off, saves before fine-tuning and on removal still happen)."""
WHOLE_LAYER_BYTES = 256 * 2**20
"""Up to this size every slice is stored (the model's output too); above, corrected slices."""


def image_identity(layer) -> str:
    """What an image is known by across sessions: its file, else its sample or layer name."""
    meta = getattr(layer, "metadata", None) or {}
    path = meta.get("source_path") or getattr(getattr(layer, "source", None), "path", None)
    return str(path) if path else f"napari layer: {layer.name}"


def _interval_seconds() -> float:
    try:
        return max(0.0, float(os.environ.get(ENV_SECONDS, DEFAULT_SECONDS)))
    except ValueError:
        return DEFAULT_SECONDS


def _is_image(layer) -> bool:
    from napari.layers import Image

    return isinstance(layer, Image)


def _is_labels(layer) -> bool:
    from napari.layers import Labels

    return isinstance(layer, Labels)


class _CorrectedPlanes:
    """The corrected slices of a big or lazy layer, copied; looks like the stack to the store."""

    def __init__(self, layer, slices):
        self.shape = tuple(int(s) for s in layer.data.shape)
        self.dtype = np.dtype(layer.data.dtype)
        self.ndim = len(self.shape)
        self._planes = {int(i): np.array(layer.data[int(i)], copy=True) for i in slices}

    def __getitem__(self, index):
        return self._planes[int(index)]


def _write(labels, identity: str, corrected, all_slices: bool):
    from ..io.autosave import save_corrections

    return save_corrections(labels, identity, corrected, all_slices=all_slices)


class AutosaveKeeper:
    """Autosaves the corrected Labels layers of one viewer and offers them back.

    Parameters
    ----------
    viewer : napari.Viewer
    session : PluginSession
        Knows which slices of each layer were corrected.
    """

    def __init__(self, viewer, session):
        from qtpy.QtCore import QTimer

        self._viewer = weakref.ref(viewer)
        self._session = session
        self._dirty: weakref.WeakSet = weakref.WeakSet()
        self._offered: set[str] = set()
        self._saved_here: set[str] = set()
        self.pending = 0
        """Autosaves being written."""
        self.saved: list = []
        """Files written in this session, in order."""
        self.offers: list = []
        """``(Autosave, image layer)`` offered to the user, in order."""
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.save_dirty)
        viewer.layers.events.inserted.connect(self._on_inserted)
        viewer.layers.events.removing.connect(self._on_removing)
        for layer in list(viewer.layers):
            self._watch(layer)

    # ------------------------------------------------------------------ events
    def _on_inserted(self, event) -> None:
        self._watch(event.value)

    def _watch(self, layer) -> None:
        layer = unwrap(layer)
        if _is_labels(layer):
            layer.events.paint.connect(self._on_paint)
        elif _is_image(layer):
            self.offer(layer)

    def _on_paint(self, event) -> None:
        self._dirty.add(event.source)
        seconds = _interval_seconds()
        if seconds and not self._timer.isActive():
            self._timer.start(int(seconds * 1000))

    def _on_removing(self, event) -> None:
        viewer = self._viewer()
        if viewer is None:
            return
        layer = viewer.layers[event.index]
        if layer in self._dirty:
            # The layer is about to go (deleted, or napari closing): write it now, here,
            # because there may be no event loop left to run a worker.
            self.save_now(layer, wait=True)

    # ------------------------------------------------------------------ saving
    def save_dirty(self) -> None:
        """Autosave every layer edited since its last autosave."""
        for layer in list(self._dirty):
            self.save_now(layer)

    def save_now(self, layer, *, wait: bool = False) -> bool:
        """Autosave ``layer`` if it has corrected slices; return whether a save started.

        The copy is taken now; the file is written by a thread worker, or before returning
        when ``wait`` is true.
        """
        from napari.utils.notifications import show_warning

        layer = unwrap(layer)
        self._dirty.discard(layer)
        corrected = sorted(self._session.corrected(layer))
        if not corrected:
            return False
        identity = self.identity_of(layer)
        data = layer.data
        in_memory = isinstance(data, np.ndarray)
        nbytes = int(np.prod(data.shape)) * np.dtype(data.dtype).itemsize
        if layer.ndim < 3 or (in_memory and nbytes <= WHOLE_LAYER_BYTES):
            labels, all_slices = np.array(data, copy=True), True
        else:
            labels, all_slices = _CorrectedPlanes(layer, corrected), False
        self._saved_here.add(identity)
        if wait:
            try:
                self.saved.append(_write(labels, identity, corrected, all_slices))
            except Exception as exc:  # noqa: BLE001 - reported, never raised into napari
                show_warning(_failure(layer.name, exc))
            return True
        from napari.qt.threading import create_worker

        worker = create_worker(_write, labels, identity, corrected, all_slices, _start_thread=False)
        name = layer.name
        self.pending += 1
        worker.returned.connect(self.saved.append)
        worker.errored.connect(lambda exc: show_warning(_failure(name, exc)))
        worker.finished.connect(self._one_done)
        worker.start()
        return True

    def _one_done(self) -> None:
        self.pending -= 1

    def identity_of(self, labels) -> str:
        """The image a Labels layer belongs to (see :func:`image_identity`)."""
        image = self.image_of(labels)
        return image_identity(image if image is not None else labels)

    def image_of(self, labels):
        """The image layer a Labels layer belongs to: the one it was segmented from, else
        the first image of the same shape; None if there is none."""
        viewer = self._viewer()
        if viewer is None:
            return None
        images = [layer for layer in viewer.layers if _is_image(layer)]
        named = plugin_meta(labels).image
        for image in images:
            if image.name == named:
                return image
        shape = tuple(int(s) for s in labels.data.shape)
        for image in images:
            if spatial_shape(image) == shape:
                return image
        return None

    # ------------------------------------------------------------------ restoring
    def offer(self, image) -> None:
        """Offer the newest autosave of ``image`` (once per image and session)."""
        from napari.utils.notifications import Notification, notification_manager

        from ..io.autosave import find_autosave

        identity = image_identity(image)
        if identity in self._offered or identity in self._saved_here:
            return
        self._offered.add(identity)
        try:
            found = find_autosave(identity)
        except OSError:
            return
        if found is None or tuple(found.shape) != spatial_shape(image):
            return
        self.offers.append((found, image))
        image_ref = weakref.ref(image)
        message = (
            f"Corrections of '{image.name}' (slice(s) "
            f"{format_slices(found.corrected_slices)}) were autosaved "
            f"{_local_time(found.saved)}. Restore them as a new labels layer?"
        )
        if found.image_changed:
            message += " The image file has changed since."
        notification_manager.dispatch(
            Notification(
                message,
                severity="info",
                actions=[("Restore", lambda _dialog: self.restore(found, image_ref()))],
            )
        )

    def restore(self, autosave, image):
        """Add ``autosave``'s labels as a new layer over ``image``; return the layer."""
        from napari.utils.notifications import show_warning

        viewer = self._viewer()
        if viewer is None or image is None or image not in viewer.layers:
            show_warning("The image of these autosaved corrections is no longer open.")
            return None
        try:
            labels = autosave.load_labels()
        except Exception as exc:  # noqa: BLE001 - a damaged file is a message, not a crash
            show_warning(f"Could not read the autosaved corrections ({exc}).")
            return None
        layer = viewer.add_labels(
            labels,
            name=f"{image.name} corrections (autosaved {_local_time(autosave.saved)})",
            scale=image.scale,
            translate=image.translate,
            metadata=new_layer_metadata(image, SEGMENTATION, restored_from=str(autosave.file)),
        )
        self._session.tracker(layer).mark(autosave.corrected_slices)
        return layer


def _failure(name: str, exc) -> str:
    return f"Could not autosave the corrections of '{name}': {exc}"


def _local_time(iso: str) -> str:
    try:
        when = _dt.datetime.fromisoformat(iso).astimezone()
    except ValueError:
        return iso
    return f"on {when:%Y-%m-%d at %H:%M}"
