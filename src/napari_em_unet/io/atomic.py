"""Write-then-rename: the one way this package writes a file (or folder) the user keeps.

Everything is first written under a hidden temporary name beside the target and renamed
over it when complete, so an interrupted write (Ctrl-C, kill -9, a full disk, an exception)
leaves either the previous file or the new one, never a half-written one. Temporaries are
named ``.NAME.PID-TOKEN.part``: a later write to the same folder removes those whose
process is gone (a killed save leaves nothing behind for long, whatever its age), and never
one that a live process is still writing. Files get the permissions a plain ``open()``
gives under the user's umask (``mkstemp`` would make them private, 0600).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

_PART = re.compile(r"^\..+\.(?:(\d+)-)?[0-9a-z_]+\.part$")


def default_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temporary_beside(path: str | os.PathLike) -> Path:
    """A hidden, unique, not yet existing name beside ``path`` for writing it."""
    path = Path(path)
    return path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.part"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, name: str | None = None) -> int:
    """Delete the temporaries of writers that are gone; return how many were removed.

    Parameters
    ----------
    folder : path
        Where to look.
    name : str, optional
        Only temporaries of this target name (default: any).
    """
    folder = Path(folder)
    removed = 0
    if not folder.is_dir():
        return 0
    for entry in folder.iterdir():
        match = _PART.match(entry.name)
        if match is None or (name is not None and not entry.name.startswith(f".{name}.")):
            continue
        pid = match.group(1)
        if pid is not None and _pid_alive(int(pid)):
            continue
        # No pid in the name: written by an older version, which cannot be still running.
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed += 1
    return removed


def publish(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Give ``tmp`` the usual permissions, flush it to disk and rename it to ``path``."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_file():
        os.chmod(tmp, default_file_mode())
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary name to write ``path`` to; on success it replaces ``path``.

    The temporary is only named, not created: the writer creates it. On failure it is
    deleted and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path.parent, path.name)
    tmp = temporary_beside(path)
    try:
        yield tmp
        publish(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
