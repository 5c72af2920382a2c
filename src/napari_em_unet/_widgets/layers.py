"""Small helpers about layers and slice lists shared by the widgets (no Qt)."""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np

ZARR_LAYER_BYTES = 2**30
"""Outputs larger than this are kept in a zarr store on disk instead of in memory."""
ENV_ZARR_LAYER_BYTES = "NAPARI_EM_UNET_ZARR_LABELS_BYTES"
"""Environment variable overriding :data:`ZARR_LAYER_BYTES` (in bytes)."""


def spatial_shape(layer) -> tuple[int, ...]:
    """Shape of an image layer without its RGB channel axis (of level 0 if multiscale)."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def depth_of(shape: tuple[int, ...]) -> int:
    """Number of slices: 1 for a 2D image, the first axis of a stack."""
    return 1 if len(shape) == 2 else int(shape[0])


def current_slice(viewer, layer) -> int:
    """Index of the slice of ``layer`` shown in the viewer (0 for a 2D layer)."""
    if layer.ndim < 3:
        return 0
    position = layer.world_to_data(viewer.dims.point)
    index = int(round(float(position[-3]))) if len(position) >= 3 else 0
    return int(
        np.clip(index, 0, layer.data.shape[0] - 1 if not getattr(layer, "multiscale", False) else 0)
    )


def go_to_slice(viewer, layer, index: int) -> None:
    """Show slice ``index`` of ``layer`` in the viewer."""
    if layer.ndim < 3:
        return
    coords = np.zeros(layer.ndim)
    coords[-3] = index
    world = layer.data_to_world(coords)
    axis = viewer.dims.ndim - layer.ndim + (layer.ndim - 3)
    viewer.dims.set_point(axis, float(world[-3]))


# ---------------------------------------------------------------------- on-disk layers
def zarr_layer_bytes() -> int:
    """Output size (bytes) above which a new layer goes to disk (env var overrides it)."""
    value = os.environ.get(ENV_ZARR_LAYER_BYTES, "").strip()
    try:
        return int(float(value)) if value else ZARR_LAYER_BYTES
    except ValueError:
        return ZARR_LAYER_BYTES


def needs_zarr(source, shape: tuple[int, ...], dtype) -> bool:
    """Whether an output of ``shape`` and ``dtype`` made from ``source`` belongs on disk.

    A lazy source (dask, zarr, anything but a numpy array or memory map) was opened that
    way because it is large, so its result is too; an in-memory source gets an on-disk
    result only when that result alone would be larger than :func:`zarr_layer_bytes`.
    """
    if source is not None and not isinstance(source, np.ndarray):
        return True
    return math.prod(shape) * np.dtype(dtype).itemsize > zarr_layer_bytes()


def new_store_path(name: str) -> Path:
    """A new ``<data folder>/segmentations/<name>-<date>-<time>.zarr`` path (not created)."""
    from ..io.paths import segmentations_dir

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._-")[:60] or "layer"
    folder = segmentations_dir()
    stem = f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = folder / f"{stem}.zarr", 2
    while path.exists():
        path, n = folder / f"{stem}-{n}.zarr", n + 1
    return path


def create_layer_store(
    name: str, shape: tuple[int, ...], dtype, *, pixel_size_nm: float | None = None, init=None
):
    """An all-0 zarr array on disk for a layer, optionally filled from ``init``.

    Chunks are one slice deep (and at most 1024 x 1024), compressed, so writing a slice
    touches that slice's chunks only and slices never written take no space.

    Parameters
    ----------
    name : str
        The layer's name, used in the folder name.
    shape : tuple of int
    dtype : numpy dtype
    pixel_size_nm : float, optional
        Recorded in the store (OME-Zarr scale), so the folder reopens with it.
    init : array-like, optional
        Initial content (numpy, dask, zarr...), copied one slice at a time.

    Returns
    -------
    (zarr.Array, pathlib.Path)
        The array and the ``.zarr`` folder holding it.

    Raises
    ------
    OSError
        The folder cannot be created or written (permissions, disk full); nothing is
        left behind.
    """
    from ..io.writers import create_zarr_output

    path = new_store_path(name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        array = create_zarr_output(path, shape, dtype, pixel_size_nm=pixel_size_nm)
        if init is not None:
            copy_slices(init, array)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    return array, path


def copy_slices(source, target) -> None:
    """Copy ``source`` into ``target`` one slice at a time, so neither is ever loaded whole."""
    if len(target.shape) < 3:
        target[...] = np.asarray(source, dtype=target.dtype)
        return
    for z in range(target.shape[0]):
        plane = np.asarray(source[z], dtype=target.dtype)
        if plane.any():  # the store already reads 0 there; writing would only cost time
            target[z] = plane
