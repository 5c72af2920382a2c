"""``em-unet segment``: a stack to labels, membranes or probabilities, streamed slice by slice."""

from __future__ import annotations

import sys

from ..errors import InputError
from ..outputs import check_output
from .common import network_note, progress_bar, warn_no_signal, where_run
from .link import drive_link, link_params, link_voxel_size


def cmd_segment(args) -> int:
    import time

    from ..io.volumes import open_volume
    from ..segmentation.huge import Bands
    from ..segmentation.pipeline import Output
    from ..segmentation.streaming import output_shape

    check_output(args.output, [args.input, args.model], overwrite=args.overwrite)
    # Lazy input and streaming output: memory depends on one slice, not on the stack, and
    # for slices over --bands-above megapixels on a band of rows, not on the slice.
    volume = open_volume(args.input, pixel_size_nm=args.pixel_size)
    output = Output(args.output_kind)
    given = {"tile_size": args.tile_size, "batch_size": args.batch_size}
    predict = {name: value for name, value in given.items() if value is not None}
    if args.flips:
        predict["flips"] = True
    bands = Bands(above_pixels=round(args.bands_above * 2**20))
    started = time.perf_counter()
    if args.link_3d:
        return _segment_and_link(args, volume, output, predict, started)
    last = _follow_segmentation(args, volume, _segmentation(args, volume, output, bands, predict))
    rate = (
        ""
        if last is None
        else (
            f"; {last.done} slices in {last.elapsed_s:.2f} s, {last.slices_per_second:.3f} slices/s"
        )
    )
    print(
        f"wrote {args.output} ({output.value}, shape {output_shape(volume)}, {where_run(args)}"
        f"{network_note(args)}{rate}; {time.perf_counter() - started:.1f} s in all)",
        file=sys.stderr,
    )
    return 0


def _segmentation(args, volume, output, bands, predict):
    """The progress generator of ``segment``: in this process or on a dask scheduler."""
    if args.scheduler or args.workers:
        from ..segmentation.distributed import segment_distributed

        return segment_distributed(
            args.model,
            volume,
            args.output,
            output=output,
            scheduler=args.scheduler,
            n_workers=args.workers,
            slices_per_task=args.slices_per_task,
            **predict,
        )
    from ..model.files import load_model
    from ..segmentation.streaming import segment_to

    if args.own_process:
        _predict_only(volume, bands, predict)
    model = load_model(args.model)
    return segment_to(model, volume, args.output, output=output, bands=bands, **predict)


def _follow_segmentation(args, volume, progress):
    """Run ``progress`` with a progress bar; warn about empty slices; the last slice record."""
    from ..segmentation.huge import BandProgress

    last, silent = None, []
    args.interrupt.working()
    with progress_bar(volume.shape[0], "segment", "slice") as bar:
        for record in progress:
            if isinstance(record, BandProgress):
                # A slice in bands moves the bar by fractions of a slice, tile by tile.
                bar.set_description(
                    f"segment slice {record.index}: {record.tiles_done}/"
                    f"{record.tiles} tiles, band {record.bands_done}/"
                    f"{record.bands}",
                    refresh=False,
                )
                bar.n = round((last.done if last else 0) + record.fraction, 3)
            else:
                bar.n, last = record.done, record
                if record.no_signal:
                    silent.append(record.index)
            bar.refresh()
            args.interrupt.check()
    warn_no_signal(silent)
    return last


SIDE_BY_SIDE_MAX_PIXELS = 4 * 2**20
"""Slices up to 2048 x 2048 are predicted side by side; larger ones one at a time, each with
every core, so that memory holds the network's working arrays of one slice only."""


def _predict_only(volume, bands, predict: dict) -> None:
    """The command's own process only predicts: slices side by side, one thread per
    TensorFlow op (``model.backend.predict_only``), for slices of up to
    ``SIDE_BY_SIDE_MAX_PIXELS`` that are not cut into bands (the tiles of a slice in bands
    come one after another)."""
    from ..model.backend import predict_only

    pixels = volume.shape[-2] * volume.shape[-1]
    if pixels <= SIDE_BY_SIDE_MAX_PIXELS and not bands.applies(volume.shape):
        workers = predict_only()
        if workers:
            predict["workers"] = workers


def _segment_and_link(args, volume, output, predict, started) -> int:
    """``segment --link-3d``: per-slice segmentation into a temporary store, then linking."""
    import time

    from ..segmentation.huge import Bands
    from ..segmentation.linking import LinkProgress
    from ..segmentation.segment_link import segment_and_link
    from ..segmentation.streaming import output_shape

    if output.value != "instances":
        raise InputError(
            "--link-3d writes instance labels; it cannot be combined with "
            f"--output-kind {output.value}"
        )
    voxel, voxel_text = link_voxel_size(args, volume)
    if args.own_process and not (args.scheduler or args.workers):
        _predict_only(volume, Bands(above_pixels=None), predict)
    progress = segment_and_link(
        args.model,
        volume,
        args.output,
        params=link_params(args),
        voxel_size_nm=voxel,
        scheduler=args.scheduler,
        n_workers=args.workers,
        slices_per_task=args.slices_per_task,
        sections_per_task=args.sections_per_task,
        **predict,
    )
    result = drive_link(
        progress,
        volume.shape[0],
        args.interrupt,
        first=("segment", "slice"),
        first_kind=lambda r: not isinstance(r, LinkProgress),
    )
    print(
        f"wrote {args.output} (3D objects, shape {output_shape(volume)}, {where_run(args)}"
        f"{network_note(args)}; "
        f"{result}; voxel {voxel_text}; {time.perf_counter() - started:.1f} s in all)",
        file=sys.stderr,
    )
    return 0
