"""The TensorFlow process itself: ``python -m napari_em_unet.engine.process HOST PORT NICE``.

Started by :class:`napari_em_unet.engine.client.Engine`; it connects back, then runs the
jobs of :mod:`.jobs` one at a time until told to exit (see the client's docstring for the
messages).
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import traceback

from .protocol import KEY_ENV, ModelReady


def serve(conn, nice: int = 0) -> None:
    """The child's loop: run jobs sent over ``conn`` until told to exit."""
    from . import jobs

    # Full priority while TensorFlow is imported and the first model loaded (the user is
    # waiting for the first labels and napari is idle), lower once that is done: from then
    # on the GUI must win every contest for a core. Measured on 2 cores under Xvfb: niced
    # from the start, the first labels came after 13.5 s; niced after the model, 8.6 s.
    lowered = not (nice and hasattr(os, "nice"))

    def lower_priority() -> None:
        nonlocal lowered
        if not lowered:
            lowered = True
            with contextlib.suppress(OSError):
                os.nice(nice)

    handlers = {
        "segment": jobs.segment_job,
        "finetune": jobs.finetune_job,
        "warm_up": jobs.warm_up_job,
    }
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message[0] == "exit":
            return
        if message[0] != "run":
            continue  # a stop that arrived after its job ended
        _, name, request = message
        stop = threading.Event()
        try:
            if not _run_job(conn, handlers[name](request, stop), stop, lower_priority):
                return
        except (EOFError, OSError, BrokenPipeError):
            return
        except BaseException as exc:  # report, keep serving: the next job may work
            try:
                conn.send(("raise", type(exc).__name__, str(exc), traceback.format_exc()))
            except (OSError, EOFError):
                return


def _run_job(conn, gen, stop: threading.Event, lower_priority) -> bool:
    """Send ``gen``'s records over ``conn`` until it returns; False if told to exit.

    Controls are read between records, so a stop reaches the job within one record."""
    while True:
        while conn.poll():
            control = conn.recv()
            if control[0] == "stop":
                stop.set()
            elif control[0] == "exit":
                gen.close()
                return False
        try:
            record = next(gen)
        except StopIteration as done:
            lower_priority()
            conn.send(("return", done.value))
            return True
        if isinstance(record, ModelReady):
            lower_priority()
        conn.send(("yield", record))


def main(argv: list[str]) -> None:
    from multiprocessing.connection import Client

    host, port, nice = argv[0], int(argv[1]), int(argv[2])
    key = bytes.fromhex(os.environ.pop(KEY_ENV))
    conn = Client((host, port), authkey=key)
    try:
        serve(conn, nice)
    finally:
        conn.close()


if __name__ == "__main__":
    main(sys.argv[1:])
