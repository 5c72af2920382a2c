"""What a command may write: a format it can make, never one of its inputs, never an
existing file unless the user said ``--overwrite``.

Checked before any work starts, so a refused output costs the user nothing and leaves
every file as it was. napari's own File > Save keeps napari's behaviour (it asks).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import InputError

IMAGE_OUTPUTS = (".tif", ".tiff", ".zarr")
"""Suffixes of the images the commands write: TIFF files and zarr folders."""


def check_output(
    output: str | os.PathLike,
    inputs: Iterable[str | os.PathLike | None] = (),
    *,
    overwrite: bool = False,
    suffixes: tuple[str, ...] = IMAGE_OUTPUTS,
    what: str = "the output",
) -> Path:
    """``output`` as a Path when it may be written; else a one-sentence :class:`InputError`.

    Parameters
    ----------
    output : path
        What the command is about to write.
    inputs : paths
        What it reads (None entries are ignored). The output may be none of them, by any
        path (symbolic or hard links, ``..``), nor a folder holding one (a zarr group).
    overwrite : bool
        Whether an existing output may be replaced (never an input).
    suffixes : tuple of str
        The formats the command can write.
    """
    output = Path(output)
    suffix = output.suffix.lower()
    if suffix not in suffixes:
        named = f"'{suffix}'" if suffix else "no extension"
        raise InputError(
            f"cannot write {output.name} ({named}): {what} must end in {_listed(suffixes)}"
        )
    for source in inputs:
        if source is not None and _same_or_inside(Path(source), output):
            raise InputError(
                f"{what} {output} is the input {source}; choose another name "
                "(writing it would destroy the input)"
            )
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise InputError(f"{output} already exists; add --overwrite to replace it")
    return output


def _same_or_inside(source: Path, output: Path) -> bool:
    """Whether writing ``output`` would replace ``source`` or the folder it lives in."""
    if output.exists() and source.exists():
        try:
            if os.path.samefile(output, source):
                return True
        except OSError:
            pass
    resolved_output, resolved_source = output.resolve(), source.resolve()
    return resolved_source == resolved_output or resolved_output in resolved_source.parents


def _listed(suffixes: tuple[str, ...]) -> str:
    return ", ".join(suffixes[:-1]) + f" or {suffixes[-1]}" if len(suffixes) > 1 else suffixes[0]
