"""Linking per-slice labels into 3D objects from napari: the Segment widget's option.

The per-slice labels the U-Net gives (1..n on every slice) become one id per object through
all its sections with :func:`napari_em_unet.segmentation.linking.link_into` (pure numpy,
no TensorFlow), run in a napari thread worker that reads the labels one section at a time
and writes the 3D ids into a new array (in memory, or a zarr store on disk for a layer
that lives there). Only when it is complete does the main thread put it into the layer, so
the viewer never shows a half-linked volume.

Whose layer is written follows the plugin's rule (docs/plugin.md, decision 3): a layer the
plugin made gets the 3D ids in place (its correction tracker, and so the corrected slices,
stay with it); any other labels layer is left as it is and the result opens as a new
layer. A layer edited while the linking ran is not overwritten either: the result then
opens as a new layer too.
"""

from __future__ import annotations

import shutil

import numpy as np
from magicgui.widgets import CheckBox, Container, FloatSpinBox, Label, PushButton, SpinBox
from psygnal import Signal

from ..errors import EmUnetError
from .layer_meta import (
    SEGMENTATION,
    is_plugin_layer,
    pixel_size_of,
    plugin_meta,
    store_of,
    unwrap,
    update_plugin_meta,
)
from .layers import create_layer_store
from .measure_widget import voxel_size_of
from .object_view import ObjectViewControls
from .ordering import CallbackQueue, if_alive
from .worker_results import Refused

DEFAULT_BIAS = 0.3


def linking_module():
    """The linking core, or None when this installation has none."""
    try:
        from ..segmentation import linking
    except ImportError:
        return None
    return linking


def default_bias() -> float:
    module = linking_module()
    return float(getattr(module.LinkParams(), "bias", DEFAULT_BIAS)) if module else DEFAULT_BIAS


