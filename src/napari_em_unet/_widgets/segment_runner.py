"""Run a segmentation in the background and fill layers with the results as they arrive.

Used by the Segment widget and by the Fine-tune widget's "re-segment the rest". A napari
thread worker (:func:`.engine.segment_remote`) reads the requested slices and exchanges
them with the TensorFlow process; everything that touches a layer happens here, in
callbacks napari runs on the main thread. A slice the user corrected is never written: the
check is made when each result arrives, so a slice corrected while the run is going on is
also kept.

A large volume gets its output layers on disk: when the image is lazy (dask, zarr) or the
result would not comfortably fit in memory, the labels (and probability) layers are backed
by zarr stores in the plugin's data folder (:func:`.layers.create_layer_store`), written one
slice at a time, and napari reads only the slices it shows.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable

import numpy as np
from psygnal import Signal

from ..engine.client import segment_remote
from ..engine.protocol import JobFailed, ModelReady, SegmentRequest, SegmentSummary, SliceDone
from ..slices import format_slices
from .layer_meta import (
    PROBABILITY,
    SEGMENTATION,
    is_probability_layer,
    new_layer_metadata,
    pixel_size_of,
    plugin_meta,
    store_of,
    unwrap,
    update_plugin_meta,
)
from .layers import (
    create_layer_store,
    current_slice,
    needs_zarr,
    new_store_path,
    spatial_shape,
)
from .ordering import CallbackQueue
from .session import PluginSession


class SegmentRunner:
    """One segmentation at a time, its progress bar, and the layers it writes.

    Parameters
    ----------
    viewer : napari.Viewer
    session : PluginSession
    """

    started = Signal()
    slice_written = Signal(int)
    """A result was written into the labels layer (slice index)."""
    finished = Signal(object)
    """The run ended: a SegmentSummary, or None when stopped or failed."""

    def __init__(self, viewer, session: PluginSession):
        self._viewer = unwrap(viewer)
        self._session = session
        self.worker = None
        self.labels_layer = None
        self.probability_layer = None
        self.pressed_at: float | None = None
        self.first_result_at: float | None = None
        self.model_ready_at: float | None = None
        self._pbar = None
        self._protect: frozenset[int] = frozenset()
        self._skipped: set[int] = set()
        self._silent: list[int] = []
        self._written: list[int] = []
        self._summary = None
        self._write_failed: str | None = None
        self._status: Callable[[str], None] = lambda text: None
        self._stop = threading.Event()
        self._engine = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(
        self,
        request: SegmentRequest,
        *,
        image_layer,
        labels_layer=None,
        init_labels=None,
        protect=frozenset(),
        model_name: str = "",
        name: str | None = None,
        status: Callable[[str], None] | None = None,
    ) -> bool:
        """Start segmenting.

        Parameters
        ----------
        request : SegmentRequest
        image_layer : napari.layers.Image
            Where the result is placed (scale, translate, name).
        labels_layer : napari.layers.Labels, optional
            A layer made by this plugin to fill in (its corrected slices are kept);
            by default a new layer is added.
        init_labels : array-like, optional
            Initial content of the new layer (e.g. the user's labels, which are copied,
            one slice at a time when the new layer is on disk).
        protect : set of int
            Slices never to write, in addition to the layer's corrected ones.
        model_name : str
            Recorded in the new layer's metadata.
        name : str, optional
            Name of the new layer.
        status : callable, optional
            Receives short progress sentences for the widget.

        Returns
        -------
        bool
            False when the output layers could not be made (an on-disk store that cannot
            be written): the user is told why, no layer is added, and :attr:`finished`
            is emitted with None once the caller's own code has run.
        """
        from napari.utils import progress

        if self.running:
            raise RuntimeError("a segmentation is already running")
        self._reset(status, protect)
        try:
            self._make_layers(request, image_layer, labels_layer, init_labels, model_name, name)
        except OSError as exc:
            self._refuse(exc)
            return False
        if labels_layer is None and init_labels is not None and protect:
            # Slices copied from the user's layer are theirs: later runs must keep them too.
            self._session.tracker(self.labels_layer).mark(protect)
        update_plugin_meta(self.labels_layer, model=model_name, output=request.output)
        total = len(request.slices)
        self._pbar = progress(total=total + 1, desc="Segment: loading model")
        store = store_of(self.labels_layer)
        self._status(
            "loading the model (TensorFlow starts on first use)..."
            + (f" The labels are stored on disk in {store}." if store else "")
        )
        self._launch(request)
        return True

    def _reset(self, status, protect) -> None:
        """Forget the previous run: timings, written and skipped slices, failures."""
        self.pressed_at = time.perf_counter()
        self.first_result_at = self.model_ready_at = None
        self._status = status or (lambda text: None)
        self._protect = frozenset(protect)
        self._skipped, self._written, self._summary = set(), [], None
        self._silent = []
        self._write_failed = None

    def _launch(self, request: SegmentRequest) -> None:
        """Run the job in the engine's child process from a worker thread; its records
        reach the main thread in the order they were sent."""
        from napari.qt.threading import create_worker

        self._stop = threading.Event()
        engine = self._session.segment_engine()
        self._engine = engine
        worker = create_worker(segment_remote, engine, request, self._stop, _start_thread=False)
        in_order = CallbackQueue()
        worker.yielded.connect(in_order.wrap(self._on_yielded))
        worker.returned.connect(in_order.wrap(self._on_returned))
        worker.aborted.connect(in_order.wrap(self._on_aborted))
        worker.finished.connect(in_order.wrap(self._on_finished))
        self.worker = worker
        self.started.emit()
        worker.start()

    def stop(self) -> None:
        """Stop after the slice in progress (results so far are kept)."""
        if self.worker is not None:
            self._status("stopping after the current slice...")
            self._stop.set()
            self._engine.stop()

    # ------------------------------------------------------------------ layers
    def _make_layers(self, request, image_layer, labels_layer, init, model_name, name):
        """Set :attr:`labels_layer` and :attr:`probability_layer`, adding what is missing.

        All or nothing: if the probability's store cannot be made, a labels layer added
        here is removed again, with its store, before the OSError propagates.
        """
        # Cleared first: after a failure the widgets must not take the last run's layers
        # for this run's.
        self.labels_layer = self.probability_layer = None
        self.labels_layer = (
            unwrap(labels_layer)
            if labels_layer is not None
            else self._new_labels_layer(request, image_layer, init, model_name, name)
        )
        if not request.probability:
            return
        try:
            self.probability_layer = self._probability_layer(request, image_layer)
        except OSError:
            if labels_layer is None:
                store = store_of(self.labels_layer)
                self._viewer.layers.remove(self.labels_layer)
                if store is not None:
                    shutil.rmtree(store, ignore_errors=True)
                self.labels_layer = None
            raise

    def _refuse(self, exc: OSError) -> None:
        from napari.utils.notifications import show_error
        from qtpy.QtCore import QTimer

        where = exc.filename or new_store_path("layer").parent
        reason = exc.strerror or str(exc) or type(exc).__name__
        text = (
            f"Not started: the results of this large volume go to disk, and {where} "
            f"cannot be written ({reason}); free some space, or set NAPARI_EM_UNET_HOME "
            "to a writable folder."
        )
        show_error(text)
        self._status(text)
        # Callers set up their buttons after start() returns; announcing the end on the
        # next turn of the event loop lets them reset, as after any run.
        QTimer.singleShot(0, lambda: self.finished.emit(None))

    def _data(self, name, image_layer, shape, dtype, init=None):
        """A new layer's data: in memory, or in a zarr store on disk for a large volume.

        Returns the data and the store's path (None in memory).
        """
        if not needs_zarr(image_layer.data, shape, dtype) and (
            init is None or isinstance(init, np.ndarray)
        ):
            data = np.zeros(shape, dtype=dtype) if init is None else np.array(init, dtype=dtype)
            return data, None
        array, path = create_layer_store(
            name, shape, dtype, init=init, pixel_size_nm=pixel_size_of(image_layer)
        )
        return array, path

    def _new_labels_layer(self, request, image_layer, init, model_name, name):
        shape = spatial_shape(image_layer)
        dtype = np.uint32 if request.output == "instances" else np.uint8
        name = name or f"{image_layer.name} segmentation"
        data, store = self._data(name, image_layer, shape, dtype, init)
        metadata = new_layer_metadata(
            image_layer,
            SEGMENTATION,
            model=model_name,
            output=request.output,
            store=str(store) if store else None,
        )
        return self._viewer.add_labels(
            data,
            name=name,
            scale=image_layer.scale,
            translate=image_layer.translate,
            metadata=metadata,
        )

    def _probability_layer(self, request, image_layer):
        shape = spatial_shape(image_layer)
        name = f"{self.labels_layer.name} probability"
        for layer in self._viewer.layers:
            if (
                layer.name == name
                and is_probability_layer(layer)
                and tuple(layer.data.shape) == shape
            ):
                return layer
        data, store = self._data(name, image_layer, shape, np.float32)
        metadata = new_layer_metadata(image_layer, PROBABILITY, store=str(store) if store else None)
        return self._viewer.add_image(
            data,
            name=name,
            colormap="magma",
            contrast_limits=(0.0, 1.0),
            opacity=0.5,
            blending="additive",
            scale=image_layer.scale,
            translate=image_layer.translate,
            metadata=metadata,
        )

    def _alive(self, layer) -> bool:
        return layer is not None and layer in self._viewer.layers

    def _write(self, layer, index: int, values: np.ndarray) -> None:
        if layer.ndim >= 3:
            layer.data[index] = values
        else:
            layer.data[...] = values
        # A redraw costs tens of ms with software OpenGL; a slice that is not on screen
        # needs none (napari reads it from layer.data when the user scrolls to it).
        if (
            layer.ndim < 3
            or self._viewer.dims.ndisplay == 3
            or index == current_slice(self._viewer, layer)
        ):
            layer.refresh()

    # ------------------------------------------------------------------ worker callbacks
    def _on_yielded(self, record) -> None:
        if isinstance(record, ModelReady):
            self.model_ready_at = time.perf_counter()
            self._pbar.set_description(f"Segment with {record.name}")
            self._pbar.update(1)
            self._status(f"model {record.name} ready; segmenting...")
            return
        if not isinstance(record, SliceDone):
            return
        self._pbar.update(1)
        if record.no_signal:
            self._silent.append(record.index)
        labels = self.labels_layer
        if self._write_failed:
            return  # slices already in flight when the disk gave up
        if not self._alive(labels):
            self._status("the output layer was deleted; stopping")
            self.stop()
            return
        protected = self._protect | self._session.corrected(labels)
        try:
            if record.index in protected:
                self._skipped.add(record.index)
            else:
                self._write(labels, record.index, record.result)
                self._written.append(record.index)
                if self.first_result_at is None:
                    self.first_result_at = time.perf_counter()
                self.slice_written.emit(record.index)
            if (
                self.probability_layer is not None
                and record.probability is not None
                and self._alive(self.probability_layer)
            ):
                self._write(self.probability_layer, record.index, record.probability)
        except OSError as exc:  # an on-disk layer: disk full, store deleted or unmounted
            self._on_write_failed(record.index, exc)
            return
        scores = dict(plugin_meta(labels).uncertainty)
        scores[record.index] = record.uncertainty
        update_plugin_meta(labels, uncertainty=scores)
        self._status(f"slice {record.index}: {record.done}/{record.total} done")

    def _on_write_failed(self, index: int, exc: OSError) -> None:
        from napari.utils.notifications import show_error

        reason = exc.strerror or str(exc) or type(exc).__name__
        where = store_of(self.labels_layer) or "the layer"
        self._write_failed = (
            f"Stopped: slice {index} could not be written to {where} "
            f"({reason}); the {len(self._written)} slice(s) written before "
            "are kept."
        )
        show_error(self._write_failed)
        self._status(self._write_failed)
        self.stop()

    def _on_returned(self, result) -> None:
        from napari.utils.notifications import show_error, show_info

        if isinstance(result, JobFailed):
            show_error(result.message)
            self._status(result.message)
            return
        if isinstance(result, SegmentSummary):
            self._summary = result
            if self._write_failed:
                self._status(self._write_failed)
                return
            name = self.labels_layer.name
            if result.stopped:
                text = (
                    f"Stopped: {len(self._written)} slice(s) segmented; the results so "
                    f"far are kept in '{name}'"
                )
            else:
                text = f"Segmented {len(self._written)} slice(s) into '{name}'"
            if self._skipped:
                text += f"; kept your corrections on slice(s) {format_slices(self._skipped)}"
            store = store_of(self.labels_layer)
            if store is not None:
                text += f"; it is stored on disk in {store}"
            show_info(text + ".")
            self._status(text + ".")
            self._warn_no_signal()

    def _warn_no_signal(self) -> None:
        from napari.utils.notifications import show_warning

        if self._silent:
            show_warning(
                f"Slice(s) {format_slices(self._silent)} have no signal (black, "
                "constant or without a finite pixel): no cells there."
            )

    def _on_aborted(self) -> None:
        # napari quit the worker (window closing, or cancelled from the activity dock): the
        # child is in the middle of a job nobody will read, so end it.
        self._engine.kill()
        self._status("cancelled")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self.worker = None
        self.finished.emit(self._summary)
