"""Turning what the user loaded into what the network expects: grey, normalised, at its scale."""

from __future__ import annotations

import numpy as np

from ..errors import InputError

# Percentiles rather than min/max: a few saturated or dead pixels (or NaNs) in a slice
# must not squeeze the useful grey range. These values are stored in every model file.
DEFAULT_PERCENTILES = (1.0, 99.0)


def to_grey(image: np.ndarray) -> np.ndarray:
    """Drop a trailing RGB(A) channel axis by luminance; leave grey data alone."""
    image = np.asarray(image)
    if image.ndim >= 3 and image.shape[-1] in (3, 4) and image.shape[-2] > 4:
        rgb = image[..., :3].astype(np.float32)
        return rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return image


def as_stack(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Return a ZYX view of a 2D or 3D grey image and whether the input was 2D."""
    image = to_grey(image)
    if image.ndim == 2:
        return image[np.newaxis], True
    if image.ndim == 3:
        return image, False
    raise InputError(
        f"expected a 2D image or a ZYX stack, got an array of shape {tuple(image.shape)}"
    )


# The percentiles of a huge slice are stable on a sample of about a million pixels.
PERCENTILE_SAMPLE = 1_000_000


def sample_step(count: int) -> int:
    """Every how many finite pixels (in raster order) one goes into the percentile sample."""
    return count // PERCENTILE_SAMPLE if count > PERCENTILE_SAMPLE else 1


def normalize(
    image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Map one slice to float32 with its low/high percentiles at 0 and 1.

    NaNs and infinities are ignored for the statistics and become 0.5 (neutral grey), so
    a partly missing slice still segments where it has data. A constant or all-NaN slice
    becomes uniform 0.5 instead of dividing by zero.
    """
    raw = np.asarray(image)
    image = raw.astype(np.float32, copy=False)
    finite = np.isfinite(image)
    if not finite.any():
        return np.full(image.shape, 0.5, dtype=np.float32)
    # Integer pixels keep their type for the statistics (a histogram instead of a sort).
    values = raw if raw.dtype.kind in "ui" else image[finite] if not finite.all() else image
    if values.size > PERCENTILE_SAMPLE:
        values = values.ravel()[:: sample_step(values.size)]
    return apply_normalization(image, normalization_range(values, percentiles), finite)


def normalization_range(
    values: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> tuple[float, float] | None:
    """The (low, high) that :func:`normalize` maps to 0 and 1; None when they coincide."""
    low, high = percentiles_of(values, percentiles)
    return (low, high) if high > low else None


def percentiles_of(values: np.ndarray, percentiles) -> tuple[float, ...]:
    """``np.percentile(values, percentiles)`` (linear interpolation). 8- and 16-bit integer
    pixels are counted in a histogram instead of sorted: about 1 instead of 3 ms for a
    512 x 512 slice, done twice per slice (normalisation, the missing-section check)."""
    values = np.asarray(values)
    if values.dtype.kind not in "ui" or values.dtype.itemsize > 2 or values.size == 0:
        return tuple(float(v) for v in np.percentile(values, percentiles))
    offset = int(np.iinfo(values.dtype).min)
    cumulative = np.cumsum(np.bincount(values.ravel().astype(np.int32) - offset))
    last = values.size - 1

    def ranked(k: int) -> int:  # the k-th smallest value (0-based)
        return int(np.searchsorted(cumulative, k, side="right")) + offset

    out = []
    for q in percentiles:
        position = q / 100.0 * last
        below = int(np.floor(position))
        low, high = ranked(below), ranked(min(below + 1, last))
        out.append(low + (position - below) * (high - low))
    return tuple(float(v) for v in out)


def apply_normalization(
    image: np.ndarray, value_range: tuple[float, float] | None, finite: np.ndarray | None = None
) -> np.ndarray:
    """Normalise pixels with a range from :func:`normalization_range` (None: all 0.5).

    Split from :func:`normalize` so that the rows of a huge slice are mapped with the range
    of the whole slice, exactly as the slice would be mapped in one piece.
    """
    image = np.asarray(image, dtype=np.float32)
    if value_range is None:
        return np.full(image.shape, 0.5, dtype=np.float32)
    low, high = value_range
    # float32 scalars: numpy 2 would otherwise promote the whole slice to float64.
    out = (image - np.float32(low)) * np.float32(1.0 / (high - low))
    out[~(np.isfinite(image) if finite is None else finite)] = 0.5
    return out


def has_signal(image: np.ndarray) -> bool:
    """Whether a slice shows anything at all.

    A missing section in a real stack is black, constant (a placeholder), or has no finite
    pixel; the network would invent cells there (one slice-sized cell, typically). Constant
    means that 99 % of the pixels share one value; for 8-bit data, a dark and flat slice
    (99 % of pixels within 5 grey levels and below 13: a black section scanned with some
    noise) counts too. Deeper types are not judged by their range: 10- or 12-bit cameras
    store real images in a small part of 16 bits.
    """
    image = np.asarray(image)
    values = image[np.isfinite(image)] if image.dtype.kind == "f" else image.ravel()
    return sample_has_signal(values[:: sample_step(values.size)], image.dtype)


def sample_has_signal(sample: np.ndarray, dtype) -> bool:
    """The rule of :func:`has_signal` on a slice's percentile sample (the finite pixels,
    every :func:`sample_step`-th): a slice in bands is never in memory whole."""
    if sample.size == 0:
        return False
    low, high = percentiles_of(sample, (0.5, 99.5))
    if not high > low:
        return False
    if np.dtype(dtype) == np.uint8:
        return not (high - low < 5 and high < 13)
    return True


def resample_factor(pixel_size_nm: float | None, model_pixel_size_nm: float | None) -> float:
    """How much to zoom the data so that its pixels match the model's (1.0 when unknown)."""
    if not pixel_size_nm or not model_pixel_size_nm:
        return 1.0
    factor = float(pixel_size_nm) / float(model_pixel_size_nm)
    # Within 3 % the model does not care, and skipping the resampling saves time.
    return 1.0 if abs(factor - 1.0) < 0.03 else factor


def zoom_to(image: np.ndarray, shape: tuple[int, int], order: int) -> np.ndarray:
    """Resize one 2D slice to ``shape`` (order 1 for images, 0 for labels)."""
    from scipy import ndimage

    if tuple(image.shape) == tuple(shape):
        return image
    factors = (shape[0] / image.shape[0], shape[1] / image.shape[1])
    out = ndimage.zoom(image, factors, order=order, mode="reflect", grid_mode=True)
    # ndimage.zoom may be off by one pixel through rounding: crop/pad to the exact shape.
    out = out[: shape[0], : shape[1]]
    pad = ((0, shape[0] - out.shape[0]), (0, shape[1] - out.shape[1]))
    return np.pad(out, pad, mode="edge") if any(p[1] for p in pad) else out


def scaled_shape(shape: tuple[int, int], factor: float) -> tuple[int, int]:
    return (max(1, round(shape[0] * factor)), max(1, round(shape[1] * factor)))
