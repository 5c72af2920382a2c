"""The jobs: plain generators over plain values, run in the TensorFlow process.

Each job receives a frozen, picklable request (arrays, slice numbers, file paths, a
config), never a widget or a layer, and yields small records that the widgets turn into
layer updates and progress on napari's main thread. They run in the child process of
:mod:`.engine`, which is the only place TensorFlow is imported. Problems the user can fix
(:class:`~napari_em_unet.errors.EmUnetError`) end a job with a :class:`JobFailed` record
carrying the one-sentence message; anything else is reported with its traceback.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmUnetError


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
    """A snapshot of what to fine-tune on: copies of the training and validation planes."""

    image: np.ndarray
    """The planes listed in ``numbers`` (k x Y x X, or k x Y x X x 3)."""
    labels: np.ndarray
    numbers: tuple[int, ...]
    """Slice number in the user's stack of each plane of ``image`` and ``labels``."""
    slices: tuple[int, ...]
    """Training slices (slice numbers)."""
    validation_slices: tuple[int, ...]
    output_path: Path
    base_path: Path | None
    config: Any  # training.TrainConfig
    pixel_size_nm: float | None = None
    name: str = "fine-tuned"
    source: str = ""


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


@dataclass(frozen=True)
class SegmentSummary:
    total: int
    uncertainty: dict[int, float] = field(default_factory=dict)
    model_name: str = ""
    stopped: bool = False


@dataclass(frozen=True)
class FineTuneOutcome:
    path: Path
    info: Any  # model_files.ModelInfo
    best_epoch: int
    best_v_rand: float | None
    v_rand_before: float | None
    stopped: bool
    epochs_run: int


@dataclass(frozen=True)
class JobFailed:
    message: str


def warm_up_job(request=None, stop=None) -> Generator[None, None, str]:
    """Import TensorFlow (so that the next job starts at once); return its version."""
    from .._keras import tensorflow_module

    return tensorflow_module().__version__
    yield  # a generator like the other jobs


def segment_job(request: SegmentRequest, stop: threading.Event | None = None) -> Generator[
        ModelReady | SliceDone, None, SegmentSummary | JobFailed]:
    """Load the model, then yield one :class:`SliceDone` per plane of ``request.image``."""
    from ..segmentation import segment_stack, uncertainty
    from .model_registry import load_cached

    started = time.perf_counter()
    try:
        model = load_cached(request.model_path)
    except EmUnetError as exc:
        return JobFailed(str(exc))
    yield ModelReady(model.info.name, time.perf_counter() - started)

    planes = np.asarray(request.image)
    if planes.ndim == (3 if request.rgb else 2):
        planes = planes[None]
    numbers = list(request.slices)
    scores: dict[int, float] = {}
    stopped = False
    try:
        for item in segment_stack(model, planes, output=request.output,
                                  pixel_size_nm=request.pixel_size_nm):
            index = numbers[item.index]
            score = uncertainty(item.probability)
            scores[index] = score
            yield SliceDone(index, item.done, item.total, item.result,
                            item.probability if request.probability else None, score)
            if stop is not None and stop.is_set() and item.done < item.total:
                stopped = True
                break
    except EmUnetError as exc:
        return JobFailed(str(exc))
    except MemoryError:
        return JobFailed("out of memory while segmenting; close other programs or segment "
                         "a range of slices")
    return SegmentSummary(len(scores), scores, model.info.name, stopped)


def finetune_job(request: FineTuneRequest, stop: threading.Event) -> Generator[
        Any, None, FineTuneOutcome | JobFailed]:
    """Fine-tune, yielding the core's StepProgress/EpochProgress records, then save.

    ``stop`` is the core's cooperative stop: set it and the training finishes its step,
    restores the best weights, and the model is saved as usual.
    """
    from ..model_files import save_model
    from ..training import train
    from .model_registry import load_cached

    started = time.perf_counter()
    try:
        base = load_cached(request.base_path) if request.base_path is not None else None
    except EmUnetError as exc:
        return JobFailed(str(exc))
    yield ModelReady(base.info.name if base else "new model", time.perf_counter() - started)
    local = {number: i for i, number in enumerate(request.numbers)}
    try:
        result = yield from train(
            request.image, request.labels, base=base,
            slices=[local[s] for s in request.slices],
            validation_slices=[local[s] for s in request.validation_slices] or None,
            pixel_size_nm=request.pixel_size_nm, config=request.config, name=request.name,
            source=request.source, stop=stop,
        )
        info = _with_slice_numbers(result.model.info, request.numbers)
        path = save_model(result.model.keras_model, info, request.output_path)
    except EmUnetError as exc:
        return JobFailed(str(exc))
    except MemoryError:
        return JobFailed("out of memory while fine-tuning; lower the batch or patch size")
    except OSError as exc:
        return JobFailed(f"could not save the model to {request.output_path} ({exc})")
    epochs_run = max((h["epoch"] for h in result.history), default=0)
    return FineTuneOutcome(
        path=Path(path), info=info, best_epoch=result.best_epoch,
        best_v_rand=result.best_v_rand,
        v_rand_before=info.validation.get("v_rand_before"),
        stopped=result.stopped, epochs_run=epochs_run,
    )


def _with_slice_numbers(info, numbers: tuple[int, ...]):
    """The model was trained on extracted planes: record the user's slice numbers instead."""
    if not info.trained_on:
        return info
    last = dict(info.trained_on[-1])
    for key in ("slices", "validation_slices"):
        last[key] = [int(numbers[i]) for i in last.get(key) or []]
    return dataclasses.replace(info, trained_on=[*info.trained_on[:-1], last])


@dataclass(frozen=True)
class SliceScored:
    index: int
    done: int
    total: int
    score: Any  # metrics.SliceScore


def evaluate_job(prediction: np.ndarray, truth: np.ndarray, slices: tuple[int, ...]
                 ) -> Generator[SliceScored, None, None]:
    """Yield the ISBI scores of each slice (prediction and truth: ZYX copies, or zarr/dask
    arrays read here one slice at a time).

    No TensorFlow: this one runs in a napari thread worker.
    """
    from ..metrics import score_slice

    for done, index in enumerate(slices, start=1):
        yield SliceScored(index, done, len(slices), score_slice(np.asarray(prediction[index]),
                                                      np.asarray(truth[index])))
