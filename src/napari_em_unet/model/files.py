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
import zipfile
from importlib import resources
from pathlib import Path

from .. import __version__
from ..errors import ModelFileError, first_line
from ..io.atomic import publish, remove_stale_temporaries, temporary_beside
from . import package
from .info import FORMAT_VERSION, METADATA_ENTRY, LoadedModel, ModelInfo

BUNDLED_MODEL_NAME = "isbi2012_unet.keras"


def bundled_model_path() -> Path:
    """The pretrained ISBI 2012 model that ships inside the package."""
    return Path(str(resources.files("napari_em_unet") / "models" / BUNDLED_MODEL_NAME))


def read_info(path: str | os.PathLike) -> ModelInfo:
    """Read only the metadata of a model file or package (fast: no TensorFlow)."""
    path = existing_model_path(path)
    if package.is_package(path):
        return package.read_package_info(path)
    try:
        with zipfile.ZipFile(path) as archive:
            if METADATA_ENTRY not in archive.namelist():
                return ModelInfo(name=path.stem)
            data = json.loads(archive.read(METADATA_ENTRY))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, KeyError) as exc:
        raise ModelFileError(f"{path} is not a readable model file ({first_line(exc)})") from None
    if not isinstance(data, dict):
        raise ModelFileError(f"{path} has unreadable model metadata")
    return ModelInfo.from_dict(data)


def load_model(path: str | os.PathLike | None = None) -> LoadedModel:
    """Load a model (default: the bundled one) in Keras safe mode, with its metadata.

    ``path`` is a ``.keras`` model file or a bioimage.io package made by ``em-unet export``
    (the ``.zip``, its unpacked folder or its ``rdf.yaml``), which loads through its Keras 3
    weights.
    """
    path = existing_model_path(bundled_model_path() if path is None else path)
    info = read_info(path)
    if info.format_version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path.name} was written by a newer napari-em-unet (model format "
            f"{info.format_version}); please upgrade the package"
        )
    _check_inference(info, path)
    if not package.is_package(path):
        return LoadedModel(_load_keras(path, path.name), info, path)
    with package.extracted_keras(path) as (inner, member):
        return LoadedModel(_load_keras(inner, f"{path.name} ({member})"), info, path)


def _load_keras(path: Path, shown: str):
    """The Keras model in ``path``, loaded in safe mode; ``shown`` names it in errors."""
    from .backend import keras_module

    keras = keras_module()
    try:
        model = keras.saving.load_model(path, compile=False, safe_mode=True)
    except ValueError as exc:
        if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
            raise ModelFileError(
                f"{shown} contains executable code (e.g. a Lambda layer); refusing to load it"
            ) from None
        raise ModelFileError(f"{shown} is not a usable Keras model ({first_line(exc)})") from None
    except Exception as exc:  # Keras raises many types for damaged archives
        raise ModelFileError(f"{shown} is not a usable Keras model ({first_line(exc)})") from None
    check_model_shape(model, shown)
    return model


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
    # after a kill -9 mid-save no half-written *.keras sits beside the real models, and the
    # next save (or napari listing the models) removes the folder of a save that died.
    remove_stale_temporaries(path.parent, path.name)
    tmp_dir = temporary_beside(path)
    tmp_dir.mkdir()
    try:
        tmp = tmp_dir / path.name
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_ENTRY, json.dumps(info.to_dict(), indent=1))
        publish(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def _check_inference(info: ModelInfo, path: Path) -> None:
    """A damaged instance step (say, a truncated edge rule) or view list fails here, at
    loading, in one sentence, not halfway through a stack."""
    from ..segmentation.watershed import WatershedParams

    try:
        WatershedParams.from_dict(info.postprocessing)
    except ValueError as exc:
        raise ModelFileError(f"{path.name} has a damaged instance step ({exc})") from None
    scales = info.view_scales
    if not (
        isinstance(scales, list)
        and scales
        and all(isinstance(s, int | float) and 0.25 <= s <= 4 for s in scales)
    ):
        raise ModelFileError(f"{path.name} has unusable view scales ({scales!r})")


def existing_model_path(path) -> Path:
    """``path`` when it can hold a model, else a one-sentence :class:`ModelFileError`."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if package.is_package(path):
        return path
    if path.is_dir():
        raise ModelFileError(
            f"{path} is a folder, not a model file (a .keras file or a "
            "bioimage.io package is needed)"
        )
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        raise ModelFileError(
            f"{path.name} is an ONNX export, which cannot be fine-tuned or "
            "loaded here; use the .keras file or bioimage.io package it was "
            "exported from"
        )
    if suffix in (".h5", ".hdf5"):
        raise ModelFileError(
            f"{path.name} is a legacy Keras HDF5 file; use a .keras file or a bioimage.io package"
        )
    if suffix != ".keras":
        raise ModelFileError(
            f"{path.name} is not a model file (expected .keras, or a bioimage.io package .zip)"
        )
    return path
