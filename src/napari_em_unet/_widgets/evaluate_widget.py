"""The Evaluate widget: ISBI scores of a segmentation against ground truth, per slice.

V_rand and V_info (the ISBI leaderboard's scores after border thinning; higher is better,
1 = perfect) and pixel error (lower is better) as defined in
:mod:`napari_em_unet.learning.metrics`, the same numbers ``em-unet evaluate`` prints.
Only slices where the ground truth labels something are scored (an all-0 slice has nothing
to compare). Every evaluation's mean is kept in a one-line history under the table, with
the model that made the layer, so the effect of fine-tuning shows at a glance.

The layers are preselected as a user would pick them: the ground truth is a labels layer
whose name says so (truth, GT, labels), the segmentation the newest layer this plugin made
(else another labels layer), never the same layer twice; a ground truth opened later is
picked up, unless the user chose the layers themselves.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, Table

from ..learning.metrics import SliceScored
from ..slices import format_slices
from .layer_meta import is_plugin_layer, plugin_meta, unwrap
from .ordering import CallbackQueue, if_alive
from .scrolling import ScrollingDock
from .session import session_for

if TYPE_CHECKING:
    import napari

COLUMNS = ("V_rand", "V_info", "pixel error")


class EvaluateWidget(ScrollingDock, Container):
    """Score a labels layer against a ground-truth labels layer.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        self._viewer = unwrap(viewer)
        session_for(self._viewer)  # start tracking corrections even if opened first
        self.worker = None
        self.scores: dict[int, object] = {}
        self.history: list[tuple[str, float]] = []
        self._prediction = ComboBox(label="segmentation", choices=self._labels_choices)
        self._truth = ComboBox(label="ground truth", choices=self._labels_choices, nullable=True)
        self._run = PushButton(text="Evaluate")
        self._message = Label(value="")
        self.table = Table(columns=list(COLUMNS))
        self._history = Label(value="")
        super().__init__(
            widgets=[
                self._prediction,
                self._truth,
                self._run,
                self._message,
                self.table,
                self._history,
            ],
            scrollable=True,
        )
        self.table.read_only = True
        self.table.min_height = 300  # a dozen rows; the dock scrolls on small screens
        self._message.native.setWordWrap(True)
        self._history.native.setWordWrap(True)
        self._chosen_by_user = False
        self._picking = False
        self._prediction.changed.connect(self._on_user_choice)
        self._truth.changed.connect(self._on_user_choice)
        self._run.changed.connect(self._on_run)
        for event in (self._viewer.layers.events.removed, self._viewer.layers.events.moved):
            event.connect(self.reset_choices)
        self._viewer.layers.events.inserted.connect(self._on_layer_inserted)
        self.reset_choices()
        self._pick_layers()

    def _labels_choices(self, _widget=None):
        from napari.layers import Labels

        return [(layer.name, layer) for layer in self._viewer.layers if isinstance(layer, Labels)]

    def reset_choices(self, *_):
        super().reset_choices()
        self._update_state()

    def _on_layer_inserted(self, event) -> None:
        self.reset_choices()
        if is_plugin_layer(event.value) or not self._chosen_by_user:
            # A fresh segmentation, or a ground truth just opened: what the user wants next.
            self._pick_layers(newest_segmentation=is_plugin_layer(event.value))

    def _on_user_choice(self, *_) -> None:
        if not self._picking:
            self._chosen_by_user = True
        self._update_state()

    def _pick_layers(self, newest_segmentation: bool = False) -> None:
        """Preselect the ground truth and the segmentation (see the module docstring)."""
        layers = [layer for _, layer in self._labels_choices()]
        truth = next((layer for layer in layers if _looks_like_truth(layer)), None)
        made = [layer for layer in layers if is_plugin_layer(layer) and layer is not truth]
        others = [layer for layer in layers if layer is not truth]
        prediction = made[-1] if made else (others[-1] if others else None)
        self._picking = True
        try:
            if not self._chosen_by_user or (truth is not None and not newest_segmentation):
                self._truth.value = truth
            if prediction is not None:
                self._prediction.value = prediction
        finally:
            self._picking = False
        self._update_state()

    def problem(self) -> str | None:
        """Why Evaluate cannot start now, as a sentence for the user; None when it can."""
        pred, truth = self._prediction.value, self._truth.value
        if pred is None:
            return "Pick the segmentation to score."
        if truth is None:
            return (
                "Pick the ground-truth labels layer (open it with File > Open; a layer "
                "named 'truth', 'GT' or 'labels' is picked by itself)."
            )
        if pred is truth:
            return "The segmentation and the ground truth are the same layer."
        if tuple(pred.data.shape) != tuple(truth.data.shape):
            return (
                f"'{pred.name}' is {' x '.join(map(str, pred.data.shape))} but "
                f"'{truth.name}' is {' x '.join(map(str, truth.data.shape))}; "
                "they must match."
            )
        if pred.ndim not in (2, 3):
            return "Only 2D images and Z x Y x X stacks can be scored."
        return None

    @if_alive
    def _update_state(self, *_) -> None:
        if not hasattr(self, "_history") or self.worker is not None:
            return
        reason = self.problem()
        self._run.enabled = reason is None
        self._message.value = reason or ""

    def _on_run(self, *_) -> None:
        if self.worker is not None:
            self.worker.quit()
            return
        if self.problem() is None:
            self.run()

    def run(self) -> None:
        """Score every slice the ground truth labels, in a worker thread."""
        from napari.qt.threading import create_worker

        pred, truth = self._prediction.value, self._truth.value
        prediction, gt = _snapshot(pred.data), _snapshot(truth.data)
        if prediction.ndim == 2:
            prediction, gt = np.asarray(prediction)[None], np.asarray(gt)[None]
        slices = tuple(s for s in range(gt.shape[0]) if np.any(gt[s]))
        skipped = gt.shape[0] - len(slices)
        if not slices:
            self._message.value = f"'{truth.name}' labels nothing (all 0); nothing to score."
            return
        self.scores = {}
        model = plugin_meta(pred).model
        self._scored_name = f"{pred.name}" + (f" (model {model})" if model else "")
        self._show()
        self._message.value = f"scoring {len(slices)} slice(s)..." + (
            f" ({skipped} unlabelled slice(s) of the ground truth skipped)" if skipped else ""
        )
        worker = create_worker(
            evaluate_job_entry,
            prediction,
            gt,
            slices,
            _start_thread=False,
            _progress={"total": len(slices), "desc": "Evaluate"},
        )
        in_order = CallbackQueue()
        worker.yielded.connect(in_order.wrap(self._on_yielded))
        worker.finished.connect(in_order.wrap(self._on_finished))
        self.worker = worker
        self._run.text = "Stop"
        worker.start()

    @if_alive
    def _on_yielded(self, record: SliceScored) -> None:
        self.scores[record.index] = record.score
        self._show()

    def _show(self) -> None:
        values, index = [], []
        stack = self._stack()
        for s, score in zip(sorted(self.scores), stack.per_slice if stack else [], strict=True):
            values.append([score.v_rand, score.v_info, score.pixel_error])
            index.append(f"slice {s}")
        if values:
            values.append([stack.v_rand, stack.v_info, stack.pixel_error])
            index.append("mean")
        # Text with four decimals: numbers would show 7.340e-02 beside 0.9792.
        rows = [[f"{float(v):.4f}" for v in row] for row in values]
        self.table.value = {"data": rows, "index": index, "columns": list(COLUMNS)}

    def _stack(self):
        """The scores so far as a stack: for a probability layer every slice is read at the
        threshold that is best for the whole stack, as the ISBI leaderboard does."""
        from ..learning.metrics import combine

        return combine([self.scores[s] for s in sorted(self.scores)]) if self.scores else None

    def mean(self) -> dict[str, float] | None:
        """Mean scores of the last evaluation."""
        stack = self._stack()
        if stack is None:
            return None
        return {"v_rand": stack.v_rand, "v_info": stack.v_info, "pixel_error": stack.pixel_error}

    def _on_finished(self) -> None:
        self.worker = None
        self._finish_ui()

    @if_alive
    def _finish_ui(self) -> None:
        self._run.text = "Evaluate"
        self._update_state()
        mean = self.mean()
        if mean is not None:
            self.history.append((self._scored_name, mean["v_rand"]))
            self._history.value = "V_rand so far: " + ", ".join(
                f"'{name}' {value:.4f}" for name, value in self.history[-6:]
            )
            self._message.value = (
                f"'{self._scored_name}': mean V_rand {mean['v_rand']:.4f}, "
                f"V_info {mean['v_info']:.4f}, pixel error "
                f"{mean['pixel_error']:.4f} over slice(s) "
                f"{format_slices(self.scores)}."
            )


def _snapshot(data):
    """A copy of an in-memory layer (so painting during the scoring changes nothing under
    it); a zarr or dask layer as it is, read slice by slice by the job, never whole."""
    return np.array(data, copy=True) if isinstance(data, np.ndarray) else data


def evaluate_job_entry(prediction, truth, slices):
    """Module-level wrapper so that napari names the task after the job, not a lambda."""
    from ..learning.metrics import score_slices

    yield from score_slices(prediction, truth, slices)


def _looks_like_truth(layer) -> bool:
    name = layer.name.lower()
    return not is_plugin_layer(layer) and any(
        word in name for word in ("truth", "gt", "label", "annotation")
    )
