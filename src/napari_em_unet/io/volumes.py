"""Volumes that are never loaded whole: TIFF read page by page, zarr, OME-Zarr and dask arrays.

:func:`open_volume` turns a path or an in-memory array into a :class:`Volume`: a grey ZYX
stack that reads one slice when indexed (``volume[z]``) and knows its pixel size when the
file records it. Segmentation (:mod:`.streaming`, :mod:`.distributed`) and the napari
plugin (:meth:`Volume.to_dask`) read through it, so the memory they need depends on the
size of one slice, not on the number of slices.

TIFF slices are read with plain file reads rather than a memory map: pages touched through
a map stay resident in the process, so a map would make the memory of a long run grow with
the number of slices it has read.

Volumes pickle by reference (a file path and an offset, a zarr store path, or a dask
graph), so a dask.distributed worker reading a slice opens the file itself.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..errors import InputError, first_line
from ..segmentation.preprocessing import to_grey
from .units import UNIT_TO_NM

_ZARR_MARKERS = (".zarray", ".zgroup", "zarr.json")


# ----------------------------------------------------------------------------- sources
class _ArraySource:
    """Slices of an array-like (numpy, memory map, zarr, dask), with singleton axes dropped."""

    def __init__(self, array, keep: tuple[int, ...]):
        self.array = array
        self.keep = keep  # the raw axes that remain: (z,) y, x (, channel)

    def plane_key(self, index: int | None) -> tuple:
        key = []
        z_axis = self.keep[0] if index is not None else None
        for axis in range(len(self.array.shape)):
            if axis not in self.keep:
                key.append(0)
            elif axis == z_axis:
                key.append(index)
            else:
                key.append(slice(None))
        return tuple(key)

    def read(self, index: int | None) -> np.ndarray:
        plane = self.array[self.plane_key(index)]
        if hasattr(plane, "compute"):
            # Synchronous: inside a dask.distributed task the default scheduler would try to
            # submit tasks of its own from a worker thread.
            plane = plane.compute(scheduler="sync")
        return np.asarray(plane)

    def read_rows(self, index: int | None, start: int, stop: int) -> np.ndarray:
        key = list(self.plane_key(index))
        y_axis = self.keep[0 if index is None else 1]
        key[y_axis] = slice(start, stop)
        rows = self.array[tuple(key)]
        if hasattr(rows, "compute"):
            rows = rows.compute(scheduler="sync")
        # A copy: a view would keep a memory map's pages (or a whole in-memory chunk) alive.
        return np.array(rows)


class _TiffContiguousSource:
    """Uncompressed TIFF data stored in one run: slice ``i`` is at a known file offset."""

    def __init__(self, path: Path, offset: int, plane_shape: tuple[int, ...], dtype: np.dtype):
        self.path = path
        self.offset = offset
        self.plane_shape = plane_shape
        self.dtype = dtype  # with the file's byte order

    def read(self, index: int | None) -> np.ndarray:
        count = math.prod(self.plane_shape)
        start = self.offset + (index or 0) * count * self.dtype.itemsize
        with open(self.path, "rb") as fh:
            plane = np.fromfile(fh, dtype=self.dtype, count=count, offset=start)
        if plane.size != count:
            raise InputError(f"{self.path.name} is truncated (slice {index} is incomplete)")
        return plane.reshape(self.plane_shape).astype(self.dtype.newbyteorder("="), copy=False)

    def read_rows(self, index: int | None, start: int, stop: int) -> np.ndarray:
        row = math.prod(self.plane_shape[1:])
        plane_start = self.offset + (index or 0) * math.prod(self.plane_shape) * self.dtype.itemsize
        count = (stop - start) * row
        with open(self.path, "rb") as fh:
            rows = np.fromfile(
                fh,
                dtype=self.dtype,
                count=count,
                offset=plane_start + start * row * self.dtype.itemsize,
            )
        if rows.size != count:
            raise InputError(f"{self.path.name} is truncated (slice {index or 0} is incomplete)")
        shape = (stop - start, *self.plane_shape[1:])
        return rows.reshape(shape).astype(self.dtype.newbyteorder("="), copy=False)


class _TiffPageSource:
    """Compressed or scattered TIFF pages, decoded one at a time by tifffile."""

    def __init__(self, path: Path, plane_shape: tuple[int, ...]):
        self.path = path
        self.plane_shape = plane_shape
        self._tif = None
        self._page_cache: tuple[int, np.ndarray] | None = None
        self._lock = threading.Lock()

    def __getstate__(self):
        # An open file handle does not travel to another process: reopen it there.
        return {"path": self.path, "plane_shape": self.plane_shape}

    def __setstate__(self, state):
        self.__init__(state["path"], state["plane_shape"])

    def read(self, index: int | None) -> np.ndarray:
        import tifffile

        with self._lock:
            if self._tif is None:
                self._tif = tifffile.TiffFile(self.path)
            try:
                plane = self._tif.asarray(key=index or 0, series=0)
            except Exception as exc:  # damaged compressed data surfaces only when decoded
                raise InputError(
                    f"{self.path.name} slice {index or 0} could not be decoded ({first_line(exc)})"
                ) from None
        return plane.reshape(self.plane_shape)

    def read_rows(self, index: int | None, start: int, stop: int) -> np.ndarray:
        """Rows of one page, decoding only the strips that hold them when the page is striped.

        A tiled or otherwise unusual page is decoded whole once and kept until another page
        is asked for, so the rows of one huge slice are still read in one decode.
        """
        import tifffile

        key = index or 0
        with self._lock:
            if self._tif is None:
                self._tif = tifffile.TiffFile(self.path)
            try:
                rows = self._strip_rows(key, start, stop)
                if rows is None:
                    if self._page_cache is None or self._page_cache[0] != key:
                        self._page_cache = None  # free the old page before decoding the next
                        plane = self._tif.asarray(key=key, series=0).reshape(self.plane_shape)
                        self._page_cache = (key, plane)
                    rows = self._page_cache[1][start:stop].copy()
            except InputError:
                raise
            except Exception as exc:  # damaged compressed data surfaces only when decoded
                from .tiff import _first_line

                raise InputError(
                    f"{self.path.name} slice {key} could not be decoded ({_first_line(exc)})"
                ) from None
        return rows

    def _strip_rows(self, key: int, start: int, stop: int) -> np.ndarray | None:
        page = self._tif.series[0].pages[key]
        keyframe = getattr(page, "keyframe", page)
        if (
            page is None
            or keyframe.is_tiled
            or keyframe.planarconfig != 1
            or keyframe.imagedepth != 1
            or len(page.dataoffsets) < 2
        ):
            return None
        per_strip = keyframe.rowsperstrip
        decode, handle = keyframe.decode, self._tif.filehandle
        parts = []
        for strip in range(start // per_strip, (stop - 1) // per_strip + 1):
            handle.seek(page.dataoffsets[strip])
            data = handle.read(page.databytecounts[strip])
            segment, _, shape = decode(data, strip, jpegtables=keyframe.jpegtables)
            if segment is None:  # an empty strip reads as 0
                segment = np.zeros(shape, dtype=keyframe.dtype)
            parts.append(segment.reshape(shape[1], *self.plane_shape[1:]))
        first = (start // per_strip) * per_strip
        return np.concatenate(parts)[start - first : stop - first]

    def close(self) -> None:
        with self._lock:
            self._page_cache = None
            if self._tif is not None:
                self._tif.close()
                self._tif = None

    def __del__(self):
        with contextlib.suppress(Exception):  # interpreter shutdown
            self.close()


class _TiffWholeSource:
    """A file whose slices share compressed pages: decoded once, on first use, and kept."""

    def __init__(self, path: Path, shape: tuple[int, ...]):
        self.path = path
        self.shape = shape
        self._data = None

    def __getstate__(self):
        return {"path": self.path, "shape": self.shape}

    def __setstate__(self, state):
        self.__init__(state["path"], state["shape"])

    def read(self, index: int | None) -> np.ndarray:
        import tifffile

        if self._data is None:
            try:
                self._data = tifffile.imread(self.path, series=0).reshape(self.shape)
            except Exception as exc:  # damaged compressed data surfaces only when decoded
                raise InputError(
                    f"{self.path.name} could not be decoded ({first_line(exc)})"
                ) from None
        return self._data[index or 0]

    def read_rows(self, index: int | None, start: int, stop: int) -> np.ndarray:
        return self.read(index)[start:stop]


# ----------------------------------------------------------------------------- volume
class Volume:
    """A grey 2D image or ZYX stack that reads one slice at a time.

    Indexing with a slice number returns that slice as a 2D numpy array (RGB data is
    turned grey by luminance, as everywhere in the package); other keys (``volume[2:5]``,
    ``volume[3, :100, :100]``) read only the slices they touch. A 2D image is a stack of
    one slice with :attr:`was_2d` set. ``np.asarray(volume)`` loads everything: use
    :meth:`to_dask` to hand a volume to code that wants an array.

    Attributes
    ----------
    shape : tuple of int
        ``(Z, Y, X)``.
    dtype : numpy.dtype
        Data type of a slice as returned (float32 for RGB sources).
    pixel_size_nm : float or None
        XY pixel size recorded in the file, or given to :func:`open_volume`.
    path : pathlib.Path or None
        Where the data came from (None for an in-memory array).
    was_2d : bool
        The source was a single 2D image.
    kind : str
        ``"tiff"``, ``"zarr"``, ``"ome-zarr"``, ``"dask"`` or ``"array"``.
    """

    ndim = 3

    def __init__(
        self,
        source,
        shape: tuple[int, int, int],
        dtype,
        *,
        rgb: bool = False,
        pixel_size_nm: float | None = None,
        path: Path | None = None,
        was_2d: bool = False,
        kind: str = "array",
    ):
        self._source = source
        self.shape = tuple(int(n) for n in shape)
        self._rgb = rgb
        self.dtype = np.dtype(np.float32) if rgb else np.dtype(dtype)
        self.pixel_size_nm = pixel_size_nm
        self.path = path
        self.was_2d = was_2d
        self.kind = kind

    # -- reading
    def read_slice(self, index: int) -> np.ndarray:
        """Slice ``index`` (negative counts from the end) as a 2D numpy array."""
        depth = self.shape[0]
        index = int(index)
        if not -depth <= index < depth:
            raise IndexError(f"slice {index} is outside the volume's {depth} slices")
        index %= depth
        plane = self._source.read(None if self.was_2d else index)
        if self._rgb:
            plane = to_grey(plane)
        return np.asarray(plane, dtype=self.dtype)

    def read_rows(self, index: int, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of slice ``index`` as a 2D array, reading only those rows.

        For slices too large to hold whole (:mod:`napari_em_unet.segmentation.huge`):
        uncompressed TIFF rows are read at their offset, zarr / dask / numpy through a row
        slice, striped compressed TIFF pages by their strips; other compressed pages are
        decoded once and their rows served from that copy.
        """
        depth, height = self.shape[0], self.shape[1]
        index = int(index)
        if not -depth <= index < depth:
            raise IndexError(f"slice {index} is outside the volume's {depth} slices")
        if not 0 <= start <= stop <= height:
            raise IndexError(f"rows {start}:{stop} are outside the slice's {height} rows")
        if start == stop:
            return np.empty((0, self.shape[2]), dtype=self.dtype)
        rows = self._source.read_rows(None if self.was_2d else index % depth, start, stop)
        if self._rgb:
            rows = to_grey(rows)
        return np.asarray(rows, dtype=self.dtype)

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.read_slice(key)
        key = key if isinstance(key, tuple) else (key,)
        if any(k is Ellipsis for k in key):
            at = next(i for i, k in enumerate(key) if k is Ellipsis)
            key = key[:at] + (slice(None),) * (3 - len(key) + 1) + key[at + 1 :]
        z_key, rest = (key[0], key[1:]) if key else (slice(None), ())
        if isinstance(z_key, (int, np.integer)):
            return self.read_slice(z_key)[rest]
        indices = np.arange(self.shape[0])[z_key]
        planes = [self.read_slice(i)[rest] for i in np.atleast_1d(indices)]
        if not planes:
            empty = np.empty((0, *self.shape[1:]), dtype=self.dtype)
            return empty[(slice(None), *rest)]
        return np.stack(planes)

    def __len__(self) -> int:
        return self.shape[0]

    def __array__(self, dtype=None, copy=None):
        data = self[:]
        return data if dtype is None else data.astype(dtype, copy=False)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def slice_nbytes(self) -> int:
        return self.shape[1] * self.shape[2] * self.dtype.itemsize

    def to_dask(self):
        """A dask array over this volume, one chunk per slice, read when computed.

        This is what a viewer should hold: napari reads only the slices it shows.
        """
        import dask.array as da
        from dask.base import tokenize

        name = f"em-unet-volume-{tokenize(self.kind, str(self.path), self.shape, id(self))}"
        return da.from_array(
            self,
            chunks=(1, *self.shape[1:]),
            name=name,
            asarray=False,
            fancy=False,
            meta=np.empty((0, 0, 0), dtype=self.dtype),
        )

    def __repr__(self) -> str:
        where = f" {self.path}" if self.path else ""
        size = "unknown" if self.pixel_size_nm is None else f"{self.pixel_size_nm:g} nm"
        return (
            f"<Volume {self.kind}{where} shape={self.shape} dtype={self.dtype} pixel size {size}>"
        )


