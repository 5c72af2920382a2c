"""State the plugin's widgets share within one napari viewer: models and corrections.

npe2 creates each dock widget separately, handing it only the viewer, yet the Segment
widget must list a model the Fine-tune widget just saved, and both must know which slices
the user corrected. One :class:`PluginSession` per viewer holds that, found through
:func:`session_for`; it is dropped with the viewer (weak mapping), so two viewers, or the
tests' many viewers, never see each other's state.

What the plugin notes on its layers is in :mod:`.layer_meta`.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref

from .corrections import CorrectionTracker
from .layer_meta import unwrap
from .model_registry import ModelRegistry

_sessions: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def session_for(viewer) -> PluginSession:
    """The session of ``viewer``, created on first use."""
    viewer = unwrap(viewer)
    session = _sessions.get(viewer)
    if session is None:
        session = PluginSession(viewer)
        _sessions[viewer] = session
    return session


class PluginSession:
    """Model registry, correction trackers, autosave and TensorFlow process of one viewer."""

    def __init__(self, viewer):
        self._viewer = weakref.ref(viewer)
        self.models = ModelRegistry()
        self._trackers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._engine = None
        self._shared_training = None
        self._prewarmed = False
        self._owned: list = []
        # The child process must not outlive the viewer (it would also exit on its own when
        # this process ends and its socket closes).
        weakref.finalize(viewer, _close_all, self._owned)
        # Track edits from the moment the plugin is opened, on every labels layer, so that
        # corrections made before the Fine-tune widget is shown still count.
        for layer in list(viewer.layers):
            self._maybe_track(layer)
        viewer.layers.events.inserted.connect(self._on_inserted)
        from .autosave_keeper import AutosaveKeeper

        self.autosave = AutosaveKeeper(viewer, self)

    def _on_inserted(self, event) -> None:
        self._maybe_track(event.value)

    def _maybe_track(self, layer) -> None:
        if hasattr(getattr(layer, "events", None), "paint"):
            self.tracker(layer)

    def tracker(self, layer) -> CorrectionTracker:
        """The correction tracker of a Labels layer."""
        layer = unwrap(layer)
        tracker = self._trackers.get(layer)
        if tracker is None:
            tracker = CorrectionTracker(layer)
            self._trackers[layer] = tracker
        return tracker

    def corrected(self, layer) -> frozenset[int]:
        """Slices of ``layer`` the user edited with the label tools."""
        return self.tracker(layer).corrected

    def segment_engine(self):
        """The TensorFlow process used for segmentation (started by its first job and kept,
        with its loaded models, for the next ones)."""
        if self._engine is None:
            from ..engine.client import Engine

            self._engine = Engine()
            self._owned.append(self._engine)
        return self._engine

    def prewarm(self) -> None:
        """Start the segmentation process and its TensorFlow import in the background, once
        (the Segment widget does this when it opens, so that Run answers in seconds).
        ``NAPARI_EM_UNET_NO_PREWARM=1`` turns it off."""
        if self._prewarmed or os.environ.get("NAPARI_EM_UNET_NO_PREWARM"):
            return
        self._prewarmed = True
        engine = self.segment_engine()
        threading.Thread(
            target=_warm_up_quietly, args=(engine,), daemon=True, name="em-unet-warm-up"
        ).start()

    def training_engine(self):
        """A TensorFlow process for one fine-tuning run; give it back with
        :meth:`release_training_engine`. A process of its own, so that training can go on
        while the segmentation process works, and its memory is returned when it ends."""
        if self._shared_training is not None:
            return self._shared_training
        from ..engine.client import Engine

        return Engine()

    def release_training_engine(self, engine) -> None:
        if engine is not None and engine is not self._shared_training:
            # TensorFlow takes a second or so to exit: not on the GUI thread.
            threading.Thread(target=engine.close, daemon=True, name="em-unet-engine-close").start()

    def use_engine(self, engine, *, for_training: bool = False) -> None:
        """Run jobs in ``engine``, which the caller owns and closes (tests share one process
        between viewers, because each new process pays TensorFlow's import)."""
        self._engine = engine
        if for_training:
            self._shared_training = engine

    def close(self) -> None:
        """End the TensorFlow process this session started."""
        _close_all(self._owned)


def _warm_up_quietly(engine) -> None:
    # A failure here is reported by the first real job, with its context.
    with contextlib.suppress(Exception):
        engine.warm_up()


def _close_all(engines: list) -> None:
    for engine in engines:
        engine.close()
