"""Segment a volume slice by slice and write each result at once: memory does not grow with Z.

The loop is read a slice, predict, post-process, write, next (:func:`segment_into`), so a run
holds one slice's working arrays whatever the number of slices. Outputs go through the
streaming writers of :mod:`napari_em_unet.io.writers` (TIFF or zarr), which appear under
their name only when complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io.volumes import Volume, open_volume
from ..io.writers import SliceWriter, open_writer
from .huge import BandProgress, Bands, segment_slice_in_bands


@dataclass(frozen=True)
class Progress:
    """One finished slice of a streaming run."""

    index: int
    """Index of the slice just written."""
    done: int
    """Slices finished so far, this one included."""
    total: int
    """Slices in the run."""
    elapsed_s: float
    """Seconds since the run started."""
    eta_s: float | None
    """Estimated seconds left (None before the first slice is done)."""
    no_signal: bool = False
    """The slice showed nothing (black, constant, no finite pixel) and got no cells."""

    @property
    def slices_per_second(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else float("nan")


class _Clock:
    """Elapsed time and an ETA that leaves out the first slice, which pays for warm-up."""

    def __init__(self, total: int):
        self.total = total
        self.start = time.perf_counter()
        self.first: float | None = None

    def tick(self, index: int, done: int, no_signal: bool = False) -> Progress:
        now = time.perf_counter() - self.start
        if self.first is None:
            self.first = now
        per_slice = (now - self.first) / (done - 1) if done >= 2 else now
        eta = per_slice * (self.total - done)
        return Progress(index, done, self.total, now, eta, no_signal)


def output_shape(volume: Volume) -> tuple[int, ...]:
    """The shape a segmentation of ``volume`` is written with: 2D images stay 2D."""
    return tuple(volume.shape[1:]) if volume.was_2d else tuple(volume.shape)


# ----------------------------------------------------------------------------- segmenting
def segment_into(
    model,
    volume,
    target,
    *,
    output="instances",
    slices: Iterable[int] | None = None,
    pixel_size_nm: float | None = None,
    params=None,
    bands: Bands | None = None,
    **predict_kwargs,
) -> Iterator[Progress | BandProgress]:
    """Segment ``volume`` slice by slice into ``target``, yielding progress after each slice.

    Each slice is read, predicted, post-processed and written before the next one is read,
    so memory stays at about one slice's working arrays however many slices there are.

    Parameters
    ----------
    model : LoadedModel
        From :func:`~napari_em_unet.model.files.load_model`.
    volume : Volume or path or array-like
        Anything :func:`~napari_em_unet.io.volumes.open_volume` accepts.
    target : SliceWriter or array-like
        A streaming writer, or any array supporting ``target[z] = slice`` (a zarr array from
        :func:`create_zarr_output`, a numpy memory map), shaped like the volume (2D for a
        2D image).
    output : Output or str
        ``"instances"``, ``"membranes"`` or ``"probabilities"``.
    slices : iterable of int, optional
        Slices to segment (default: all); the others are left as they are in ``target``.
    pixel_size_nm : float, optional
        Default: the volume's.
    params : WatershedParams, optional
        Default: the model's tuned values.
    bands : Bands, optional
        Slices larger than ``bands.above_pixels`` (default 8 Mpx) are segmented in bands
        (:mod:`.huge`): memory set by the tile size, not by the slice.
    **predict_kwargs
        ``tile_size``, ``overlap``, ``batch_size``, as for
        :func:`~napari_em_unet.segmentation.tiling.predict_stack`.

    Yields
    ------
    Progress
        After each slice is written.
    BandProgress
        For slices segmented in bands, also after every batch of tiles and every band of
        rows written, so that a progress bar moves within a slice.
    """
    from .pipeline import segment_stack

    volume = open_volume(volume)
    pixel_size_nm = pixel_size_nm or volume.pixel_size_nm
    indices = list(range(volume.shape[0])) if slices is None else [int(i) for i in slices]
    clock = _Clock(len(indices))
    put = target.write if isinstance(target, SliceWriter) else _setter(target, volume)
    bands = bands or Bands()
    if bands.applies(volume.shape):
        yield from _segment_in_bands(
            model,
            volume,
            target,
            indices,
            clock,
            output=output,
            pixel_size_nm=pixel_size_nm,
            params=params,
            bands=bands,
            **predict_kwargs,
        )
        return
    for item in segment_stack(
        model,
        volume,
        output=output,
        slices=indices,
        pixel_size_nm=pixel_size_nm,
        params=params,
        **predict_kwargs,
    ):
        index, done, no_signal = item.index, item.done, item.no_signal
        put(index, item.result)
        # Drop our references before handing control back, so that a slow consumer does
        # not keep a finished slice alive while the next one is computed.
        del item
        yield clock.tick(index, done, no_signal)


def _segment_in_bands(
    model,
    volume: Volume,
    target,
    indices: list[int],
    clock: _Clock,
    *,
    output,
    bands: Bands,
    **kwargs,
) -> Iterator[Progress | BandProgress]:
    from .pipeline import Output

    output = Output(output).value
    folder = getattr(target, "path", None)
    if isinstance(target, SliceWriter):
        put_rows = target.write_rows
    else:
        _setter(target, volume)  # checks the shape
        two_d = len(target.shape) == 2

        def put_rows(index: int, start: int, rows: np.ndarray) -> None:
            where = slice(start, start + len(rows))
            if two_d:
                target[where] = rows
            else:
                target[index, where] = rows

    for done, index in enumerate(indices, start=1):
        no_signal = yield from segment_slice_in_bands(
            model,
            volume,
            index,
            lambda start, rows, i=index: put_rows(i, start, rows),
            output=output,
            bands=bands,
            scratch_dir=_scratch_folder(folder),
            **kwargs,
        )
        yield clock.tick(index, done, no_signal)


def _scratch_folder(path) -> Path | None:
    """Beside the output, where the user expects files of the slice's size; else the default."""
    if path is None:
        return None
    folder = Path(path).parent
    return folder if folder.is_dir() else None


