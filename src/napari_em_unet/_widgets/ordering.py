"""Deliver a worker's signals one at a time, in the order they were emitted.

A handler that refreshes a layer or updates a progress bar can make Qt process pending
events, so the worker's next signal (often ``returned`` or ``finished``) would run in the
middle of the previous handler, which then resumes on changed state: a "segmented 7 of 8
slices" message while the 8th is being written. Handlers wrapped by one
:class:`CallbackQueue` never nest; a signal arriving during a handler runs right after it.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable


class CallbackQueue:
    """Serialises the callbacks it wraps (main thread only)."""

    def __init__(self):
        self._queue: deque = deque()
        self._running = False

    def wrap(self, handler: Callable) -> Callable:
        """Return ``handler`` made to wait for any wrapped handler already running."""

        def call(*args):
            self._queue.append((handler, args))
            if self._running:
                return
            self._running = True
            try:
                while self._queue:
                    queued, queued_args = self._queue.popleft()
                    queued(*queued_args)
            finally:
                self._running = False

        return call


def if_alive(method: Callable) -> Callable:
    """Skip a widget's handler once its Qt widget is deleted (the dock was closed while a
    worker was still running; its last signals must not touch dead widgets)."""

    @functools.wraps(method)
    def wrapper(self, *args):
        try:
            self.native.objectName()
        except (RuntimeError, AttributeError):  # deleted, or not built yet
            return None
        return method(self, *args)

    return wrapper