# ----------------------------------------------------------------------------- opening
def open_volume(source, *, pixel_size_nm: float | None = None) -> Volume:
    """Open a 2D image or ZYX stack lazily: nothing but metadata is read here.

    Parameters
    ----------
    source : str, os.PathLike, Volume or array-like
        A TIFF file (uncompressed data is read by offset, compressed data page by page), a
        zarr array, a zarr group holding one array, an OME-Zarr image (its full-resolution
        level), or an array already in Python: numpy (including memory maps), zarr, dask.
        ``path/to/data.zarr/raw`` opens the array ``raw`` inside a zarr group.
    pixel_size_nm : float, optional
        Overrides the pixel size recorded in the file (in nm).

    Returns
    -------
    Volume
        The grey ZYX view; RGB(A) data are turned grey slice by slice.

    Raises
    ------
    InputError
        The path does not exist, is not a TIFF or zarr, or does not hold a 2D or 3D image.
    """
    if isinstance(source, Volume):
        volume = source
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        volume = _open_zarr(path) if _is_zarr(path) else _open_tiff(path)
    elif hasattr(source, "shape") and hasattr(source, "dtype") and hasattr(source, "__getitem__"):
        kind = (
            "dask"
            if hasattr(source, "compute")
            else ("zarr" if type(source).__module__.startswith("zarr") else "array")
        )
        volume = _from_array(source, kind=kind)
    else:
        raise InputError(f"cannot read a volume from a {type(source).__name__}")
    if pixel_size_nm:
        volume = copy.copy(volume)  # the caller's Volume keeps its own pixel size
        volume.pixel_size_nm = float(pixel_size_nm)
    return volume


