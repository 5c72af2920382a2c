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
from dataclasses import dataclass
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
    warp = [
        cell_size * 0.2 * _smooth_noise(rng, (height, width), cell_size * 0.6) for _ in range(2)
    ]
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
        _paint_organelles(rng, plane, membrane, n_cells)
        plane[membrane] = (
            rng.uniform(35, 70) + 10 * _smooth_noise(rng, (height, width), 3)[membrane]
        )
        plane = ndimage.gaussian_filter(plane, 1.0)
        plane += rng.normal(0, 10, plane.shape)
        image[z] = plane
        labels[z] = interior
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _paint_organelles(rng, plane: np.ndarray, membrane: np.ndarray, n_cells: int) -> None:
    """Mitochondria (dark striped ellipses) and vesicles (light discs with dark rims), in
    place. The random draws keep their order: the shipped sample is made by this code."""
    from skimage.draw import disk, ellipse

    height, width = plane.shape
    for _ in range(int(n_cells * 0.4)):
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        ry, rx = rng.uniform(4, 9), rng.uniform(7, 16)
        rr, cc = ellipse(cy, cx, ry, rx, shape=(height, width), rotation=rng.uniform(0, np.pi))
        keep = ~membrane[rr, cc]
        rr, cc = rr[keep], cc[keep]
        stripes = 15 * np.sin((rr + cc) * rng.uniform(0.5, 1.0))
        plane[rr, cc] = rng.uniform(85, 115) + stripes
    for _ in range(int(n_cells * 3)):
        cy, cx, r = rng.uniform(0, height), rng.uniform(0, width), rng.uniform(2, 4)
        rr, cc = disk((cy, cx), r + 1, shape=(height, width))
        plane[rr, cc] -= 55
        rr, cc = disk((cy, cx), r, shape=(height, width))
        plane[rr, cc] += 50


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


# ----------------------------------------------------------------------------- 3D volumes
@dataclass(frozen=True)
class VolumeStyle:
    """How a synthetic volume is cut and imaged, and how its cells run through it.

    Lengths are in nanometres, so one set of cells looks right at any voxel size: the
    anisotropy alone decides how far a cell moves from one section to the next (in
    pixels) and how blurred an oblique membrane looks.
    """

    voxel_size_nm: tuple[float, float, float]
    """(z, y, x): section spacing and pixel size."""
    section_thickness_nm: float
    """Depth integrated into one image: a cut ssTEM section, or the beam's depth in FIB-SEM."""
    cell_diameter_nm: float = 350.0
    drift: float = 0.25
    """Lateral drift shared by all cells, in nm per nm of depth (a bundle running obliquely)."""
    tilt: float = 0.15
    """Spread of each cell's own direction around the drift (nm per nm)."""
    branch_fraction: float = 0.15
    """Share of cells with a branch that opens or closes inside the volume."""
    end_fraction: float = 0.15
    """Share of cells that start or end inside the volume (tapering over ``taper_nm``)."""
    taper_nm: float = 80.0
    faint_membranes: float = 0.3
    """Share of the membrane area drawn with low contrast (where a network hesitates)."""


SSTEM_STYLE = VolumeStyle((50.0, 4.0, 4.0), section_thickness_nm=50.0)
"""ISBI-like ssTEM: 4 nm pixels, 50 nm sections; cells move several pixels per section."""
FIBSEM_STYLE = VolumeStyle((10.0, 10.0, 10.0), section_thickness_nm=10.0)
"""Isotropic FIB-SEM at 10 nm: cells move a fraction of a pixel per section."""


