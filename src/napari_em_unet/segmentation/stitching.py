"""The cells of a huge slice, band by band: a watershed per band with a halo, ids joined.

Each band of ``band_rows`` rows is segmented by the same seeded watershed as a whole slice
(:func:`.watershed.watershed_labels`), on the band plus ``halo`` rows above and below, so
that pixels near a band border are flooded with the context they would have in the whole
slice. Only the band's own rows are kept; its cells get provisional ids (unique across
bands) and go to a scratch file.

A cell cut by a border keeps one id: the two neighbouring bands both label a thin strip
around their common border (one from inside, one from its halo), and an id of one band is
joined with an id of the other when they cover the same pixels there, for at least half
of the smaller of the two in that strip. (Half, rather than any shared pixel: where the
two watersheds disagree by a pixel or two about the border between two touching cells,
those pixels must not merge the two cells.) Cells smaller than ``min_size`` are removed
only after joining, when their size is known, and the cells are then numbered 1..n: a
lookup table from provisional to final ids, applied row by row by :mod:`.huge`.

The watershed of a band runs in a helper thread while the network predicts the next one.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .watershed import WatershedParams, watershed_labels

SEAM_ROWS = 2
"""Rows on each side of a band border compared to join the ids of the two bands."""
MIN_SHARE = 0.5


@dataclass(frozen=True)
class _Band:
    core: tuple[int, int]
    """The rows this band decides."""
    window: tuple[int, int]
    """The rows its watershed sees: the core and the halo."""


class BandStitcher:
    """A sink for probability rows (pushed in order) that segments them band by band.

    Parameters
    ----------
    params : WatershedParams
    shape : tuple of int
        ``(height, width)`` of the slice.
    store : ScratchRows
        Receives the provisional ids (uint32) of each band's rows.
    band_rows, halo : int
        Rows per band, and rows of context above and below.
    pool : concurrent.futures.Executor, optional
        Where the watersheds run (a single helper thread); None runs them inline.
    """

    def __init__(
        self,
        params: WatershedParams,
        shape: tuple[int, int],
        store,
        *,
        band_rows: int,
        halo: int,
        pool: Executor | None = None,
    ):
        self.params, self.shape, self.store, self.pool = params, shape, store, pool
        self.band_rows = max(1, band_rows)
        self.halo = max(halo, SEAM_ROWS)
        self.bands = -(-shape[0] // self.band_rows)
        self.bands_done = 0
        self._rows, self._first = np.empty((0, shape[1]), dtype=np.float32), 0
        self._next = 0  # first row of the next band to start
        self._pending: tuple[_Band, Future] | None = None
        self._offset = 0  # provisional ids used so far
        self._sizes: list[np.ndarray] = []
        self._pairs: list[np.ndarray] = []
        self._seam: np.ndarray | None = None  # the previous band's ids around the next border

    # -- the sink
    def push(self, rows: np.ndarray) -> None:
        self._rows = np.concatenate([self._rows, rows])
        while self._next < self.shape[0]:
            band = self._band(self._next)
            if band.window[1] > self._first + len(self._rows):
                break
            self._start(band)

    def close(self) -> None:
        if self._next < self.shape[0]:
            raise RuntimeError(
                f"probability rows stopped at {self._first + len(self._rows)} of {self.shape[0]}"
            )
        self._collect()

    # -- bands
    def _band(self, start: int) -> _Band:
        stop = min(self.shape[0], start + self.band_rows)
        window = (max(0, start - self.halo), min(self.shape[0], stop + self.halo))
        return _Band((start, stop), window)

    def _start(self, band: _Band) -> None:
        (w0, w1), params = band.window, self.params
        window = self._rows[w0 - self._first : w1 - self._first]
        future = (
            self.pool.submit(watershed_labels, window, params)
            if self.pool
            else _done(watershed_labels(window, params))
        )
        self._next = band.core[1]
        keep = self._band(self._next).window[0] if self._next < self.shape[0] else w1
        self._rows, self._first = self._rows[keep - self._first :], keep
        self._collect()  # the band before this one, finished while this tile row was predicted
        self._pending = (band, future)

    def _collect(self) -> None:
        if self._pending is None:
            return
        band, future = self._pending
        self._pending = None
        self._stitch(band, future.result())
        self.bands_done += 1

    def _stitch(self, band: _Band, labels: np.ndarray) -> None:
        (c0, c1), (w0, _) = band.core, band.window
        count = int(labels.max(initial=0))
        if self._offset + count >= 2**32:
            raise InputError("the slice has more cells than 32-bit labels can number")

        def ids(start: int, stop: int) -> np.ndarray:  # provisional ids of rows start:stop
            rows = labels[start - w0 : stop - w0].astype(np.uint32)
            rows[rows > 0] += np.uint32(self._offset)
            return rows

        self.store.write(c0, ids(c0, c1))
        core = labels[c0 - w0 : c1 - w0]
        self._sizes.append(np.bincount(core.ravel(), minlength=count + 1)[1:])
        if self._seam is not None:
            here = ids(max(0, c0 - SEAM_ROWS), min(self.shape[0], c0 + SEAM_ROWS))
            self._pairs.append(seam_pairs(self._seam, here))
        if c1 < self.shape[0]:
            self._seam = ids(c1 - SEAM_ROWS, min(self.shape[0], c1 + SEAM_ROWS))
        self._offset += count

    # -- the result
    def final_ids(self) -> np.ndarray:
        """Lookup table provisional id -> final id (uint32; 0 stays 0, removed cells -> 0)."""
        sizes = np.concatenate(self._sizes) if self._sizes else np.zeros(0, np.int64)
        pairs = np.concatenate(self._pairs) if self._pairs else np.zeros((0, 2), np.uint32)
        return join_ids(sizes, pairs, self.params.min_size)


def _done(value) -> Future:
    future: Future = Future()
    future.set_result(value)
    return future


def seam_pairs(above: np.ndarray, below: np.ndarray) -> np.ndarray:
    """Pairs of ids (one per labelling of the same strip) that are the same cell.

    A pair counts when the two ids share at least :data:`MIN_SHARE` of the pixels of the
    smaller of the two in the strip. Returns an ``(n, 2)`` uint32 array.
    """
    both = (above > 0) & (below > 0)
    keys = (above[both].astype(np.uint64) << np.uint64(32)) | below[both].astype(np.uint64)
    keys, shared = np.unique(keys, return_counts=True)
    a = (keys >> np.uint64(32)).astype(np.uint32)
    b = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    size_a = _counts(above, a)
    size_b = _counts(below, b)
    keep = shared >= MIN_SHARE * np.minimum(size_a, size_b)
    return np.stack([a[keep], b[keep]], axis=1)


def _counts(labels: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """How many pixels of ``labels`` carry each of ``ids``."""
    present, counts = np.unique(labels, return_counts=True)
    return counts[np.searchsorted(present, ids)]


def join_ids(sizes: np.ndarray, pairs: np.ndarray, min_size: int) -> np.ndarray:
    """Join provisional ids ``1..len(sizes)`` along ``pairs``, drop small cells, renumber.

    ``sizes[i]`` is the pixel count of id ``i + 1``. Final ids follow the smallest
    provisional id of each cell (bands top to bottom), like a whole slice's raster order.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(sizes)
    if len(pairs):
        a, b = pairs[:, 0].astype(np.int64) - 1, pairs[:, 1].astype(np.int64) - 1
        graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
        _, cell = connected_components(graph, directed=False)
    else:
        cell = np.arange(n)
    cell_size = np.bincount(cell, weights=sizes, minlength=int(cell.max(initial=-1)) + 1)
    # A cell must have pixels in some band's own rows (not only in halos) and be large enough.
    keep = (cell_size > 0) & (cell_size >= max(1, min_size))
    _, first = np.unique(cell, return_index=True)  # each cell's smallest provisional id
    number = np.zeros(len(cell_size), dtype=np.uint32)
    order = np.argsort(first[keep], kind="stable")
    number[np.flatnonzero(keep)[order]] = np.arange(1, int(keep.sum()) + 1, dtype=np.uint32)
    lut = np.zeros(n + 1, dtype=np.uint32)
    lut[1:] = number[cell]
    return lut
