"""Reading a labels or image volume one slice at a time, whatever holds it.

numpy arrays, memory maps, zarr and dask arrays and :class:`~napari_em_unet.io.volumes.Volume`
all answer ``array[z]``; a 2D array is one slice. Reading slice by slice keeps the memory
of every analysis at a few slices, however deep the volume.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError


def depth_of(array) -> int:
    """Number of slices: the first axis of a ZYX volume, 1 for a 2D image."""
    shape = tuple(array.shape)
    if len(shape) == 2:
        return 1
    if len(shape) == 3:
        return int(shape[0])
    raise InputError(f"expected a 2D image or a Z x Y x X volume; got shape {shape}")


def plane_shape(array) -> tuple[int, int]:
    """``(Y, X)`` of one slice."""
    shape = tuple(int(n) for n in array.shape)
    return shape[-2], shape[-1]


def read_plane(array, z: int) -> np.ndarray:
    """Slice ``z`` as a numpy array (the whole array when it is 2D)."""
    plane = array if len(array.shape) == 2 else array[z]
    if hasattr(plane, "compute"):  # dask: read this chunk here, in the caller's thread
        plane = plane.compute(scheduler="sync")
    return np.asarray(plane)


def read_labels_plane(array, z: int) -> np.ndarray:
    """Slice ``z`` of a labels volume, refusing values that cannot be object ids."""
    plane = read_plane(array, z)
    if plane.dtype.kind == "b":
        return plane.astype(np.uint8)
    if plane.dtype.kind not in "iu":
        raise InputError(
            f"labels must be whole numbers (0 = background, 1, 2, ... = objects); "
            f"got {plane.dtype} values"
        )
    if plane.dtype.kind == "i" and plane.size and plane.min() < 0:
        raise InputError(f"labels must not be negative (slice {z} holds {int(plane.min())})")
    return plane


def check_labels_dtype(array) -> None:
    """Refuse, before any slice is read, a volume that cannot hold object ids."""
    kind = np.dtype(array.dtype).kind
    if kind not in "biu":
        raise InputError(
            f"labels must be whole numbers (0 = background, 1, 2, ... = objects); "
            f"got {np.dtype(array.dtype)} values"
        )
