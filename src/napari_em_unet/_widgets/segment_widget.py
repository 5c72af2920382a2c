"""The Segment widget: image layer + model -> labels layer, filled slice by slice.

The form only gathers values and explains what is missing (Run is disabled with the
reason shown underneath); :class:`.segment_runner.SegmentRunner` does the threaded work
and the layer updates. Results go to a new labels layer, or into a labels layer this
plugin made earlier, where slices the user corrected are kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    PushButton,
    SpinBox,
)

from ..engine.protocol import SegmentRequest
from ..errors import EmUnetError
from .layer_meta import is_plugin_layer, is_probability_layer, pixel_size_of, plugin_meta, unwrap
from .layers import current_slice, depth_of, spatial_shape
from .linking_panel import LinkPanel
from .ordering import if_alive
from .scrolling import ScrollingDock
from .segment_runner import SegmentRunner
from .session import session_for
from .suggestions import SuggestionsWidget

if TYPE_CHECKING:
    import napari

SCOPES = ("current slice", "all slices", "range")
OUTPUTS = ("instances", "membranes")
NEW_LAYER = "new layer"


class SegmentWidget(ScrollingDock, Container):
    """Segment an image layer with a U-Net, in the background.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = unwrap(viewer)
        self._session = session_for(self._viewer)
        self.runner = SegmentRunner(self._viewer, self._session)

        # Scrollable: a 768-pixel screen would otherwise push Run off the bottom.
        super().__init__(widgets=self._make_controls(), scrollable=True)
        self._message.native.setWordWrap(True)
        self._connect_signals()
        self.reset_choices()
        self._select_default_model()
        self._on_image_changed()
        self._session.prewarm()

    def _make_controls(self) -> list:
        """The form, top to bottom."""
        self._image = ComboBox(label="image", choices=self._image_choices)
        self._model = ComboBox(label="model", choices=self._model_choices)
        self._model_file = FileEdit(
            label="add model file",
            mode="r",
            filter="Model files (*.keras *.zip rdf.yaml)",
            tooltip="A .keras model, or a bioimage.io package (.zip, "
            "or the rdf.yaml of an unpacked one).",
        )
        self._scope = ComboBox(label="slices", choices=SCOPES, value="all slices")
        self._first = SpinBox(label="from slice", min=0, max=0)
        self._last = SpinBox(label="to slice", min=0, max=0)
        self._pixel_size = FloatSpinBox(
            label="pixel size (nm)",
            min=0.0,
            max=100000.0,
            step=0.1,
            value=0.0,
            tooltip="The image's pixel size; 0 = unknown (the model's own scale is assumed).",
        )
        self._output = ComboBox(
            label="output",
            choices=OUTPUTS,
            value="instances",
            tooltip="instances: one label per cell, 0 = membrane; "
            "membranes: 0 = membrane, 255 = cell interior.",
        )
        self._probability = CheckBox(text="also add the membrane probability map")
        self._target = ComboBox(label="write to", choices=self._target_choices)
        self.linking = LinkPanel(self._viewer)
        self._run = PushButton(text="Run")
        self._message = Label(value="")
        self.suggestions = SuggestionsWidget(self._viewer, self._session)
        return [
            self._image,
            self._model,
            self._model_file,
            self._scope,
            self._first,
            self._last,
            self._pixel_size,
            self._output,
            self._probability,
            self._target,
            self.linking,
            self._run,
            self._message,
            self.suggestions,
        ]

    def _connect_signals(self) -> None:
        self._image.changed.connect(self._on_image_changed)
        self._model_file.changed.connect(self._on_model_file)
        self._output.changed.connect(self._on_output_changed)
        for widget in (self._model, self._scope, self._first, self._last, self._target):
            widget.changed.connect(self._update_state)
        self._run.changed.connect(self._on_run)
        self.runner.started.connect(self._on_started)
        self.runner.finished.connect(self._on_finished)
        self.linking.finished.connect(self._update_state)
        self._session.models.changed.connect(self._on_models_changed)
        self._session.models.added.connect(self._on_model_added)
        for event in (
            self._viewer.layers.events.inserted,
            self._viewer.layers.events.removed,
            self._viewer.layers.events.moved,
        ):
            event.connect(self.reset_choices)

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and not is_probability_layer(layer)
        ]

    def _model_choices(self, _widget=None):
        # Re-read the folder: models saved meanwhile by the CLI or another napari appear.
        self._session.models.refresh(emit=False)
        return [(entry.label, entry.path) for entry in self._session.models.entries]

    def _target_choices(self, _widget=None):
        choices = [(NEW_LAYER, NEW_LAYER)]
        image = self._image.value if hasattr(self, "_image") else None
        if image is None:
            return choices
        shape = spatial_shape(image)
        output = self._output.value if hasattr(self, "_output") else "instances"
        from napari.layers import Labels

        for layer in self._viewer.layers:
            if (
                isinstance(layer, Labels)
                and is_plugin_layer(layer)
                and tuple(layer.data.shape) == shape
                and plugin_meta(layer).output == output
            ):
                choices.append((f"{layer.name} (keeps corrected slices)", layer))
        return choices

    def reset_choices(self, *_):
        super().reset_choices()
        self._update_state()

    # ------------------------------------------------------------------ reactions
    def _on_image_changed(self, *_) -> None:
        image = self._image.value
        if image is not None and not getattr(image, "multiscale", False):
            depth = depth_of(spatial_shape(image))
            for box in (self._first, self._last):
                box.max = max(0, depth - 1)
            self._last.value = max(0, depth - 1)
            self._pixel_size.value = pixel_size_of(image) or 0.0
        self._target.reset_choices()
        self._update_state()

    def _on_output_changed(self, *_) -> None:
        self._target.reset_choices()
        self._update_state()

    def _on_model_file(self, *_) -> None:
        path = Path(self._model_file.value)
        if not path.is_file():
            return
        from napari.utils.notifications import show_error

        try:
            self._session.models.add_file(path)
        except EmUnetError as exc:
            show_error(str(exc))

    @if_alive
    def _on_models_changed(self) -> None:
        self._model.reset_choices()
        self._update_state()

    def _select_default_model(self) -> None:
        # Newest first, but never a model whose own validation says it is worse.
        entry = self._session.models.default_entry()
        if entry is not None:
            self._model.value = entry.path

    @if_alive
    def _on_model_added(self, entry) -> None:
        # A model the user just fine-tuned or added is what they want next, unless its
        # validation says it is worse than its base.
        self._model.reset_choices()
        if not entry.worse:
            self._model.value = entry.path
        self._update_state()

    # ------------------------------------------------------------------ validation
    def problem(self) -> str | None:
        """Why Run cannot start now, as a sentence for the user; None when it can."""
        image = self._image.value
        if image is None:
            return "Open an image (File > Open, or File > Open Sample) and pick it above."
        if getattr(image, "multiscale", False):
            return f"'{image.name}' is multiscale; open its full-resolution level as a layer."
        shape = spatial_shape(image)
        if len(shape) not in (2, 3):
            return (
                f"'{image.name}' has {len(shape)} dimensions; a 2D image or a Z x Y x X "
                "stack is needed."
            )
        if min(shape[-2:]) < 8:
            return f"'{image.name}' is too small to segment ({shape[-2]} x {shape[-1]} pixels)."
        if self._model.value is None:
            return (
                "No model available: the bundled model is missing from this "
                "installation; add a .keras model file above."
            )
        if self._scope.value == "range" and self._first.value > self._last.value:
            return "The range is empty: 'from slice' is after 'to slice'."
        if self.linking.running:
            return "Linking the last result into 3D objects; Run is back when it is done."
        return None

    @if_alive
    def _update_state(self, *_) -> None:
        if not hasattr(self, "_run"):
            return
        range_scope = self._scope.value == "range"
        self._first.visible = self._last.visible = range_scope
        if self.runner.running:
            self._run.enabled = True
            return
        reason = self.problem()
        self._run.enabled = reason is None
        self._message.value = reason or ""

    def slices_to_segment(self) -> list[int]:
        """The slice indices the current scope selects."""
        image = self._image.value
        depth = depth_of(spatial_shape(image))
        if depth == 1 or self._scope.value == "all slices":
            return list(range(depth))
        if self._scope.value == "current slice":
            return [current_slice(self._viewer, image)]
        return list(range(self._first.value, self._last.value + 1))

    # ------------------------------------------------------------------ run / stop
    def _on_run(self, *_) -> None:
        if self.runner.running:
            self.runner.stop()
            return
        reason = self.problem()
        if reason:
            from napari.utils.notifications import show_warning

            show_warning(reason)
            return
        self.run()

    def run(self) -> None:
        """Start segmenting with the current settings (what pressing Run does)."""
        image = self._image.value
        entry = self._session.models.find(self._model.value)
        pixel_size = self._pixel_size.value or None
        request = SegmentRequest(
            image=image.data,
            slices=tuple(self.slices_to_segment()),
            output=self._output.value,
            probability=self._probability.value,
            pixel_size_nm=pixel_size,
            model_path=Path(self._model.value),
            rgb=bool(getattr(image, "rgb", False)),
        )
        self.runner.start(
            request,
            image_layer=image,
            labels_layer=None if self._target.value in (None, NEW_LAYER) else self._target.value,
            model_name=entry.name if entry else Path(self._model.value).stem,
            status=self._set_message,
        )

    @if_alive
    def _set_message(self, text: str) -> None:
        self._message.value = text

    @if_alive
    def _on_started(self) -> None:
        self._run.text = "Stop"
        self._run.enabled = True
        self._target.reset_choices()

    @if_alive
    def _on_finished(self, summary) -> None:
        self._run.text = "Run"
        layer = self.runner.labels_layer
        if layer is not None and layer in self._viewer.layers:
            self.suggestions.show_for(layer)
            self._target.reset_choices()
        message = self._message.value
        if (
            summary is not None
            and not summary.stopped
            and self.linking.wanted.value
            and layer is not None
            and layer in self._viewer.layers
        ):
            self.linking.link(layer, self.runner.probability_layer)
        self._update_state()
        if self._run.enabled:
            self._message.value = message
