"""The membrane probability of one huge slice, a row of tiles at a time.

A slice too large to hold whole goes through the steps of :func:`.tiling.predict_stack`
(percentile normalisation, resampling to the model's pixel size, a mirrored margin, the
tile grid blended with the ramp window, resampling back, clipping) but only the rows that
one row of tiles needs are in memory at once. Each step repeats the whole-slice arithmetic
on its rows: the normalisation uses the percentiles of the whole slice, taken from the same
pixels in one reading pass; every resampled row comes from the same input coordinates; the
tiles are the same and are added up in the same order. So the result equals the
whole-slice probability within float rounding (tested), and has no seams.

Rows travel in order. Upstream rows are pulled through a :class:`RowBuffer`, which keeps
only the rows still needed; finished probability rows are pushed into a *sink* (any object
with ``push(rows)`` and ``close()``), e.g. a writer or the banded watershed (:mod:`.stitching`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..model.inference import inference_model
from .preprocessing import (
    apply_normalization,
    normalization_range,
    resample_factor,
    sample_has_signal,
    sample_step,
    scaled_shape,
)
from .tiling import (
    DEFAULT_BATCH,
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    IMAGE_MARGIN,
    _predict_tiles,
    _size_multiple,
    _tile_length,
    _tile_starts,
    _window,
    network_forward,
)

READ_ROWS = 256
"""Rows read, normalised or resampled in one go (small: a 20000-pixel row is 80 kB as float)."""


def row_spans(height: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, height, step):
        yield start, min(height, start + step)


# ----------------------------------------------------------------------------- normalising
@dataclass(frozen=True)
class SliceLevels:
    """What one reading pass over a slice learns: how many finite pixels, how to normalise."""

    finite: int
    value_range: tuple[float, float] | None
    """For :func:`.preprocessing.apply_normalization` (None: constant slice, all 0.5)."""
    signal: bool = True
    """False for a slice that shows nothing (:func:`.preprocessing.has_signal`)."""


def slice_levels(volume, index: int, percentiles, rows: int = READ_ROWS) -> SliceLevels:
    """The normalisation of slice ``index``, from the pixels :func:`.normalize` would sample.

    The sample is every ``step``-th finite pixel in raster order, as in the whole-slice
    path; float data need one more pass to count the finite pixels first.
    """
    height, width = volume.shape[1:]
    floating = np.dtype(volume.dtype).kind == "f"
    count = height * width
    if floating:
        count = sum(
            int(np.isfinite(volume.read_rows(index, a, b)).sum())
            for a, b in row_spans(height, rows)
        )
    if count == 0:
        return SliceLevels(0, None, signal=False)
    step, position, parts = sample_step(count), 0, []
    for a, b in row_spans(height, rows):
        values = np.asarray(volume.read_rows(index, a, b))
        values = values[np.isfinite(values)] if floating else values.ravel()
        parts.append(values[(-position) % step :: step])
        position += values.size
    sample = np.concatenate(parts)
    return SliceLevels(
        count, normalization_range(sample, percentiles), sample_has_signal(sample, volume.dtype)
    )


# ----------------------------------------------------------------------------- rows in order
class RowBuffer:
    """Rows of a tall 2D array arriving in order, in chunks: ask for rows in increasing
    order and the rows before the last request are forgotten."""

    def __init__(self, chunks: Iterable[np.ndarray], width: int, dtype=np.float32):
        self._chunks = iter(chunks)
        self._first = 0
        self._rows = np.empty((0, width), dtype=dtype)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` (``start`` never smaller than in the previous call)."""
        if start < self._first:
            raise ValueError(f"row {start} was already dropped (kept from {self._first})")
        parts, end = [self._rows], self._first + len(self._rows)
        while end < stop:
            chunk = next(self._chunks)
            parts.append(chunk)
            end += len(chunk)
        data = np.concatenate(parts) if len(parts) > 1 else parts[0]
        self._rows, self._first = data[start - self._first :], start
        return self._rows[: stop - start]


