"""bioimage.io model packages (spec 0.5): what ``em-unet export --format bioimageio`` writes.

A package (a ``.zip``) holds the ``.keras`` file itself (``keras_v3``, the original weights,
still carrying our metadata) plus conversions to ``keras_hdf5``,
``tensorflow_saved_model_bundle`` and ``onnx``, a test input and the matching test output, a
cover and a README. The preprocessing the network expects is written down as
``scale_range`` with the model's percentiles per slice, so deepImageJ, ilastik or
``bioimageio.core`` prepare the data as we do. The package is built in a temporary folder,
validated with ``bioimageio.spec`` and only then renamed into place. Reading a package back
as a model is :mod:`.package`'s job.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np

from ..errors import EmUnetError
from ..io.atomic import atomic_path
from .export_common import (
    HALO,
    INPUT_ID,
    OUTPUT_ID,
    ExportResult,
    quiet_converters,
    reference_output,
    require,
    sample_tile,
    size_multiple,
    test_sizes,
)
from .export_onnx import convert_onnx_checked
from .info import LoadedModel, ModelInfo

PACKAGE_SUFFIX = ".zip"
WEIGHT_FORMATS = ("keras_v3", "keras_hdf5", "tensorflow_saved_model_bundle", "onnx")

CITATIONS = [
    {
        "text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical "
        "Image Segmentation. MICCAI 2015.",
        "doi": "10.1007/978-3-319-24574-4_28",
    },
    {
        "text": "Arganda-Carreras et al. Crowdsourcing the creation of image segmentation "
        "algorithms for connectomics. Front. Neuroanat. 2015 (ISBI 2012 challenge).",
        "doi": "10.3389/fnana.2015.00142",
    },
]


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9 _().+-]+", "_", text).strip(" _") or "em-unet model"
    return (name if len(name) >= 5 else f"{name} U-Net")[:128]  # the spec wants 5 to 128


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:64] or "model"


def _shown(info: ModelInfo) -> dict:
    """The watershed parameters for the README; a learned edge rule's trees are named, not
    listed."""
    shown = dict(info.postprocessing)
    if shown.get("edge_rule"):
        shown["edge_rule"] = "learned (boosted trees, in the keras_v3 file)"
    return shown


def _views_line(info: ModelInfo) -> str:
    scales = [float(s) for s in info.view_scales]
    if scales == [1.0]:
        return ""
    shown = ", ".join(f"{s:g}" for s in scales)
    return (
        f"- Before that it averages the probabilities of the slice resized to {shown} times "
        "its size (each brought back to the slice's size, linear interpolation).\n"
    )


def _readme(info: ModelInfo, formats: tuple[str, ...], multiple: int) -> str:
    px = f"{info.pixel_size_nm:g} nm" if info.pixel_size_nm else "not recorded"
    low, high = info.percentiles
    v_rand = (info.validation or {}).get("v_rand")
    trained = (
        "; ".join(
            f"{t.get('source') or 'data'} slices {t.get('slices')}"
            for t in info.trained_on
            if isinstance(t, dict)
        )
        or "not recorded"
    )
    return f"""# {info.name}

A 2D U-Net that predicts the **membrane probability** of electron-microscopy slices
(serial-section TEM, neuronal tissue), made with napari-em-unet.

## Input and preprocessing
- One grey slice at a time, axes (batch, y, x, channel), float32, pixel size {px}.
- Height and width must be multiples of {multiple}.
- Each slice is normalised on its own: the {low:g}th percentile maps to 0 and the
  {high:g}th to 1 (`scale_range` over y and x). In napari-em-unet, NaN pixels become 0.5.

## Output
- Membrane probability in [0, 1] (sigmoid), same shape as the input.
- napari-em-unet turns it into cells with a watershed: `{json.dumps(_shown(info))}`.
{_views_line(info)}
## Weights
{", ".join(formats)}. The `keras_v3` file is the original; the others are conversions of it.
The `keras_v3` file is also a napari-em-unet model file: `em-unet segment --model` and the
napari plugin load this package directly.

## Training
Trained on: {trained}. Epochs: {info.epochs}. Base model: {info.base_model or "none"}.

## Validation
Validation V_rand (ISBI 2012 foreground-restricted Rand score) on held-out data:
{"not recorded" if v_rand is None else f"{v_rand:.4f}"}. To validate on your own data, segment
slices with a ground truth and run `em-unet evaluate prediction.tif truth.tif`.
"""


def _cover(raw: np.ndarray, probability: np.ndarray, path: Path) -> None:
    """Input slice beside the predicted membranes, 2:1, as the zoo shows it."""
    import imageio.v3 as iio

    lo, hi = np.percentile(raw, (1, 99))
    left = np.clip((raw - lo) / max(hi - lo, 1e-6), 0, 1)
    right = 1.0 - np.clip(probability, 0, 1)
    iio.imwrite(path, (np.concatenate([left, right], axis=1) * 255).astype(np.uint8))


def _axes(info, multiple: int, smallest: int) -> tuple[list, list]:
    """The input and output axes: any size that is a multiple of the network's."""
    space = {"scale": float(info.pixel_size_nm), "unit": "nanometer"} if info.pixel_size_nm else {}
    in_axes = (
        [{"type": "batch"}]
        + [
            {"type": "space", "id": a, "size": {"min": smallest, "step": multiple}, **space}
            for a in ("y", "x")
        ]
        + [{"type": "channel", "channel_names": ["em"]}]
    )
    out_axes = (
        [{"type": "batch"}]
        + [
            {
                "type": "space",
                "id": a,
                "size": {"tensor_id": INPUT_ID, "axis_id": a},
                "halo": HALO,
                **space,
            }
            for a in ("y", "x")
        ]
        + [{"type": "channel", "channel_names": [OUTPUT_ID]}]
    )
    return in_axes, out_axes


