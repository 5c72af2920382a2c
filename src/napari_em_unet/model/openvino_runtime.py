"""The inference network on OpenVINO in bfloat16, where the CPU computes in it.

On a CPU with bfloat16 instructions (AVX512-BF16, AMX) OpenVINO runs the folded network
(:mod:`.inference`) about 1.9x faster than TensorFlow (79 instead of 149 ms per 512 x 512
slice on one core of this project's CPU); in float32 it is no faster than TensorFlow, so
without bfloat16 TensorFlow keeps the job. Probabilities move by up to 0.09 (bfloat16
keeps 8 bits of mantissa), and held-out accuracy does not: official V_rand 0.9762 against
0.9750 in float32, the same instance step, three fold pairs (docs/design.md, "bfloat16 on
OpenVINO").

The network is converted from the traced TensorFlow function once per model (about 1 s)
and checked on a test input before it is used; anything that fails (no OpenVINO, no
bfloat16, a conversion error, a check that disagrees) leaves TensorFlow in charge.
Set ``EM_UNET_RUNTIME=tensorflow`` to always predict with TensorFlow in float32.

Only networks that never change are converted: the compiled copy holds the weights as they
were. Training and fine-tuning predict with TensorFlow, on their live weights.
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Callable

import numpy as np

RUNTIME_ENV = "EM_UNET_RUNTIME"
# bfloat16 against float32 on the check input. The check is for a broken conversion, which
# is off everywhere; rounding moves a probability by up to 0.09 but the mean by ~0.003.
MEAN_TOLERANCE = 0.02

_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_lock = threading.Lock()
_last = [False]


def wanted() -> bool:
    return os.environ.get(RUNTIME_ENV, "").strip().lower() != "tensorflow"


def available() -> bool:
    """Whether networks would be converted here: wanted, installed, a CPU with bfloat16."""
    if not wanted():
        return False
    try:
        import openvino as ov
    except ImportError:
        return False
    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def bfloat16_forward(network, tf_forward, streams: int) -> Callable | None:
    """A thread-safe ``batch (N, H, W, 1) -> probabilities (N, H, W, 1)`` running
    ``network`` on OpenVINO in bfloat16 with ``streams`` requests at once, or None when
    TensorFlow should predict (see the module's docstring). ``tf_forward`` is the traced
    TensorFlow function of ``network``, which OpenVINO converts."""
    with _lock:
        found = None
        if wanted():
            per_streams = _compiled.setdefault(network, {})
            if streams not in per_streams:
                per_streams[streams] = _Compiled.make(tf_forward, streams)
            found = per_streams[streams]
        _last[0] = found is not None
        return found


def in_use() -> bool:
    """Whether the network prepared last in this process predicts on OpenVINO (for the
    CLI's summary: a command prepares one)."""
    return _last[0]


class _Compiled:
    def __init__(self, compiled):
        self.compiled = compiled
        self.local = threading.local()

    @classmethod
    def make(cls, tf_forward, streams: int) -> _Compiled | None:
        if not available():
            return None
        import openvino as ov

        core = ov.Core()
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        config = {
            "INFERENCE_PRECISION_HINT": "bf16",
            # One stream per slice in work, the cores shared among them, as the slice
            # workers do with TensorFlow (segmentation/parallel.py).
            "NUM_STREAMS": max(1, streams),
            "INFERENCE_NUM_THREADS": max(streams, cores or 1),
        }
        try:
            model = ov.convert_model(tf_forward.get_concrete_function())
            made = cls(core.compile_model(model, "CPU", config))
            return made if made._agrees(tf_forward) else None
        except Exception:  # any failure of an optional accelerator: TensorFlow stays
            return None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        request = getattr(self.local, "request", None)
        if request is None:  # a request runs one inference at a time: one per thread
            request = self.local.request = self.compiled.create_infer_request()
        out = request.infer([np.ascontiguousarray(batch, dtype=np.float32)])[0]
        return np.array(out, dtype=np.float32)  # a copy: the request reuses its buffer

    def _agrees(self, tf_forward) -> bool:
        side = 64
        yy, xx = np.mgrid[:side, :side]
        # Membrane-like stripes with noise, so the check sees both classes.
        probe = (np.sin(xx / 3.0) * np.cos(yy / 5.0) > 0.3).astype(np.float32)
        probe += np.random.default_rng(0).normal(0, 0.2, probe.shape).astype(np.float32)
        probe = probe[None, ..., None]
        expected = np.asarray(tf_forward(probe))
        return bool(np.abs(self(probe) - expected).mean() <= MEAN_TOLERANCE)
