"""Model files: one ``.keras`` file per model, with our metadata inside, written atomically.

A ``.keras`` file is a zip archive. Next to Keras' own ``config.json`` and weights we add
``napari_em_unet.json`` (see :class:`ModelInfo`): what the model was trained on, at which
pixel size, with which normalisation and post-processing. Keras ignores the extra entry, so
the file stays a plain Keras model that other tools can open, and it is loaded with Keras'
safe mode so a file carrying code (a Lambda layer) is refused.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .. import __version__
from ..errors import ModelFileError
from ..segmentation.preprocessing import DEFAULT_PERCENTILES

FORMAT_VERSION = 1
METADATA_ENTRY = "napari_em_unet.json"
BUNDLED_MODEL_NAME = "isbi2012_unet.keras"


@dataclass
class ModelInfo:
    """What travels with a model. Unknown keys from newer versions are kept in ``extra``."""

    name: str = "unnamed"
    format_version: int = FORMAT_VERSION
    package_version: str = __version__
    keras_version: str = ""
    tensorflow_version: str = ""
    created: str = ""
    architecture: dict = field(default_factory=dict)
    pixel_size_nm: float | None = None
    normalization: dict = field(
        default_factory=lambda: {"method": "percentile", "percentiles": list(DEFAULT_PERCENTILES)}
    )
    membrane_width_px: float = 3.0
    postprocessing: dict = field(default_factory=dict)
    trained_on: list = field(default_factory=list)
    base_model: str | None = None
    epochs: int = 0
    validation: dict = field(default_factory=dict)
    history: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict) -> ModelInfo:
        known = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in known and k != "extra"}
        extra = dict(data.get("extra", {}))
        extra.update({k: v for k, v in data.items() if k not in known})
        return cls(**kwargs, extra=extra)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def percentiles(self) -> tuple[float, float]:
        low, high = self.normalization.get("percentiles", DEFAULT_PERCENTILES)
        return float(low), float(high)


@dataclass
class LoadedModel:
    """A Keras model with its metadata and where it came from."""

    keras_model: object
    info: ModelInfo
    path: Path | None = None


def bundled_model_path() -> Path:
    """The pretrained ISBI 2012 model that ships inside the package."""
    return Path(str(resources.files("napari_em_unet") / "models" / BUNDLED_MODEL_NAME))


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Read only the metadata of a model file (fast: no TensorFlow)."""
    path = _existing_model_path(path)
    if path.suffix.lower() == ".zip":  # a bioimage.io package, see export.py
        from .export import read_package_info

        return read_package_info(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_ENTRY not in archive.namelist():
                return ModelInfo(name=path.stem)
            data = json.loads(archive.read(METADATA_ENTRY))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a readable model file ({_short(exc)})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} has unreadable model metadata")
    return ModelInfo.from_dict(data)


def load_model(path: str | os.PathLike | None = None) -> LoadedModel:
    """Load a model file (default: the bundled one) in Keras safe mode, with its metadata.

    A bioimage.io package (``.zip``) made by ``em-unet export`` loads through its Keras 3
    weights, so it can be used wherever a ``.keras`` file can.
    """
    path = bundled_model_path() if path is None else path
    if _existing_model_path(path).suffix.lower() == ".zip":  # a bioimage.io package
        from .export import load_package

        return load_package(path)
    info = read_info(path)
    path = Path(path)
    if info.format_version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path.name} was written by a newer napari-em-unet (model format "
            f"{info.format_version}); please upgrade the package"
        )
    from .backend import keras_module

    keras = keras_module()
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            raise ModelFileError(
                f"{path.name} contains executable code (e.g. a Lambda layer); refusing to load it"
            ) from None
        raise ModelFileError(f"{path.name} is not a usable Keras model ({_short(exc)})") from None
    except Exception as exc:  # Keras raises many types for damaged archives
        raise ModelFileError(f"{path.name} is not a usable Keras model ({_short(exc)})") from None
    check_model_shape(model, path.name)
    return LoadedModel(model, info, path)


def check_model_shape(model, name: str) -> None:
    """Refuse models that do not map (batch, H, W, 1) images to (batch, H, W, 1) probabilities."""
    try:
        in_shape = tuple(model.inputs[0].shape)
        out_shape = tuple(model.outputs[0].shape)
    except (AttributeError, IndexError, TypeError):
        raise ModelFileError(f"{name} is not a functional Keras model") from None
    if len(in_shape) != 4 or in_shape[-1] != 1 or len(out_shape) != 4 or out_shape[-1] != 1:
        raise ModelFileError(
            f"{name} expects input {in_shape} and gives {out_shape}; a single-channel 2D "
            "model (batch, height, width, 1) -> (batch, height, width, 1) is needed"
        )


def save_model(model, info: ModelInfo, path: str | os.PathLike) -> Path:
    """Write ``model`` with ``info`` to ``path`` atomically.

    The file is written under a temporary name in the destination folder and renamed over
    ``path`` only when complete, so an interrupted save (Ctrl-C, kill -9, full disk) leaves
    either the previous file or the new one, never a broken model.
    """
    from .backend import keras_module, tensorflow_module

    keras = keras_module()
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelFileError(f"model files end in .keras, got {path.name}")
    path.parent.mkdir(parents=True, exist_ok=True)
    info = dataclasses.replace(
        info,
        keras_version=keras.__version__,
        tensorflow_version=tensorflow_module().__version__,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        package_version=__version__,
    )
    # Keras only writes files named *.keras, so the partial file lives in a hidden folder:
    # after a kill -9 mid-save no half-written *.keras sits beside the real models. Such
    # folders left by a killed save of the same file are removed once they are old.
    for stale in path.parent.glob(f".{path.name}.*.part"):
        if time.time() - stale.stat().st_mtime > 3600:
            shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    tmp = tmp_dir / path.name
    try:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_ENTRY, json.dumps(info.to_dict(), indent=1))
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _existing_model_path(path) -> Path:
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file")
    return path


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else exc.__class__.__name__)[:200]
