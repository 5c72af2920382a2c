"""Which slices of a Labels layer the user corrected with napari's own label tools.

napari records every edit made with the brush, fill, eraser and polygon tools (and
``Labels.data_setitem``) in the layer's undo history, and emits ``layer.events.paint``
with the history item when it is committed (``Labels._append_to_undo_history``): a list
of atoms, each either a masked edit with a ``slice_key`` (tuple of slices, the edit's
bounding box) or a ``(indices, old_values, new_values)`` tuple of index arrays. The slice
index is the first coordinate of either form, so no private napari class is needed.
Programmatic writes (``layer.data[i] = ...``, which is how this plugin fills in results)
do not go through the history and are not counted as corrections.

Undoing an edit does not un-mark its slice: napari emits no event for undo, and a slice the
user looked at closely is worth keeping as a training slice anyway. The fine-tune widget
lets the user edit the list.
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
        self._corrected: set[int] = set()
        layer.events.paint.connect(self._on_paint)

    @property
    def corrected(self) -> frozenset[int]:
        return frozenset(self._corrected)

    def _on_paint(self, event) -> None:
        layer = self._layer()
        if layer is None:
            return
        touched = slices_in_history_item(event.value, layer.ndim)
        if touched - self._corrected:
            self._corrected |= touched
            self.changed.emit(self.corrected)

    def mark(self, slices: Iterable[int]) -> None:
        """Count ``slices`` as corrected (e.g. edited before the plugin was opened)."""
        new = {int(s) for s in slices} - self._corrected
        if new:
            self._corrected |= new
            self.changed.emit(self.corrected)

    def forget(self, slices: Iterable[int]) -> None:
        """Stop counting ``slices`` as corrected."""
        gone = {int(s) for s in slices} & self._corrected
        if gone:
            self._corrected -= gone
            self.changed.emit(self.corrected)
