"""The Measure widget: one row per object of a labels layer, as ``em-unet measure`` writes.

The measurements come from :func:`napari_em_unet.analysis.measure.measure_objects`, run in a
napari thread worker that reads the layer one slice at a time (so a zarr-backed layer is
never loaded whole). The result is shown in a sortable table (clicking a row selects the
object and brings it into view), can be exported as CSV, and is written to the layer's
``features`` so that napari shows an object's values when the mouse is over it. After an
edit of the measured layer (a brush stroke, a merge, a split, new data) the table is
measured again, a moment after the last edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, FloatSpinBox, Label, PushButton

from ..analysis.measure import ObjectTable, measure_objects, write_csv
from ..errors import EmUnetError
from .layer_meta import is_probability_layer, pixel_size_of, plugin_meta, unwrap
from .object_table import ObjectTableView
from .object_view import ObjectViewControls, default_labels_layer, show_object
from .ordering import CallbackQueue, if_alive
from .scrolling import ScrollingDock
from .session import session_for
from .worker_results import Refused

if TYPE_CHECKING:
    import napari

REFRESH_DELAY_MS = 800
"""Wait this long after the last edit before measuring again (a stroke is many edits)."""


def voxel_size_of(layer, viewer=None) -> tuple[float | None, float | None, float | None]:
    """``(Z, Y, X)`` in nm: a layer's scale when it is in nm (the reader and the samples set
    it from the file), else its recorded ``voxel_size_nm``, else its pixel size for Y and X.

    A segmentation made by the plugin takes its image's scale but not its units; with
    ``viewer``, the image it was made from (named in its metadata) supplies them.
    """
    meta = getattr(layer, "metadata", None) or {}
    found = _scale_in_nm(layer) or _three_sizes(meta.get("voxel_size_nm"))
    if found is None and viewer is not None and plugin_meta(layer).image:
        image = next(
            (
                other
                for other in viewer.layers
                if other is not layer and other.name == plugin_meta(layer).image
            ),
            None,
        )
        found = _scale_in_nm(image) if image is not None else None
    if found is not None:
        return found
    xy = pixel_size_of(layer)
    return (None, xy, xy)


def _scale_in_nm(layer) -> tuple[float | None, ...] | None:
    """The layer's (Z, Y, X) scale when its units are nanometres (Z None for 2D)."""
    units = tuple(str(unit) for unit in (getattr(layer, "units", None) or ()))
    ndim = 3 if layer.ndim >= 3 else 2
    if len(units) < ndim or any(unit not in ("nanometer", "nm") for unit in units[-ndim:]):
        return None
    scale = [float(v) for v in layer.scale[-ndim:]]
    return tuple(scale) if ndim == 3 else (None, *scale)


def _three_sizes(value) -> tuple[float | None, ...] | None:
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None
    try:
        return tuple(float(v) if v else None for v in value)
    except (TypeError, ValueError):
        return None


