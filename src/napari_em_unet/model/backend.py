"""The single place where TensorFlow and Keras are imported.

Everything else reaches Keras through :func:`keras_module` so that importing the package,
reading a TIFF or opening napari never pays TensorFlow's multi-second import.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys


@contextlib.contextmanager
def quiet_native_stderr():
    """Silence C++ log lines (oneDNN, CUDA-probe banners) that TensorFlow prints at import.

    TF 2.21 logs them through absl before any log level applies, so only redirecting the
    file descriptor helps. Python exceptions are unaffected: they surface after restoring.
    """
    if os.environ.get("EM_UNET_DEBUG"):
        yield
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (pythonw, some IDEs)
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), fd)
            yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


@functools.cache
def keras_module():
    """Import Keras 3 on the TensorFlow backend, quietly, once."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with quiet_native_stderr():
        import keras
        import tensorflow as tf

        # On a GPU, grow memory as needed instead of grabbing all of it at start.
        for gpu in tf.config.list_physical_devices("GPU"):
            with contextlib.suppress(RuntimeError):  # already initialised
                tf.config.experimental.set_memory_growth(gpu, True)
    return keras


def tensorflow_module():
    keras_module()
    import tensorflow as tf

    return tf


def predict_only() -> int | None:
    """Set up TensorFlow for a process that will only predict; how many slices to predict
    at once, or None where this changes nothing.

    By default TensorFlow splits every layer over the cores and waits for the slowest
    part; with whole slices predicted side by side, one thread per layer and one slice more
    than there are cores keeps every core busy without those waits. ``em-unet segment`` on
    this project's 2 cores, 3 slices at once: 62.4 instead of 70.2 ms per 512 x 512 slice
    with 2 slices and the default threads (paired runs, docs/design.md, "Slices side by
    side"). Only on up to 4 cores (more
    slices at once would multiply memory), and only before TensorFlow has started: a
    process that also trains (napari's engine) keeps the default.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    if not cores or cores > 4:
        return None
    tf = tensorflow_module()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already running: its threads are set
        return None
    return cores + 1
