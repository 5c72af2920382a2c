"""The napari side of the TensorFlow process: start it, send it jobs, read their records.

Why a process and not a thread (measured, see docs/plugin.md): on Linux, Mesa's OpenGL
drivers load ``libLLVM`` and TensorFlow's ``libtensorflow_framework.so`` carries another LLVM;
in one process, whichever loads second crashes (TensorFlow imported after napari's canvas
exists dies in its static initialisers; a napari window opened after TensorFlow dies in
Mesa). Loading TensorFlow ``RTLD_LOCAL | RTLD_DEEPBIND`` avoided both crashes but then
crashed fine-tuning inside a napari thread worker (pybind11 error handling). A child
process has none of this, and as a bonus cannot hold the GUI's GIL or compete with it for
CPU at the same priority (the child lowers its own priority with ``nice``).

The child is a fresh ``python -m napari_em_unet.engine.process`` (not a multiprocessing
fork or spawn: forking a Qt process is unsafe, and spawn re-imports the user's ``__main__``
script, which would open a second napari). It connects back over a localhost socket
authenticated with a random key, then serves one job at a time: the parent sends
``("run", job, request)``; the child streams ``("yield", record)`` messages and ends with
``("return", value)`` or ``("raise", type, message, traceback)``. ``("stop",)`` sets the
job's cooperative stop event (training keeps its best weights; segmentation ends after the
current slice). Loaded models stay cached in the child between jobs, so the second
segmentation does not pay for TensorFlow's import again.

:class:`Engine` and the generators :func:`segment_remote` and :func:`finetune_remote` are
plain Python meant to run inside napari thread workers; this module imports no TensorFlow.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Generator
from dataclasses import replace

import numpy as np

from .protocol import (
    KEY_ENV,
    EngineCrashed,
    FineTuneRequest,
    JobFailed,
    ModelReady,
    SegmentRequest,
    SegmentSummary,
    SliceDone,
)

ENGINE_NICE = 10
"""How much the child lowers its priority: the GUI wins every contest for a CPU core."""
CHUNK_BYTES = 64 * 2**20
"""Image slices are sent to the child in chunks of about this size."""
_CONNECT_TIMEOUT = 120.0


class Engine:
    """A TensorFlow child process running one job at a time.

    Parameters
    ----------
    nice : int
        Priority decrease of the child (Unix); 0 keeps the parent's priority.
    """

    def __init__(self, nice: int = ENGINE_NICE):
        self.nice = nice
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._send_lock = threading.Lock()
        self._state = threading.Condition()
        self._job: int | None = None
        self._next_job = 0
        self.started_at: float | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # ------------------------------------------------------------------ process
    def _start(self) -> None:
        from multiprocessing.connection import Listener

        key = os.urandom(24)
        listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = listener.address
        env = dict(os.environ)
        env[KEY_ENV] = key.hex()
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        cmd = [
            sys.executable,
            "-m",
            "napari_em_unet.engine.process",
            host,
            str(port),
            str(self.nice),
        ]
        proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        accepted: list = []

        def accept() -> None:
            try:
                accepted.append(listener.accept())
            except Exception as exc:  # the child died or sent a wrong key
                accepted.append(exc)

        thread = threading.Thread(target=accept, daemon=True, name="em-unet-engine-accept")
        thread.start()
        deadline = time.monotonic() + _CONNECT_TIMEOUT
        while thread.is_alive() and proc.poll() is None and time.monotonic() < deadline:
            thread.join(0.05)
        listener.close()
        if not accepted or isinstance(accepted[0], Exception):
            proc.kill()
            raise EngineCrashed(f"the TensorFlow process did not start (exit code {proc.poll()})")
        self._proc, self._conn = proc, accepted[0]
        self.started_at = time.perf_counter()

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to exit (killing it if it does not) and forget it."""
        self._shutdown(timeout)
        with self._state:
            self._job = None
            self._state.notify_all()

    def kill(self) -> None:
        """End the child at once (a job was abandoned); the next job starts a new one."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
        self.close(timeout=2.0)

    def _shutdown(self, timeout: float) -> None:
        proc, conn = self._proc, self._conn
        self._proc = self._conn = None
        if conn is not None:
            try:
                with self._send_lock:
                    conn.send(("exit",))
            except (OSError, EOFError, ValueError):
                pass
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        if conn is not None:
            conn.close()

    # ------------------------------------------------------------------ messages
    def warm_up(self) -> float:
        """Start the child and import TensorFlow there; return the seconds it took."""
        started = time.perf_counter()
        for _ in self.run("warm_up", None):
            pass
        return time.perf_counter() - started

    def stop(self) -> None:
        """Ask the running job to stop cooperatively (thread-safe)."""
        conn = self._conn
        if conn is None:
            return
        try:
            with self._send_lock:
                conn.send(("stop",))
        except (OSError, EOFError, ValueError):
            pass

    def run(self, job: str, request) -> Generator:
        """Run ``job`` in the child: yield its records, return its value.

        Meant for a worker thread. Waits while another job runs on this engine, starts the
        child if needed, and raises :class:`EngineCrashed` if the child dies.
        """
        with self._state:
            while self._job is not None:
                self._state.wait()
            self._next_job += 1
            ticket = self._job = self._next_job
        try:
            if not self.alive:
                self._shutdown(timeout=2.0)
                self._start()
            conn = self._conn
            with self._send_lock:
                conn.send(("run", job, request))
            while True:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    code = self._proc.poll() if self._proc is not None else None
                    if self._proc is not None and code is None:
                        self._proc.kill()
                    self._shutdown(timeout=2.0)
                    raise EngineCrashed(
                        f"the TensorFlow process ended unexpectedly (exit code {code})"
                    ) from None
                kind = message[0]
                if kind == "yield":
                    yield message[1]
                elif kind == "return":
                    return message[1]
                elif kind == "raise":
                    _, name, text, trace = message
                    raise RuntimeError(f"{name}: {text}\n\n(in the TensorFlow process)\n{trace}")
        finally:
            with self._state:
                if self._job == ticket:
                    self._job = None
                    self._state.notify_all()


# ---------------------------------------------------------------------- parent-side jobs
def segment_remote(
    engine: Engine, request: SegmentRequest, stop: threading.Event, chunk_bytes: int = CHUNK_BYTES
) -> Generator:
    """Segment ``request`` in the child, sending the image a few slices at a time.

    Runs in a napari thread worker. ``request.image`` may be any array-like (numpy,
    memory map, dask); only the requested slices are read, here, not on the main thread.
    """
    image = request.image
    planes = image.ndim - (1 if request.rgb else 0)
    indices = list(request.slices) if planes == 3 else [0]
    if not indices:
        return SegmentSummary(0)
    plane_bytes = (
        int(np.prod(image.shape[-(3 if request.rgb else 2) :])) * np.dtype(image.dtype).itemsize
    )
    per_chunk = max(1, chunk_bytes // max(1, plane_bytes))
    scores: dict[int, float] = {}
    model_name, announced, stopped = "", False, False
    try:
        for first in range(0, len(indices), per_chunk):
            chunk = indices[first : first + per_chunk]
            if planes == 3:
                data = np.stack([np.asarray(image[i]) for i in chunk])
            else:
                data = np.asarray(image)[None]
            part = replace(request, image=data, slices=tuple(chunk))
            result = yield from _relay(engine.run("segment", part), announced, first, len(indices))
            if isinstance(result, JobFailed):
                return result
            announced = True
            scores.update(result.uncertainty)
            model_name = result.model_name
            if result.stopped or stop.is_set():
                stopped = True
                break
    except EngineCrashed as exc:
        return JobFailed(
            str(exc)[0].upper()
            + str(exc)[1:]
            + "; the results so far are kept. Press Run to try again."
        )
    return SegmentSummary(len(scores), scores, model_name, stopped)


def _relay(gen: Generator, announced: bool, offset: int, total: int) -> Generator:
    """Pass a chunk's records on with stack-wide counters; announce the model once."""
    while True:
        try:
            record = next(gen)
        except StopIteration as done:
            return done.value
        if isinstance(record, ModelReady):
            if not announced:
                yield record
        elif isinstance(record, SliceDone):
            yield replace(record, done=offset + record.done, total=total)
        else:
            yield record


def finetune_remote(engine: Engine, request: FineTuneRequest) -> Generator:
    """Fine-tune in the child; yields its progress records, returns its outcome."""
    try:
        return (yield from engine.run("finetune", request))
    except EngineCrashed as exc:
        return JobFailed(str(exc)[0].upper() + str(exc)[1:] + "; nothing was saved.")