def _from_array(
    array,
    *,
    kind: str,
    drop: tuple[int, ...] | None = None,
    pixel_size_nm=None,
    path: Path | None = None,
) -> Volume:
    """Wrap an array-like; ``drop`` lists axes of length 1 known not to be spatial."""
    shape = tuple(int(n) for n in array.shape)
    name = path.name if path else f"the {kind} array"
    keep = [a for a in range(len(shape)) if a not in (drop or ())]
    kept = [shape[a] for a in keep]
    rgb = len(kept) >= 3 and kept[-1] in (3, 4) and kept[-2] > 4
    spatial = len(keep) - rgb
    if spatial > 3 and drop is None:
        # Leading axes of length 1 (time, channel) in 4D/5D arrays: drop them.
        keep = [a for a in keep[:spatial] if shape[a] != 1 or a >= keep[spatial - 2]] + keep[
            spatial:
        ]
        spatial = len(keep) - rgb
    if spatial not in (2, 3):
        raise InputError(f"{name} has shape {shape}; expected a 2D image or a ZYX stack")
    if min(shape[a] for a in keep[:spatial]) < 1:
        raise InputError(f"{name} is empty (shape {shape})")
    was_2d = spatial == 2
    zyx = ((1,) if was_2d else ()) + tuple(shape[a] for a in keep[:spatial])
    return Volume(
        _ArraySource(array, tuple(keep)),
        zyx,
        array.dtype,
        rgb=rgb,
        pixel_size_nm=pixel_size_nm,
        path=path,
        was_2d=was_2d,
        kind=kind,
    )


