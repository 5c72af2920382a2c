"""Atomic file writes: a temporary file beside the target, renamed over it when complete.

An interrupted write (Ctrl-C, kill -9, a full disk, an exception) therefore leaves either the
previous file or the new one, never a half-written file, and no temporary behind (except
after kill -9, when a hidden ``.*.part`` file may remain; it is never mistaken for output).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".part") -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` atomically.

    The temporary gets the permissions a normal ``open()`` would give (mkstemp's are
    private), and is fsync'ed before the rename so a crash cannot expose an empty file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _default_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
