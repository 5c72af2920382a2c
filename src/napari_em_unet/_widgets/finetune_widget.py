"""The Fine-tune widget: teach the model the user's corrections, in the background.

Training slices default to the slices the user corrected with napari's label tools
(:mod:`.corrections`), or to every labelled slice of a labels layer the plugin did not
make (e.g. ground truth opened from a file); the user can type others. The training data
is copied when Run is pressed, so painting on during training changes nothing under the
worker's feet. Stop is the core's cooperative stop: the step in progress finishes, the
best weights so far are restored and saved like a finished run. The model is saved
atomically in the user's model folder with its metadata and is immediately selectable in
the Segment widget; "Re-segment the rest" applies it to the slices that were not
corrected (never overwriting a corrected one).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

from ..engine.protocol import (
    FineTuneOutcome,
    FineTuneRequest,
    JobFailed,
    ModelReady,
    SegmentRequest,
)
from ..learning.config import TrainConfig
from ..slices import format_slices, parse_slices
from .finetune_runner import FineTuneRunner
from .layer_meta import is_plugin_layer, is_probability_layer, pixel_size_of, plugin_meta, unwrap
from .layers import current_slice, depth_of, spatial_shape
from .loss_plot import LossPlot
from .ordering import if_alive
from .scrolling import ScrollingDock
from .segment_runner import SegmentRunner
from .session import session_for

if TYPE_CHECKING:
    import napari


class FineTuneWidget(ScrollingDock, Container):
    """Fine-tune a model on corrected slices of a labels layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = unwrap(viewer)
        self._session = session_for(self._viewer)
        self.runner = FineTuneRunner(self._session)
        self.last_outcome: FineTuneOutcome | None = None
        self._last_training: tuple[int, ...] = ()
        self._tracked_layer = None
        self._slices_typed = False  # the user typed slices: stop following corrections
        self._setting_slices = False
        self.resegment_runner = SegmentRunner(self._viewer, self._session)

        self._make_controls()
        super().__init__(
            widgets=[
                self._image,
                self._labels_layer,
                self._base,
                self._slices,
                self._use_corrected,
                self._unmark,
                self._validation,
                self._epochs,
                self._steps,
                self._batch,
                self._patch,
                self._learning_rate,
                self._augment,
                self._model_name,
                self._run,
                self._progress,
                self._status,
                self.validation_text,
                self._resegment,
                self._message,
            ],
            scrollable=True,
        )  # scrolls instead of pushing Run off a 768-px screen
        # The plot is a plain QWidget; it sits under what the validation measures.
        self.form.layout().insertWidget(self.index(self.validation_text) + 1, self.plot)
        for label in (self._message, self._status, self.validation_text):
            label.native.setWordWrap(True)

        self._connect()
        self.reset_choices()
        self._preselect()

    def _preselect(self) -> None:
        """Start from the session's default model and the plugin's newest Labels layer."""
        default_model = self._session.models.default_entry()
        if default_model is not None:
            self._base.value = default_model.path
        plugin_layers = [layer for _, layer in self._labels_choices() if is_plugin_layer(layer)]
        if plugin_layers:
            self._labels_layer.value = plugin_layers[-1]
        self._on_image_changed()
        self._on_labels_changed()

    def _make_controls(self) -> None:
        self._image = ComboBox(label="image", choices=self._image_choices)
        self._labels_layer = ComboBox(label="labels", choices=self._labels_choices)
        self._base = ComboBox(label="base model", choices=self._model_choices)
        self._slices = LineEdit(
            label="training slices", tooltip="e.g. 0, 3, 5-7. Default: the slices you corrected."
        )
        self._use_corrected = PushButton(text="Use the corrected slices")
        self._unmark = PushButton(
            text="Not a correction: un-mark the slice on screen",
            tooltip="Edits stay in the layer; the slice is no longer trained on or kept "
            "when re-segmenting.",
        )
        self._validation = LineEdit(
            label="validation slices",
            tooltip="Corrected slices held out (never trained on) to judge the fine-tuned model "
            "against the base. Blank: from 4 corrected slices on the middle one, otherwise "
            "the bottom 20% of each.",
        )
        defaults = TrainConfig()  # the same defaults as `em-unet finetune`
        self._epochs = SpinBox(
            label="epochs",
            min=1,
            max=1000,
            value=defaults.epochs,
            tooltip="validation rounds; each is 'steps per epoch' steps",
        )
        self._steps = SpinBox(
            label="steps per epoch", min=1, max=10000, value=defaults.steps_per_epoch
        )
        self._batch = SpinBox(label="batch size", min=1, max=64, value=defaults.batch_size)
        self._patch = SpinBox(
            label="patch size", min=32, max=1024, step=16, value=defaults.patch_size
        )
        self._learning_rate = FloatSpinBox(
            label="learning rate", min=1e-6, max=1e-1, step=1e-5, value=defaults.learning_rate
        )
        self._augment = CheckBox(
            text="augmentation (flips, rotations, intensity)", value=defaults.augment
        )
        self._model_name = LineEdit(label="model name")
        self._run = PushButton(text="Run")
        self._progress = ProgressBar(label="progress", min=0, max=1, value=0)
        self._status = Label(value="")
        self.validation_text = Label(value="")
        """What the validation measures (shown when a run starts), then before / after."""
        self.plot = LossPlot()
        self._resegment = PushButton(text="Re-segment the rest with the new model")
        self._message = Label(value="")

    def _connect(self) -> None:
        self._image.changed.connect(self._on_image_changed)
        self._labels_layer.changed.connect(self._on_labels_changed)
        self._slices.changed.connect(self._on_slices_typed)
        self._use_corrected.changed.connect(self._on_use_corrected)
        self._unmark.changed.connect(self._on_unmark)
        for widget in (
            self._base,
            self._validation,
            self._epochs,
            self._steps,
            self._batch,
            self._patch,
            self._learning_rate,
            self._model_name,
        ):
            widget.changed.connect(self._update_state)
        self._run.changed.connect(self._on_run)
        self._resegment.changed.connect(self._on_resegment)
        self.resegment_runner.finished.connect(self._on_resegment_finished)
        self.runner.progressed.connect(self._on_progress)
        self.runner.finished.connect(self._on_run_finished)
        self._session.models.changed.connect(self._on_models_changed)
        for event in (self._viewer.layers.events.removed, self._viewer.layers.events.moved):
            event.connect(self.reset_choices)
        self._viewer.layers.events.inserted.connect(self._on_layer_inserted)

    # ------------------------------------------------------------------ choices
    def _image_choices(self, _widget=None):
        from napari.layers import Image

        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and not is_probability_layer(layer)
        ]

    def _labels_choices(self, _widget=None):
        from napari.layers import Labels

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def _model_choices(self, _widget=None):
        # Re-read the folder: models saved meanwhile by the CLI or another napari appear.
        self._session.models.refresh(emit=False)
        return [(entry.label, entry.path) for entry in self._session.models.entries]

    def reset_choices(self, *_):
        super().reset_choices()
        self._update_state()

    def _on_layer_inserted(self, event) -> None:
        self.reset_choices()
        if is_plugin_layer(event.value) and not self.runner.running:
            # A fresh segmentation is what the user will correct and train on next.
            self._labels_layer.value = event.value

    # ------------------------------------------------------------------ reactions
    def _on_image_changed(self, *_) -> None:
        image = self._image.value
        if image is not None and not self._model_name.value:
            self._model_name.value = f"{image.name}-finetuned"
        self._update_state()

    def _on_labels_changed(self, *_) -> None:
        labels = self._labels_layer.value
        if self._tracked_layer is not None:
            self._session.tracker(self._tracked_layer).changed.disconnect(
                self._on_corrections_changed
            )
            self._tracked_layer = None
        if labels is not None:
            self._tracked_layer = labels
            self._session.tracker(labels).changed.connect(self._on_corrections_changed)
            self._pick_base_model(labels)
        self._slices_typed = False
        self._fill_default_slices()
        self._update_state()

    def _pick_base_model(self, labels) -> None:
        made_with = plugin_meta(labels).model
        for entry in self._session.models.entries:
            if made_with and entry.name == made_with:
                self._base.value = entry.path
                return

    @if_alive
    def _on_corrections_changed(self, corrected) -> None:
        if not self._slices_typed:
            self._fill_default_slices()
        self._update_state()

    def _on_slices_typed(self, *_) -> None:
        if not self._setting_slices:
            self._slices_typed = True
        self._update_state()

    def _on_unmark(self, *_) -> None:
        labels = self._labels_layer.value
        if labels is not None:
            self._session.tracker(labels).forget({current_slice(self._viewer, labels)})

    def _on_use_corrected(self, *_) -> None:
        self._slices_typed = False
        self._fill_default_slices()
        self._update_state()

    @if_alive
    def _on_models_changed(self) -> None:
        self._base.reset_choices()
        self._update_state()

    def default_slices(self) -> list[int]:
        """Corrected slices; for a layer the plugin did not make, every labelled slice."""
        labels = self._labels_layer.value
        if labels is None:
            return []
        corrected = self._session.corrected(labels)
        if corrected or is_plugin_layer(labels):
            return sorted(corrected)
        data = labels.data
        if labels.ndim < 3:
            return [0] if np.any(np.asarray(data)) else []
        return [s for s in range(data.shape[0]) if np.any(np.asarray(data[s]))]

    def _fill_default_slices(self) -> None:
        self._setting_slices = True
        try:
            self._slices.value = format_slices(self.default_slices())
        finally:
            self._setting_slices = False

    # ------------------------------------------------------------------ validation
    def problem(self) -> str | None:
        """Why Run cannot start now, as a sentence for the user; None when it can."""
        image, labels = self._image.value, self._labels_layer.value
        if image is None:
            return "Pick the image to learn from."
        if labels is None:
            return (
                "Pick a labels layer: segment the image first, then correct a slice with "
                "the brush or fill tools."
            )
        if getattr(image, "multiscale", False):
            return f"'{image.name}' is multiscale; open its full-resolution level as a layer."
        shape = spatial_shape(image)
        if len(shape) not in (2, 3):
            return f"'{image.name}' has {len(shape)} dimensions; a 2D image or a stack is needed."
        if tuple(labels.data.shape) != shape:
            return (
                f"'{image.name}' is {' x '.join(map(str, shape))} but '{labels.name}' is "
                f"{' x '.join(map(str, labels.data.shape))}; they must match."
            )
        depth = depth_of(shape)
        try:
            slices = parse_slices(self._slices.value, depth)
            validation = parse_slices(self._validation.value, depth)
        except ValueError as exc:
            return str(exc)[0].upper() + str(exc)[1:] + "."
        if not slices:
            return (
                f"No training slice: correct a slice of '{labels.name}' with the brush, "
                "fill or polygon tool, or type slice numbers."
            )
        both = sorted(set(slices) & set(validation))
        if both:
            return f"Slice {both[0]} is both a training and a validation slice."
        for s in slices + validation:
            plane = labels.data[s] if labels.ndim >= 3 else labels.data
            if not np.any(np.asarray(plane)):
                return (
                    f"Slice {s} of '{labels.name}' has no cell labelled (all 0 = "
                    "membrane); there is nothing to learn from it."
                )
        if self._base.value is None:
            return (
                "No base model: the bundled model is missing from this installation; "
                "add a model file in the Segment widget."
            )
        if not self._model_name.value.strip():
            return "Give the new model a name."
        return None

    @if_alive
    def _update_state(self, *_) -> None:
        if not hasattr(self, "_resegment"):
            return
        if self.runner.running:
            return
        reason = self.problem()
        self._run.enabled = reason is None
        self._message.value = reason or ""
        self._resegment.enabled = (
            self.last_outcome is not None
            and self._labels_layer.value is not None
            and self._image.value is not None
            and not self.resegment_runner.running
            and tuple(self._labels_layer.value.data.shape) == spatial_shape(self._image.value)
        )

    # ------------------------------------------------------------------ run / stop
    def _on_run(self, *_) -> None:
        if self.runner.running:
            self.stop()
            return
        reason = self.problem()
        if reason:
            from napari.utils.notifications import show_warning

            show_warning(reason)
            return
        self.run()

    def training_request(self) -> FineTuneRequest:
        """A snapshot of the form: copies of the training and validation slices, and of a
        few uncorrected slices spread over the stack (the base's behaviour is kept there,
        and how much it changes is measured there)."""
        from ..learning.finetuning import uncorrected_roles

        image, labels = self._image.value, self._labels_layer.value
        depth = depth_of(spatial_shape(image))
        slices = tuple(parse_slices(self._slices.value, depth))
        validation = tuple(parse_slices(self._validation.value, depth))
        config = self._form_config()
        # Slices the user corrected but did not list are their truth, not the base's.
        exclude = {*slices, *validation, *self._session.corrected(labels)}
        anchors, checks = uncorrected_roles(
            depth,
            sorted(exclude),
            config.anchor_slices,
            config.check_slices,
            int(np.prod(spatial_shape(image)[-2:])),
        )
        labelled = sorted(set(slices) | set(validation))
        numbers = tuple(sorted(set(labelled) | set(anchors) | set(checks)))
        planes, truth = _copied_slices(image, labels, numbers, labelled)
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        name = self._model_name.value.strip()
        return FineTuneRequest(
            image=planes,
            labels=truth,
            numbers=numbers,
            slices=slices,
            validation_slices=validation,
            output_path=self._session.models.new_model_path(f"{name}-{stamp}"),
            base_path=Path(self._base.value),
            config=config,
            pixel_size_nm=pixel_size_of(image) or pixel_size_of(labels),
            name=name,
            source=image.name,
            anchor_slices=tuple(anchors),
            check_slices=tuple(checks),
        )

    def _form_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self._epochs.value,
            steps_per_epoch=self._steps.value,
            batch_size=self._batch.value,
            patch_size=self._patch.value,
            learning_rate=float(self._learning_rate.value),
            augment=self._augment.value,
        )

    def run(self) -> None:
        """Start fine-tuning with the current settings (what pressing Run does)."""
        request = self.training_request()
        # The corrections are the user's work of the last hour: on disk before TensorFlow
        # starts, whatever happens next.
        self._session.autosave.save_now(self._labels_layer.value)
        # Training and validation slices are the user's truth: re-segmenting keeps them.
        self._last_training = tuple(sorted(set(request.slices) | set(request.validation_slices)))
        self.plot.clear()
        total = request.config.epochs * request.config.steps_per_epoch
        self.plot.set_total(total)
        self.validation_text.value = ""
        self._progress.max = total
        self._progress.value = 0
        self._status.value = "starting TensorFlow and loading the base model..."
        self.runner.start(request)
        self._run.text = "Stop"
        self._message.value = (
            f"Training on slice(s) {format_slices(request.slices)}; "
            "you can keep working, the result will be saved to "
            f"{request.output_path}."
        )
        self._resegment.enabled = False

    def stop(self) -> None:
        """Finish the current step, keep the best weights so far, and save them."""
        if self.runner.running:
            self.runner.stop()
            self._run.text = "Stopping..."
            self._run.enabled = False
            self._status.value = "stopping after this step; the best weights will be saved"

    @if_alive
    def _on_progress(self, record) -> None:
        from ..learning.finetuning import describe_plan
        from ..learning.records import EpochProgress, FineTunePlan, StepProgress

        if isinstance(record, ModelReady):
            self._status.value = f"base model {record.name} ready; preparing the slices..."
        elif isinstance(record, FineTunePlan):
            self.validation_text.value = describe_plan(record)
            self.plot.set_total(record.total_steps)
        elif isinstance(record, StepProgress):
            self._progress.max = record.total or record.steps
            self._progress.value = record.done or record.step
            self.plot.add_step(record.done, record.total, record.loss, record.anchor_loss)
            self._status.value = (
                f"step {record.done}/{record.total} (epoch {record.epoch}/"
                f"{record.epochs}), loss {record.loss:.4f}"
            )
        elif isinstance(record, EpochProgress):
            self.plot.add_round(record.done, record.val_v_rand, record.val_change)
            score = "-" if record.val_v_rand is None else f"{record.val_v_rand:.4f}"
            change = (
                ""
                if record.val_change is None
                else f", uncorrected slices changed by up to {record.val_change:.3f}"
            )
            what = "base model" if record.epoch == 0 else f"after {record.done} steps"
            self._status.value = f"{what}: validation V_rand {score}{change}"

    def _on_run_finished(self, result) -> None:
        from napari.utils.notifications import show_info

        if isinstance(result, FineTuneOutcome):
            self.last_outcome = result if result.path is not None else self.last_outcome
            text = _outcome_text(result)
            show_info(text)
            if _alive(self) and result.verdict is not None:
                self.plot.set_final(result.verdict.accepted, result.verdict.v_rand_after)
                self.validation_text.value = _before_after(result)
        elif isinstance(result, JobFailed):
            text = result.message
        else:
            text = "Fine-tuning was cancelled; nothing was saved."
        if not _alive(self):
            return
        self._run.text = "Run"
        self._update_state()
        self._message.value = text if self._run.enabled else self._message.value

    # ------------------------------------------------------------------ re-segment
    def slices_to_resegment(self) -> list[int]:
        """All slices except the corrected, training and validation ones."""
        labels = self._labels_layer.value
        depth = depth_of(tuple(labels.data.shape))
        keep = set(self._session.corrected(labels)) | set(self._last_training)
        return [s for s in range(depth) if s not in keep]

    def _on_resegment(self, *_) -> None:
        if self.resegment_runner.running:
            self.resegment_runner.stop()
            return
        self.resegment()

    def resegment(self) -> None:
        """Apply the last fine-tuned model to the slices that were not corrected."""
        from napari.utils.notifications import show_info

        outcome, image, labels = self.last_outcome, self._image.value, self._labels_layer.value
        if outcome is None or image is None or labels is None:
            return
        slices = self.slices_to_resegment()
        if not slices:
            show_info("Every slice is corrected or was trained on; nothing to re-segment.")
            return
        own = is_plugin_layer(labels)
        output = plugin_meta(labels).output if own else "instances"
        request = SegmentRequest(
            image=image.data,
            slices=tuple(slices),
            output=output,
            pixel_size_nm=pixel_size_of(image) or pixel_size_of(labels),
            model_path=outcome.path,
            rgb=bool(getattr(image, "rgb", False)),
        )
        keep = frozenset(set(self._session.corrected(labels)) | set(self._last_training))
        started = self.resegment_runner.start(
            request,
            image_layer=image,
            labels_layer=labels if own else None,
            # The user's own layer is never written: its copy, completed by the model (copied
            # slice by slice by the runner, so a zarr-backed layer is never loaded whole).
            init_labels=None if own else labels.data,
            protect=keep,
            model_name=outcome.info.name,
            name=None if own else f"{labels.name} + {outcome.info.name}",
            status=self._set_message,
        )
        if not started:  # the runner said why (e.g. no room for the on-disk layer)
            return
        self._resegment.text = "Stop re-segmenting"
        self._resegment.enabled = True

    @if_alive
    def _set_message(self, text: str) -> None:
        self._message.value = text

    @if_alive
    def _on_resegment_finished(self, summary) -> None:
        self._resegment.text = "Re-segment the rest with the new model"
        self._update_state()


