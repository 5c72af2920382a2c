"""Segment a volume slice by slice and write each result at once: memory does not grow with Z.

The loop is read a slice, predict, post-process, write, next (:func:`segment_into`), so a run
holds one slice's working arrays whatever the number of slices. Outputs are written as they
go:

* **TIFF** (:class:`TiffSliceWriter`): the file's structure is laid out first, then each
  slice's pixels are written at their offset. Uncompressed and contiguous (memory-mappable
  by readers), BigTIFF once past the 4 GB of classic TIFF, ImageJ-style where ImageJ can
  read the type, with the pixel size. Slices may arrive in any order (as they do from a
  cluster); slices never written read as 0.
* **zarr** (:class:`ZarrSliceWriter`, when the output name ends in ``.zarr``): an OME-Zarr
  0.4 image (zarr format 2, readable by zarr 2 and 3, napari, Fiji and neuroglancer) whose
  single level ``0`` is chunked one slice deep, so each slice is written as whole chunks.

Both write under a temporary name (``.NAME.*.part`` beside a TIFF, ``NAME.zarr.partial``)
and rename it when complete: a failed or interrupted run leaves no partial output.

For a viewer, :func:`create_zarr_output` makes a zarr array that :func:`segment_into` fills
slice by slice while it is displayed (a zarr-backed napari labels layer).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError
from .volumes import Volume, open_volume

ZARR_ARRAY = "0"
"""Name of the full-resolution array inside an output ``.zarr`` (OME-Zarr level 0)."""
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
_MAX_CHUNK = 1024


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

    @property
    def slices_per_second(self) -> float:
        return self.done / self.elapsed_s if self.elapsed_s > 0 else float("nan")


class _Clock:
    """Elapsed time and an ETA that leaves out the first slice, which pays for warm-up."""

    def __init__(self, total: int):
        self.total = total
        self.start = time.perf_counter()
        self.first: float | None = None

    def tick(self, index: int, done: int) -> Progress:
        now = time.perf_counter() - self.start
        if self.first is None:
            self.first = now
        per_slice = (now - self.first) / (done - 1) if done >= 2 else now
        eta = per_slice * (self.total - done)
        return Progress(index, done, self.total, now, eta)


# ----------------------------------------------------------------------------- writers
class SliceWriter:
    """Base of the streaming writers: ``write`` slices, then ``commit`` (or ``abort``).

    Used as a context manager it commits when the block succeeds and aborts (deleting the
    temporary output) when it raises.
    """

    path: Path
    shape: tuple[int, ...]
    dtype: np.dtype

    def write(self, index: int, plane: np.ndarray) -> None:
        raise NotImplementedError

    def commit(self) -> Path:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def _check(self, index: int, plane: np.ndarray) -> np.ndarray:
        depth = 1 if len(self.shape) == 2 else self.shape[0]
        if not 0 <= index < depth:
            raise IndexError(f"slice {index} is outside the output's {depth} slices")
        plane = np.asarray(plane)
        if plane.shape != tuple(self.shape[-2:]):
            raise ValueError(f"slice of shape {plane.shape} for an output of {self.shape}")
        return np.ascontiguousarray(plane, dtype=self.dtype)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False


class TiffSliceWriter(SliceWriter):
    """A TIFF written one slice at a time, at its offset in a pre-laid-out file.

    Parameters
    ----------
    path : str or os.PathLike
        Final file name; the data go to a temporary file beside it until :meth:`commit`.
    shape : tuple of int
        ``(Z, Y, X)``, or ``(Y, X)`` for a single image.
    dtype : numpy dtype
        Type of the written slices.
    pixel_size_nm : float, optional
        Stored as the resolution (ImageJ-style when ImageJ reads the type).
    """

    def __init__(self, path, shape, dtype, pixel_size_nm: float | None = None):
        import tifffile

        from .tiff_io import tiff_write_options

        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        if self.path.is_dir():
            raise InputError(f"{self.path} is a folder; give a file name for the output")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        options = tiff_write_options(self.dtype, len(self.shape), pixel_size_nm, nbytes)
        imagej, bigtiff = options.pop("imagej"), options.pop("bigtiff")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                   dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._fd: int | None = None
        try:
            with warnings.catch_warnings():
                # ImageJ reads BigTIFF through Bio-Formats only; the file is still valid.
                warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ")
                with tifffile.TiffWriter(self._tmp, imagej=imagej, bigtiff=bigtiff) as tif:
                    # data=None lays out tags and reserves the pixels without writing them:
                    # the file is sparse until slices arrive, and unwritten slices read as 0.
                    offset, _ = tif.write(data=None, shape=self.shape, dtype=self.dtype,
                                          returnoffset=True, **options)
            self._offset = int(offset)
            self._fd = os.open(self._tmp, os.O_RDWR)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self.slice_nbytes = self.shape[-1] * self.shape[-2] * self.dtype.itemsize
        self.bigtiff = bigtiff

    def write(self, index: int, plane: np.ndarray) -> None:
        """Write slice ``index`` (any order; writing a slice twice overwrites it)."""
        plane = self._check(index, plane)
        view = memoryview(plane.reshape(-1)).cast("B")
        position = self._offset + index * self.slice_nbytes
        while len(view):  # pwrite may write less than asked (e.g. > 2 GB at once)
            written = os.pwrite(self._fd, view, position)
            view, position = view[written:], position + written

    def commit(self) -> Path:
        """Flush, close and rename the file to its final name."""
        if self._fd is None:
            raise RuntimeError("the writer is already closed")
        try:
            os.fsync(self._fd)
        finally:
            os.close(self._fd)
            self._fd = None
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file; the final name is left untouched."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tmp.unlink(missing_ok=True)


class ZarrSliceWriter(SliceWriter):
    """An OME-Zarr image written slice by slice into ``NAME.zarr.partial``, renamed at the end.

    Parameters
    ----------
    path : str or os.PathLike
        Final ``.zarr`` folder. An existing zarr there is replaced on :meth:`commit`; any
        other existing file or folder is refused (nothing is deleted that we did not write).
    shape, dtype, pixel_size_nm
        As for :class:`TiffSliceWriter`.
    chunks : tuple of int, optional
        Default: one slice deep, up to 1024 x 1024 in Y and X.

    Attributes
    ----------
    array_path : pathlib.Path
        The zarr array being written (inside the temporary folder); dask workers on a
        shared file system write their slices there directly.
    """

    def __init__(self, path, shape, dtype, pixel_size_nm: float | None = None, chunks=None):
        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        _check_replaceable(self.path)
        self._tmp = self.path.with_name(self.path.name + ".partial")
        if self._tmp.exists():
            _check_replaceable(self._tmp)  # left by a killed run
            shutil.rmtree(self._tmp)
        try:
            self.array = create_zarr_output(self._tmp, self.shape, self.dtype,
                                            pixel_size_nm=pixel_size_nm, chunks=chunks)
        except BaseException:
            shutil.rmtree(self._tmp, ignore_errors=True)
            raise
        self.array_path = self._tmp / ZARR_ARRAY
        self._open = True

    def write(self, index: int, plane: np.ndarray) -> None:
        """Write slice ``index`` as whole chunks (any order)."""
        plane = self._check(index, plane)
        if len(self.shape) == 2:
            self.array[...] = plane
        else:
            self.array[index] = plane

    def commit(self) -> Path:
        """Move the finished store to its final name (replacing an older zarr there)."""
        if not self._open:
            raise RuntimeError("the writer is already closed")
        self._open = False
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.old-", dir=self.path.parent))
            os.replace(self.path, old / self.path.name)
        os.replace(self._tmp, self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Delete the temporary store; the final name is left untouched."""
        self._open = False
        shutil.rmtree(self._tmp, ignore_errors=True)