def _weights(files: dict, formats, opset, keras_version: str, tf_version: str) -> dict:
    """One entry per weights format written, each pointing at its parent (the Keras file)."""
    weights: dict = {}
    if "keras_v3" in formats:
        weights["keras_v3"] = {
            "source": files["keras_v3"],
            "keras_version": keras_version,
            "backend": ["tensorflow", tf_version],
        }
    parent = {"parent": "keras_v3"} if "keras_v3" in formats else {}
    if "keras_hdf5" in formats:
        weights["keras_hdf5"] = {
            "source": files["keras_hdf5"],
            "tensorflow_version": tf_version,
            **parent,
        }
    if "tensorflow_saved_model_bundle" in formats:
        weights["tensorflow_saved_model_bundle"] = {
            "source": files["tensorflow_saved_model_bundle"],
            "tensorflow_version": tf_version,
            **parent,
        }
    if "onnx" in formats:
        weights["onnx"] = {"source": files["onnx"], "opset_version": opset, **parent}
    return weights


def _rdf(
    model: LoadedModel,
    files: dict,
    formats: tuple[str, ...],
    *,
    authors,
    license,
    opset: int | None,
) -> dict:
    from .backend import keras_module, tensorflow_module

    keras, tf = keras_module(), tensorflow_module()
    info = model.info
    multiple = size_multiple(model)
    smallest, _ = test_sizes(multiple)
    low, high = info.percentiles
    in_axes, out_axes = _axes(info, multiple, smallest)
    weights = _weights(files, formats, opset, keras.__version__, tf.__version__)
    return {
        "type": "model",
        "format_version": _format_version(),
        "name": _safe_name(info.name),
        "description": "2D U-Net predicting membrane probability in electron-microscopy "
        "slices (napari-em-unet).",
        "authors": [{"name": a} for a in authors],
        "cite": CITATIONS,
        "license": license,
        "tags": [
            "unet",
            "2d",
            "electron-microscopy",
            "membrane",
            "semantic-segmentation",
            "tensorflow",
            "keras",
            "onnx",
            "napari",
        ],
        "documentation": {"source": files["readme"]},
        "covers": [{"source": files["cover"]}],
        "inputs": [
            {
                "id": INPUT_ID,
                "description": "grey EM slice (any dtype; cast to float32)",
                "axes": in_axes,
                "data": {"type": "float32"},
                "test_tensor": {"source": files["test_input"]},
                "sample_tensor": {"source": files["sample_input"]},
                "preprocessing": [
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                    {
                        "id": "scale_range",
                        "kwargs": {
                            "axes": ["y", "x"],
                            "min_percentile": low,
                            "max_percentile": high,
                        },
                    },
                    {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                ],
            }
        ],
        "outputs": [
            {
                "id": OUTPUT_ID,
                "description": "membrane probability (sigmoid)",
                "axes": out_axes,
                "data": {"type": "float32", "range": [0.0, 1.0]},
                "test_tensor": {"source": files["test_output"]},
                "sample_tensor": {"source": files["sample_output"]},
            }
        ],
        "weights": weights,
        "config": {"napari_em_unet": json.loads(json.dumps(info.to_dict()))},
    }


def _format_version() -> str:
    from bioimageio.spec.model.v0_5 import ModelDescr

    return ModelDescr.implemented_format_version


def validate_package(path: str | os.PathLike):
    """Validate a package or rdf.yaml with ``bioimageio.spec``; return the description.

    Raises :class:`EmUnetError` with the first validation error when it does not validate.
    """
    require("bioimageio.spec", what="bioimage.io validation")
    from bioimageio.spec import InvalidDescr, load_description

    with quiet_converters():
        descr = load_description(Path(path), perform_io_checks=True)
    if isinstance(descr, InvalidDescr) or descr.validation_summary.status == "failed":
        errors = [e for d in descr.validation_summary.details for e in d.errors]
        first = f"{'.'.join(map(str, errors[0].loc))}: {errors[0].msg}" if errors else "invalid"
        raise EmUnetError(f"the bioimage.io package does not validate ({first})"[:300])
    return descr


def export_bioimageio(
    model: LoadedModel,
    output: str | os.PathLike,
    *,
    formats: tuple[str, ...] = WEIGHT_FORMATS,
    authors: tuple[str, ...] = ("napari-em-unet user",),
    license: str = "CC-BY-4.0",
) -> ExportResult:
    """Write ``model`` as a validated bioimage.io (spec 0.5) model package ``output`` (.zip)."""
    require("bioimageio.spec", "imageio", what="bioimage.io export")
    if "onnx" in formats:
        require("tf2onnx", "onnx", "onnxruntime", what="ONNX weights")
    output = Path(output)
    if output.suffix.lower() != PACKAGE_SUFFIX:
        raise EmUnetError(f"the bioimage.io package name must end in .zip: {output}")
    unknown = set(formats) - set(WEIGHT_FORMATS)
    if unknown or not formats:
        raise EmUnetError(f"weight formats must be among {', '.join(WEIGHT_FORMATS)}")
    formats = tuple(f for f in WEIGHT_FORMATS if f in formats)
    multiple = size_multiple(model)
    _, size = test_sizes(multiple)
    raw = sample_tile(size)
    x, y = reference_output(model, raw)
    with (
        atomic_path(output) as tmp,
        tempfile.TemporaryDirectory(prefix="em-unet-export-") as folder,
    ):
        folder = Path(folder)
        files, opset, diff = _write_contents(model, folder, formats, raw, x, y)
        rdf = _rdf(model, files, formats, authors=authors, license=license, opset=opset)
        _write_yaml(rdf, folder / "rdf.yaml")
        descr = validate_package(folder / "rdf.yaml")
        from bioimageio.spec import save_bioimageio_package

        with quiet_converters():
            save_bioimageio_package(descr, output_path=tmp)
        validate_package(tmp)  # what is written, not only what was described
    return ExportResult(output, formats, diff, rdf["format_version"])


def _write_contents(
    model: LoadedModel,
    folder: Path,
    formats: tuple[str, ...],
    raw: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
):
    """Write the package's files into ``folder``; return their names, the ONNX opset and
    the largest |ONNX - Keras| (None without ONNX weights)."""
    import tifffile

    stem = _file_stem(model.info.name)
    files = {
        "readme": "README.md",
        "cover": "cover.png",
        "test_input": "test_input.npy",
        "test_output": "test_output.npy",
        "sample_input": "sample_input.tif",
        "sample_output": "sample_output.tif",
    }
    (folder / files["readme"]).write_text(
        _readme(model.info, formats, size_multiple(model)), encoding="utf-8"
    )
    _cover(raw, y[0, :, :, 0], folder / files["cover"])
    np.save(folder / files["test_input"], x)
    np.save(folder / files["test_output"], y)
    # Sample tensors are the same data as images, for people and zoo previews.
    tifffile.imwrite(folder / files["sample_input"], raw)
    tifffile.imwrite(folder / files["sample_output"], y[0, :, :, 0])
    opset = diff = None
    if "keras_v3" in formats:
        files["keras_v3"] = f"{stem}.keras"
        _write_keras_v3(model, folder / files["keras_v3"])
    if "keras_hdf5" in formats:
        files["keras_hdf5"] = f"{stem}.h5"
        with quiet_converters(), _no_legacy_warning():
            model.keras_model.save(folder / files["keras_hdf5"])
    if "tensorflow_saved_model_bundle" in formats:
        files["tensorflow_saved_model_bundle"] = f"{stem}_savedmodel.zip"
        _write_saved_model(model, folder / files["tensorflow_saved_model_bundle"])
    if "onnx" in formats:
        files["onnx"] = f"{stem}.onnx"
        opset, diff = convert_onnx_checked(model, folder / files["onnx"], raw, y)
    return files, opset, diff


def _write_keras_v3(model: LoadedModel, path: Path) -> None:
    """The model file itself when it is at hand (byte for byte), else a fresh save."""
    from .files import save_model

    if (
        model.path is not None
        and Path(model.path).suffix == ".keras"
        and Path(model.path).is_file()
    ):
        shutil.copyfile(model.path, path)
    else:
        save_model(model.keras_model, model.info, path)


def _write_saved_model(model: LoadedModel, path: Path) -> None:
    """A TensorFlow SavedModel (``serving_default`` signature), zipped as the spec asks."""
    from .backend import keras_module, tensorflow_module

    keras, tf = keras_module(), tensorflow_module()
    network = model.keras_model
    archive = keras.export.ExportArchive()
    archive.track(network)
    # A dict keyed by the output id: bioimageio.core calls the "serve" endpoint and reads a
    # dict, and Java consumers (deepImageJ) look outputs up by name in the signature.
    archive.add_endpoint(
        "serve",
        lambda image: {OUTPUT_ID: network(image, training=False)},
        input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32, name=INPUT_ID)],
    )
    with tempfile.TemporaryDirectory(prefix="em-unet-savedmodel-") as folder:
        with quiet_converters():
            archive.write_out(folder, verbose=False)
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(Path(folder).rglob("*")):
                if file.is_file():
                    archive.write(file, file.relative_to(folder).as_posix())


@contextlib.contextmanager
def _no_legacy_warning():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*HDF5 file.*legacy.*")
        warnings.filterwarnings("ignore", message=".*legacy.*HDF5.*")
        yield


def _write_yaml(data: dict, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")


# ----------------------------------------------------------------------------- loading back
