"""Segment a stack: probabilities from :mod:`.tiling`, cells from :mod:`.watershed`.

:func:`segment_stack` is the one generator behind ``em-unet segment`` and the napari
Segment widget. It yields one :class:`SliceSegmentation` per slice, holding the output the
caller asked for, so results can be written or displayed as they arrive.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

import numpy as np

from ..model.info import LoadedModel
from .tiling import predict_stack
from .watershed import (
    WatershedParams,
    instances_from_probability,
    membranes_from_labels,
    params_for_data,
)


class Output(str, Enum):
    INSTANCES = "instances"
    """uint32 labels, 0 = membrane, cells numbered per slice."""
    MEMBRANES = "membranes"
    """uint8 mask, 0 = membrane, 255 = interior (the ISBI convention)."""
    PROBABILITIES = "probabilities"
    """float32 membrane probability, 0..1."""

    @property
    def dtype(self):
        return {"instances": np.uint32, "membranes": np.uint8, "probabilities": np.float32}[
            self.value
        ]


@dataclass(frozen=True)
class SliceSegmentation:
    index: int
    done: int
    total: int
    result: np.ndarray
    """The requested output for this slice."""
    probability: np.ndarray
    """The membrane probability, always available (for uncertainty and the probability layer)."""
    no_signal: bool = False
    """The slice shows nothing (black, constant, no finite pixel): no cells were made."""


def segment_stack(
    model: LoadedModel,
    image,
    *,
    output: Output | str = Output.INSTANCES,
    slices: Iterable[int] | None = None,
    pixel_size_nm: float | None = None,
    params: WatershedParams | None = None,
    **predict_kwargs,
) -> Iterator[SliceSegmentation]:
    """Yield the segmentation of each requested slice; watershed parameters default to the model's.

    The watershed of slice k runs in a helper thread while the network predicts slice k+1:
    both release the GIL, so on a 2-core machine this hides most of the post-processing
    (about 30 % faster per slice than one after the other). Results still come in order.
    """
    output = Output(output)
    params = params or params_for_data(
        model.info.postprocessing, model.info.pixel_size_nm, pixel_size_nm
    )
    predictions = predict_stack(
        model, image, slices=slices, pixel_size_nm=pixel_size_nm, **predict_kwargs
    )
    if output is Output.PROBABILITIES:
        for item in predictions:
            yield SliceSegmentation(
                item.index,
                item.done,
                item.total,
                item.probability,
                item.probability,
                item.no_signal,
            )
        return

    def post_process(probability: np.ndarray) -> np.ndarray:
        labels = instances_from_probability(probability, params)
        return labels if output is Output.INSTANCES else membranes_from_labels(labels)

    def finished(item, future: Future) -> SliceSegmentation:
        return SliceSegmentation(
            item.index, item.done, item.total, future.result(), item.probability, item.no_signal
        )

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="em-unet-watershed") as pool:
        pending = None
        for item in predictions:
            future = pool.submit(post_process, item.probability)
            if pending is not None:
                yield finished(*pending)
            pending = (item, future)
        if pending is not None:
            yield finished(*pending)


def uncertainty(probability: np.ndarray) -> float:
    """Mean binary entropy (bits) of a membrane probability map: high where the model hesitates."""
    p = np.asarray(probability, dtype=np.float64)
    p = np.clip(p[np.isfinite(p)], 1e-6, 1 - 1e-6)
    if p.size == 0:  # a lost section: nothing to correct there
        return 0.0
    return float(np.mean(-(p * np.log2(p) + (1 - p) * np.log2(1 - p))))