def _outcome_text(result: FineTuneOutcome) -> str:
    how = "Stopped early. " if result.stopped else ""
    verdict = result.verdict
    if verdict is None:  # a model from training without a base
        score = (
            "" if result.best_v_rand is None else f", validation V_rand {result.best_v_rand:.4f}"
        )
        return (
            f"{how}Saved the best weights (epoch {result.best_epoch}{score}) as "
            f"{result.path.name}; it is now selected in the Segment widget."
        )
    if not verdict.accepted:
        return f"{how}Not saved: {verdict.reason}. The Segment widget keeps its model."
    return f"{how}Saved as {result.path.name} and selected in the Segment widget: {verdict.reason}."


def _before_after(result: FineTuneOutcome) -> str:
    """Validation before / after, with what it was measured on."""
    from ..slices import format_slices

    verdict, plan = result.verdict, result.plan

    def value(v) -> str:
        return "-" if v is None else f"{v:.4f}"

    where = ""
    if plan is not None:
        slices = plan.validation_slices or plan.corrected
        where = f" on {plan.validation} (slices {format_slices(slices)})"
    best = max(verdict.candidates, key=lambda c: c.v_rand or 0.0, default=None)
    tried = "" if best is None else f"; fine-tuned: {value(best.v_rand)}"
    change = (
        ""
        if verdict.change is None
        else f"; largest change of an uncorrected slice: {verdict.change:.3f}"
    )
    outcome = (
        f"accepted ({verdict.blend:.0%} of the change kept)"
        if verdict.accepted
        else "base model kept"
    )
    return (
        f"Validation V_rand{where}: before {value(verdict.v_rand_before)}, after "
        f"{value(verdict.v_rand_after)}{tried}{change} - {outcome}."
    )


def _alive(widget) -> bool:
    try:
        widget.native.objectName()
    except (RuntimeError, AttributeError):
        return False
    return True


def _copied_slices(image, labels, numbers, labelled) -> tuple[np.ndarray, np.ndarray]:
    """Copies of the image slices ``numbers`` and of their labels where the user labelled
    them (0 elsewhere): the worker trains on these, never on the layers themselves."""
    if labels.ndim < 3:
        return np.asarray(image.data)[None], np.array(labels.data, copy=True)[None]
    planes = np.stack([np.asarray(image.data[i]) for i in numbers])
    empty = np.zeros(labels.data.shape[1:], labels.data.dtype)
    truth = np.stack(
        [np.array(labels.data[i], copy=True) if i in labelled else empty for i in numbers]
    )
    return planes, truth
