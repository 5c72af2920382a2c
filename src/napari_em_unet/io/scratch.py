"""Scratch rows on disk: a huge slice's intermediate labels, written once and read back once.

The cells of a slice processed in bands (:mod:`napari_em_unet.segmentation.huge`) get their
final numbers only when the last band is done, so their provisional numbers wait in a file
rather than in memory. The file is unlinked as soon as it is created (POSIX): nothing is
left behind, even after ``kill -9``, and a full disk is refused before the work starts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import InputError

GIB = 2**30


class ScratchRows:
    """A ``height`` x ``width`` array in an anonymous temporary file, accessed by rows.

    Parameters
    ----------
    shape : tuple of int
        ``(height, width)``.
    dtype : numpy dtype
    folder : str or os.PathLike, optional
        Where the file goes (default: the system's temporary folder). The output's folder
        is a good choice: the user picked it for a file of about this size.
    """

    def __init__(self, shape: tuple[int, int], dtype, folder=None):
        self.shape = (int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)
        self._row_nbytes = self.shape[1] * self.dtype.itemsize
        folder = Path(folder or tempfile.gettempdir())
        needed = self.shape[0] * self._row_nbytes
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None
        if free is not None and free < needed:
            raise InputError(
                f"not enough disk space in {folder} for the temporary labels of a "
                f"{self.shape[0]} x {self.shape[1]} slice: {needed / GIB:.1f} GiB "
                f"needed, {free / GIB:.1f} GiB free"
            )
        # Open for the object's life (closed by close() or the with block), not one block.
        self._file = tempfile.TemporaryFile(dir=folder, prefix=".em-unet-rows.")  # noqa: SIM115
        self._fd = self._file.fileno()

    def write(self, start: int, rows: np.ndarray) -> None:
        """Store ``rows`` at rows ``start:start + len(rows)``."""
        rows = np.ascontiguousarray(rows, dtype=self.dtype)
        view = memoryview(rows.reshape(-1)).cast("B")
        position = start * self._row_nbytes
        while len(view):
            try:
                written = os.pwrite(self._fd, view, position)
            except OSError as exc:
                raise InputError(f"could not write temporary labels ({exc.strerror})") from None
            view, position = view[written:], position + written

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as written (0 where nothing was written)."""
        out = np.zeros((stop - start, self.shape[1]), dtype=self.dtype)
        view = memoryview(out.reshape(-1)).cast("B")
        position = start * self._row_nbytes
        while len(view):
            got = os.preadv(self._fd, [view], position)
            if got == 0:  # past the end of what was written: zeros
                break
            view, position = view[got:], position + got
        return out

    def close(self) -> None:
        self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
