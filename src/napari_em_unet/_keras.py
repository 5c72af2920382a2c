"""The single place where TensorFlow and Keras are imported.

Everything else reaches Keras through :func:`keras_module` so that importing the package,
reading a TIFF or opening napari never pays TensorFlow's multi-second import.
"""

from __future__ import annotations

import functools
import os


@functools.cache
def keras_module():
    """Import Keras 3 on the TensorFlow backend, quietly, once."""
    # TensorFlow logs oneDNN/CUDA banners to stderr at import; users only need errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras
    import tensorflow as tf

    # Respect a CPU-only box without noise; on a GPU, grow memory instead of grabbing it all.
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except RuntimeError:  # already initialised: nothing to change
            pass
    return keras


def tensorflow_module():
    keras_module()
    import tensorflow as tf

    return tf