class LinkPanel(Container):
    """ "Link slices into 3D objects", its two controls, and the 3D view button.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    finished = Signal(object)
    """A linking run ended: the layer holding the 3D objects, or None."""

    def __init__(self, viewer):
        self._viewer = unwrap(viewer)
        self.worker = None
        self.result_layer = None
        self._job: _LinkJob | None = None
        self.wanted = CheckBox(
            text="link slices into 3D objects",
            tooltip=(
                "After segmenting, give each cell one id through all its sections (uses the "
                "membrane probability map when it is added)."
            ),
        )
        self.bias = FloatSpinBox(
            label="join bias",
            min=0.05,
            max=0.95,
            step=0.05,
            value=default_bias(),
            tooltip=(
                "Higher joins more (fewer objects cut in two, more merged); lower splits more."
            ),
        )
        self.min_sections = SpinBox(
            label="min. sections",
            min=1,
            max=100000,
            value=1,
            tooltip="Objects in fewer sections are removed.",
        )
        self.link_now = PushButton(text="Link the selected labels layer now")
        self.view = ObjectViewControls(self._viewer)
        self.status = Label(value="")
        super().__init__(
            widgets=[
                self.wanted,
                self.bias,
                self.min_sections,
                self.link_now,
                self.view,
                self.status,
            ],
            labels=True,
        )
        self.status.native.setWordWrap(True)
        self.wanted.changed.connect(self._update_state)
        self.link_now.changed.connect(self._on_link_now)
        self._update_state()

    @property
    def running(self) -> bool:
        return self.worker is not None

    def problem(self) -> str | None:
        """Why linking is unavailable (None when it is)."""
        if linking_module() is None:
            return "3D linking is not part of this installation."
        return None

    @if_alive
    def _update_state(self, *_) -> None:
        reason = self.problem()
        if reason:
            self.wanted.value = False
        for widget in (self.wanted, self.link_now):
            widget.enabled = reason is None and not self.running
        # Compact until asked for: the Segment widget is tall enough already.
        for widget in (self.bias, self.min_sections, self.link_now):
            widget.visible = bool(self.wanted.value)
        if reason:
            self.status.value = reason

    def _on_link_now(self, *_) -> None:
        from napari.layers import Labels

        active = self._viewer.layers.selection.active
        if not isinstance(active, Labels):
            self.status.value = "Select a labels layer in the layer list first."
            return
        self.link(active)

    # ------------------------------------------------------------------ running
    def link(self, layer, probability_layer=None) -> bool:
        """Link ``layer``'s per-slice labels into 3D objects in the background.

        Returns False (with the reason in :attr:`status`) when it cannot start.
        """
        from napari.qt.threading import create_worker

        layer = unwrap(layer)
        try:
            self._refuse_if_impossible(layer)
            params = linking_module().LinkParams(
                bias=float(self.bias.value), min_sections=int(self.min_sections.value)
            )
            job = self._prepare(layer, probability_layer, params)
        except EmUnetError as exc:
            self.status.value = str(exc)
            return False
        self._job = job
        worker = create_worker(
            _link_job,
            job.source,
            job.target,
            job.probability,
            job.voxel_size_nm,
            params,
            _start_thread=False,
        )
        in_order = CallbackQueue()
        worker.yielded.connect(in_order.wrap(self._on_progress))
        worker.returned.connect(in_order.wrap(self._on_returned))
        worker.finished.connect(in_order.wrap(self._on_finished))
        layer.events.paint.connect(job.note_edit)
        self.worker = worker
        self.status.value = f"linking '{layer.name}' into 3D objects..."
        self._update_state()
        worker.start()
        return True

    def _refuse_if_impossible(self, layer) -> None:
        reason = (
            self.problem()
            or _unlinkable(layer)
            or ("A linking run is in progress; wait for it to end." if self.running else None)
        )
        if reason:
            raise EmUnetError(reason)

    def _prepare(self, layer, probability_layer, params):
        """The job's arrays: the layer's own labels (read only), the target, the map."""
        shape = tuple(layer.data.shape)
        store = None
        if isinstance(layer.data, np.ndarray):
            target = np.zeros(shape, dtype=np.uint32)
        else:  # a zarr-backed (large) layer: the 3D ids go to a new store beside it
            try:
                target, store = create_layer_store(
                    f"{layer.name} 3D", shape, np.uint32, pixel_size_nm=pixel_size_of(layer)
                )
            except OSError as exc:
                raise EmUnetError(
                    f"Not linked: the 3D labels of this large volume go to "
                    f"disk, and that failed ({exc.strerror or exc})."
                ) from None
        probability = None
        if (
            probability_layer is not None
            and probability_layer in self._viewer.layers
            and tuple(probability_layer.data.shape) == shape
        ):
            probability = probability_layer.data
        voxel = voxel_size_of(layer, self._viewer)
        # The layer's own array, not a copy: the job only reads it, and an edit made
        # meanwhile keeps the result out of the layer (see _LinkJob.deliver).
        return _LinkJob(
            layer,
            layer.data,
            target,
            store,
            probability,
            voxel if all(voxel) else None,
            {"bias": params.bias, "min_sections": params.min_sections},
        )

    def _on_progress(self, record) -> None:
        from napari.utils import progress

        job = self._job
        if job.pbar is None:
            job.pbar = progress(total=int(record.total), desc="Link into 3D objects")
        job.pbar.update(int(record.done) - job.pbar.n)

    def _on_returned(self, result) -> None:
        job = self._job
        if isinstance(result, Refused):
            job.discard()
            self._say(f"Not linked: {result.message}")
            return
        self.result_layer = job.deliver(self._viewer, objects=result)

    def _on_finished(self) -> None:
        job, self._job, self.worker = self._job, None, None
        if job is not None:
            job.close()
            if job.delivered is None:
                job.discard()
            elif job.message:
                self._say(job.message)
        self._update_state()
        self.finished.emit(None if job is None else job.delivered)

    @if_alive
    def _say(self, text: str) -> None:
        self.status.value = text


def _unlinkable(layer) -> str | None:
    if getattr(layer, "multiscale", False) or layer.ndim != 3 or layer.data.shape[0] < 2:
        return f"'{layer.name}' is not a stack of 2 or more slices; there is nothing to link."
    if plugin_meta(layer).output != "instances":
        return f"'{layer.name}' holds membranes, not cells; segment with output 'instances'."
    return None


def _link_job(source, target, probability, voxel_size_nm, params):
    """The worker: link, then count the objects written (one pass, a few numbers each)."""
    linking = linking_module()
    try:
        yield from linking.link_into(
            source, target, probability=probability, voxel_size_nm=voxel_size_nm, params=params
        )
    except EmUnetError as exc:
        return Refused(str(exc))
    ids = np.empty(0, dtype=np.uint64)
    for z in range(target.shape[0]):
        ids = np.union1d(ids, np.unique(np.asarray(target[z])))
    return int(np.count_nonzero(ids))


class _LinkJob:
    """One linking run: its arrays, whether the layer was edited meanwhile, the outcome."""

    def __init__(self, layer, source, target, store, probability, voxel_size_nm, params: dict):
        self.layer, self.source, self.target, self.store = layer, source, target, store
        self.probability, self.voxel_size_nm, self.params = probability, voxel_size_nm, params
        self.edited = False
        self.pbar = None
        self.delivered = None
        self.message = ""

    def note_edit(self, *_) -> None:
        self.edited = True

    def close(self) -> None:
        self.layer.events.paint.disconnect(self.note_edit)
        if self.pbar is not None:
            self.pbar.close()

    def discard(self) -> None:
        """Remove the on-disk target of a run that delivered nothing."""
        if self.store is not None and self.delivered is None:
            shutil.rmtree(self.store, ignore_errors=True)

    def deliver(self, viewer, objects: int):
        """Put the 3D labels where they belong (see the module docstring); return the layer."""
        layer = self.layer
        in_place = layer in viewer.layers and is_plugin_layer(layer) and not self.edited
        linked = {**self.params, "objects": objects}
        if in_place:
            old_store = store_of(layer)
            update_plugin_meta(
                layer, linked=linked, store=None if self.store is None else str(self.store)
            )
            layer.data = self.target
            if old_store is not None and self.store is not None:
                shutil.rmtree(old_store, ignore_errors=True)  # the per-slice labels' store
            self.delivered = layer
            self.message = (
                f"Linked '{layer.name}' into {objects} 3D objects. '3D view' shows them in 3D."
            )
            return layer
        self.delivered = self._new_layer(viewer, linked)
        why = (
            "it was edited while linking ran"
            if self.edited
            else "it is not a layer this plugin made"
        )
        self.message = (
            f"Linked into {objects} 3D objects in the new layer "
            f"'{self.delivered.name}' ('{layer.name}' is unchanged: {why})."
        )
        return self.delivered

    def _new_layer(self, viewer, linked: dict):
        layer = self.layer
        metadata = {
            key: value
            for key, value in (layer.metadata or {}).items()
            if key in ("pixel_size_nm", "voxel_size_nm")
        }
        new = viewer.add_labels(
            self.target,
            name=f"{layer.name} 3D",
            scale=layer.scale,
            translate=layer.translate,
            metadata=metadata,
        )
        update_plugin_meta(
            new,
            role=SEGMENTATION,
            output="instances",
            linked=linked,
            image=plugin_meta(layer).image,
            store=None if self.store is None else str(self.store),
        )
        return new
