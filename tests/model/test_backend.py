"""A process that only predicts runs one thread per TensorFlow op and slices side by side."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = """
from napari_em_unet.model.backend import predict_only, tensorflow_module
workers = predict_only()
tf = tensorflow_module()
tf.constant(1.0) + 1.0
print(workers, tf.config.threading.get_intra_op_parallelism_threads())
"""
LATE = """
from napari_em_unet.model.backend import predict_only, tensorflow_module
tf = tensorflow_module()
tf.constant(1.0) + 1.0  # TensorFlow runs with its default threads: too late to change them
print(predict_only(), tf.config.threading.get_intra_op_parallelism_threads())
"""


def _run(cpus: set[int], probe: str = PROBE) -> list[str]:
    def pin():
        os.sched_setaffinity(0, cpus)

    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, preexec_fn=pin, check=True
    )
    return done.stdout.split()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs CPU affinity (Linux)")
def test_on_few_cores_one_thread_per_op_and_a_slice_more_than_cores():
    cores = sorted(os.sched_getaffinity(0))
    assert _run({cores[0]}) == ["2", "1"]
    if len(cores) >= 2:
        assert _run(set(cores[:2])) == ["3", "1"]
    assert _run({cores[0]}, LATE) == ["None", "0"]
