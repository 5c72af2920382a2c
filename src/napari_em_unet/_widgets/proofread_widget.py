"""The Proofread widget: correct whole objects of a labels layer, not pixels.

* **Merge**: click two objects; the second gets the first one's id.
* **Split**: click an object; its part from the section on screen onwards gets a new id.
* **Delete small**: every object of fewer voxels than the threshold (counted in 3D) is set
  to 0 (background / membrane).

Each correction is planned in a napari thread worker by
:mod:`napari_em_unet.analysis.proofread` (reading the layer one slice at a time) and applied
on the main thread with ``Labels.data_setitem``: that records it in napari's own undo
history, so Ctrl+Z (or Undo here) takes it back like a brush stroke, and emits the paint
event the correction tracker listens to, so the edited sections count as corrected slices
for fine-tuning. Linked 3D ids are still one id per cell in every section, which is all
fine-tuning reads (0 = membrane, any other value = a cell).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox

from ..analysis.proofread import Edit, plan_delete_small, plan_merge, plan_split
from ..errors import EmUnetError
from .layer_meta import unwrap
from .layers import current_slice
from .object_view import ObjectViewControls, default_labels_layer
from .ordering import CallbackQueue, if_alive
from .scrolling import ScrollingDock
from .session import session_for
from .worker_results import Refused

if TYPE_CHECKING:
    import napari

IDLE, MERGE, SPLIT = "idle", "merge", "split"
INSTRUCTIONS = {
    IDLE: "Merge or split: press a button, then click objects in the viewer.",
    MERGE: "Merge: click the object to keep, then the one to merge into it (press Merge "
    "again to cancel).",
    SPLIT: "Split: go to the first section of the part to separate, then click the object.",
}


class ProofreadWidget(ScrollingDock, Container):
    """Merge, split and delete objects of a labels layer, undoably.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = unwrap(viewer)
        self._session = session_for(self._viewer)
        self.worker = None
        self.mode = IDLE
        self.picked: list[int] = []
        self.last_edit: Edit | None = None
        self._picking_layer = None
        self._mode_before = None
        self._reason_shown: str | None = None
        self._labels_layer = ComboBox(label="labels", choices=self._labels_choices)
        self._merge = PushButton(text="Merge: click two objects")
        self._split = PushButton(text="Split at this section: click an object")
        self._min_voxels = SpinBox(label="smaller than (voxels)", min=1, max=10**9, value=100)
        self._delete = PushButton(text="Delete small objects")
        self._undo = PushButton(text="Undo last edit (Ctrl+Z)")
        self.view_controls = ObjectViewControls(self._viewer)
        self._message = Label(value=INSTRUCTIONS[IDLE])
        super().__init__(
            widgets=[
                self._labels_layer,
                self._merge,
                self._split,
                self._min_voxels,
                self._delete,
                self._undo,
                self.view_controls,
                self._message,
            ],
            scrollable=True,
        )
        self._message.native.setWordWrap(True)
        self._labels_layer.changed.connect(self._on_labels_changed)
        self._merge.changed.connect(lambda *_: self.start_picking(MERGE))
        self._split.changed.connect(lambda *_: self.start_picking(SPLIT))
        self._delete.changed.connect(lambda *_: self.delete_small(self._min_voxels.value))
        self._undo.changed.connect(self.undo)
        for event in (
            self._viewer.layers.events.inserted,
            self._viewer.layers.events.removed,
            self._viewer.layers.events.moved,
        ):
            event.connect(self.reset_choices)
        self.reset_choices()
        chosen = default_labels_layer(self._viewer)
        if chosen is not None:
            self._labels_layer.value = chosen
        self._on_labels_changed()

    # ------------------------------------------------------------------ layer
    def _labels_choices(self, _widget=None):
        from napari.layers import Labels

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    @property
    def layer(self):
        return self._labels_layer.value

    def reset_choices(self, *_):
        super().reset_choices()
        self._update_state()

    def _on_labels_changed(self, *_) -> None:
        self.stop_picking()
        self.view_controls.set_layer(self.layer)
        self._update_state()

    def problem(self) -> str | None:
        """Why no correction can be made now, as a sentence; None when one can."""
        layer = self.layer
        if layer is None:
            return "Pick a labels layer (segment an image first, or open labels)."
        if getattr(layer, "multiscale", False) or layer.ndim not in (2, 3):
            return f"'{layer.name}' is not a 2D or Z x Y x X labels layer."
        if not _writable(layer.data):
            return (
                f"'{layer.name}' is read-only here (opened lazily from a file); save it, "
                "or segment into a new layer, to correct it."
            )
        return None

    @if_alive
    def _update_state(self, *_) -> None:
        if not hasattr(self, "_message"):
            return
        reason = self.problem()
        busy = self.worker is not None
        for button in (self._merge, self._split, self._delete, self._undo):
            button.enabled = reason is None and not busy
        self._split.enabled = self._split.enabled and self.layer.ndim == 3
        if reason:
            self._message.value = self._reason_shown = reason
        elif self._reason_shown and self._message.value == self._reason_shown:
            self._message.value = INSTRUCTIONS[self.mode]  # the obstacle is gone
            self._reason_shown = None

    # ------------------------------------------------------------------ picking by clicks
    def start_picking(self, mode: str) -> None:
        """Let the next click(s) in the viewer choose objects for ``mode`` (again: cancel)."""
        if self.mode == mode or self.problem():
            self.stop_picking()
            return
        self.stop_picking()
        layer = self.layer
        self.mode, self.picked = mode, []
        self._picking_layer = layer
        # Clicks must choose, not paint: pan/zoom mode until the choice is made.
        self._mode_before = layer.mode
        layer.mode = "pan_zoom"
        self._viewer.layers.selection.active = layer
        layer.mouse_drag_callbacks.append(self._on_click)
        self._message.value = INSTRUCTIONS[mode]

    def stop_picking(self) -> None:
        layer = self._picking_layer
        if layer is not None:
            if self._on_click in layer.mouse_drag_callbacks:
                layer.mouse_drag_callbacks.remove(self._on_click)
            if self._mode_before is not None and layer.mode == "pan_zoom":
                layer.mode = self._mode_before
        self._picking_layer, self._mode_before = None, None
        self.mode, self.picked = IDLE, []

    def _on_click(self, layer, event) -> None:
        if getattr(event, "button", 1) != 1:
            return
        value = layer.get_value(
            event.position,
            view_direction=event.view_direction,
            dims_displayed=list(event.dims_displayed),
            world=True,
        )
        self.pick(0 if value is None else int(value))

    def pick(self, label: int) -> None:
        """What a click on object ``label`` does in the current mode (0 = background)."""
        if self.mode == IDLE:
            return
        if label == 0:
            self._message.value = "That is background (0); click inside an object."
            return
        layer = self.layer
        layer.selected_label = label
        if self.mode == SPLIT:
            section = current_slice(self._viewer, layer)
            self.stop_picking()
            self.split(label, section)
            return
        self.picked.append(label)
        if len(self.picked) == 1:
            self._message.value = f"Merge: keep object {label}; now click the object to merge."
            return
        keep, absorb = self.picked
        self.stop_picking()
        self.merge(keep, absorb)

    # ------------------------------------------------------------------ corrections
    def merge(self, keep: int, absorb: int) -> None:
        """Give object ``absorb`` the id ``keep`` (in a worker; applied when planned)."""
        self._start(lambda data: plan_merge(data, keep, absorb), 1, f"merging {absorb} into {keep}")

    def split(self, label: int, section: int) -> None:
        """Give the part of ``label`` from ``section`` on a new id."""
        self._start(
            lambda data: plan_split(data, label, section),
            1,
            f"splitting {label} at section {section}",
        )

    def delete_small(self, min_voxels: int) -> None:
        """Set every object of fewer than ``min_voxels`` voxels to 0."""
        self._start(
            lambda data: plan_delete_small(data, int(min_voxels)),
            2,
            f"looking for objects smaller than {min_voxels} voxels",
        )

    def _start(self, make_plan, passes: int, doing: str) -> None:
        """Plan a correction in a worker (``passes`` reads of every slice), then apply it."""
        from napari.qt.threading import create_worker

        reason = self.problem()
        if reason or self.worker is not None:
            self._message.value = reason or "Wait for the correction in progress."
            return
        layer = self.layer
        depth = 1 if layer.ndim == 2 else int(layer.data.shape[0])
        # The layer's own array: the plan only reads it; _apply re-checks every voxel.
        worker = create_worker(
            _run_plan,
            make_plan(layer.data),
            _start_thread=False,
            _progress={"total": passes * depth, "desc": "Proofread"},
        )
        in_order = CallbackQueue()
        worker.returned.connect(in_order.wrap(lambda result: self._on_planned(layer, result)))
        worker.errored.connect(in_order.wrap(self._on_errored))
        worker.finished.connect(in_order.wrap(self._on_finished))
        self.worker = worker
        self._message.value = doing + "..."
        self._update_state()
        worker.start()

    def _on_planned(self, layer, result) -> None:
        if isinstance(result, Refused):
            self._on_errored(result)
        else:
            self._apply(layer, result)

    def _apply(self, layer, edit: Edit) -> None:
        """Write a planned edit through napari's history (undo, correction tracking)."""
        if layer not in self._viewer.layers:
            return
        indices = edit.indices(layer.ndim)
        if len(indices[0]):
            # Voxels painted over while the plan was made are the user's newer word: keep
            # them, and change only those that still hold what the plan saw.
            still = np.asarray(layer.data[indices]) == edit.old_values()
            indices = tuple(axis[still] for axis in indices)
            layer.data_setitem(indices, edit.value)
        self.last_edit = edit
        if layer.ndim == 3 and edit.kind == "split":
            layer.selected_label = edit.value
        if _alive(self):
            self._message.value = edit.summary[0].upper() + edit.summary[1:] + "."

    def _on_errored(self, exc) -> None:
        if isinstance(exc, Refused):
            exc = EmUnetError(exc.message)
        text = str(exc) if isinstance(exc, EmUnetError) else f"{type(exc).__name__}: {exc}"
        if _alive(self):
            self._message.value = f"Not changed: {text}"

    def _on_finished(self) -> None:
        self.worker = None
        self._update_state()

    def undo(self, *_) -> None:
        """Undo the layer's last edit (napari's history: a correction here or a stroke)."""
        layer = self.layer
        if layer is not None:
            layer.undo()
            self._message.value = "Undone (napari's history of this layer)."


def _run_plan(plan):
    """Run a proofreading plan in the worker; yields progress, returns the Edit.

    A request the data cannot satisfy (an object that is not there...) comes back as a
    :class:`Refused` record, to be told in one sentence, rather than raised: napari would
    show a raised error as a failed task with a traceback.
    """
    try:
        return (yield from plan)
    except EmUnetError as exc:
        return Refused(str(exc))


def _writable(data) -> bool:
    """Whether corrections can be written into a layer's data (numpy or a zarr array)."""
    if isinstance(data, np.ndarray):
        return bool(data.flags.writeable)
    return type(data).__module__.startswith("zarr") and not getattr(data, "read_only", False)


def _alive(widget) -> bool:
    try:
        widget.native.objectName()
    except (RuntimeError, AttributeError):
        return False
    return True