def _setter(target, volume: Volume):
    two_d = len(getattr(target, "shape", ())) == 2

    def put(index: int, plane: np.ndarray) -> None:
        if two_d:
            target[...] = plane
        else:
            target[index] = plane

    if not two_d and tuple(target.shape) != tuple(volume.shape):
        raise InputError(
            f"the output has shape {tuple(target.shape)} but the volume {tuple(volume.shape)}"
        )
    return put


def segment_to(
    model,
    volume,
    path,
    *,
    output="instances",
    pixel_size_nm: float | None = None,
    slices: Iterable[int] | None = None,
    params=None,
    bands: Bands | None = None,
    **predict_kwargs,
) -> Iterator[Progress | BandProgress]:
    """Segment ``volume`` into the file ``path`` (TIFF, or zarr for ``.zarr``), streaming.

    The output appears under its name only when every slice is written; if the run fails
    or the caller stops iterating, the temporary output is deleted. Parameters are those of
    :func:`segment_into`; the output has the volume's shape (2D for a 2D image) and records
    the pixel size.

    Yields
    ------
    Progress or BandProgress
        As for :func:`segment_into`.

    Returns
    -------
    pathlib.Path
        The written file (the generator's return value).
    """
    from .pipeline import Output

    volume = open_volume(volume)
    pixel_size_nm = pixel_size_nm or volume.pixel_size_nm
    writer = open_writer(
        path, output_shape(volume), Output(output).dtype, pixel_size_nm=pixel_size_nm
    )
    try:
        yield from segment_into(
            model,
            volume,
            writer,
            output=output,
            slices=slices,
            pixel_size_nm=pixel_size_nm,
            params=params,
            bands=bands,
            **predict_kwargs,
        )
    except BaseException:  # including GeneratorExit when the caller stops early
        writer.abort()
        raise
    return writer.commit()
