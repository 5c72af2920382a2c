"""What every command shares: argument types, the progress bar, one-line warnings."""

from __future__ import annotations

import argparse
import os
import sys

EXIT_ERROR = 2


def slices_arg(text: str | None) -> list[int] | None:
    """``--slices 0,5,9`` or ``0-3,7`` (the rule of :mod:`napari_em_unet.slices`)."""
    from ..slices import parse_slices

    if text is None:
        return None
    try:
        return parse_slices(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def float_where(accept, requirement: str):
    """An argparse type: a number for which ``accept`` holds, else '<requirement>: text'."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not accept(value):  # NaN fails every comparison: refused too
            raise argparse.ArgumentTypeError(f"{requirement}: {text!r}")
        return value

    return parse


positive_float = float_where(lambda v: v > 0, "must be positive")


non_negative_float = float_where(lambda v: v >= 0, "must be 0 or more")


share_arg = float_where(lambda v: 0 <= v <= 1, "must be between 0 and 1")


unit_float = float_where(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def voxel_size_arg(text: str) -> tuple[float, float, float]:
    """'50,4,4' (z, y, x in nm) or '10' (isotropic)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"voxel size must look like 50,4,4 (z,y,x in nm) or 10; got {text!r}"
        ) from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"voxel size must be one or three positive numbers (z,y,x in nm); got {text!r}"
        )
    return tuple(values)


def progress_bar(total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None if not os.environ.get("EM_UNET_PROGRESS") else False,
    )


def where_run(args) -> str:
    return (
        f"on {args.scheduler}"
        if args.scheduler
        else (f"on {args.workers} local workers" if args.workers else "locally")
    )


def network_note(args) -> str:
    """How this process ran the network, for a segmenting command's summary ("" on workers)."""
    if args.scheduler or args.workers:
        return ""
    from ..model.openvino_runtime import in_use

    return ", network in " + ("bfloat16 (OpenVINO)" if in_use() else "float32 (TensorFlow)")


def warn_no_signal(slices: list[int]) -> None:
    if slices:
        from ..slices import format_slices

        print(
            f"warning: slice(s) {format_slices(slices)} have no signal (black, constant or "
            "without a finite pixel): no cells there",
            file=sys.stderr,
        )
