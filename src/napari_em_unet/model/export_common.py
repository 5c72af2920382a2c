"""What the exporters share: the test tensor, Keras' reference output, quiet converters.

See :mod:`.export_onnx` and :mod:`.export_bioimageio`. Both build in a temporary place,
check what they built, and only then rename it into place, so a failed or interrupted
export leaves no partial file. The converters (``bioimageio.spec``, ``tf2onnx``, ``onnx``,
``onnxruntime``) are the optional ``[export]`` extra.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EmUnetError
from .info import LoadedModel

ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4
INPUT_ID = "image"
OUTPUT_ID = "membrane"
# Half the smallest tile worth predicting: a consumer that tiles should crop this much
# from each tile border (the network sees mirrored context there, see segmentation/tiling.py).
HALO = 16
MIN_SIZE = 64
TEST_SIZE = 128
_EXTRA_HINT = "pip install 'napari-em-unet[export]'"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and the checks it passed."""

    path: Path
    formats: tuple[str, ...]
    """Weight formats in the file (``("onnx",)`` for an ONNX export)."""
    onnx_max_abs_diff: float | None
    """Largest |ONNX - Keras| on the test tensor, when an ONNX file was made."""
    format_version: str | None = None
    """bioimage.io spec version of a package."""


# ----------------------------------------------------------------------------- helpers
def require(*modules: str, what: str) -> None:
    """Fail in one line when an optional converter is not installed."""
    missing = [
        m
        for m in modules
        if importlib.util.find_spec(m.split(".")[0]) is None or importlib.util.find_spec(m) is None
    ]
    if missing:
        raise EmUnetError(f"{what} needs {', '.join(missing)}: {_EXTRA_HINT}")


def sample_tile(size: int = TEST_SIZE) -> np.ndarray:
    """A ``size`` x ``size`` crop of the packaged ssTEM sample (float32 raw grey values)."""
    from importlib import resources

    from ..io.tiff import read_tiff

    try:
        sample = Path(str(resources.files("napari_em_unet.sample_data"))) / "synthetic-sstem.tif"
        plane = np.asarray(read_tiff(sample, memmap=False).data[0])
    except Exception:  # an unusual install without the sample: make one
        from ..learning.synthetic import make_synthetic_stack

        plane = make_synthetic_stack((1, 2 * size, 2 * size), seed=3)[0][0]
    top, left = (plane.shape[0] - size) // 2, (plane.shape[1] - size) // 2
    return np.ascontiguousarray(plane[top : top + size, left : left + size], dtype=np.float32)


def test_sizes(multiple: int) -> tuple[int, int]:
    """Smallest valid size and the test-tensor size, both multiples of the network's stride."""
    smallest = -(-max(MIN_SIZE, multiple) // multiple) * multiple
    return smallest, max(smallest, -(-TEST_SIZE // multiple) * multiple)


def reference_output(model: LoadedModel, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (batch, y, x, channel) test input and Keras' output for it, as consumers compute it."""
    from ..segmentation.preprocessing import normalize

    x = raw[np.newaxis, :, :, np.newaxis].astype(np.float32)
    normalised = normalize(raw, model.info.percentiles)[np.newaxis, :, :, np.newaxis]
    y = np.asarray(model.keras_model(normalised, training=False), dtype=np.float32)
    return x, y


@contextlib.contextmanager
def quiet_converters():
    """Converters log every step; the CLI promises one line per outcome."""
    names = ("tf2onnx", "tensorflow", "absl")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        from loguru import logger as loguru_logger
    except ImportError:
        loguru_logger = None
    if loguru_logger is not None:
        loguru_logger.disable("bioimageio")
    from .backend import quiet_native_stderr

    try:
        # TensorFlow's graph optimiser (run by tf2onnx) logs through absl in C++.
        with warnings.catch_warnings(), quiet_native_stderr():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


def normalised_test_input(model: LoadedModel, raw: np.ndarray) -> np.ndarray:
    from ..segmentation.preprocessing import normalize

    return normalize(raw, model.info.percentiles)[np.newaxis, :, :, np.newaxis]


def size_multiple(model: LoadedModel) -> int:
    from .unet import size_multiple_of

    return size_multiple_of(model.keras_model)