def _check_replaceable(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir() or not any((path / m).exists() for m in _ZARR_MARKERS):
        raise InputError(f"{path} exists and is not a zarr store; refusing to replace it")


def create_zarr_output(path, shape, dtype, *, pixel_size_nm: float | None = None,
                       chunks=None, overwrite: bool = False):
    """Create an empty (all 0) OME-Zarr image for a segmentation and return its zarr array.

    Made for viewers: napari can show the returned array as a labels layer while
    :func:`segment_into` fills it, and only the chunks on screen are ever in memory.

    Parameters
    ----------
    path : str or os.PathLike
        Folder to create (conventionally ending in ``.zarr``).
    shape : tuple of int
        ``(Z, Y, X)`` or ``(Y, X)``.
    dtype : numpy dtype
        E.g. ``Output.INSTANCES.dtype``.
    pixel_size_nm : float, optional
        Recorded as the OME-Zarr scale of Y and X (in nanometres) and as the
        ``pixel_size_nm`` attribute, which :func:`~napari_em_unet.volumes.open_volume` reads.
    chunks : tuple of int, optional
        Default one slice deep and up to 1024 x 1024.
    overwrite : bool
        Replace an existing store at ``path`` (otherwise an existing one is an error).

    Returns
    -------
    zarr.Array
        The full-resolution array ``path/0``, open for writing.
    """
    import zarr

    path = Path(path)
    shape = tuple(int(n) for n in shape)
    if chunks is None:
        chunks = ((1,) if len(shape) == 3 else ()) + tuple(min(n, _MAX_CHUNK) for n in shape[-2:])
    if path.exists() and not overwrite:
        raise InputError(f"{path} already exists")
    group = zarr.open_group(str(path.absolute()), mode="w", zarr_format=2)
    attrs = {"pixel_size_nm": float(pixel_size_nm)} if pixel_size_nm else {}
    array = group.create_array(ZARR_ARRAY, shape=shape, chunks=tuple(chunks), dtype=dtype,
                               fill_value=0, attributes=attrs)
    names = "zyx"[-len(shape):]
    scale = [1.0] * len(shape)
    axes = [{"name": n, "type": "space"} for n in names]
    if pixel_size_nm:
        scale[-2:] = [float(pixel_size_nm)] * 2
        for axis in axes[-2:]:
            axis["unit"] = "nanometer"
    group.attrs.update({
        "multiscales": [{
            "version": "0.4",
            "name": path.stem,
            "axes": axes,
            "datasets": [{"path": ZARR_ARRAY, "coordinateTransformations": [
                {"type": "scale", "scale": scale}]}],
        }],
        **attrs,
    })
    return array


def open_writer(path, shape, dtype, *, pixel_size_nm: float | None = None) -> SliceWriter:
    """The streaming writer for ``path``: zarr when it ends in ``.zarr``, TIFF otherwise."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return ZarrSliceWriter(path, shape, dtype, pixel_size_nm=pixel_size_nm)
    return TiffSliceWriter(path, shape, dtype, pixel_size_nm=pixel_size_nm)


def output_shape(volume: Volume) -> tuple[int, ...]:
    """The shape a segmentation of ``volume`` is written with: 2D images stay 2D."""
    return tuple(volume.shape[1:]) if volume.was_2d else tuple(volume.shape)


# ----------------------------------------------------------------------------- segmenting
def segment_into(model, volume, target, *, output="instances",
                 slices: Iterable[int] | None = None, pixel_size_nm: float | None = None,
                 params=None, **predict_kwargs) -> Iterator[Progress]:
    """Segment ``volume`` slice by slice into ``target``, yielding progress after each slice.

    Each slice is read, predicted, post-processed and written before the next one is read,
    so memory stays at about one slice's working arrays however many slices there are.

    Parameters
    ----------
    model : LoadedModel
        From :func:`~napari_em_unet.model_files.load_model`.
    volume : Volume or path or array-like
        Anything :func:`~napari_em_unet.volumes.open_volume` accepts.
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
    **predict_kwargs
        ``tile_size``, ``overlap``, ``batch_size``, as for
        :func:`~napari_em_unet.inference.predict_stack`.

    Yields
    ------
    Progress
        After each slice is written.
    """
    from .segmentation import segment_stack

    volume = open_volume(volume)
    pixel_size_nm = pixel_size_nm or volume.pixel_size_nm
    indices = list(range(volume.shape[0])) if slices is None else [int(i) for i in slices]
    clock = _Clock(len(indices))
    put = target.write if isinstance(target, SliceWriter) else _setter(target, volume)
    for item in segment_stack(model, volume, output=output, slices=indices,
                              pixel_size_nm=pixel_size_nm, params=params, **predict_kwargs):
        index, done = item.index, item.done
        put(index, item.result)
        # Drop our references before handing control back, so that a slow consumer does
        # not keep a finished slice alive while the next one is computed.
        del item
        yield clock.tick(index, done)


def _setter(target, volume: Volume):
    two_d = len(getattr(target, "shape", ())) == 2

    def put(index: int, plane: np.ndarray) -> None:
        if two_d:
            target[...] = plane
        else:
            target[index] = plane

    if not two_d and tuple(target.shape) != tuple(volume.shape):
        raise InputError(f"the output has shape {tuple(target.shape)} but the volume "
                         f"{tuple(volume.shape)}")
    return put


def segment_to(model, volume, path, *, output="instances", pixel_size_nm: float | None = None,
               slices: Iterable[int] | None = None, params=None,
               **predict_kwargs) -> Iterator[Progress]:
    """Segment ``volume`` into the file ``path`` (TIFF, or zarr for ``.zarr``), streaming.

    The output appears under its name only when every slice is written; if the run fails
    or the caller stops iterating, the temporary output is deleted. Parameters are those of
    :func:`segment_into`; the output has the volume's shape (2D for a 2D image) and records
    the pixel size.

    Yields
    ------
    Progress
        After each slice is written.

    Returns
    -------
    pathlib.Path
        The written file (the generator's return value).
    """
    from .segmentation import Output

    volume = open_volume(volume)
    pixel_size_nm = pixel_size_nm or volume.pixel_size_nm
    writer = open_writer(path, output_shape(volume), Output(output).dtype,
                         pixel_size_nm=pixel_size_nm)
    try:
        yield from segment_into(model, volume, writer, output=output, slices=slices,
                                pixel_size_nm=pixel_size_nm, params=params, **predict_kwargs)
    except BaseException:  # including GeneratorExit when the caller stops early
        writer.abort()
        raise
    return writer.commit()


def run(progress: Iterator[Progress], callback=None):
    """Drive a streaming generator to the end; return its return value (e.g. the path)."""
    while True:
        try:
            record = next(progress)
        except StopIteration as stop:
            return stop.value
        if callback is not None:
            callback(record)
