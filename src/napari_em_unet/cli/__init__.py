"""``em-unet``: the same engine as the napari plugin, from a terminal, a script or a cluster.

Every failure the user can cause (missing or damaged file, wrong shapes, bad model) ends in
one ``error: ...`` line on stderr and a non-zero exit, with no traceback and no partial
output file (outputs are written to a temporary name and renamed when complete).
Set ``EM_UNET_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import os
import sys

from ..errors import EmUnetError
from ..interrupt import EXIT_INTERRUPTED, Interrupt
from .common import EXIT_ERROR
from .parser import build_parser

__all__ = ["build_parser", "main"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The command line owns its process (no argv: ``em-unet ...``, ``python -m``); main()
    # called from Python with arguments must not change the caller's TensorFlow set-up.
    args.own_process = argv is None
    if args.command == "demo":  # napari's window: closing it is how one stops
        args.interrupt = Interrupt()
        return _run(args)
    with Interrupt() as interrupt:  # before TensorFlow: Ctrl-C works from the first second
        args.interrupt = interrupt
        return _run(args)


def _run(args) -> int:
    try:
        return args.func(args)
    except EmUnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("error: out of memory; try a smaller --tile-size or --batch-size", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # the promise is one line, never a traceback
        if os.environ.get("EM_UNET_DEBUG"):
            raise
        text = str(exc).strip().splitlines()
        print(f"error: {type(exc).__name__}: {text[0] if text else ''}"[:300], file=sys.stderr)
        return 1