# ----------------------------------------------------------------------------- resampling
def source_rows(out_start: int, out_stop: int, in_len: int, out_len: int) -> tuple[int, int]:
    """The input rows that rows ``out_start:out_stop`` of a linear resampling read."""
    scale = in_len / out_len
    low = (out_start + 0.5) * scale - 0.5
    high = (out_stop - 0.5) * scale - 0.5
    # One spare row each side: float rounding of the coordinates never reaches past it.
    return max(0, math.floor(low) - 1), min(in_len, math.floor(high) + 3)


def zoom_rows(
    rows: np.ndarray,
    first: int,
    out_start: int,
    out_stop: int,
    in_shape: tuple[int, int],
    out_shape: tuple[int, int],
) -> np.ndarray:
    """Rows ``out_start:out_stop`` of ``zoom_to(image, out_shape, order=1)``, computed from
    the image rows ``first:first + len(rows)`` only (those of :func:`source_rows`).

    The same coordinates as ``ndimage.zoom(..., grid_mode=True)`` (pixel centres mapped to
    pixel centres), shifted to the band: equal to the whole-image zoom within 1e-7.
    """
    from scipy import ndimage

    sy, sx = in_shape[0] / out_shape[0], in_shape[1] / out_shape[1]
    offset = ((out_start + 0.5) * sy - 0.5 - first, 0.5 * sx - 0.5)
    return ndimage.affine_transform(
        np.asarray(rows, dtype=np.float32),
        (sy, sx),
        offset=offset,
        output_shape=(out_stop - out_start, out_shape[1]),
        order=1,
        mode="reflect",
    )


def _model_scale_rows(
    volume, index: int, levels: SliceLevels, shape: tuple[int, int], rows: int
) -> Iterator[np.ndarray]:
    """The normalised slice at the model's scale, in chunks of rows."""
    height, width = volume.shape[1:]
    normalised = (
        apply_normalization(volume.read_rows(index, a, b), levels.value_range)
        for a, b in row_spans(height, rows)
    )
    if shape == (height, width):
        yield from normalised
        return
    source = RowBuffer(normalised, width)
    for a, b in row_spans(shape[0], rows):
        first, stop = source_rows(a, b, height, shape[0])
        yield zoom_rows(source.rows(first, stop), first, a, b, (height, width), shape)


class ZoomSink:
    """Resamples rows pushed in order to ``out_shape`` and pushes the results on."""

    def __init__(self, sink, in_shape: tuple[int, int], out_shape: tuple[int, int]):
        self.sink, self.in_shape, self.out_shape = sink, in_shape, out_shape
        self._first, self._rows = 0, np.empty((0, in_shape[1]), dtype=np.float32)
        self._done = 0  # output rows pushed on

    def push(self, rows: np.ndarray) -> None:
        self._rows = np.concatenate([self._rows, rows])
        self._emit(final=False)

    def close(self) -> None:
        self._emit(final=True)
        self.sink.close()

    def _emit(self, final: bool) -> None:
        in_len, out_len = self.in_shape[0], self.out_shape[0]
        end = self._first + len(self._rows)
        stop = self._done
        while stop < out_len and (
            final or source_rows(self._done, stop + 1, in_len, out_len)[1] <= end
        ):
            stop += 1
        for a, b in row_spans(stop - self._done, READ_ROWS):
            a, b = a + self._done, b + self._done
            first, last = source_rows(a, b, in_len, out_len)
            rows = self._rows[first - self._first : last - self._first]
            self.sink.push(zoom_rows(rows, first, a, b, self.in_shape, self.out_shape))
        if stop > self._done:
            self._done = stop
            keep = source_rows(stop, stop + 1, in_len, out_len)[0] if stop < out_len else end
            self._rows, self._first = self._rows[keep - self._first :], keep


class _Finish:
    """The last step of the whole-slice path: clip to [0, 1], NaN where the input has no data."""

    def __init__(self, sink, volume, index: int):
        self.sink, self.volume, self.index = sink, volume, index
        self.floating = np.dtype(volume.dtype).kind == "f"
        self.row = 0

    def push(self, rows: np.ndarray) -> None:
        rows = np.clip(rows, 0.0, 1.0)  # a new array: the caller may reuse ``rows``
        if self.floating:
            raw = self.volume.read_rows(self.index, self.row, self.row + len(rows))
            rows[~np.isfinite(raw)] = np.nan
        self.row += len(rows)
        self.sink.push(rows)

    def close(self) -> None:
        self.sink.close()


