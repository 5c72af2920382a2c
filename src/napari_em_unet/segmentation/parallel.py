"""Slices side by side: the per-slice work of a stack run in worker threads, results in order.

On this project's 2-core CPU one slice's network alone leaves a core idle about a sixth of
the time (TensorFlow splits each layer in two and waits for the slower half), and a
watershed run beside it takes that core from one of the halves. Whole slices predicted
side by side keep both cores busy (docs/design.md, "Where the rest of a slice's time
went"). TensorFlow, scipy and scikit-image release the GIL, so threads are enough.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

SLICE_WORKERS = 2
"""Slices in work at once by default, when TensorFlow splits each op over the cores (a
process that also trains). ``em-unet segment`` runs one thread per op and one slice more
than there are cores (``model.backend.predict_only``)."""

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    work: Callable[[T], R], items: Iterable[T], workers: int = SLICE_WORKERS
) -> Iterator[R]:
    """``work`` over ``items`` in ``workers`` threads, yielded in the order of ``items``.

    Items are drawn in the caller's thread (reading a slice from a file or a dask array
    stays where it always ran), at most one ahead of the workers, so memory holds a few
    slices whatever the depth. An error in ``work`` is raised here, at its item. Closing
    the generator drops the items not started and waits for those running.
    """
    if workers <= 1:
        yield from map(work, items)
        return
    with ThreadPoolExecutor(workers, thread_name_prefix="em-unet-slice") as pool:
        pending: deque = deque()
        try:
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) > workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
