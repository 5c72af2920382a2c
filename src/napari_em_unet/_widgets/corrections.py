"""Which slices of a Labels layer the user corrected with napari's own label tools.

napari records every edit made with the brush, fill, eraser and polygon tools (and
``Labels.data_setitem``) in the layer's undo history, and emits ``layer.events.paint``
with the history item when it is committed (``Labels._append_to_undo_history``): a list
of atoms, each either a masked edit with a ``slice_key`` (tuple of slices, the edit's
bounding box) or a ``(indices, old_values, new_values)`` tuple of index arrays. The slice
index is the first coordinate of either form, so no private napari class is needed.
Programmatic writes (``layer.data[i] = ...``, which is how this plugin fills in results)
do not go through the history and are not counted as corrections.

Undo and redo are followed: a slice whose edits are all undone is no longer corrected, and
redo marks it again. napari emits no event for them, so the tracker wraps the layer's own
``undo`` and ``redo`` (which napari's keys and buttons call) and matches the history item
being undone with the one it recorded. The user can also un-mark a slice
(:meth:`CorrectionTracker.forget`), e.g. one they only looked at closely.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable

import numpy as np
from psygnal import Signal


def slices_in_history_item(item, ndim: int) -> set[int]:
    """Slice indices (first axis) touched by one napari paint-history item.

    Parameters
    ----------
    item : list
        ``event.value`` of a Labels ``paint`` event.
    ndim : int
        The layer's number of dimensions; a 2D layer has the single slice 0.

    Returns
    -------
    set of int
    """
    if ndim < 3:
        return {0} if item else set()
    touched: set[int] = set()
    for atom in item or []:
        key = getattr(atom, "slice_key", None)
        if key is not None:
            first = key[0]
            if isinstance(first, slice):
                start = 0 if first.start is None else int(first.start)
                stop = start + 1 if first.stop is None else int(first.stop)
                touched.update(range(start, stop))
            else:
                touched.add(int(first))
            continue
        try:
            indices = atom[0]
            first = indices[0]
        except (TypeError, IndexError, KeyError):
            continue
        if isinstance(first, slice):
            start = 0 if first.start is None else int(first.start)
            touched.update(range(start, int(first.stop if first.stop is not None else start + 1)))
        else:
            touched.update(int(v) for v in np.unique(np.asarray(first)))
    return touched


class CorrectionTracker:
    """Records the slices of one Labels layer edited with napari's label tools.

    Parameters
    ----------
    layer : napari.layers.Labels
        The layer to watch (held weakly).
    """

    changed = Signal(object)
    """Emitted with the new frozenset of corrected slices."""

    def __init__(self, layer):
        self._layer = weakref.ref(layer)
        self._applied: list[tuple[object, set[int]]] = []
        """Edits in napari's undo history, oldest first: (history item, slices touched)."""
        self._undone: list[tuple[object, set[int]]] = []
        """Edits undone, in napari's redo history: (napari's redo item, slices touched)."""
        self._marked: set[int] = set()
        """Corrected for reasons outside the history (restored from an autosave, marked)."""
        layer.events.paint.connect(self._on_paint)
        self._follow_undo_and_redo(layer)

    @property
    def corrected(self) -> frozenset[int]:
        touched = set(self._marked)
        for _, slices in self._applied:
            touched |= slices
        return frozenset(touched)

    def _on_paint(self, event) -> None:
        layer = self._layer()
        if layer is None:
            return
        before = self.corrected
        self._applied.append((event.value, slices_in_history_item(event.value, layer.ndim)))
        self._undone.clear()  # napari clears its redo history on a new edit
        self._announce(before)

    def _follow_undo_and_redo(self, layer) -> None:
        undo, redo, tracker = layer.undo, layer.redo, weakref.ref(self)

        def undo_and_track() -> None:
            item = _last(layer, "_undo_history")
            undo()
            me = tracker()
            if me is not None:
                me._moved(item, me._applied, me._undone, _last(layer, "_redo_history"))

        def redo_and_track() -> None:
            item = _last(layer, "_redo_history")
            redo()
            me = tracker()
            if me is not None:
                me._moved(item, me._undone, me._applied, _last(layer, "_undo_history"))

        layer.undo, layer.redo = undo_and_track, redo_and_track

    def _moved(self, item, source: list, target: list, now) -> None:
        """napari moved history ``item`` from one queue to the other (now as ``now``)."""
        if not source or (item is not None and source[-1][0] is not item):
            return  # an edit from before the tracker existed, or nothing to undo
        before = self.corrected
        _, slices = source.pop()
        target.append((now, slices))
        self._announce(before)

    def _announce(self, before: frozenset[int]) -> None:
        if self.corrected != before:
            self.changed.emit(self.corrected)

    def mark(self, slices: Iterable[int]) -> None:
        """Count ``slices`` as corrected (e.g. edited before the plugin was opened)."""
        before = self.corrected
        self._marked |= {int(s) for s in slices}
        self._announce(before)

    def forget(self, slices: Iterable[int]) -> None:
        """Stop counting ``slices`` as corrected (their edits stay in the layer)."""
        before, gone = self.corrected, {int(s) for s in slices}
        self._marked -= gone
        for _, touched in self._applied + self._undone:
            touched -= gone
        self._announce(before)


def _last(layer, queue: str):
    """The newest item of one of napari's history queues (None if napari has none)."""
    items = getattr(layer, queue, None)
    try:
        return items[-1] if items else None
    except (TypeError, IndexError):
        return None