# ----------------------------------------------------------------------------- tiles
def _mirror(positions: np.ndarray, length: int) -> np.ndarray:
    """Index into an axis of ``length`` for positions outside it: ``np.pad(mode="symmetric")``,
    repeated as often as needed (as :func:`.tiling._reflect_pad` does)."""
    folded = np.mod(positions, 2 * length)
    return np.where(folded < length, folded, 2 * length - 1 - folded)


def _coverage(window: np.ndarray, starts: list[int], length: int) -> np.ndarray:
    """The sum of a 1D blending window over all tile positions along one axis."""
    total = np.zeros(length, dtype=np.float32)
    for start in starts:
        total[start : start + len(window)] += window
    return total


class TileRows:
    """The tile grid :func:`.tiling.predict_slice` uses for an image of ``shape``, predicted
    one row of tiles at a time."""

    def __init__(self, keras_model, shape: tuple[int, int], tile_size: int, overlap: int):
        multiple = _size_multiple(keras_model)
        tile_size = max(multiple, tile_size - tile_size % multiple)
        overlap = min(overlap, tile_size // 2)
        self.keras_model, self.shape, self.margin = keras_model, shape, IMAGE_MARGIN
        height, width = shape
        self.tile_h = _tile_length(height + 2 * self.margin, tile_size, overlap, multiple)
        self.tile_w = _tile_length(width + 2 * self.margin, tile_size, overlap, multiple)
        self.core_h = max(height + 2 * self.margin, self.tile_h)
        self.core_w = max(width + 2 * self.margin, self.tile_w)
        self.starts_h = _tile_starts(self.core_h, self.tile_h, self.tile_h - overlap)
        self.starts_w = _tile_starts(self.core_w, self.tile_w, self.tile_w - overlap)
        window_h = _window(self.tile_h, overlap if len(self.starts_h) > 1 else 0)
        window_w = _window(self.tile_w, overlap if len(self.starts_w) > 1 else 0)
        self.window = np.outer(window_h, window_w)
        # The window is separable, so the sum of the windows over all tiles is too: two
        # vectors instead of a second row-of-tiles array to accumulate.
        self.weights_h = _coverage(window_h, self.starts_h, self.core_h)
        self.weights_w = _coverage(window_w, self.starts_w, self.core_w)
        self.columns = _mirror(np.arange(self.core_w) - self.margin, width)

    @property
    def tiles(self) -> int:
        return len(self.starts_h) * len(self.starts_w)

    def _padded(self, source: RowBuffer, top: int) -> np.ndarray:
        """Rows ``top:top + tile_h`` of the mirrored, padded image."""
        lines = _mirror(np.arange(top, top + self.tile_h) - self.margin, self.shape[0])
        low = int(lines.min())
        return source.rows(low, int(lines.max()) + 1)[lines - low][:, self.columns]

    def predict(
        self, source: RowBuffer, sink, batch_size: int, flips: bool = False
    ) -> Iterator[int]:
        """Push probability rows (the image's, margin removed) into ``sink`` as each row of
        tiles is finished; yield the number of tiles predicted after every batch."""
        # One slice at a time here, every core on it (memory).
        forward, done = network_forward(self.keras_model, workers=1), 0
        total = np.zeros((self.tile_h, self.core_w), dtype=np.float32)
        for i, top in enumerate(self.starts_h):
            padded = self._padded(source, top)
            for first in range(0, len(self.starts_w), batch_size):
                chunk = self.starts_w[first : first + batch_size]
                batch = np.stack([padded[:, x : x + self.tile_w] for x in chunk])
                out = _predict_tiles(forward, batch, flips)
                for x, prob in zip(chunk, out, strict=True):
                    total[:, x : x + self.tile_w] += prob * self.window
                done += len(chunk)
                yield done
            del padded
            last = i == len(self.starts_h) - 1
            finished = self.tile_h if last else self.starts_h[i + 1] - top
            rows = total[:finished]  # divided in place: no row-of-tiles copy
            rows /= self.weights_h[top : top + finished, None]
            rows /= self.weights_w
            self._emit(sink, top, rows)  # sinks copy what they keep (see _Finish)
            if not last:  # the rows the next row of tiles overlaps carry over
                total[: self.tile_h - finished] = total[finished:]
                total[self.tile_h - finished :] = 0

    def _emit(self, sink, top: int, rows: np.ndarray) -> None:
        height, width = self.shape
        start, stop = max(top, self.margin), min(top + len(rows), self.margin + height)
        if stop > start:
            sink.push(rows[start - top : stop - top, self.margin : self.margin + width])


# ----------------------------------------------------------------------------- the slice
def predict_rows(
    model,
    volume,
    index: int,
    sink,
    *,
    pixel_size_nm: float | None = None,
    tile_size: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH,
    flips: bool = False,
    scratch_dir=None,
) -> Iterator[tuple[int, int]]:
    """Push the membrane probability of slice ``index`` of ``volume`` into ``sink``, in rows.

    Equal to ``predict_stack(model, volume, slices=[index], ...)`` within float rounding,
    with only a row of tiles in memory (and, for a model with several views, their running
    sum in a file in ``scratch_dir``, default the temporary folder). Yields ``(tiles done,
    tiles)`` after every batch, over all views; only ``(0, 0)`` for a slice that shows
    nothing (all NaN, as in the whole-slice path).
    """
    height, width = volume.shape[1:]
    levels = slice_levels(volume, index, model.info.percentiles)
    out = _Finish(sink, volume, index)
    if not levels.signal:  # a lost section: say nothing rather than invent cells
        for a, b in row_spans(height, READ_ROWS):
            out.push(np.full((b - a, width), np.nan, dtype=np.float32))
        out.close()
        yield 0, 0
        return
    factor = resample_factor(pixel_size_nm, model.info.pixel_size_nm)
    network, full = inference_model(model), (height, width)
    factors = [factor * float(scale) for scale in model.info.view_scales]
    shapes = [full if abs(f - 1.0) < 1e-9 else scaled_shape(full, f) for f in factors]
    grids = [TileRows(network, shape, tile_size, overlap) for shape in shapes]
    tiles, before = sum(grid.tiles for grid in grids), 0
    with _ViewMean(out, len(grids), full, scratch_dir) as views:
        for grid, view in zip(grids, views, strict=True):
            into = view if grid.shape == full else ZoomSink(view, grid.shape, full)
            chunks = _model_scale_rows(volume, index, levels, grid.shape, READ_ROWS)
            for done in grid.predict(RowBuffer(chunks, grid.shape[1]), into, batch_size, flips):
                yield before + done, tiles
            before += grid.tiles
            into.close()


class _ViewMean:
    """Sinks, one per view of a slice (``ModelInfo.view_scales``), that push the views'
    mean into ``out``: every view but the last is added up in a scratch file on disk (the
    slice may not fit in memory), the last one's rows leave averaged. One view: ``out``."""

    def __init__(self, out, count: int, shape: tuple[int, int], folder=None):
        from ..io.scratch import ScratchRows

        self.out, self.count = out, count
        self.store = ScratchRows(shape, np.float32, folder) if count > 1 else None

    def __enter__(self) -> list:
        if self.store is None:
            return [self.out]
        return [_AddedUp(self.store) for _ in range(self.count - 1)] + [
            _AddedUp(self.store, then=self.out, divide=self.count)
        ]

    def __exit__(self, *exc) -> bool:
        if self.store is not None:
            self.store.close()
        return False


class _AddedUp:
    """Adds rows pushed in order to those of ``store``; with ``then``, pushes the sums
    divided by ``divide`` on instead of storing them."""

    def __init__(self, store, then=None, divide: int = 1):
        self.store, self.then, self.divide, self.row = store, then, divide, 0

    def push(self, rows: np.ndarray) -> None:
        start, self.row = self.row, self.row + len(rows)
        total = self.store.read(start, self.row) + rows
        if self.then is None:
            self.store.write(start, total)
        else:
            self.then.push(total / np.float32(self.divide))

    def close(self) -> None:
        if self.then is not None:
            self.then.close()
