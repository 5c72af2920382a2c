"""Driving the package's long jobs, which are generators yielding progress records."""

from __future__ import annotations

from collections.abc import Callable, Generator


def drain(job: Generator, callback: Callable | None = None):
    """Run ``job`` to its end, passing each record to ``callback``; return its return value."""
    while True:
        try:
            record = next(job)
        except StopIteration as done:
            return done.value
        if callback is not None:
            callback(record)
