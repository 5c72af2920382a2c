"""The progress record the analysis generators yield, and a helper to run one to its end."""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` steps (slices read) are finished."""

    done: int
    total: int


def run_to_end(steps: Generator[Progress, None, T]) -> T:
    """Drain a generator of :class:`Progress` records and return its result.

    The generators are what napari thread workers run (one yield per slice, so a worker
    can stop between slices); scripts, the CLI and tests that need no progress use this.
    """
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
