"""One fine-tuning run at a time: its TensorFlow process, worker, progress bar and outcome.

The Fine-tune widget is the form; this is the run, like :class:`.segment_runner.SegmentRunner`
for segmentation. Training happens in a TensorFlow process of its own (so it can go on
while the segmentation process works, and its memory is returned when it ends); the records
it yields arrive here in order on napari's main thread and are passed on through
:attr:`FineTuneRunner.progressed`. The outcome is announced by :attr:`FineTuneRunner.finished`
even if the dock was closed meanwhile, and a saved model is registered with the session at
once, so the Segment widget lists it.
"""

from __future__ import annotations

from psygnal import Signal

from ..engine.protocol import FineTuneOutcome, FineTuneRequest, JobFailed, ModelReady
from .ordering import CallbackQueue


class FineTuneRunner:
    """Run :class:`FineTuneRequest` jobs, one at a time.

    Parameters
    ----------
    session : PluginSession
        Gives the TensorFlow process and the model registry.
    """

    progressed = Signal(object)
    """A record from the job: ModelReady, FineTunePlan, StepProgress or EpochProgress."""
    finished = Signal(object)
    """The run ended: a FineTuneOutcome, a JobFailed, or None when cancelled."""

    def __init__(self, session):
        self._session = session
        self.worker = None
        self.engine = None
        self.request: FineTuneRequest | None = None
        self._pbar = None
        self._result = None

    @property
    def running(self) -> bool:
        return self.worker is not None

    def start(self, request: FineTuneRequest) -> None:
        """Start training ``request`` in the background (returns at once)."""
        from napari.qt.threading import create_worker
        from napari.utils import progress

        from ..engine.client import finetune_remote

        if self.running:
            raise RuntimeError("a fine-tuning run is already going")
        self.request, self._result = request, None
        total = request.config.epochs * request.config.steps_per_epoch
        self._pbar = progress(total=total, desc="Fine-tune: loading model")  # every step
        self.engine = self._session.training_engine()
        worker = create_worker(finetune_remote, self.engine, request, _start_thread=False)
        in_order = CallbackQueue()
        worker.yielded.connect(in_order.wrap(self._on_yielded))
        worker.returned.connect(in_order.wrap(self._on_returned))
        worker.aborted.connect(in_order.wrap(self._on_aborted))
        worker.finished.connect(in_order.wrap(self._on_finished))
        self.worker = worker
        worker.start()

    def stop(self) -> None:
        """Finish the current step, keep the best weights so far, and save them."""
        if self.worker is not None:
            self.engine.stop()

    # ------------------------------------------------------------------ worker callbacks
    def _on_yielded(self, record) -> None:
        from ..learning.records import EpochProgress, FineTunePlan, StepProgress

        if isinstance(record, ModelReady):
            self._pbar.set_description(f"Fine-tune {record.name}")
        elif isinstance(record, StepProgress):
            self._pbar.update(1)
            if record.step == 1 or record.step == record.steps:
                self._pbar.set_description(f"Fine-tune epoch {record.epoch}/{record.epochs}")
        elif not isinstance(record, EpochProgress | FineTunePlan):
            return
        self.progressed.emit(record)

    def _on_returned(self, result) -> None:
        from napari.utils.notifications import show_error

        self._result = result
        if isinstance(result, JobFailed):
            show_error(result.message)
        elif isinstance(result, FineTuneOutcome) and result.path is not None:
            # Only accepted models are saved; validation kept the base otherwise.
            self._session.models.add_session_model(result.path)

    def _on_aborted(self) -> None:
        from napari.utils.notifications import show_info

        # napari quit the worker (window closing, or cancelled in the activity dock): the
        # child is in the middle of a job nobody will read.
        self.engine.kill()
        self._result = None
        show_info("Fine-tuning was cancelled; nothing was saved.")

    def _on_finished(self) -> None:
        if self._pbar is not None:
            self._pbar.close()
            self._pbar = None
        self._session.release_training_engine(self.engine)
        self.worker = None
        self.finished.emit(self._result)