class MeasureWidget(ScrollingDock, Container):
    """Measure the objects of a labels layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = unwrap(viewer)
        session_for(self._viewer)  # start tracking corrections even if opened first
        self.worker = None
        self.result: ObjectTable | None = None
        self.measured_layer = None
        self._worker_layer = None
        self._again = False
        self._labels_layer = ComboBox(label="labels", choices=self._labels_choices)
        self._image = ComboBox(
            label="image (optional)",
            choices=self._image_choices,
            nullable=True,
            tooltip="Adds the mean_intensity column.",
        )
        voxel_row = self._make_voxel_row()
        self._run = PushButton(text="Measure")
        self._export = PushButton(text="Export CSV...", enabled=False)
        self._message = Label(value="")
        self.view_controls = ObjectViewControls(self._viewer)
        super().__init__(
            widgets=[
                self._labels_layer,
                self._image,
                voxel_row,
                self._run,
                self._message,
                self.view_controls,
                self._export,
            ],
            scrollable=True,
        )  # a dock that scrolls on a small screen
        self.table = ObjectTableView()
        self.form.layout().addWidget(self.table)
        self._message.native.setWordWrap(True)
        self._refresh = _single_shot(REFRESH_DELAY_MS, self._refresh_after_edit)

        self._connect()
        self.reset_choices()
        self._pick_default_layer()
        self._on_labels_changed()

    def _make_voxel_row(self) -> Container:
        self._voxel = [
            FloatSpinBox(
                min=0.0,
                max=1e6,
                step=0.1,
                tooltip=(f"voxel size along {axis} in nm; 0 = unknown (volume_um3 stays empty)"),
            )
            for axis in "ZYX"
        ]
        return Container(
            widgets=self._voxel, layout="horizontal", labels=False, label="voxel Z, Y, X (nm)"
        )

    def _connect(self) -> None:
        self._labels_layer.changed.connect(self._on_labels_changed)
        self._image.changed.connect(self._update_state)
        self._run.changed.connect(self._on_run)
        self._export.changed.connect(self._on_export)
        self.table.object_clicked.connect(self.select_object)
        for event in (
            self._viewer.layers.events.inserted,
            self._viewer.layers.events.removed,
            self._viewer.layers.events.moved,
        ):
            event.connect(self.reset_choices)

    # ------------------------------------------------------------------ choices
    def _labels_choices(self, _widget=None):
        from napari.layers import Labels

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and not is_probability_layer(layer)
        ]

    def reset_choices(self, *_):
        super().reset_choices()
        self._update_state()

    def _pick_default_layer(self) -> None:
        chosen = default_labels_layer(self._viewer)
        if chosen is not None:
            self._labels_layer.value = chosen

    def _on_labels_changed(self, *_) -> None:
        labels = self._labels_layer.value
        self.view_controls.set_layer(labels)
        if labels is not None:
            for box, value in zip(self._voxel, voxel_size_of(labels, self._viewer), strict=True):
                box.value = value or 0.0
            image_name = plugin_meta(labels).image
            for _, image in self._image_choices():
                if image.name == image_name:
                    self._image.value = image
        self._update_state()

    # ------------------------------------------------------------------ validation
    def problem(self) -> str | None:
        """Why Measure cannot start now, as a sentence for the user; None when it can."""
        labels, image = self._labels_layer.value, self._image.value
        if labels is None:
            return "Pick a labels layer (segment an image first, or open labels)."
        if getattr(labels, "multiscale", False):
            return f"'{labels.name}' is multiscale; open its full-resolution level as a layer."
        if labels.ndim not in (2, 3):
            return f"'{labels.name}' has {labels.ndim} dimensions; 2D or Z x Y x X is needed."
        if image is not None and _spatial(image) != tuple(labels.data.shape):
            return (
                f"'{image.name}' is {' x '.join(map(str, _spatial(image)))} but "
                f"'{labels.name}' is {' x '.join(map(str, labels.data.shape))}; pick an "
                "image of the same shape, or none."
            )
        return None

    @if_alive
    def _update_state(self, *_) -> None:
        if not hasattr(self, "_export") or self.worker is not None:
            return
        reason = self.problem()
        self._run.enabled = reason is None
        if reason or not self.result:
            self._message.value = reason or ""

    def voxel_size(self) -> tuple[float, float, float] | None:
        """The voxel size typed in, or None when any axis is 0 (unknown)."""
        values = tuple(float(box.value) for box in self._voxel)
        return values if all(v > 0 for v in values) else None

    # ------------------------------------------------------------------ measuring
    def _on_run(self, *_) -> None:
        if self.worker is not None:
            self.worker.quit()
            return
        self.run()

    def run(self) -> None:
        """Measure the chosen layer in a worker thread (what pressing Measure does)."""
        from napari.qt.threading import create_worker

        reason = self.problem()
        if reason:
            self._message.value = reason
            return
        labels, image = self._labels_layer.value, self._image.value
        pixels = None if image is None else _grey_source(image)
        # The layer's own array, not a copy: the worker only reads it, one slice at a time;
        # an edit made meanwhile triggers another measurement once this one ends.
        worker = create_worker(
            _measure_job,
            labels.data,
            pixels,
            self.voxel_size(),
            _start_thread=False,
            _progress={"total": _depth(labels), "desc": "Measure"},
        )
        in_order = CallbackQueue()
        worker.returned.connect(in_order.wrap(self._on_returned))
        worker.errored.connect(in_order.wrap(self._on_errored))
        worker.finished.connect(in_order.wrap(self._on_finished))
        self.worker, self._worker_layer = worker, labels
        self._run.text = "Stop"
        self._message.value = f"measuring '{labels.name}'..."
        worker.start()

    def _on_returned(self, table) -> None:
        if isinstance(table, Refused):
            self._on_errored(table)
            return
        layer = self._worker_layer
        if layer not in self._viewer.layers:
            return
        self.result = table
        self._watch(layer)
        layer.features = features_of(table)
        if _alive(self):
            self.table.show_table(table)
            volume = "" if table.voxel_size_nm else " (volume_um3 empty: enter the voxel size)"
            self._message.value = f"'{layer.name}': {len(table)} objects{volume}."

    def _on_errored(self, exc) -> None:
        if isinstance(exc, Refused):
            exc = EmUnetError(exc.message)
        # napari shows the notification; the widget says it in place too, in one line.
        text = str(exc) if isinstance(exc, EmUnetError) else f"{type(exc).__name__}: {exc}"
        if _alive(self):
            self._message.value = f"Not measured: {text}"

    def _on_finished(self) -> None:
        self.worker = None
        if not _alive(self):
            return
        self._run.text = "Measure"
        self._export.enabled = self.result is not None
        self._update_state()
        if self._again:
            self._again = False
            self.run()

    # ------------------------------------------------------------------ after edits
    def _watch(self, layer) -> None:
        """Measure ``layer`` again after its edits (and stop following the previous one)."""
        if layer is self.measured_layer:
            return
        if self.measured_layer is not None:
            self.measured_layer.events.paint.disconnect(self._on_edit)
            self.measured_layer.events.data.disconnect(self._on_edit)
        self.measured_layer = layer
        layer.events.paint.connect(self._on_edit)
        layer.events.data.connect(self._on_edit)

    def _on_edit(self, *_) -> None:
        if _alive(self):
            self._refresh.start()

    def _refresh_after_edit(self) -> None:
        layer = self.measured_layer
        if not _alive(self) or layer is None or layer not in self._viewer.layers:
            return
        if self.worker is not None:
            self._again = True  # the running measurement may have missed the edit
            return
        if self._labels_layer.value is layer:
            self.run()

    # ------------------------------------------------------------------ using the table
    def select_object(self, label: int) -> None:
        """Select object ``label`` in the measured layer and move the view to it."""
        layer, table = self.measured_layer, self.result
        row = None if table is None else table.row_of(label)
        if layer is None or row is None or layer not in self._viewer.layers:
            return
        centroid = (row["centroid_z"], row["centroid_y"], row["centroid_x"])
        show_object(self._viewer, layer, label, centroid)
        self._message.value = (
            f"object {label}: {row['voxels']} voxels, sections {row['z_first']}-{row['z_last']}"
        )

    def export_csv(self, path: str | Path) -> Path:
        """Write the table shown to ``path`` as CSV (the same file ``em-unet measure`` writes)."""
        if self.result is None:
            raise EmUnetError("nothing measured yet: press Measure first")
        return write_csv(self.result, path)

    def _on_export(self, *_) -> None:
        from napari.utils.notifications import show_error
        from qtpy.QtWidgets import QFileDialog

        default = f"{self.measured_layer.name if self.measured_layer else 'objects'}.csv"
        path, _ = QFileDialog.getSaveFileName(
            self.native, "Export measurements", default, "CSV files (*.csv)"
        )
        if not path:
            return
        try:
            written = self.export_csv(path)
        except (OSError, EmUnetError) as exc:
            text = f"Not exported: {getattr(exc, 'strerror', None) or exc} ({path})"
            show_error(text)
            self._message.value = text
            return
        self._message.value = f"wrote {len(self.result)} rows to {written}"


def _measure_job(labels, image, voxel_size_nm):
    """The worker's job: measurements, or the user-caused error to tell in one sentence
    (raised, napari would show it as a failed task with a traceback)."""
    try:
        return (yield from measure_objects(labels, image, voxel_size_nm=voxel_size_nm))
    except EmUnetError as exc:
        return Refused(str(exc))


def features_of(table: ObjectTable) -> dict:
    """The layer features napari shows on hover: one row per object, ``index`` = its label."""
    features = {"index": table.columns["label"].astype(np.int64)}
    for name, values in table.columns.items():
        if name != "label":
            features[name] = np.asarray(values)
    return features


def _spatial(layer) -> tuple[int, ...]:
    shape = tuple(int(n) for n in layer.data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def _depth(layer) -> int:
    return 1 if layer.ndim == 2 else int(layer.data.shape[0])


def _grey_source(image):
    """The image as the measurement reads it: RGB made grey slice by slice, as for the
    network; other images as they are."""
    if not getattr(image, "rgb", False):
        return image.data
    from ..io.volumes import open_volume

    volume = open_volume(image.data)
    return volume if len(_spatial(image)) == 3 else _FirstSlice(volume)


class _FirstSlice:
    """A 2D view of a one-slice volume (a 2D RGB image next to 2D labels)."""

    def __init__(self, volume):
        self._volume = volume
        self.shape, self.dtype = volume.shape[1:], volume.dtype

    def __getitem__(self, key):
        return self._volume.read_slice(0)[key]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._volume.read_slice(0), dtype=dtype)


def _single_shot(delay_ms: int, callback):
    from qtpy.QtCore import QTimer

    timer = QTimer()
    timer.setSingleShot(True)
    timer.setInterval(delay_ms)
    timer.timeout.connect(callback)
    return timer


def _alive(widget) -> bool:
    try:
        widget.native.objectName()
    except (RuntimeError, AttributeError):
        return False
    return True
