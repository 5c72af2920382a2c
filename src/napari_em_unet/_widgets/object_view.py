"""Looking at one object: the 2D / 3D switch, "show the selected object alone", and moving
the view to an object (its section and centre).

Shared by the Segment widget's linking panel, the Measure widget and the Proofread widget,
so that the 3D view is one click away wherever a linked volume appears.
"""

from __future__ import annotations

import numpy as np
from magicgui.widgets import CheckBox, Container, PushButton

from .layer_meta import is_plugin_layer, unwrap
from .layers import go_to_slice
from .ordering import if_alive


def default_labels_layer(viewer):
    """The labels layer a widget should start with: the active one, else the last layer the
    plugin made, else None."""
    from napari.layers import Labels

    active = viewer.layers.selection.active
    if isinstance(active, Labels):
        return active
    made = [
        layer for layer in viewer.layers if isinstance(layer, Labels) and is_plugin_layer(layer)
    ]
    return made[-1] if made else None


def toggle_3d(viewer) -> int:
    """Switch the canvas between 2D and 3D; return the new ``viewer.dims.ndisplay``."""
    viewer.dims.ndisplay = 2 if viewer.dims.ndisplay == 3 else 3
    return viewer.dims.ndisplay


def show_object(viewer, layer, label: int, centroid_zyx) -> None:
    """Select object ``label`` of ``layer`` and bring it into view.

    Parameters
    ----------
    viewer : napari.Viewer
    layer : napari.layers.Labels
    label : int
    centroid_zyx : sequence of float
        The object's centroid in data (voxel) coordinates; ``(y, x)`` for a 2D layer.
    """
    layer.selected_label = int(label)
    centroid = np.asarray(centroid_zyx, dtype=float)[-layer.ndim :]
    if layer.ndim >= 3:
        # The section nearest the centroid (always between the object's first and last).
        go_to_slice(viewer, layer, int(round(float(centroid[-3]))))
    world = np.asarray(layer.data_to_world(centroid), dtype=float)
    # The camera centres the displayed axes only; in 3D the section axis is one of them.
    shown = world[-viewer.dims.ndisplay :]
    viewer.camera.center = tuple(float(v) for v in shown)


class ObjectViewControls(Container):
    """A "3D view" toggle and a "show the selected object alone" checkbox for one layer.

    Parameters
    ----------
    viewer : napari.Viewer
    """

    def __init__(self, viewer):
        self._viewer = unwrap(viewer)
        self._layer = None
        self.view_3d = PushButton(
            text="3D view", tooltip="Switch the canvas between 2D slices and a 3D view."
        )
        self.alone = CheckBox(
            text="show the selected object alone",
            tooltip="Hide every other object (napari's 'show selected').",
        )
        super().__init__(widgets=[self.view_3d, self.alone], layout="horizontal", labels=False)
        self.view_3d.changed.connect(self._on_toggle)
        self.alone.changed.connect(self._on_alone)
        self._viewer.dims.events.ndisplay.connect(self._show_mode)
        self._show_mode()

    def set_layer(self, layer) -> None:
        """Control ``layer`` (a Labels layer, or None)."""
        layer = unwrap(layer) if layer is not None else None
        if layer is self._layer:
            return
        if self._layer is not None:
            self._layer.events.show_selected_label.disconnect(self._follow_layer)
        self._layer = layer
        if layer is not None:
            layer.events.show_selected_label.connect(self._follow_layer)
        self._follow_layer()

    def _on_toggle(self, *_) -> None:
        toggle_3d(self._viewer)

    @if_alive
    def _show_mode(self, *_) -> None:
        self.view_3d.text = "2D view" if self._viewer.dims.ndisplay == 3 else "3D view"

    def _on_alone(self, value) -> None:
        if self._layer is not None:
            self._layer.show_selected_label = bool(value)

    @if_alive
    def _follow_layer(self, *_) -> None:
        # The checkbox mirrors the layer (napari's own layer controls can change it too).
        layer = self._layer
        self.alone.enabled = layer is not None
        wanted = bool(layer is not None and layer.show_selected_label)
        if self.alone.value != wanted:
            self.alone.value = wanted
