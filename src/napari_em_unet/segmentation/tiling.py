"""Membrane probabilities for a stack, slice by slice, tiled so that any slice size works.

Each slice is normalised with the model's percentiles, resampled to the model's pixel size
when both are known, cut into overlapping tiles (one tile when it fits), predicted in
batches and blended with a weight window that fades out toward tile edges, where a
convolutional network sees less context. The result is seamless: a tiled prediction equals
an untiled one within a small tolerance. :func:`predict_stack` is a generator yielding one
record per slice, so callers can show progress, write as they go, or stop.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from ..model.inference import inference_model
from ..model.info import LoadedModel
from .parallel import SLICE_WORKERS, ordered_map
from .preprocessing import (
    as_stack,
    has_signal,
    normalize,
    resample_factor,
    scaled_shape,
    zoom_to,
)

DEFAULT_TILE = 1024
DEFAULT_OVERLAP = 64
# Tiles per network call. TensorFlow keeps the activations of its largest call, and with
# slices predicted side by side those add up: on 2048 x 2048 slices (nine tiles each) one
# tile per call took `em-unet segment`'s peak from 2.3 to 1.6 GB, flat from 20 to 40
# slices, at the same speed (docs/large-volumes.md). Batching buys nothing on a CPU.
DEFAULT_BATCH = 1
# Below this the network has too little context to say anything; tiny inputs are padded.
MIN_INPUT = 64
# Mirrored context around the whole image, in pixels. None: the network is trained on
# patches whose borders it sees zero-padded, and a 16-pixel margin scored the same on
# held-out ISBI slices (V_rand 0.9548 with it, 0.9543 without) for a network 20 % slower
# (544 x 544 instead of 512 x 512 per slice; docs/design.md, "Network size").
IMAGE_MARGIN = 0


@dataclass(frozen=True)
class SliceProbability:
    index: int
    """Index of the slice in the input stack."""
    done: int
    """How many slices are finished, this one included."""
    total: int
    probability: np.ndarray
    """float32 membrane probability in [0, 1], same shape as the input slice; NaN where the
    input has no data (NaN or infinite pixels), so no cell is claimed there."""
    no_signal: bool = False
    """The slice shows nothing (black, constant, no finite pixel): all NaN, no cells."""


_compiled: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _forward(keras_model):
    """A traced inference function per model; faster than ``model.predict`` on small batches."""
    fn = _compiled.get(keras_model)
    if fn is None:
        from ..model.backend import tensorflow_module

        tf = tensorflow_module()
        fn = tf.function(
            lambda x: keras_model(x, training=False),
            input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)],
        )
        _compiled[keras_model] = fn
    return fn


def network_forward(network, workers: int = SLICE_WORKERS):
    """How to run an inference network (one that never changes) with ``workers`` slices in
    work at once: on OpenVINO in bfloat16 where the CPU has it (1.9x faster), else the
    traced TensorFlow function (:mod:`..model.openvino_runtime`)."""
    from ..model.openvino_runtime import bfloat16_forward

    traced = _forward(network)
    traced.get_concrete_function()
    return bfloat16_forward(network, traced, workers) or traced


def _size_multiple(keras_model) -> int:
    from ..model.unet import size_multiple_of

    return size_multiple_of(keras_model)


def _window(size: int, ramp: int) -> np.ndarray:
    """1D blending weights: a linear ramp over ``ramp`` pixels at both ends, 1 inside."""
    w = np.ones(size, dtype=np.float32)
    if ramp > 0:
        edge = (np.arange(ramp, dtype=np.float32) + 0.5) / ramp
        n = min(ramp, size // 2)
        w[:n] = edge[:n]
        w[size - n :] = np.minimum(w[size - n :], edge[:n][::-1])
    return np.maximum(w, 1e-3)


def _tile_starts(length: int, tile: int, step: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def predict_slice(
    keras_model,
    image: np.ndarray,
    *,
    tile_size: int = DEFAULT_TILE,
    overlap: int = DEFAULT_OVERLAP,
    batch_size: int = DEFAULT_BATCH,
    flips: bool = False,
    forward=None,
) -> np.ndarray:
    """Membrane probability of one normalised 2D slice (float32, same shape).

    ``flips``: test-time augmentation, the mean over the four mirror images of every tile
    (4x the network time; gain and cost measured in docs/design.md). ``forward``: how to
    run the network (:func:`network_forward`); by default the traced TensorFlow function,
    which follows the live weights of a model in training."""
    multiple = _size_multiple(keras_model)
    height, width = image.shape
    tile_size = max(multiple, tile_size - tile_size % multiple)
    overlap = min(overlap, tile_size // 2)
    margin = IMAGE_MARGIN
    tile_h = _tile_length(height + 2 * margin, tile_size, overlap, multiple)
    tile_w = _tile_length(width + 2 * margin, tile_size, overlap, multiple)
    core_h, core_w = max(height + 2 * margin, tile_h), max(width + 2 * margin, tile_w)
    padded = _reflect_pad(image, core_h, core_w, margin)

    starts_h = _tile_starts(core_h, tile_h, tile_h - overlap)
    starts_w = _tile_starts(core_w, tile_w, tile_w - overlap)
    starts = [(y, x) for y in starts_h for x in starts_w]
    forward = forward or _forward(keras_model)
    if len(starts) == 1:  # one tile: nothing to blend (weights of 1 would change nothing)
        prob = _predict_tiles(forward, padded[None], flips)[0]
        return np.ascontiguousarray(prob[margin : margin + height, margin : margin + width])
    window = np.outer(
        _window(tile_h, overlap if len(starts_h) > 1 else 0),
        _window(tile_w, overlap if len(starts_w) > 1 else 0),
    )
    total = np.zeros((core_h, core_w), dtype=np.float32)
    weights = np.zeros((core_h, core_w), dtype=np.float32)
    for first in range(0, len(starts), batch_size):
        chunk = starts[first : first + batch_size]
        batch = np.stack([padded[y : y + tile_h, x : x + tile_w] for y, x in chunk])
        out = _predict_tiles(forward, batch, flips)
        for (y, x), prob in zip(chunk, out, strict=True):
            total[y : y + tile_h, x : x + tile_w] += prob * window
            weights[y : y + tile_h, x : x + tile_w] += window
    result = total / weights
    return result[margin : margin + height, margin : margin + width].astype(np.float32)


def _predict_tiles(forward, batch: np.ndarray, flips: bool) -> np.ndarray:
    if not flips:
        return np.asarray(forward(batch[..., None]))[..., 0]
    views = (batch, batch[:, :, ::-1], batch[:, ::-1], batch[:, ::-1, ::-1])
    out = np.asarray(forward(np.concatenate(views)[..., None]))[..., 0]
    a, b, c, d = np.split(out, 4)
    return (a + b[:, :, ::-1] + c[:, ::-1] + d[:, ::-1, ::-1]) / 4


def _tile_length(length: int, tile_size: int, overlap: int, multiple: int) -> int:
    """The tile side for one axis: the whole axis if it fits, else the fewest equal tiles.

    A 1210-pixel axis with 1024-pixel tiles becomes two 640-pixel tiles rather than two of
    1024 (1.1x the pixels to predict instead of 1.7x).
    """
    whole = _round_up(max(length, MIN_INPUT), multiple)
    if whole <= tile_size:
        return whole
    count = math.ceil((length - overlap) / (tile_size - overlap))
    return min(tile_size, _round_up(math.ceil((length - overlap) / count) + overlap, multiple))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _reflect_pad(image: np.ndarray, out_h: int, out_w: int, margin: int) -> np.ndarray:
    """Pad to (out_h, out_w) with ``margin`` before, mirroring the image (any amount)."""
    pad = ((margin, out_h - image.shape[0] - margin), (margin, out_w - image.shape[1] - margin))
    # 'symmetric' copes with pads larger than the image by repeating the mirror.
    return np.pad(image, pad, mode="symmetric")


def predict_views(keras_model, plane: np.ndarray, factors, **options) -> np.ndarray:
    """The probability of one normalised slice averaged over its views: ``plane`` predicted
    at each of ``factors`` times its size (a model's ``view_scales``), each brought back to
    its size. ``options``: those of :func:`predict_slice`."""
    views = [_view(keras_model, plane, float(factor), options) for factor in factors]
    return views[0] if len(views) == 1 else np.mean(views, axis=0)


def _view(keras_model, plane: np.ndarray, factor: float, options: dict) -> np.ndarray:
    if abs(factor - 1.0) < 1e-9:
        return predict_slice(keras_model, plane, **options)
    small = zoom_to(plane, scaled_shape(plane.shape, factor), order=1)
    return zoom_to(predict_slice(keras_model, small, **options), plane.shape, order=1)


class SlicePredictor:
    """The per-slice step of :func:`predict_stack`: one raw slice in, its probability out.

    Everything shared (the inference copy of the network, its traced graph) is built here,
    in the caller's thread; calling it from several threads at once is then safe.
    """

    def __init__(
        self,
        model: LoadedModel,
        *,
        pixel_size_nm: float | None = None,
        tile_size: int = DEFAULT_TILE,
        overlap: int = DEFAULT_OVERLAP,
        batch_size: int = DEFAULT_BATCH,
        flips: bool = False,
        workers: int = SLICE_WORKERS,
    ):
        self.factor = resample_factor(pixel_size_nm, model.info.pixel_size_nm)
        self.factors = [self.factor * float(scale) for scale in model.info.view_scales]
        self.percentiles = model.info.percentiles
        self.network = inference_model(model)
        # Traced (and converted for OpenVINO) here, in the caller's thread: tracing goes
        # through Keras' thread-local state, and worker threads should only run the graph.
        self.options = {
            "tile_size": tile_size,
            "overlap": overlap,
            "batch_size": batch_size,
            "flips": flips,
            "forward": network_forward(self.network, workers),
        }

    def __call__(self, raw: np.ndarray) -> tuple[np.ndarray, bool]:
        """float32 probability (NaN where ``raw`` has no data) and whether the slice is empty."""
        missing = ~np.isfinite(raw) if np.issubdtype(raw.dtype, np.floating) else None
        original_shape = raw.shape
        if not has_signal(raw):
            # A lost section: say nothing rather than invent cells (NaN -> no labels).
            return np.full(original_shape, np.nan, dtype=np.float32), True
        plane = normalize(raw, self.percentiles)
        prob = np.clip(predict_views(self.network, plane, self.factors, **self.options), 0, 1)
        if missing is not None and missing.any():
            prob[missing] = np.nan  # no data there: no prediction either
        return prob, False


def read_slices(image, slices: Iterable[int] | None = None) -> tuple[int, Iterator]:
    """How many slices are asked for, and a generator of ``(index, raw slice)`` reading
    one slice at a time from any array-like (numpy, memory map, zarr, dask)."""
    stack, _ = as_stack(image) if isinstance(image, np.ndarray) else (image, False)
    indices = list(range(stack.shape[0])) if slices is None else list(slices)
    return len(indices), ((index, np.asarray(stack[index])) for index in indices)


def predict_stack(
    model: LoadedModel,
    image: np.ndarray,
    *,
    slices: Iterable[int] | None = None,
    pixel_size_nm: float | None = None,
    workers: int = SLICE_WORKERS,
    **options,
) -> Iterator[SliceProbability]:
    """Yield the membrane probability of each requested slice of a 2D image or ZYX stack.

    ``image`` may be any array-like indexable by slice (numpy, memory map, zarr, dask): only
    a few slices are read at a time, ``workers`` of them predicted at once
    (:mod:`.parallel`). ``pixel_size_nm`` is the data's pixel size; when it and the model's
    are known and differ, each slice is resampled to the model's scale and back.
    ``options``: tile_size, overlap, batch_size, flips (:class:`SlicePredictor`).
    """
    predictor = SlicePredictor(model, pixel_size_nm=pixel_size_nm, workers=workers, **options)
    total, raw_slices = read_slices(image, slices)

    def work(item):
        index, raw = item
        return index, *predictor(raw)

    results = ordered_map(work, raw_slices, workers)
    for done, (index, prob, no_signal) in enumerate(results, start=1):
        yield SliceProbability(index, done, total, prob, no_signal=no_signal)
