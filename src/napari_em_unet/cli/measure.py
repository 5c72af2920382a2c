"""``em-unet measure``: a table of the 3D objects' sizes and shapes."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from ..outputs import check_output
from .common import progress_bar


def cmd_measure(args) -> int:
    from ..analysis.measure import measure_objects, write_csv
    from ..generators import drain
    from ..io.volumes import open_volume

    check_output(
        args.output,
        [args.labels, args.image],
        overwrite=args.overwrite,
        suffixes=(".csv",),
        what="the table",
    )
    labels = open_volume(args.labels)
    image = open_volume(args.image) if args.image else None
    voxel_size, where = args.voxel_size, "--voxel-size"
    if voxel_size is None:
        voxel_size, where = _recorded_voxel_size(args.labels, args.image)
    with progress_bar(labels.shape[0], "measure", "slice") as bar:
        table = drain(
            measure_objects(labels, image, voxel_size_nm=voxel_size), lambda _record: bar.update(1)
        )
    try:
        write_csv(table, args.output)
    except OSError as exc:
        raise InputError(f"cannot write {args.output} ({exc.strerror or exc})") from None
    size = (
        "volume_um3 left empty: the voxel size is not recorded in the file; give "
        "--voxel-size Z,Y,X (nm)"
        if voxel_size is None
        else f"voxel size {' x '.join(f'{v:g}' for v in voxel_size)} nm from {where}"
    )
    print(f"wrote {args.output} ({len(table)} objects; {size})", file=sys.stderr)
    return 0


def _recorded_voxel_size(*paths) -> tuple[tuple[float, float, float] | None, str]:
    """The first complete (Z, Y, X) recorded in one of ``paths`` (labels first)."""
    from ..io.voxel_size import read_voxel_size_nm

    for path in paths:
        if path is None:
            continue
        size = read_voxel_size_nm(path)
        if all(v is not None for v in size):
            return size, Path(path).name
    return None, ""