# -- TIFF
class _TiffHeader(NamedTuple):
    shape: tuple[int, ...]
    axes: str
    dtype: np.dtype
    offset: int | None
    """Where the pixels start when they are stored contiguously and uncompressed."""
    n_pages: int
    byteorder: str
    pixel_size_nm: float | None


def _open_tiff(path: Path) -> Volume:
    if path.is_dir():
        raise InputError(f"{path} is a folder, neither a TIFF file nor a zarr store")
    header = _tiff_header(path)
    rgb, was_2d, depth, plane_shape = _tiff_layout(path.name, header)
    # Absolute, because the volume may be read by dask workers in another directory.
    source = _tiff_source(path.absolute(), header, depth, plane_shape, was_2d)
    return Volume(
        source,
        (depth, *plane_shape[:2]),
        header.dtype,
        rgb=rgb,
        pixel_size_nm=header.pixel_size_nm,
        path=path,
        was_2d=was_2d,
        kind="tiff",
    )


def _tiff_header(path: Path) -> _TiffHeader:
    from .tiff import _open, pixel_size_nm

    with _open(path) as tif:
        pixel_size = pixel_size_nm(tif)
        try:
            series = tif.series[0]
            return _TiffHeader(
                tuple(int(n) for n in series.shape),
                series.axes,
                np.dtype(series.dtype),
                series.dataoffset,
                len(series.pages),
                tif.byteorder,
                pixel_size,
            )
        except Exception as exc:
            raise InputError(f"{path.name} could not be decoded ({first_line(exc)})") from None


