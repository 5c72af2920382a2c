"""What the napari side and the TensorFlow process say to each other: plain, picklable data.

Requests are frozen snapshots (arrays, slice numbers, file paths, a config), never a
widget or a layer; the records the jobs yield are small and turned into layer updates and
progress on napari's main thread. Importing this module imports no TensorFlow, so the
widgets may use it freely.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

KEY_ENV = "NAPARI_EM_UNET_ENGINE_KEY"
"""The environment variable that hands the child its connection key."""


class EngineCrashed(Exception):
    """The child process ended in the middle of a job."""


@dataclass(frozen=True)
class SegmentRequest:
    """A snapshot of what to segment."""

    image: Any
    """The image: 2D, ZYX, or either with a trailing RGB axis. In the TensorFlow process,
    only the planes of ``slices``, stacked."""
    slices: tuple[int, ...]
    """Slice numbers in the user's stack."""
    output: str = "instances"
    probability: bool = False
    """Also return each slice's membrane probability (for the probability layer)."""
    pixel_size_nm: float | None = None
    model_path: Path | None = None
    rgb: bool = False


@dataclass(frozen=True)
class FineTuneRequest:
    """A snapshot of what to fine-tune on: copies of the training and validation planes,
    and of a bounded number of uncorrected planes (anchors and check slices)."""

    image: np.ndarray
    """The planes listed in ``numbers`` (k x Y x X, or k x Y x X x 3)."""
    labels: np.ndarray
    """Their labels (all 0 on the uncorrected planes)."""
    numbers: tuple[int, ...]
    """Slice number in the user's stack of each plane of ``image`` and ``labels``."""
    slices: tuple[int, ...]
    """Training slices (slice numbers)."""
    validation_slices: tuple[int, ...]
    output_path: Path
    base_path: Path | None
    config: Any  # learning.config.TrainConfig
    pixel_size_nm: float | None = None
    name: str = "fine-tuned"
    source: str = ""
    anchor_slices: tuple[int, ...] = ()
    """Uncorrected slices (slice numbers) whose base predictions are mixed into training."""
    check_slices: tuple[int, ...] = ()
    """Uncorrected slices (slice numbers) where the change against the base is measured."""


@dataclass(frozen=True)
class ModelReady:
    """The model is loaded (TensorFlow imported); real work starts."""

    name: str
    seconds: float


@dataclass(frozen=True)
class SliceDone:
    index: int
    done: int
    total: int
    result: np.ndarray
    probability: np.ndarray | None
    uncertainty: float
    """Mean binary entropy of the membrane probability (bits): high = the model hesitates."""
    no_signal: bool = False
    """The slice showed nothing (black, constant, no finite pixel) and got no cells."""


@dataclass(frozen=True)
class SegmentSummary:
    total: int
    uncertainty: dict[int, float] = field(default_factory=dict)
    model_name: str = ""
    stopped: bool = False


@dataclass(frozen=True)
class FineTuneOutcome:
    path: Path | None
    """The saved model; None when validation kept the base (nothing is saved then)."""
    info: Any  # model.info.ModelInfo
    best_epoch: int
    best_v_rand: float | None
    v_rand_before: float | None
    stopped: bool
    epochs_run: int
    verdict: Any = None  # learning.records.Verdict
    plan: Any = None  # learning.records.FineTunePlan, slice numbers as the user's

    @property
    def accepted(self) -> bool:
        return self.verdict is None or self.verdict.accepted


@dataclass(frozen=True)
class JobFailed:
    message: str
