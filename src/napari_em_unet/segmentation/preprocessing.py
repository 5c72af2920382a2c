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


def normalize(
    image: np.ndarray, percentiles: tuple[float, float] = DEFAULT_PERCENTILES
) -> np.ndarray:
    """Map one slice to float32 with its low/high percentiles at 0 and 1.

    NaNs and infinities are ignored for the statistics and become 0.5 (neutral grey), so
    a partly missing slice still segments where it has data. A constant or all-NaN slice
    becomes uniform 0.5 instead of dividing by zero.
    """
    image = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(image)
    if not finite.any():
        return np.full(image.shape, 0.5, dtype=np.float32)
    values = image[finite] if not finite.all() else image
    if values.size > 1_000_000:  # the percentiles of a huge slice are stable on a sample
        values = values.ravel()[:: values.size // 1_000_000]
    low, high = np.percentile(values, percentiles)
    if not high > low:
        return np.full(image.shape, 0.5, dtype=np.float32)
    # float32 scalars: numpy 2 would otherwise promote the whole slice to float64.
    out = (image - np.float32(low)) * np.float32(1.0 / (high - low))
    out[~finite] = 0.5
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
    if values.size == 0:
        return False
    sample = values[:: max(1, values.size // 1_000_000)]
    low, high = (float(v) for v in np.percentile(sample, (0.5, 99.5)))
    if not high > low:
        return False
    if image.dtype == np.uint8:
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
