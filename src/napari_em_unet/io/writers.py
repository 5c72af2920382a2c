"""Streaming writers: a volume's output written one slice at a time, renamed when complete.

* **TIFF** (:class:`TiffSliceWriter`): the file's structure is laid out first, then each
  slice's pixels are written at their offset. Uncompressed and contiguous (memory-mappable
  by readers), BigTIFF once past the 4 GB of classic TIFF, ImageJ-style where ImageJ can
  read the type, with the pixel size. Slices may arrive in any order (as they do from a
  cluster); slices never written read as 0.
* **zarr** (:class:`ZarrSliceWriter`, when the output name ends in ``.zarr``): an OME-Zarr
  0.4 image (zarr format 2, readable by zarr 2 and 3, napari, Fiji and neuroglancer) whose
  single level ``0`` is chunked one slice deep, so each slice is written as whole chunks.

Both write under a hidden temporary name beside the output (``.NAME.PID-TOKEN.part``, see
:mod:`.atomic`) and rename it when complete: a failed or interrupted run leaves no partial
output.
For a viewer, :func:`create_zarr_output` makes a zarr array that is filled slice by slice
while it is displayed (a zarr-backed napari labels layer).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError
from .atomic import publish, remove_stale_temporaries, temporary_beside

ZARR_ARRAY = "0"
"""Name of the full-resolution array inside an output ``.zarr`` (OME-Zarr level 0)."""
_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")
_MAX_CHUNK = 1024


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

    def write_rows(self, index: int, start: int, rows: np.ndarray) -> None:
        """Write rows ``start:start + len(rows)`` of slice ``index`` (huge slices, in bands)."""
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

    def _check_rows(self, index: int, start: int, rows: np.ndarray) -> np.ndarray:
        depth = 1 if len(self.shape) == 2 else self.shape[0]
        if not 0 <= index < depth:
            raise IndexError(f"slice {index} is outside the output's {depth} slices")
        rows = np.asarray(rows)
        height, width = self.shape[-2:]
        if rows.ndim != 2 or rows.shape[1] != width or not 0 <= start <= height - len(rows):
            raise ValueError(
                f"rows {start}:{start + len(rows)} of shape {rows.shape} for an "
                f"output of {self.shape}"
            )
        return np.ascontiguousarray(rows, dtype=self.dtype)

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

        from .tiff import tiff_write_options

        self.path = Path(path)
        self.shape = tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype).newbyteorder("=")
        if self.path.is_dir():
            raise InputError(f"{self.path} is a folder; give a file name for the output")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
        options = tiff_write_options(self.dtype, len(self.shape), pixel_size_nm, nbytes)
        imagej, bigtiff = options.pop("imagej"), options.pop("bigtiff")
        remove_stale_temporaries(self.path.parent, self.path.name)
        # Created by tifffile, so the file gets the user's usual permissions.
        self._tmp = temporary_beside(self.path)
        self._fd: int | None = None
        try:
            with warnings.catch_warnings():
                # ImageJ reads BigTIFF through Bio-Formats only; the file is still valid.
                warnings.filterwarnings("ignore", message=".*nonconformant BigTIFF ImageJ")
                with tifffile.TiffWriter(self._tmp, imagej=imagej, bigtiff=bigtiff) as tif:
                    # data=None lays out tags and reserves the pixels without writing them:
                    # the file is sparse until slices arrive, and unwritten slices read as 0.
                    offset, _ = tif.write(
                        data=None, shape=self.shape, dtype=self.dtype, returnoffset=True, **options
                    )
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
        self._pwrite(plane, self._offset + index * self.slice_nbytes)

    def write_rows(self, index: int, start: int, rows: np.ndarray) -> None:
        """Write rows of slice ``index`` at their offset (rows are contiguous in the file)."""
        rows = self._check_rows(index, start, rows)
        row_nbytes = self.shape[-1] * self.dtype.itemsize
        self._pwrite(rows, self._offset + index * self.slice_nbytes + start * row_nbytes)

    def _pwrite(self, data: np.ndarray, position: int) -> None:
        view = memoryview(data.reshape(-1)).cast("B")
        while len(view):  # pwrite may write less than asked (e.g. > 2 GB at once)
            written = os.pwrite(self._fd, view, position)
            view, position = view[written:], position + written

    def commit(self) -> Path:
        """Flush, close and rename the file to its final name."""
        if self._fd is None:
            raise RuntimeError("the writer is already closed")
        os.close(self._fd)
        self._fd = None
        return publish(self._tmp, self.path)

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path.parent, self.path.name)
        self._tmp = temporary_beside(self.path)
        try:
            self.array = create_zarr_output(
                self._tmp, self.shape, self.dtype, pixel_size_nm=pixel_size_nm, chunks=chunks
            )
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

    def write_rows(self, index: int, start: int, rows: np.ndarray) -> None:
        """Write rows of slice ``index``; rows aligned with the chunks (1024) write whole chunks."""
        rows = self._check_rows(index, start, rows)
        where = slice(start, start + len(rows))
        if len(self.shape) == 2:
            self.array[where] = rows
        else:
            self.array[index, where] = rows

    def commit(self) -> Path:
        """Move the finished store to its final name (replacing an older zarr there)."""
        if not self._open:
            raise RuntimeError("the writer is already closed")
        self._open = False
        old = None
        if self.path.exists():
            old = temporary_beside(self.path)
            old.mkdir()
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


def create_zarr_output(
    path, shape, dtype, *, pixel_size_nm: float | None = None, chunks=None, overwrite: bool = False
):
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
        ``pixel_size_nm`` attribute, which :func:`~napari_em_unet.io.volumes.open_volume` reads.
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
    array = group.create_array(
        ZARR_ARRAY, shape=shape, chunks=tuple(chunks), dtype=dtype, fill_value=0, attributes=attrs
    )
    group.attrs.update({"multiscales": [_ome_multiscale(path.stem, shape, pixel_size_nm)], **attrs})
    return array


def _ome_multiscale(name: str, shape: tuple, pixel_size_nm: float | None) -> dict:
    """OME-Zarr 0.4 metadata of one full-resolution level, in nanometres when known."""
    scale = [1.0] * len(shape)
    axes = [{"name": n, "type": "space"} for n in "zyx"[-len(shape) :]]
    if pixel_size_nm:
        scale[-2:] = [float(pixel_size_nm)] * 2
        for axis in axes[-2:]:
            axis["unit"] = "nanometer"
    transform = [{"type": "scale", "scale": scale}]
    return {
        "version": "0.4",
        "name": name,
        "axes": axes,
        "datasets": [{"path": ZARR_ARRAY, "coordinateTransformations": transform}],
    }


def open_writer(path, shape, dtype, *, pixel_size_nm: float | None = None) -> SliceWriter:
    """The streaming writer for ``path``: zarr when it ends in ``.zarr``, TIFF otherwise."""
    path = Path(path)
    if path.suffix.lower() == ".zarr":
        return ZarrSliceWriter(path, shape, dtype, pixel_size_nm=pixel_size_nm)
    return TiffSliceWriter(path, shape, dtype, pixel_size_nm=pixel_size_nm)