def _squeezed(header: _TiffHeader, rgb: bool) -> list[int]:
    """The shape without singleton axes, dropped only beyond 3D (as read_tiff + as_stack)."""
    if len(header.shape) - rgb > 3:
        return [n for a, n in zip(header.axes, header.shape, strict=True) if n != 1 or a in "YXS"]
    return list(header.shape)


def _tiff_layout(name: str, header: _TiffHeader) -> tuple[bool, bool, int, tuple[int, ...]]:
    """Colour or not, 2D or not, the number of slices and the shape of one slice, or an
    InputError.

    Same rules as read_tiff + as_stack, so streaming gives the shape the in-memory path
    gave: samples last are colour (greyed), samples first are slices (tifffile writes
    short grey stacks that way), and singleton axes are dropped only beyond 3D."""
    raw_shape, axes = header.shape, header.axes
    rgb = axes.endswith("S") and raw_shape[-1] in (3, 4)
    shape = _squeezed(header, rgb)
    spatial = len(shape) - rgb
    if spatial not in (2, 3):
        raise InputError(
            f"{name} has shape {raw_shape} (axes {axes}); expected a 2D image or a ZYX stack"
        )
    if min(shape[:spatial]) < 1:
        raise InputError(f"{name} is empty (shape {raw_shape})")
    if spatial == 2:
        return rgb, True, 1, tuple(shape)
    return rgb, False, shape[0], tuple(shape[1:])


def _tiff_source(where: Path, header: _TiffHeader, depth: int, plane_shape: tuple, was_2d: bool):
    """The cheapest way to read one slice: by offset, by page, or the whole file."""
    dtype, offset = header.dtype, header.offset
    if offset is not None and dtype.kind in "uif":
        # A damaged header can claim exabytes; checking against the file size refuses it
        # before anything is allocated or written.
        if offset + depth * math.prod(plane_shape) * dtype.itemsize > where.stat().st_size:
            raise InputError(
                f"{where.name} is truncated: it holds less data than its header "
                f"describes (shape {header.shape})"
            )
        return _TiffContiguousSource(
            where, offset, plane_shape, dtype.newbyteorder(header.byteorder)
        )
    if was_2d or header.n_pages == depth:
        return _TiffPageSource(where, plane_shape)
    # Several slices inside one compressed page: it has to be decoded whole anyway.
    return _TiffWholeSource(where, (depth, *plane_shape))


