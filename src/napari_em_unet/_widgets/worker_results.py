"""What a thread worker of the object widgets returns when the user's request cannot be met."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Refused:
    """Returned instead of raising a user-caused error (an object that is not there, labels
    that are not whole numbers): a worker that raises, or returns an exception, is shown by
    napari as a failed task with a traceback, where one sentence in the widget is what the
    user needs."""

    message: str
