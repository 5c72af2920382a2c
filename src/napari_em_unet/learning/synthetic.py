"""A synthetic serial-section TEM stack with its ground truth, for the sample data and tests.

Cells are a power-weighted Voronoi tessellation whose seeds drift slowly from slice to slice
(as in serial sections); boundaries are dark membranes of varying thickness; interiors get
a grey level of their own, low-frequency texture, mitochondria-like dark ellipses with
cristae-like stripes and small vesicles; the whole is blurred and noised. Pixel size 4 nm,
like ISBI 2012, so the bundled model applies as is. ``python -m napari_em_unet.learning.synthetic
sample_data`` regenerates the files shipped with the package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

SAMPLE_PIXEL_SIZE_NM = 4.0
SAMPLE_SHAPE = (8, 512, 512)
SAMPLE_IMAGE = "synthetic-sstem.tif"
SAMPLE_LABELS = "synthetic-sstem-labels.tif"


def _smooth_noise(rng, shape, sigma):
    from scipy import ndimage

    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma)
    return field / (field.std() + 1e-9)


def _power_voronoi(shape, seeds, weights, warp):
    """Label each pixel with the seed minimising |x - s|^2 - w (1-based), on warped coordinates.

    The warp (a smooth displacement field) bends the straight Voronoi edges into the
    curved outlines of neurites.
    """
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    yy += warp[0]
    xx += warp[1]
    best = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int32)
    for i, ((sy, sx), w) in enumerate(zip(seeds, weights, strict=True), start=1):
        d = (yy - sy) ** 2 + (xx - sx) ** 2 - w
        closer = d < best
        best[closer] = d[closer]
        labels[closer] = i
    return labels


def make_synthetic_stack(
    shape: tuple[int, int, int] = SAMPLE_SHAPE, seed: int = 0, cell_size: float = 48.0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image uint8 ZYX, instance labels uint16 ZYX with 0 = membrane)."""
    from scipy import ndimage
    from skimage.draw import disk, ellipse
    from skimage.segmentation import find_boundaries

    rng = np.random.default_rng(seed)
    depth, height, width = shape
    n_cells = max(2, int(height * width / cell_size**2 * 1.3))
    margin = cell_size
    seeds = rng.uniform([-margin, -margin], [height + margin, width + margin], (n_cells, 2))
    weights = rng.gamma(2.0, 0.25, n_cells) * cell_size**2 * 0.6
    drift = rng.normal(0, cell_size * 0.04, (n_cells, 2))
    tone = rng.uniform(150, 205, n_cells + 1)
    thickness = rng.uniform(1.5, 3.5, n_cells + 1)
    image = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint16)
    warp = [cell_size * 0.2 * _smooth_noise(rng, (height, width), cell_size * 0.6)
            for _ in range(2)]
    for z in range(depth):
        cells = _power_voronoi((height, width), seeds + z * drift, weights, warp)
        boundary = find_boundaries(cells, mode="thick")
        # Membrane thickness varies per cell: grow each cell's boundary by its own amount.
        distance = ndimage.distance_transform_edt(~boundary)
        membrane = distance < thickness[cells]
        # Small cells and slivers at the edges are absorbed by membrane, as annotators do.
        interior = np.where(membrane, 0, cells)
        interior = _drop_small(interior, 40)
        membrane = interior == 0
        plane = tone[cells] + 12 * _smooth_noise(rng, (height, width), 6)
        plane += 6 * _smooth_noise(rng, (height, width), 1.5)
        for _ in range(int(n_cells * 0.4)):  # mitochondria: dark ellipses with stripes
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            ry, rx = rng.uniform(4, 9), rng.uniform(7, 16)
            rr, cc = ellipse(cy, cx, ry, rx, shape=(height, width), rotation=rng.uniform(0, np.pi))
            keep = ~membrane[rr, cc]
            rr, cc = rr[keep], cc[keep]
            stripes = 15 * np.sin((rr + cc) * rng.uniform(0.5, 1.0))
            plane[rr, cc] = rng.uniform(85, 115) + stripes
        for _ in range(int(n_cells * 3)):  # vesicles: small light discs with dark rims
            cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(2, 4)
            rr, cc = disk((cy, cx), r + 1, shape=(height, width))
            plane[rr, cc] -= 55
            rr, cc = disk((cy, cx), r, shape=(height, width))
            plane[rr, cc] += 50
        plane[membrane] = rng.uniform(35, 70) + 10 * _smooth_noise(rng, (height, width), 3)[
            membrane
        ]
        plane = ndimage.gaussian_filter(plane, 1.0)
        plane += rng.normal(0, 10, plane.shape)
        image[z] = plane
        labels[z] = interior
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _drop_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    from skimage.measure import label as connected

    parts = connected(labels, background=0, connectivity=1)
    sizes = np.bincount(parts.ravel())
    small = sizes < min_size
    small[0] = False
    labels = labels.copy()
    labels[small[parts]] = 0
    # Each cell keeps only its largest piece; splinters become membrane.
    from ..segmentation.watershed import relabel_sequential

    return relabel_sequential(labels).astype(np.uint16)


def write_sample(folder: str | Path) -> tuple[Path, Path]:
    """Generate the packaged sample into ``folder`` (compressed TIFFs with their pixel size)."""
    import tifffile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = make_synthetic_stack()
    resolution = (1e3 / SAMPLE_PIXEL_SIZE_NM, 1e3 / SAMPLE_PIXEL_SIZE_NM)
    meta = {"unit": "um", "axes": "ZYX", "spacing": 0.05}
    paths = folder / SAMPLE_IMAGE, folder / SAMPLE_LABELS
    tifffile.imwrite(paths[0], image, imagej=True, resolution=resolution, metadata=meta,
                     compression="zlib")
    tifffile.imwrite(paths[1], labels, imagej=True, resolution=resolution, metadata=meta,
                     compression="zlib")
    return paths


if __name__ == "__main__":
    for path in write_sample(sys.argv[1] if len(sys.argv) > 1 else "sample_data"):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
