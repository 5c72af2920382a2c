"""The jobs: plain generators over plain values, run in the TensorFlow process.

Each job receives a request from :mod:`.protocol` and yields its records. They run in the
child process (:mod:`.process`), the only place TensorFlow is imported. Problems the user
can fix (:class:`~napari_em_unet.errors.EmUnetError`) end a job with a :class:`JobFailed`
record carrying the one-sentence message; anything else is reported with its traceback.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import EmUnetError
from .model_cache import load_cached
from .protocol import (
    FineTuneOutcome,
    FineTuneRequest,
    JobFailed,
    ModelReady,
    SegmentRequest,
    SegmentSummary,
    SliceDone,
)


def warm_up_job(request=None, stop=None) -> Generator[None, None, str]:
    """Import TensorFlow (so that the next job starts at once); return its version."""
    from ..model.backend import tensorflow_module

    version = tensorflow_module().__version__
    yield from ()  # a generator like the other jobs, with nothing to report
    return version


def segment_job(
    request: SegmentRequest, stop: threading.Event | None = None
) -> Generator[ModelReady | SliceDone, None, SegmentSummary | JobFailed]:
    """Load the model, then yield one :class:`SliceDone` per plane of ``request.image``."""
    from ..segmentation.pipeline import segment_stack, uncertainty

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
        for item in segment_stack(
            model, planes, output=request.output, pixel_size_nm=request.pixel_size_nm
        ):
            index = numbers[item.index]
            score = uncertainty(item.probability)
            scores[index] = score
            yield SliceDone(
                index,
                item.done,
                item.total,
                item.result,
                item.probability if request.probability else None,
                score,
                item.no_signal,
            )
            if stop is not None and stop.is_set() and item.done < item.total:
                stopped = True
                break
    except EmUnetError as exc:
        return JobFailed(str(exc))
    except MemoryError:
        return JobFailed(
            "out of memory while segmenting; close other programs or segment a range of slices"
        )
    return SegmentSummary(len(scores), scores, model.info.name, stopped)


def finetune_job(
    request: FineTuneRequest, stop: threading.Event
) -> Generator[Any, None, FineTuneOutcome | JobFailed]:
    """Fine-tune, yielding the core's records (the plan with the user's slice numbers),
    then save the model if validation accepted it.

    ``stop`` is the core's cooperative stop: set it and the training finishes its step, the
    verdict is made on the weights so far, and an accepted model is saved as usual. When
    validation keeps the base, nothing is saved (the outcome says why).
    """
    from ..learning.training import train
    from ..model.files import save_model

    started = time.perf_counter()
    try:
        base = load_cached(request.base_path) if request.base_path is not None else None
    except EmUnetError as exc:
        return JobFailed(str(exc))
    yield ModelReady(base.info.name if base else "new model", time.perf_counter() - started)
    local = {number: i for i, number in enumerate(request.numbers)}
    try:
        result = yield from _numbered(
            train(
                request.image,
                request.labels,
                base=base,
                slices=[local[s] for s in request.slices],
                validation_slices=[local[s] for s in request.validation_slices] or None,
                anchor_slices=[local[s] for s in request.anchor_slices],
                check_slices=[local[s] for s in request.check_slices],
                pixel_size_nm=request.pixel_size_nm,
                config=request.config,
                name=request.name,
                source=request.source,
                stop=stop,
            ),
            request.numbers,
        )
        info = _with_slice_numbers(result.model.info, request.numbers)
        accepted = result.verdict is None or result.verdict.accepted
        path = save_model(result.model.keras_model, info, request.output_path) if accepted else None
    except EmUnetError as exc:
        return JobFailed(str(exc))
    except MemoryError:
        return JobFailed("out of memory while fine-tuning; lower the batch or patch size")
    except OSError as exc:
        return JobFailed(f"could not save the model to {request.output_path} ({exc})")
    epochs_run = max((h["epoch"] for h in result.history), default=0)
    return FineTuneOutcome(
        path=None if path is None else Path(path),
        info=info,
        best_epoch=result.best_epoch,
        best_v_rand=result.best_v_rand,
        v_rand_before=info.validation.get("v_rand_before"),
        stopped=result.stopped,
        epochs_run=epochs_run,
        verdict=result.verdict,
        plan=None if result.plan is None else _plan_numbered(result.plan, request.numbers),
    )


def _numbered(job: Generator, numbers: tuple[int, ...]) -> Generator:
    """Relay ``job``'s records, its plan with the user's slice numbers instead of planes."""
    from ..learning.records import FineTunePlan

    while True:
        try:
            record = next(job)
        except StopIteration as done:
            return done.value
        yield _plan_numbered(record, numbers) if isinstance(record, FineTunePlan) else record


def _plan_numbered(plan, numbers: tuple[int, ...]):
    fields = ("corrected", "validation_slices", "anchors", "check")
    return dataclasses.replace(
        plan, **{key: tuple(int(numbers[i]) for i in getattr(plan, key)) for key in fields}
    )


def _with_slice_numbers(info, numbers: tuple[int, ...]):
    """The model was trained on extracted planes: record the user's slice numbers instead."""
    if not info.trained_on:
        return info
    last = dict(info.trained_on[-1])
    for key in ("slices", "validation_slices", "anchor_slices", "check_slices"):
        last[key] = [int(numbers[i]) for i in last.get(key) or []]
    return dataclasses.replace(info, trained_on=[*info.trained_on[:-1], last])
