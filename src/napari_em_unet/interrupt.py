"""Ctrl-C for the command line, honoured from the first second.

The handler is installed before anything heavy is imported (TensorFlow's import takes
seconds), and over an inherited "ignore" too, which is how a command started in the
background of a script receives it. While the command is still starting (reading inputs,
importing TensorFlow, loading the model) nothing has been written, so a press ends the
process at once. Once work has begun (:meth:`Interrupt.working`), a press only sets a flag:
code that can stop cleanly (training: after the current step, keeping the best weights)
looks at it, and everything else calls :meth:`Interrupt.check` at its next safe point,
which ends the command with nothing written. A second press aborts at once.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_INTERRUPTED = 130


class Interrupt:
    """The command's Ctrl-C state; use as a context manager around the command."""

    def __init__(self):
        self.requested = threading.Event()
        self.started_work = False
        """Outputs may be open: from here on a press is a request, not an exit."""
        self.graceful = False
        """Set while a phase that can stop cleanly runs (it reads :attr:`requested`)."""
        self._previous = None
        self._stderr: int | None = None

    def __enter__(self) -> Interrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_signal)
        try:  # TensorFlow's import runs with fd 2 muted (model/backend.py): keep the terminal
            self._stderr = os.dup(sys.stderr.fileno())
        except (AttributeError, OSError, ValueError):
            self._stderr = None
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self._stderr is not None:
            os.close(self._stderr)
            self._stderr = None

    def _say(self, text: str) -> None:
        if self._stderr is None:
            print(text, file=sys.stderr, flush=True)
            return
        sys.stderr.flush()
        os.write(self._stderr, (text + "\n").encode())

    def working(self) -> None:
        """Work that may open outputs begins: Ctrl-C now waits for a safe point."""
        self.started_work = True

    def _on_signal(self, signum, frame) -> None:
        if not self.started_work:
            # Nothing is open or written yet, and an import in progress could swallow a
            # KeyboardInterrupt: leave now.
            self._say("\nerror: interrupted; nothing was written")
            os._exit(EXIT_INTERRUPTED)
        if self.requested.is_set():
            raise KeyboardInterrupt
        self.requested.set()
        if self.graceful:
            message = (
                "stopping after this step and keeping the best weights so far "
                "(Ctrl-C again to abort without saving)"
            )
        else:
            message = "stopping (Ctrl-C again to abort at once); nothing will be written"
        self._say(f"\n{message}")

    def check(self) -> None:
        """End the command here (KeyboardInterrupt) if Ctrl-C was pressed."""
        if self.requested.is_set():
            raise KeyboardInterrupt
