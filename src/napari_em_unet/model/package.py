"""Reading bioimage.io model packages as models: their metadata and their Keras 3 weights.

A package made by ``em-unet export`` carries our ``.keras`` file (``keras_v3`` weights) with
its metadata, so it can be used wherever a ``.keras`` file can. Packages made elsewhere are
accepted when they have ``keras_v3`` weights and a single percentile ``scale_range``
preprocessing. A package may be the ``.zip``, its unpacked folder, or the folder's
``rdf.yaml``. Reading needs none of the export converters.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from ..errors import ModelFileError, first_line
from .info import METADATA_ENTRY, ModelInfo

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")


def is_package(path: Path) -> bool:
    """Whether ``path`` names a bioimage.io package (zip, unpacked folder or its rdf.yaml)."""
    path = Path(path)
    if path.is_dir():
        return any((path / name).is_file() for name in RDF_NAMES)
    return path.suffix.lower() == ".zip" or path.name in RDF_NAMES


class _Package:
    """The members of a package, whether zipped or unpacked."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.folder = (
            self.path
            if self.path.is_dir()
            else (self.path.parent if self.path.name in RDF_NAMES else None)
        )
        self._zip = zipfile.ZipFile(self.path) if self.folder is None else None

    def names(self) -> set[str]:
        if self._zip is not None:
            return set(self._zip.namelist())
        return {p.name for p in self.folder.iterdir() if p.is_file()}

    def open(self, member: str):
        return self._zip.open(member) if self._zip is not None else open(self.folder / member, "rb")

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def rdf(self) -> dict:
        import yaml

        name = next((n for n in RDF_NAMES if n in self.names()), None)
        if name is None:
            raise ModelFileError(
                f"{self.path.name} is a zip file but not a bioimage.io package (no rdf.yaml)"
            )
        try:
            with self.open(name) as fh:
                rdf = yaml.safe_load(fh.read())
        except yaml.YAMLError as exc:
            raise ModelFileError(
                f"{self.path.name} has an unreadable rdf.yaml ({first_line(exc, 150)})"
            ) from None
        if not isinstance(rdf, dict) or rdf.get("type") != "model":
            raise ModelFileError(f"{self.path.name} is a bioimage.io package but not a model")
        return rdf

    def keras_member(self, rdf: dict) -> str:
        weights = rdf.get("weights") or {}
        entry = weights.get("keras_v3") if isinstance(weights, dict) else None
        source = entry.get("source") if isinstance(entry, dict) else None
        if not isinstance(source, str):
            available = ", ".join(weights) if isinstance(weights, dict) else "none"
            raise ModelFileError(
                f"{self.path.name} has no keras_v3 weights (it has: "
                f"{available}); only packages with Keras 3 weights can be "
                "used here"
            )
        member = Path(source).name  # never follow a path out of the package
        if member not in self.names():
            raise ModelFileError(f"{self.path.name} lists {member} but does not contain it")
        return member


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[_Package]:
    try:
        package = _Package(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelFileError(
            f"{Path(path).name} is not a readable model package ({first_line(exc, 150)})"
        ) from None
    try:
        yield package
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, KeyError) as exc:
        raise ModelFileError(
            f"{Path(path).name} is not a readable model package ({first_line(exc, 150)})"
        ) from None
    finally:
        package.close()


def _info_from_rdf(rdf: dict, path: Path) -> ModelInfo:
    """Metadata for a package made elsewhere: percentiles and pixel size from the rdf."""
    ours = (rdf.get("config") or {}).get("napari_em_unet")
    if isinstance(ours, dict):
        return ModelInfo.from_dict(ours)
    inputs = rdf.get("inputs") or [{}]
    steps = [p for p in inputs[0].get("preprocessing") or [] if p.get("id") != "ensure_dtype"]
    if len(steps) != 1 or steps[0].get("id") != "scale_range":
        ids = [p.get("id") for p in steps] or ["none"]
        raise ModelFileError(
            f"{path.name} expects preprocessing {', '.join(map(str, ids))}; "
            "only a single percentile scale_range is supported"
        )
    kwargs = steps[0].get("kwargs") or {}
    percentiles = [
        float(kwargs.get("min_percentile", 0.0)),
        float(kwargs.get("max_percentile", 100.0)),
    ]
    pixel = None
    for axis in inputs[0].get("axes") or []:
        if (
            isinstance(axis, dict)
            and axis.get("id") == "x"
            and axis.get("unit") in ("nanometer", "micrometer")
        ):
            pixel = float(axis.get("scale", 1.0)) * (1e3 if axis["unit"] == "micrometer" else 1)
    return ModelInfo(
        name=str(rdf.get("name", path.stem)),
        pixel_size_nm=pixel,
        normalization={"method": "percentile", "percentiles": percentiles},
    )


def read_package_info(path: Path) -> ModelInfo:
    """The :class:`ModelInfo` of a bioimage.io package (no TensorFlow)."""
    path = Path(path)
    with _opened(path) as package:
        rdf = package.rdf()
        member = package.keras_member(rdf)
        with package.open(member) as inner, zipfile.ZipFile(inner) as keras_file:
            if METADATA_ENTRY in keras_file.namelist():
                return ModelInfo.from_dict(json.loads(keras_file.read(METADATA_ENTRY)))
    return _info_from_rdf(rdf, path)


@contextlib.contextmanager
def extracted_keras(path: Path) -> Iterator[tuple[Path, str]]:
    """The package's Keras 3 weights as a temporary ``.keras`` file, and their name in it."""
    with tempfile.TemporaryDirectory(prefix="em-unet-package-") as folder:
        inner = Path(folder) / "model.keras"
        with _opened(Path(path)) as package:
            member = package.keras_member(package.rdf())
            with package.open(member) as src, open(inner, "wb") as dst:
                shutil.copyfileobj(src, dst)
        yield inner, member
