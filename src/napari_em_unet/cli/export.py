"""``em-unet export`` (ONNX, bioimage.io) and ``em-unet demo`` (napari's window)."""

from __future__ import annotations

import sys

from ..errors import InputError
from ..outputs import check_output


def cmd_export(args) -> int:
    from ..model.export_bioimageio import export_bioimageio
    from ..model.export_onnx import export_onnx
    from ..model.files import load_model

    suffix = {"bioimageio": ".zip", "onnx": ".onnx"}[args.format]
    check_output(
        args.output,
        [args.model],
        overwrite=args.overwrite,
        suffixes=(suffix,),
        what=f"--format {args.format}'s output",
    )
    model = load_model(args.model)
    args.interrupt.working()  # temporary files from here on: Ctrl-C waits for the cleanup
    if args.format == "onnx":
        result = export_onnx(model, args.output)
        print(
            f"wrote {result.path} (ONNX; max |ONNX - Keras| = {result.onnx_max_abs_diff:.1e} "
            "on the test tensor)",
            file=sys.stderr,
        )
        return 0
    result = export_bioimageio(
        model,
        args.output,
        authors=tuple(args.author or ()) or ("napari-em-unet user",),
        license=args.license,
    )
    diff = (
        ""
        if result.onnx_max_abs_diff is None
        else f"; max |ONNX - Keras| = {result.onnx_max_abs_diff:.1e}"
    )
    print(
        f"wrote {result.path} (bioimage.io model {result.format_version}, validated; weights: "
        f"{', '.join(result.formats)}{diff})",
        file=sys.stderr,
    )
    return 0


def cmd_demo(args) -> int:
    from .._widgets.demo import display_problem, run_demo

    problem = display_problem()
    if problem:
        raise InputError(problem)
    return run_demo(args.screenshot, segment=args.segment, model=args.model)
