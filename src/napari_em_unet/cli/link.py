"""``em-unet link``: per-section labels joined into 3D objects."""

from __future__ import annotations

import sys

import numpy as np

from ..errors import InputError
from ..outputs import check_output
from .common import progress_bar, warn_no_signal, where_run


def link_params(args):
    from ..segmentation.linking import LinkParams

    return LinkParams(bias=args.bias, min_sections=args.min_sections)


def link_voxel_size(args, volume) -> tuple[tuple[float, float, float], str]:
    """--voxel-size, else what the file records; and how the summary line should say it."""
    from ..io.voxel_size import section_spacing_of
    from ..segmentation.linking import resolve_voxel_size

    if args.voxel_size:
        voxel = resolve_voxel_size(args.voxel_size)
        return voxel, _voxel_text(voxel)
    spacing = section_spacing_of(volume)
    voxel = resolve_voxel_size(None, volume.pixel_size_nm, spacing)
    if spacing is None:  # said in the summary, not before: a failed run prints one line
        return voxel, (
            f"{_voxel_text(voxel)}, assuming {voxel[0]:g} nm sections as the file "
            "does not record them (give --voxel-size Z,Y,X)"
        )
    return voxel, _voxel_text(voxel)


def _voxel_text(voxel) -> str:
    return " x ".join(f"{v:g}" for v in voxel) + " nm (z, y, x)"


def drive_link(progress, depth: int, interrupt, *, first=None, first_kind=None) -> str:
    """Run a linking generator with progress bars (Ctrl-C stops it at the next section, with
    nothing written); warn about slices without signal; say what was linked, how fast."""
    bar, stage, objects, silent, seconds = None, None, 0, [], 0.0
    interrupt.working()
    try:
        for record in progress:
            is_first = first_kind is not None and first_kind(record)
            kind = "first" if is_first else f"link (pass {record.pass_number}/2)"
            if kind != stage:
                if bar is not None:
                    bar.close()
                desc, unit = first if is_first else (kind, "section")
                bar, stage = progress_bar(depth, desc, unit), kind
            bar.update(1)
            if is_first and record.no_signal:
                silent.append(record.index)
            elif not is_first:
                objects, seconds = record.objects or 0, record.elapsed_s
            interrupt.check()
    finally:
        if bar is not None:
            bar.close()
    warn_no_signal(silent)
    per_section = seconds / depth if depth else 0.0
    return (
        f"{objects} objects; {depth} sections linked in {seconds:.1f} s "
        f"({per_section:.3f} s per section)"
    )


def cmd_link(args) -> int:
    import time

    from ..io.volumes import open_volume
    from ..io.writers import open_writer
    from ..segmentation.linking import link_into

    started = time.perf_counter()
    check_output(args.output, [args.labels, args.probability], overwrite=args.overwrite)
    labels = open_volume(args.labels)  # each section's values are checked as it is read
    probability = None
    if args.probability:
        probability = open_volume(args.probability)
        if probability.shape != labels.shape:
            raise InputError(
                f"the probability map has shape {probability.shape} but the labels {labels.shape}"
            )
    voxel, voxel_text = link_voxel_size(args, labels)
    params = link_params(args)
    shape = labels.shape[1:] if labels.was_2d else labels.shape
    if args.scheduler or args.workers:
        from ..segmentation.link_distributed import link_distributed

        progress = link_distributed(
            labels,
            args.output,
            probability=probability,
            voxel_size_nm=voxel,
            params=params,
            scheduler=args.scheduler,
            n_workers=args.workers,
            sections_per_task=args.sections_per_task,
        )
    else:
        progress = _link_to_file(
            labels, probability, args.output, shape, voxel, params, open_writer, link_into
        )
    result = drive_link(progress, labels.shape[0], args.interrupt)
    print(
        f"wrote {args.output} (3D objects, shape {tuple(shape)}, {where_run(args)}; {result}; "
        f"voxel {voxel_text}; {time.perf_counter() - started:.1f} s in all)",
        file=sys.stderr,
    )
    return 0


def _link_to_file(labels, probability, path, shape, voxel, params, open_writer, link_into):
    writer = open_writer(path, shape, np.uint32, pixel_size_nm=labels.pixel_size_nm)
    try:
        yield from link_into(
            labels, writer, probability=probability, voxel_size_nm=voxel, params=params
        )
    except BaseException:
        writer.abort()
        raise
    return writer.commit()
