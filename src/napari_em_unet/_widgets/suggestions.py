"""Suggest what to correct next: the slices where the model hesitated most.

After a segmentation, each slice has an uncertainty score (mean binary entropy of its
membrane probability, :func:`napari_em_unet.segmentation.pipeline.uncertainty`, stored in the
labels layer's metadata), shown as a percentage: 0 % = the model is sure of every pixel,
100 % = a coin toss everywhere. Correcting the most uncertain slices first teaches the model
most per minute of brush work; slices already corrected drop out of the list. The list is
recomputed whenever napari resets the dock's choices (a layer added, removed or moved), so
it never goes stale.
"""

from __future__ import annotations

from collections.abc import Iterable

from magicgui.widgets import ComboBox, Container, Label, PushButton

from .layer_meta import plugin_meta, unwrap
from .layers import go_to_slice
from .ordering import if_alive
from .session import PluginSession

MAX_SUGGESTIONS = 5


def rank_slices(
    scores: dict, exclude: Iterable[int] = (), limit: int = MAX_SUGGESTIONS
) -> list[tuple[int, float]]:
    """The ``limit`` most uncertain slices, most uncertain first, without ``exclude``.

    Parameters
    ----------
    scores : dict
        Slice index (int or str, as metadata may round-trip through JSON) to uncertainty.
    exclude : iterable of int
        Slices not to suggest (already corrected).
    limit : int

    Returns
    -------
    list of (int, float)
    """
    skip = {int(s) for s in exclude}
    items = [(int(k), float(v)) for k, v in (scores or {}).items() if int(k) not in skip]
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    return items[:limit]


class SuggestionsWidget(Container):
    """A ranked list of uncertain slices of one labels layer, with "go to" buttons.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
    session : PluginSession
    """

    def __init__(self, viewer, session: PluginSession):
        self._viewer = unwrap(viewer)
        self._session = session
        self._layer = None
        self._title = Label(value="Correct next: segment first to get suggestions")
        self._choice = ComboBox(
            label="slice",
            choices=self._choice_items,
            nullable=True,
            tooltip="Uncertainty: 0 % = the model is sure of every pixel, "
            "100 % = a coin toss everywhere.",
        )
        self._go = PushButton(text="Go to slice")
        self._next = PushButton(text="Next uncertain")
        super().__init__(widgets=[self._title, self._choice, self._go, self._next], labels=False)
        self._go.changed.connect(self._on_go)
        self._next.changed.connect(self._on_next)
        self._refresh()

    @property
    def ranked(self) -> list[tuple[int, float]]:
        """Current suggestions, most uncertain first."""
        layer = self._layer
        if layer is None or layer not in self._viewer.layers:
            return []
        scores = plugin_meta(layer).uncertainty
        return rank_slices(scores, self._session.corrected(layer))

    def show_for(self, layer) -> None:
        """Suggest slices of ``layer`` (a labels layer filled by the plugin)."""
        layer = unwrap(layer)
        if layer is not self._layer:
            if self._layer is not None:
                self._session.tracker(self._layer).changed.disconnect(self._refresh)
            self._layer = layer
            self._session.tracker(layer).changed.connect(self._refresh)
        self._refresh()

    def _choice_items(self, _widget=None) -> list[tuple[str, int]]:
        return [(f"slice {i}  (uncertainty {100 * s:.0f} %)", i) for i, s in self.ranked]

    def reset_choices(self, *_) -> None:
        super().reset_choices()
        self._refresh()

    @if_alive
    def _refresh(self, *_) -> None:
        ranked = self.ranked
        current = self._choice.value
        self._choice.reset_choices()
        if ranked:
            kept = current in {i for i, _ in ranked}
            self._choice.value = current if kept else ranked[0][0]
            self._title.value = f"Correct next ({len(ranked)} most uncertain, uncorrected):"
        elif self._layer is not None:
            self._title.value = "Correct next: no uncorrected slice left"
        for widget in (self._choice, self._go, self._next):
            widget.enabled = bool(ranked)

    def _on_go(self, *_) -> None:
        if self._choice.value is not None and self._layer is not None:
            go_to_slice(self._viewer, self._layer, int(self._choice.value))

    def _on_next(self, *_) -> None:
        ranked = self.ranked
        if not ranked or self._layer is None:
            return
        from .layers import current_slice

        here = current_slice(self._viewer, self._layer)
        order = [i for i, _ in ranked]
        target = order[(order.index(here) + 1) % len(order)] if here in order else order[0]
        self._choice.reset_choices()
        self._choice.value = target
        go_to_slice(self._viewer, self._layer, target)
