"""Docks that scroll instead of growing past the screen.

napari docks ``widget.native``; for a magicgui container built with ``scrollable=True`` that
is the form inside the scroll area, so the scroll area was lost and each dock was as tall as
its form: with the Segment and Fine-tune widgets docked the window needed 1190 px, and Run,
the plot and the Evaluate table ended up below a laptop's 768. Handing napari the scroll
area keeps every control reachable at any window height.
"""

from __future__ import annotations

from magicgui.widgets import Container


class ScrollingDock:
    """Mixin for the plugin's top-level Containers (which pass ``scrollable=True``)."""

    @property
    def native(self):
        """What napari docks: the scroll area around the form."""
        return self.root_native_widget

    @property
    def form(self):
        """The QWidget holding the form's layout (inside the scroll area)."""
        return Container.native.fget(self)
