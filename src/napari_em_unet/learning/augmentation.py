"""Random training patches with augmentation, applied jointly to image and target (numpy/scipy).

Geometry: random crop at a random scale (so the model tolerates other microscopes'
pixel sizes), flips and 90-degree rotations, optional elastic deformation.
Intensity: contrast, brightness, gamma-like curve, blur and noise, because another
microscope or staining changes exactly these. Section defects of serial-section TEM: a faded
or dark section (low contrast, shifted brightness) and a missing band (a fold or a lost
strip of the section: constant grey, no loss there, since nothing can be seen).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AugmentConfig:
    enabled: bool = True
    scale_range: tuple[float, float] = (0.8, 1.25)
    elastic: bool = False
    intensity: bool = True
    defects: bool = True
    """Faded / dark sections and missing bands (serial-section defects)."""


def _pad_to(array: np.ndarray, size: int, mode: str = "symmetric") -> np.ndarray:
    pad_h, pad_w = max(0, size - array.shape[0]), max(0, size - array.shape[1])
    if not (pad_h or pad_w):
        return array
    return np.pad(array, ((0, pad_h), (0, pad_w)), mode=mode)


def random_patch(
    rng: np.random.Generator,
    image: np.ndarray,
    target: np.ndarray,
    weight: np.ndarray,
    patch: int,
    config: AugmentConfig = AugmentConfig(),
    soft: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (image, target, weight) patch of ``patch`` x ``patch`` pixels from a prepared slice.

    ``soft``: the target is a probability (the base model's own prediction, kept as it is)
    rather than a 0/1 membrane mask (re-binarised after interpolation).
    """
    from scipy import ndimage

    scale = rng.uniform(*config.scale_range) if config.enabled else 1.0
    crop = int(round(patch * scale))
    crop = max(8, min(crop, max(image.shape)))
    image, target, weight = (_pad_to(a, crop) for a in (image, target, weight))
    y = rng.integers(0, image.shape[0] - crop + 1)
    x = rng.integers(0, image.shape[1] - crop + 1)
    arrays = [a[y : y + crop, x : x + crop] for a in (image, target, weight)]
    if crop != patch:
        zoom = patch / crop
        arrays = [ndimage.zoom(a, zoom, order=1, grid_mode=True, mode="reflect") for a in arrays]
        arrays = [_pad_to(a[:patch, :patch], patch, mode="edge") for a in arrays]
        if not soft:
            arrays[1] = (arrays[1] >= 0.5).astype(np.float32)
    img, tgt, wgt = arrays
    if config.enabled:
        if config.elastic:
            img, tgt, wgt = _elastic(rng, img, tgt, wgt, soft=soft)
        k = rng.integers(4)
        flip = rng.random() < 0.5
        img, tgt, wgt = (np.rot90(a, k) for a in (img, tgt, wgt))
        if flip:
            img, tgt, wgt = (a[:, ::-1] for a in (img, tgt, wgt))
        if config.intensity:
            img = _intensity(rng, img)
        if config.defects:
            img, wgt = _section_defects(rng, img, wgt)
    return (
        np.ascontiguousarray(img, dtype=np.float32),
        np.ascontiguousarray(tgt, dtype=np.float32),
        np.ascontiguousarray(wgt, dtype=np.float32),
    )


def _intensity(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    img = img.astype(np.float32)
    if rng.random() < 0.3:
        img = ndimage.gaussian_filter(img, rng.uniform(0.3, 1.2))
    contrast = rng.uniform(0.75, 1.3)
    brightness = rng.uniform(-0.12, 0.12)
    img = (img - 0.5) * contrast + 0.5 + brightness
    if rng.random() < 0.5:  # a monotone curve, like another exposure or detector response
        gamma = rng.uniform(0.7, 1.4)
        img = np.sign(img) * np.abs(img) ** gamma
    if rng.random() < 0.5:
        img = img + rng.normal(0, rng.uniform(0.01, 0.06), img.shape).astype(np.float32)
    return img


def _section_defects(rng: np.random.Generator, img: np.ndarray, wgt: np.ndarray):
    img = img.astype(np.float32)
    if rng.random() < 0.1:  # a faded or dark section: membranes still there, just faint
        img = (img - img.mean()) * rng.uniform(0.25, 0.6) + img.mean() - rng.uniform(0.0, 0.3)
    if rng.random() < 0.05:  # a missing band across the patch
        width = int(rng.integers(8, max(9, img.shape[0] // 4)))
        start = int(rng.integers(0, img.shape[0] - width + 1))
        img, wgt = img.copy(), np.array(wgt, dtype=np.float32, copy=True)
        band = (slice(start, start + width), slice(None))
        if rng.random() < 0.5:
            band = band[::-1]
        img[band] = rng.uniform(0.0, 1.0)
        wgt[band] = 0.0
    return img, wgt


def _elastic(rng, img, tgt, wgt, soft: bool = False):
    """The U-Net paper's deformation: random shifts on a coarse 3 x 3 grid, smoothly interpolated.

    Their std (10 pixels on a 512-pixel image) scales with the patch, so the tissue is
    stretched as much as in the paper; a per-pixel noise field smoothed by a Gaussian would
    average itself away (an earlier version moved pixels by 0.25 px on average).
    """
    from scipy import ndimage

    shape = img.shape
    std = 10.0 * max(shape) / 512
    zoom = [n / 3 for n in shape]  # the 3 x 3 control points sit on the patch's corners
    shift = [ndimage.zoom(rng.normal(0.0, std, (3, 3)), zoom, order=3) for _ in range(2)]
    yy, xx = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    coords = np.array([yy + shift[0], xx + shift[1]])
    warp = lambda a: ndimage.map_coordinates(a, coords, order=1, mode="reflect")  # noqa: E731
    target = warp(tgt) if soft else (warp(tgt) >= 0.5).astype(np.float32)
    return warp(img), target, warp(wgt)