# -- zarr and OME-Zarr
def _is_zarr(path: Path) -> bool:
    if path.suffix.lower() == ".zarr" or path.name.lower().endswith(".ome.zarr"):
        return True
    return path.is_dir() and any((path / m).exists() for m in _ZARR_MARKERS)


def _open_zarr(path: Path) -> Volume:
    import zarr

    if not path.exists():
        raise InputError(f"file not found: {path}")
    if not any((path / m).exists() for m in _ZARR_MARKERS):
        raise InputError(
            f"{path} is not a zarr array or group (no .zarray, .zgroup or zarr.json inside)"
        )
    try:
        node = zarr.open(str(path.absolute()), mode="r")  # absolute: workers elsewhere
    except Exception as exc:
        raise InputError(f"{path.name} is not a readable zarr store ({first_line(exc)})") from None
    if isinstance(node, zarr.Array):
        return _from_array(
            node, kind="zarr", path=path, pixel_size_nm=_attr_pixel_size(dict(node.attrs))
        )
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return _open_ome_level(node, multiscales[0], path)
    arrays = sorted(node.array_keys())
    if len(arrays) != 1:
        hint = ", ".join(arrays[:5]) if arrays else "none"
        raise InputError(
            f"{path.name} is a zarr group with {len(arrays)} arrays ({hint}); "
            f"name one, e.g. {path / (arrays[0] if arrays else 'ARRAY')}"
        )
    array = node[arrays[0]]
    return _from_array(
        array,
        kind="zarr",
        path=path,
        pixel_size_nm=_attr_pixel_size(dict(array.attrs)) or _attr_pixel_size(attrs),
    )


def _open_ome_level(group, multiscale: dict, path: Path) -> Volume:
    """The full-resolution level of an OME-Zarr image, with its pixel size from the scale."""
    try:
        dataset = multiscale["datasets"][0]
        array = group[dataset["path"]]
    except (KeyError, IndexError, TypeError):
        raise InputError(
            f"{path.name} has OME-Zarr metadata without a readable first resolution level"
        ) from None
    axes = multiscale.get("axes") or []
    names = [a.get("name", "") if isinstance(a, dict) else str(a) for a in axes]
    shape = tuple(array.shape)
    # Channels of length > 1 cannot be segmented as one grey image: say so rather than guess.
    for name, axis in zip(names, axes, strict=False):
        kind = axis.get("type") if isinstance(axis, dict) else None
        size = shape[names.index(name)]
        if (kind == "channel" or name == "c") and size > 1:
            raise InputError(
                f"{path.name} has {size} channels; segmenting needs one grey "
                "channel (extract it to its own array first)"
            )
        if (kind == "time" or name == "t") and size > 1:
            raise InputError(f"{path.name} has {size} time points; segment one at a time")
    drop = None
    if len(names) == len(shape):
        drop = tuple(i for i, n in enumerate(names) if n not in ("z", "y", "x"))
    volume = _from_array(array, kind="ome-zarr", drop=drop, path=path)
    volume.pixel_size_nm = _ome_pixel_size(multiscale, dataset, names, axes)
    return volume


def _ome_pixel_size(multiscale: dict, dataset: dict, names: list[str], axes: list) -> float | None:
    try:
        x = names.index("x") if "x" in names else len(names) - 1
        scale = 1.0
        for transforms in (
            dataset.get("coordinateTransformations", []),
            multiscale.get("coordinateTransformations", []),
        ):
            for t in transforms:
                if t.get("type") == "scale":
                    scale *= float(t["scale"][x])
        unit = axes[x].get("unit") if axes and isinstance(axes[x], dict) else None
        if unit is None:
            return None
        size = scale * UNIT_TO_NM[str(unit).lower()]
        return size if 0.01 < size < 1e6 else None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None


def _attr_pixel_size(attrs: dict) -> float | None:
    """Our own ``pixel_size_nm`` attribute (written by :mod:`.streaming`), when present."""
    try:
        value = float(attrs.get("pixel_size_nm"))
    except (TypeError, ValueError):
        return None
    return value if 0.01 < value < 1e6 else None
