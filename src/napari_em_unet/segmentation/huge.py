"""One slice too large to segment whole (an SEM montage): in bands, memory set by the tile size.

The whole-slice path holds float arrays the size of the slice (the normalised and padded
image, the tile sums and weights, the probability) and the watershed's working arrays (34
bytes per pixel): with TensorFlow and a batch of four tiles (the default until 2026-12-05),
3.8 GB for 6000 x 6000.
Here the slice streams instead:

1. one reading pass takes the percentiles (:func:`.bands.slice_levels`);
2. rows are read, normalised and resampled as one row of tiles needs them, the tiles are
   predicted and blended, and finished probability rows move on (:mod:`.bands`);
3. every ``band_rows`` rows, the watershed runs on the band and its halo in a helper thread
   and the band's provisional cell ids go to a scratch file on disk (:mod:`.stitching`);
4. when the last band is done, the ids are joined across band borders, small cells removed
   and the rest numbered 1..n, and a second pass writes the final rows to the output.

Memory is then a few rows of tiles wide: it grows with the slice's width, not its area.
Probabilities equal the whole-slice ones within float rounding; cells equal them except
where a watershed flood would have crossed more than a halo (tested and measured).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..io.scratch import ScratchRows
from .bands import predict_rows, row_spans
from .preprocessing import resample_factor
from .stitching import BandStitcher
from .tiling import DEFAULT_BATCH
from .watershed import WatershedParams, membranes_from_labels, params_for_data


@dataclass(frozen=True)
class Bands:
    """When and how slices are processed in bands."""

    above_pixels: int | None = 8 * 2**20
    """Slices with more pixels than this go in bands (None: never; 0: always). 8 Mpx
    (2896 x 2896) is about where the whole-slice path passes 2 GB (3000 x 3000: 2.0 GB)."""
    band_rows: int = 1024
    """Rows per watershed band (at the data's resolution), at most ..."""
    band_pixels: int = 8 * 2**20
    """... and fewer for wide slices, so that a band (whose watershed needs about 34 bytes
    per pixel) stays this size: 1024 rows up to 8192 pixels wide, 419 at 20000."""
    halo: int = 128
    """Rows of context above and below a band, at the model's scale."""
    write_rows: int = 1024
    """Rows per write of the final labels (a zarr output's chunk height)."""
    batch_size: int = DEFAULT_BATCH
    """Tiles per network call unless the caller sets ``batch_size`` (one, as everywhere), and ..."""
    tile_size: int = 512
    """... their size unless the caller sets ``tile_size``. TensorFlow keeps the activations
    of its largest call: 1.1 GB for four 1024-pixel tiles, 0.25 GB for one, nothing to speak
    of for one 512-pixel tile, at about the same speed per pixel on a CPU (measured:
    docs/large-volumes.md); smaller tiles also make a row of tiles half as tall."""

    def applies(self, shape: tuple[int, ...]) -> bool:
        return self.above_pixels is not None and shape[-2] * shape[-1] > self.above_pixels

    def rows_for(self, width: int) -> int:
        return min(self.band_rows, max(64, self.band_pixels // max(1, width)))


@dataclass(frozen=True)
class BandProgress:
    """Progress inside one slice that is processed in bands."""

    index: int
    """The slice."""
    stage: str
    """``"predict"`` (tiles and watershed bands) or ``"write"`` (final labels, row by row)."""
    tiles_done: int
    tiles: int
    bands_done: int
    bands: int
    rows_written: int
    rows: int
    no_signal: bool = False
    """The slice shows nothing (black, constant, no finite pixel): it gets no cells."""

    @property
    def fraction(self) -> float:
        """Share of the slice done, for a progress bar (the write pass counts 5 %)."""
        predicted = self.tiles_done / self.tiles if self.tiles else 1.0
        return 0.95 * predicted + 0.05 * (self.rows_written / self.rows if self.rows else 0.0)


RowWriter = Callable[[int, np.ndarray], None]
"""``put(start, rows)``: writes rows of the slice being segmented into the output."""


class _RowSink:
    """Probability rows straight to the output."""

    def __init__(self, put: RowWriter):
        self.put, self.row = put, 0

    def push(self, rows: np.ndarray) -> None:
        self.put(self.row, rows)
        self.row += len(rows)

    def close(self) -> None:
        pass


def segment_slice_in_bands(
    model,
    volume,
    index: int,
    put: RowWriter,
    *,
    output: str,
    pixel_size_nm: float | None = None,
    params: WatershedParams | None = None,
    bands: Bands = Bands(),
    scratch_dir=None,
    **predict_kwargs,
) -> Generator[BandProgress, None, bool]:
    """Segment slice ``index`` of ``volume`` into ``put``, yielding progress per tile batch.

    ``output`` is ``"instances"``, ``"membranes"`` or ``"probabilities"``; ``scratch_dir``
    holds the provisional labels (4 bytes per pixel; default: the temporary folder);
    ``predict_kwargs`` are ``tile_size``, ``overlap``, ``batch_size``. Returns whether the
    slice showed nothing (the generator's return value).
    """
    height, width = volume.shape[1:]
    params = params or params_for_data(
        model.info.postprocessing, model.info.pixel_size_nm, pixel_size_nm
    )
    tiles = (0, 0)
    predict = {
        "batch_size": bands.batch_size,
        "tile_size": bands.tile_size,
        **predict_kwargs,
        "pixel_size_nm": pixel_size_nm,
        "scratch_dir": scratch_dir,
    }

    def record(stage, tiles=(0, 0), band_count=(0, 0), written=0) -> BandProgress:
        # predict_rows runs no tile at all only when the slice shows nothing.
        return BandProgress(
            index, stage, *tiles, *band_count, written, height, no_signal=tiles == (0, 0)
        )

    if output == "probabilities":
        for tiles in predict_rows(model, volume, index, _RowSink(put), **predict):
            yield record("predict", tiles, (0, 0))
        yield record("write", tiles, (0, 0), height)
        return tiles == (0, 0)
    factor = resample_factor(pixel_size_nm, model.info.pixel_size_nm)
    halo = math.ceil(bands.halo / factor)
    with (
        ScratchRows((height, width), np.uint32, scratch_dir) as store,
        ThreadPoolExecutor(1, thread_name_prefix="em-unet-band-watershed") as pool,
    ):
        stitcher = BandStitcher(
            params, (height, width), store, band_rows=bands.rows_for(width), halo=halo, pool=pool
        )
        for tiles in predict_rows(model, volume, index, stitcher, **predict):
            yield record("predict", tiles, (stitcher.bands_done, stitcher.bands))
        lut = stitcher.final_ids()
        for a, b in row_spans(height, bands.write_rows):
            labels = lut[store.read(a, b)]
            put(a, labels if output == "instances" else membranes_from_labels(labels))
            yield record("write", tiles, (stitcher.bands, stitcher.bands), b)
    return tiles == (0, 0)