@dataclass
class _Neurites:
    """Cell centre lines: position(Z) = origin + velocity * Z + wiggle, active between ends."""

    label: np.ndarray  # (n,) object id; a branch shares its parent's
    origin: np.ndarray  # (n, 2) nm, at Z = 0
    velocity: np.ndarray  # (n, 2) nm per nm of depth
    wiggle: np.ndarray  # (n, 2) amplitude, nm
    phase: np.ndarray  # (n,)
    weight: np.ndarray  # (n,) power-diagram weight, nm^2 (about the squared radius)
    start: np.ndarray  # (n,) Z where the cell starts (-inf: before the volume)
    end: np.ndarray  # (n,) Z where it ends (+inf: after it)
    taper_nm: float
    wavelength_nm: float

    def at(self, depth: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centres (m, 2), power offsets (m,) and labels (m,) of the cells present at ``depth``."""
        rise = np.clip((depth - self.start) / self.taper_nm, 0, 1)
        fall = np.clip((self.end - depth) / self.taper_nm, 0, 1)
        presence = rise * fall
        live = presence > 0
        angle = 2 * np.pi * depth / self.wavelength_nm + self.phase[live]
        centres = (
            self.origin[live]
            + self.velocity[live] * depth
            + self.wiggle[live] * np.sin(angle)[:, None]
        )
        # A cell that starts or ends shrinks to nothing: its power distance grows by up to
        # four squared radii, so its neighbours take its place smoothly.
        s = presence[live]
        offsets = -self.weight[live] * s + (1 - s) * 4 * self.weight[live]
        return centres, offsets, self.label[live]


def _neurites(
    rng, style: VolumeStyle, extent_nm: tuple[float, float], depth_nm: float
) -> _Neurites:
    """Random cells filling ``extent_nm`` (y, x) plus a margin over ``depth_nm``."""
    diameter = style.cell_diameter_nm
    drift = rng.normal(0, 1, 2)
    drift *= style.drift / (np.linalg.norm(drift) + 1e-9)
    # The margin covers the drift over the whole depth, so cells enter and leave at edges.
    margin = 2 * diameter + (style.drift + 2 * style.tilt) * depth_nm
    low = np.array([-margin, -margin]) - drift * depth_nm / 2
    high = np.array(extent_nm) + margin - drift * depth_nm / 2
    n = max(2, int(np.prod(high - low) / diameter**2 * 1.3))
    origin = rng.uniform(low, high, (n, 2))
    velocity = drift + rng.normal(0, style.tilt, (n, 2))
    radius = diameter / 2 * rng.gamma(4.0, 0.25, n) ** 0.5
    start, end = np.full(n, -np.inf), np.full(n, np.inf)
    ends = rng.random(n) < style.end_fraction
    at = rng.uniform(0.15, 0.85, n) * depth_nm
    starts_here = rng.random(n) < 0.5
    start[ends & starts_here] = at[ends & starts_here]
    end[ends & ~starts_here] = at[ends & ~starts_here]
    label = np.arange(1, n + 1)
    cells = {
        "label": label,
        "origin": origin,
        "velocity": velocity,
        "wiggle": rng.normal(0, 0.12 * diameter, (n, 2)),
        "phase": rng.uniform(0, 6.3, n),
        "weight": radius**2,
        "start": start,
        "end": end,
    }
    branch = _branches(rng, style, cells, depth_nm)
    cells = {k: np.concatenate([v, branch[k]]) for k, v in cells.items()}
    return _Neurites(**cells, taper_nm=style.taper_nm, wavelength_nm=4 * depth_nm + 1000)


def _branches(rng, style: VolumeStyle, cells: dict, depth_nm: float) -> dict:
    """Children that leave (or join) their parent at a depth inside the volume.

    A child starts at its parent's centre line and moves away from it; it carries the
    parent's label, so the two are one object (a Y in 3D), which opens going down the
    stack or closes (the mirror image) when the child ends at the branch point instead.
    """
    parents = np.flatnonzero(
        (rng.random(len(cells["label"])) < style.branch_fraction)
        & np.isinf(cells["start"])
        & np.isinf(cells["end"])
    )
    k = len(parents)
    at = rng.uniform(0.2, 0.8, k) * depth_nm
    away = rng.normal(0, 1, (k, 2))
    away *= rng.uniform(0.6, 1.0, (k, 1)) / (np.linalg.norm(away, axis=1, keepdims=True) + 1e-9)
    opens = rng.random(k) < 0.5
    # position = parent's + away * (Z - at) for an opening branch, (at - Z) for a closing one
    sign = np.where(opens, 1.0, -1.0)[:, None]
    child = {key: value[parents].copy() for key, value in cells.items()}
    child["velocity"] = child["velocity"] + sign * away
    child["origin"] = child["origin"] - sign * away * at[:, None]
    child["weight"] = child["weight"] * rng.uniform(0.4, 0.9, k)
    child["start"] = np.where(opens, at, -np.inf)
    child["end"] = np.where(opens, np.inf, at)
    return child


def _power_labels(
    warped: tuple[np.ndarray, np.ndarray],
    pixel_nm: float,
    reach_nm: float,
    centres,
    offsets,
    labels,
) -> np.ndarray:
    """Label each pixel by the cell minimising |x - c|^2 + offset (a power diagram), in nm.

    ``warped`` holds every pixel's (y, x) position in nm after the smooth warp that bends
    cell outlines. Each cell is evaluated only within ``reach_nm`` of its centre: exact as
    long as every pixel has a closer cell within that distance (dense tissue), and it keeps
    the cost of a section independent of the number of cells in the volume.
    """
    yy, xx = warped
    height, width = yy.shape
    best = np.full(yy.shape, np.inf, dtype=np.float32)
    out = np.zeros(yy.shape, dtype=np.uint32)
    for (cy, cx), offset, label in zip(centres, offsets, labels, strict=True):
        y0 = max(0, int((cy - reach_nm) / pixel_nm))
        y1 = min(height, int((cy + reach_nm) / pixel_nm) + 2)
        x0 = max(0, int((cx - reach_nm) / pixel_nm))
        x1 = min(width, int((cx + reach_nm) / pixel_nm) + 2)
        if y0 >= y1 or x0 >= x1:
            continue
        d = (yy[y0:y1, x0:x1] - cy) ** 2 + (xx[y0:y1, x0:x1] - cx) ** 2 + offset
        region = best[y0:y1, x0:x1]
        closer = d < region
        region[closer] = d[closer]
        out[y0:y1, x0:x1][closer] = label
    return out


@dataclass
class _Organelles:
    """Mitochondria (ellipsoids, long along the depth) and vesicles (spheres), in nm."""

    mito_centre: np.ndarray  # (m, 3) z, y, x
    mito_axes: np.ndarray  # (m, 3) semi-axes z, y, x
    mito_angle: np.ndarray  # (m,) in-plane rotation
    mito_tone: np.ndarray  # (m,)
    vesicle_centre: np.ndarray  # (v, 3)
    vesicle_radius: np.ndarray  # (v,)

    @classmethod
    def random(cls, rng, style: VolumeStyle, extent_nm, depth_nm) -> _Organelles:
        area_um2 = extent_nm[0] * extent_nm[1] / 1e6
        cell_um2 = (style.cell_diameter_nm / 1e3) ** 2
        span = depth_nm + 600  # organelles reaching in from beyond the first and last section
        # About one mitochondrion per two cell cross-sections and 60 vesicles per square
        # micrometre in any section, as in the 2D sample.
        n_mito = rng.poisson(0.5 * area_um2 / cell_um2 * span / 400)
        n_ves = rng.poisson(60 * area_um2 * span / 40)
        low, high = np.array([-300, 0, 0]), np.array([depth_nm + 300, *extent_nm])
        return cls(
            rng.uniform(low, high, (n_mito, 3)),
            np.column_stack(
                [
                    rng.uniform(100, 300, n_mito),
                    rng.uniform(35, 60, n_mito),
                    rng.uniform(50, 110, n_mito),
                ]
            ),
            rng.uniform(0, np.pi, n_mito),
            rng.uniform(85, 115, n_mito),
            rng.uniform(low, high, (n_ves, 3)),
            rng.uniform(15, 25, n_ves),
        )

    def draw(
        self, rng, plane: np.ndarray, membrane: np.ndarray, depth: float, pixel_nm: float
    ) -> None:
        """Paint the organelles cut by the section at ``depth`` into ``plane`` (in place)."""
        from skimage.draw import disk, ellipse

        shape = plane.shape
        cut = np.abs(depth - self.mito_centre[:, 0]) < self.mito_axes[:, 0]
        for (cz, cy, cx), (az, ay, ax), angle, tone in zip(
            self.mito_centre[cut],
            self.mito_axes[cut],
            self.mito_angle[cut],
            self.mito_tone[cut],
            strict=True,
        ):
            scale = np.sqrt(1 - ((depth - cz) / az) ** 2) / pixel_nm
            rr, cc = ellipse(
                cy / pixel_nm,
                cx / pixel_nm,
                max(ay * scale, 1),
                max(ax * scale, 1),
                shape=shape,
                rotation=angle,
            )
            keep = ~membrane[rr, cc]
            rr, cc = rr[keep], cc[keep]
            # Cristae-like stripes, fixed in space so neighbouring sections agree.
            plane[rr, cc] = tone + 15 * np.sin((rr + cc) * pixel_nm / 6.0)
        cut = np.abs(depth - self.vesicle_centre[:, 0]) < self.vesicle_radius
        for (cz, cy, cx), radius in zip(
            self.vesicle_centre[cut], self.vesicle_radius[cut], strict=True
        ):
            r = np.sqrt(radius**2 - (depth - cz) ** 2) / pixel_nm
            if r < 0.7:
                continue
            rr, cc = disk((cy / pixel_nm, cx / pixel_nm), r + 1, shape=shape)
            plane[rr, cc] -= 55
            rr, cc = disk((cy / pixel_nm, cx / pixel_nm), r, shape=shape)
            plane[rr, cc] += 50


class _Field:
    """A smooth random field over (y, x) that changes slowly with depth (two phases mixed)."""

    def __init__(self, rng, shape, sigma_px: float, wavelength_nm: float):
        self.parts = [_smooth_noise(rng, shape, sigma_px) for _ in range(2)]
        self.wavelength_nm = wavelength_nm

    def at(self, depth: float) -> np.ndarray:
        angle = 2 * np.pi * depth / self.wavelength_nm
        return np.cos(angle) * self.parts[0] + np.sin(angle) * self.parts[1]


def _section(
    cells: _Neurites,
    style: VolumeStyle,
    depth: float,
    grid,
    warp: list[_Field],
    thickness_nm: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cells at the section's centre, their membrane, and the membrane averaged over its depth.

    An ssTEM section is 50 nm thick: a membrane that runs obliquely through it is seen as a
    wide grey band, which is a large part of why 2D segmentation fails there. So the
    membrane is drawn at several depths through the section and averaged.
    """
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    pixel_nm = style.voxel_size_nm[2]
    reach = 3 * style.cell_diameter_nm
    n_sub = 1 + 2 * max(1, round(style.section_thickness_nm / 20))
    shifts = np.linspace(-0.5, 0.5, n_sub) * style.section_thickness_nm
    coverage = np.zeros(grid[0].shape, dtype=np.float32)
    centre = membrane = None
    for shift in shifts:
        z = depth + shift
        warped = (grid[0] + warp[0].at(z), grid[1] + warp[1].at(z))
        labels = _power_labels(warped, pixel_nm, reach, *cells.at(z))
        distance = ndimage.distance_transform_edt(~find_boundaries(labels, mode="thick"))
        mem = distance * pixel_nm < thickness_nm[labels]
        coverage += mem
        if shift == 0:
            centre, membrane = labels, mem
    return centre, membrane, coverage / n_sub


def make_synthetic_volume(
    shape: tuple[int, int, int] = (50, 384, 384), style: VolumeStyle = FIBSEM_STYLE, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """A volume whose cells run through the sections, move, branch and end, with its 3D truth.

    Returns (image uint8 ZYX, labels uint32 ZYX): one id per cell through all its sections
    (a branch keeps its parent's id), 0 = membrane, ids numbered 1..n in order of first
    appearance. Membranes are dark; ``style`` sets the voxel size and section thickness
    (:data:`SSTEM_STYLE`, :data:`FIBSEM_STYLE`), so the same tissue looks ssTEM-like (cells
    jump several pixels between sections, oblique membranes blur) or FIB-SEM-like.
    """
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    depth, height, width = shape
    dz, pixel_nm = style.voxel_size_nm[0], style.voxel_size_nm[2]
    extent = (height * pixel_nm, width * pixel_nm)
    cells = _neurites(rng, style, extent, depth * dz)
    organelles = _Organelles.random(rng, style, extent, depth * dz)
    n_labels = int(cells.label.max()) + 1
    tone = rng.uniform(150, 205, n_labels)
    thickness = rng.uniform(6, 14, n_labels)
    cell_px = style.cell_diameter_nm / pixel_nm
    grid = tuple(a * pixel_nm for a in np.mgrid[0:height, 0:width].astype(np.float32))
    wavelength = 2000.0
    warp = [_Field(rng, (height, width), 0.6 * cell_px, wavelength) for _ in range(2)]
    for field in warp:
        field.parts = [p * 0.2 * style.cell_diameter_nm for p in field.parts]
    faint = _Field(rng, (height, width), 0.5 * cell_px, wavelength)
    faint_level = np.quantile(faint.at(0), style.faint_membranes)
    faint_contrast = rng.uniform(0.25, 0.5)
    image = np.zeros(shape, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint32)
    for z in range(depth):
        cells_z, membrane, coverage = _section(cells, style, z * dz, grid, warp, thickness)
        plane = tone[cells_z] + 12 * _smooth_noise(rng, (height, width), 24 / pixel_nm)
        plane += 6 * _smooth_noise(rng, (height, width), 6 / pixel_nm)
        organelles.draw(rng, plane, membrane, z * dz, pixel_nm)
        # Faint membranes: where the slowly varying field is low, contrast drops to 25-50 %.
        contrast = np.where(faint.at(z * dz) < faint_level, faint_contrast, 1.0)
        dark = rng.uniform(35, 70) + 10 * _smooth_noise(rng, (height, width), 12 / pixel_nm)
        weight = coverage * contrast
        plane = plane * (1 - weight) + dark * weight
        plane = ndimage.gaussian_filter(plane, max(0.5, 4 / pixel_nm))
        image[z] = plane + rng.normal(0, 10, plane.shape)
        labels[z] = np.where(membrane, 0, cells_z)
    labels = _drop_small_3d(labels, max(4, int(1600 / pixel_nm**2)))
    return np.clip(image, 0, 255).astype(np.uint8), labels


def _drop_small_3d(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Turn slivers (pieces of a cell smaller than ``min_size`` pixels in a section) into
    membrane, as annotators do, and number the objects 1..n in order of first appearance."""
    from skimage.measure import label as connected

    for plane in labels:
        parts = connected(plane, background=0, connectivity=1)
        small = np.bincount(parts.ravel()) < min_size
        small[0] = False
        plane[small[parts]] = 0
    _, first = np.unique(labels, return_index=True)
    order = np.unique(labels)[np.argsort(first)]
    order = order[order != 0]
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint32)
    lut[order] = np.arange(1, order.size + 1, dtype=np.uint32)
    return lut[labels]


def write_sample(folder: str | Path) -> tuple[Path, Path]:
    """Generate the packaged sample into ``folder`` (compressed TIFFs with their pixel size)."""
    import tifffile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image, labels = make_synthetic_stack()
    resolution = (1e3 / SAMPLE_PIXEL_SIZE_NM, 1e3 / SAMPLE_PIXEL_SIZE_NM)
    meta = {"unit": "um", "axes": "ZYX", "spacing": 0.05}
    paths = folder / SAMPLE_IMAGE, folder / SAMPLE_LABELS
    tifffile.imwrite(
        paths[0], image, imagej=True, resolution=resolution, metadata=meta, compression="zlib"
    )
    tifffile.imwrite(
        paths[1], labels, imagej=True, resolution=resolution, metadata=meta, compression="zlib"
    )
    return paths


if __name__ == "__main__":
    for path in write_sample(sys.argv[1] if len(sys.argv) > 1 else "sample_data"):
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
