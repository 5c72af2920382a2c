"""Models that travel: bioimage.io model packages and ONNX files, and loading our packages back.

``em-unet export`` writes either

* a **bioimage.io model package** (spec 0.5, a ``.zip``): the ``.keras`` file itself
  (``keras_v3``, the original weights, still carrying our metadata) plus conversions to
  ``keras_hdf5``, ``tensorflow_saved_model_bundle`` and ``onnx``, a test input and the
  matching test output, a cover and a README. The preprocessing the network expects is
  written down as ``scale_range`` with the model's percentiles per slice, so deepImageJ,
  ilastik or ``bioimageio.core`` prepare the data as we do; or
* a plain **ONNX** file whose output is checked against Keras on the test tensor before it
  is written.

Both are built in a temporary folder, checked (package validated with ``bioimageio.spec``,
ONNX compared with Keras) and only then renamed into place, so a failed or interrupted
export leaves no partial file. The converters (``bioimageio.spec``, ``tf2onnx``, ``onnx``,
``onnxruntime``) are the optional ``[export]`` extra; reading a package back needs none of
them, so a package made here is a model for ``segment`` and ``finetune`` like a ``.keras``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EmUnetError, ModelFileError
from .files import LoadedModel, ModelInfo

PACKAGE_SUFFIX = ".zip"
ONNX_OPSET = 17
ONNX_TOLERANCE = 1e-4
INPUT_ID = "image"
OUTPUT_ID = "membrane"
# Half the smallest tile worth predicting: a consumer that tiles should crop this much
# from each tile border (the network sees mirrored context there, see inference.py).
HALO = 16
MIN_SIZE = 64
TEST_SIZE = 128
WEIGHT_FORMATS = ("keras_v3", "keras_hdf5", "tensorflow_saved_model_bundle", "onnx")
_RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
_EXTRA_HINT = "pip install 'napari-em-unet[export]'"

CITATIONS = [
    {"text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical "
             "Image Segmentation. MICCAI 2015.", "doi": "10.1007/978-3-319-24574-4_28"},
    {"text": "Arganda-Carreras et al. Crowdsourcing the creation of image segmentation "
             "algorithms for connectomics. Front. Neuroanat. 2015 (ISBI 2012 challenge).",
     "doi": "10.3389/fnana.2015.00142"},
]


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote and the checks it passed."""

    path: Path
    formats: tuple[str, ...]
    """Weight formats in the file (``("onnx",)`` for an ONNX export)."""
    onnx_max_abs_diff: float | None
    """Largest |ONNX - Keras| on the test tensor, when an ONNX file was made."""
    format_version: str | None = None
    """bioimage.io spec version of a package."""


# ----------------------------------------------------------------------------- helpers
def require(*modules: str, what: str) -> None:
    """Fail in one line when an optional converter is not installed."""
    missing = [m for m in modules if importlib.util.find_spec(m.split(".")[0]) is None
               or importlib.util.find_spec(m) is None]
    if missing:
        raise EmUnetError(f"{what} needs {', '.join(missing)}: {_EXTRA_HINT}")


def sample_tile(size: int = TEST_SIZE) -> np.ndarray:
    """A ``size`` x ``size`` crop of the packaged ssTEM sample (float32 raw grey values)."""
    from importlib import resources

    from ..io.tiff import read_tiff

    try:
        sample = Path(str(resources.files("napari_em_unet.sample_data"))) / "synthetic-sstem.tif"
        plane = np.asarray(read_tiff(sample, memmap=False).data[0])
    except Exception:  # an unusual install without the sample: make one
        from ..learning.synthetic import make_synthetic_stack

        plane = make_synthetic_stack((1, 2 * size, 2 * size), seed=3)[0][0]
    top, left = (plane.shape[0] - size) // 2, (plane.shape[1] - size) // 2
    return np.ascontiguousarray(plane[top : top + size, left : left + size], dtype=np.float32)


def _test_size(multiple: int) -> tuple[int, int]:
    """Smallest valid size and the test-tensor size, both multiples of the network's stride."""
    smallest = -(-max(MIN_SIZE, multiple) // multiple) * multiple
    return smallest, max(smallest, -(-TEST_SIZE // multiple) * multiple)


def reference_output(model: LoadedModel, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The (batch, y, x, channel) test input and Keras' output for it, as consumers compute it."""
    from ..segmentation.preprocessing import normalize

    x = raw[np.newaxis, :, :, np.newaxis].astype(np.float32)
    normalised = normalize(raw, model.info.percentiles)[np.newaxis, :, :, np.newaxis]
    y = np.asarray(model.keras_model(normalised, training=False), dtype=np.float32)
    return x, y


def _atomic_target(output: Path) -> Path:
    """A temporary path beside ``output``; the caller renames it over ``output`` when done.

    Only named, not created: the writer creates it, so the file gets the user's usual
    permissions (``mkstemp`` would make it private, 0600).
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    return output.parent / f".{output.name}.{secrets.token_hex(6)}.part"


@contextlib.contextmanager
def _quiet_converters():
    """Converters log every step; the CLI promises one line per outcome."""
    names = ("tf2onnx", "tensorflow", "absl")
    saved = {n: logging.getLogger(n).level for n in names}
    for n in names:
        logging.getLogger(n).setLevel(logging.ERROR)
    try:
        from loguru import logger as loguru_logger
    except ImportError:
        loguru_logger = None
    if loguru_logger is not None:
        loguru_logger.disable("bioimageio")
    from .backend import _quiet_native_stderr

    try:
        # TensorFlow's graph optimiser (run by tf2onnx) logs through absl in C++.
        with warnings.catch_warnings(), _quiet_native_stderr():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for n, level in saved.items():
            logging.getLogger(n).setLevel(level)


# ----------------------------------------------------------------------------- ONNX
def _convert_onnx(model: LoadedModel, path: Path, opset: int = ONNX_OPSET) -> int:
    """Write the network (no pre- or postprocessing) as ONNX with dynamic batch, height, width."""
    import onnx

    from .backend import tensorflow_module

    tf = tensorflow_module()
    spec = [tf.TensorSpec([None, None, None, 1], tf.float32, name=INPUT_ID)]
    raw = path.with_suffix(".raw.onnx")
    with _quiet_converters():
        model.keras_model.export(str(raw), format="onnx", input_signature=spec,
                                 opset_version=opset, verbose=False)
    proto = onnx.load(str(raw))
    raw.unlink()
    # tf2onnx names dimensions unk__N and the output Identity:0; readable names let other
    # tools (and people) see which axis is which.
    graph = proto.graph
    old_output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [OUTPUT_ID if o == old_output else o for o in node.output]
    graph.output[0].name = OUTPUT_ID
    for value, names in ((graph.input[0], ("batch", "height", "width")),
                         (graph.output[0], ("batch", "height", "width"))):
        for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=False):
            dim.dim_param = name
    info = model.info
    meta = {
        "napari_em_unet.layout": "input (batch, height, width, 1) float32, output (batch, height, "
                                 "width, 1) membrane probability",
        "napari_em_unet.segmentation.preprocessing": json.dumps(
            {"method": "percentile per slice", "percentiles": list(info.percentiles),
             "formula": "(x - p_low) / (p_high - p_low)", "size_multiple": _multiple(model)}),
        "napari_em_unet.pixel_size_nm": "" if info.pixel_size_nm is None
        else str(info.pixel_size_nm),
        "napari_em_unet.info": json.dumps(info.to_dict()),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "napari-em-unet (tf2onnx)"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")),
               default=opset)


def onnx_max_abs_diff(onnx_path: Path, x_normalised: np.ndarray, expected: np.ndarray) -> float:
    """Run an ONNX file with onnxruntime on a normalised input and compare with ``expected``
    (infinite when the shapes differ or the output is not finite)."""
    got = _run_onnx(onnx_path, x_normalised)
    if got.shape != expected.shape:
        return float("inf")
    diff = np.abs(got.astype(np.float64) - expected)
    return float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf")


def _run_onnx(onnx_path: Path, x_normalised: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x_normalised.astype(np.float32)})[0]


def _normalised_test_input(model: LoadedModel, raw: np.ndarray) -> np.ndarray:
    from ..segmentation.preprocessing import normalize

    return normalize(raw, model.info.percentiles)[np.newaxis, :, :, np.newaxis]


def _convert_onnx_checked(model: LoadedModel, path: Path, raw: np.ndarray,
                          expected: np.ndarray) -> tuple[int, float]:
    """Convert to ONNX at ``path`` and check it against Keras' ``expected`` output.

    Returns the opset and the max abs difference. A conversion that does not match is made
    once more before giving up: once in a few hundred suite runs, a conversion in a process
    that had already saved other formats gave an output that did not match (seen in CI, not
    reproduced since), and a fresh trace is cheap next to refusing the export.
    """
    x = _normalised_test_input(model, raw)
    for _attempt in (1, 2):
        opset = _convert_onnx(model, path)
        diff = onnx_max_abs_diff(path, x, expected)
        if diff <= ONNX_TOLERANCE:
            return opset, diff
    note = _mismatch_note(path, x, expected)
    path.unlink(missing_ok=True)
    raise EmUnetError(f"the ONNX conversion differs from Keras by {diff:.2g} "
                      f"(> {ONNX_TOLERANCE:g}{note}); nothing written")


def _mismatch_note(path: Path, x: np.ndarray, expected: np.ndarray) -> str:
    """What was wrong with the ONNX output, when it is more than a numeric difference."""
    try:
        got = _run_onnx(path, x)
    except Exception as exc:  # noqa: BLE001 - only decorates the error message
        return f"; onnxruntime: {exc}"[:120]
    if got.shape != expected.shape:
        return f"; output shape {got.shape}, Keras {expected.shape}"
    bad = int(np.sum(~np.isfinite(got)))
    return f"; {bad} non-finite output values" if bad else ""


def export_onnx(model: LoadedModel, output: str | os.PathLike) -> ExportResult:
    """Write ``model``'s network as ONNX, after checking it matches Keras within 1e-4.

    The ONNX graph is the bare network: feed it slices normalised as described in its
    ``napari_em_unet.segmentation.preprocessing`` metadata, with height and width multiples of
    ``size_multiple``.
    """
    require("tf2onnx", "onnx", "onnxruntime", what="ONNX export")
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise EmUnetError(f"the ONNX file name must end in .onnx: {output}")
    _, size = _test_size(_multiple(model))
    raw = sample_tile(size)
    _, expected = reference_output(model, raw)
    tmp = _atomic_target(output)
    try:
        _, diff = _convert_onnx_checked(model, tmp, raw, expected)
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
        tmp.with_suffix(".raw.onnx").unlink(missing_ok=True)
    return ExportResult(output, ("onnx",), diff)


# ----------------------------------------------------------------------------- bioimage.io
def _multiple(model: LoadedModel) -> int:
    from .unet import size_multiple_of

    return size_multiple_of(model.keras_model)


def _safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9 _().+-]+", "_", text).strip(" _") or "em-unet model"
    return (name if len(name) >= 5 else f"{name} U-Net")[:128]  # the spec wants 5 to 128


def _file_stem(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:64] or "model"


def _readme(info: ModelInfo, formats: tuple[str, ...], multiple: int) -> str:
    px = f"{info.pixel_size_nm:g} nm" if info.pixel_size_nm else "not recorded"
    low, high = info.percentiles
    v_rand = (info.validation or {}).get("v_rand")
    trained = "; ".join(
        f"{t.get('source') or 'data'} slices {t.get('slices')}" for t in info.trained_on
        if isinstance(t, dict)
    ) or "not recorded"
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
- napari-em-unet turns it into cells with a watershed: `{json.dumps(info.postprocessing)}`.

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


def _rdf(model: LoadedModel, files: dict, formats: tuple[str, ...], *, authors, license,
         opset: int | None) -> dict:
    from .backend import keras_module, tensorflow_module

    keras, tf = keras_module(), tensorflow_module()
    info = model.info
    multiple = _multiple(model)
    smallest, _ = _test_size(multiple)
    low, high = info.percentiles
    space = {"scale": float(info.pixel_size_nm), "unit": "nanometer"} if info.pixel_size_nm \
        else {}
    in_axes = [{"type": "batch"}] + [
        {"type": "space", "id": a, "size": {"min": smallest, "step": multiple}, **space}
        for a in ("y", "x")] + [{"type": "channel", "channel_names": ["em"]}]
    out_axes = [{"type": "batch"}] + [
        {"type": "space", "id": a, "size": {"tensor_id": INPUT_ID, "axis_id": a},
         "halo": HALO, **space} for a in ("y", "x")] + [
        {"type": "channel", "channel_names": [OUTPUT_ID]}]
    weights: dict = {}
    tf_version = tf.__version__
    if "keras_v3" in formats:
        weights["keras_v3"] = {"source": files["keras_v3"], "keras_version": keras.__version__,
                               "backend": ["tensorflow", tf_version]}
    parent = {"parent": "keras_v3"} if "keras_v3" in formats else {}
    if "keras_hdf5" in formats:
        weights["keras_hdf5"] = {"source": files["keras_hdf5"], "tensorflow_version": tf_version,
                                 **parent}
    if "tensorflow_saved_model_bundle" in formats:
        weights["tensorflow_saved_model_bundle"] = {
            "source": files["tensorflow_saved_model_bundle"], "tensorflow_version": tf_version,
            **parent}
    if "onnx" in formats:
        weights["onnx"] = {"source": files["onnx"], "opset_version": opset, **parent}
    return {
        "type": "model",
        "format_version": _format_version(),
        "name": _safe_name(info.name),
        "description": "2D U-Net predicting membrane probability in electron-microscopy "
                       "slices (napari-em-unet).",
        "authors": [{"name": a} for a in authors],
        "cite": CITATIONS,
        "license": license,
        "tags": ["unet", "2d", "electron-microscopy", "membrane", "semantic-segmentation",
                 "tensorflow", "keras", "onnx", "napari"],
        "documentation": {"source": files["readme"]},
        "covers": [{"source": files["cover"]}],
        "inputs": [{
            "id": INPUT_ID,
            "description": "grey EM slice (any dtype; cast to float32)",
            "axes": in_axes,
            "data": {"type": "float32"},
            "test_tensor": {"source": files["test_input"]},
            "sample_tensor": {"source": files["sample_input"]},
            "preprocessing": [
                {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
                {"id": "scale_range", "kwargs": {"axes": ["y", "x"], "min_percentile": low,
                                                 "max_percentile": high}},
                {"id": "ensure_dtype", "kwargs": {"dtype": "float32"}},
            ],
        }],
        "outputs": [{
            "id": OUTPUT_ID,
            "description": "membrane probability (sigmoid)",
            "axes": out_axes,
            "data": {"type": "float32", "range": [0.0, 1.0]},
            "test_tensor": {"source": files["test_output"]},
            "sample_tensor": {"source": files["sample_output"]},
        }],
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

    with _quiet_converters():
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
    multiple = _multiple(model)
    _, size = _test_size(multiple)
    raw = sample_tile(size)
    x, y = reference_output(model, raw)
    stem = _file_stem(model.info.name)
    tmp = _atomic_target(output)
    diff = None
    try:
        with tempfile.TemporaryDirectory(prefix="em-unet-export-") as folder:
            folder = Path(folder)
            files = {"readme": "README.md", "cover": "cover.png",
                     "test_input": "test_input.npy", "test_output": "test_output.npy",
                     "sample_input": "sample_input.tif", "sample_output": "sample_output.tif"}
            (folder / files["readme"]).write_text(_readme(model.info, formats, multiple),
                                                  encoding="utf-8")
            _cover(raw, y[0, :, :, 0], folder / files["cover"])
            np.save(folder / files["test_input"], x)
            np.save(folder / files["test_output"], y)
            # Sample tensors are the same data as images, for people and zoo previews.
            import tifffile

            tifffile.imwrite(folder / files["sample_input"], raw)
            tifffile.imwrite(folder / files["sample_output"], y[0, :, :, 0])
            opset = None
            if "keras_v3" in formats:
                files["keras_v3"] = f"{stem}.keras"
                _write_keras_v3(model, folder / files["keras_v3"])
            if "keras_hdf5" in formats:
                files["keras_hdf5"] = f"{stem}.h5"
                with _quiet_converters(), _no_legacy_warning():
                    model.keras_model.save(folder / files["keras_hdf5"])
            if "tensorflow_saved_model_bundle" in formats:
                files["tensorflow_saved_model_bundle"] = f"{stem}_savedmodel.zip"
                _write_saved_model(model, folder / files["tensorflow_saved_model_bundle"])
            if "onnx" in formats:
                files["onnx"] = f"{stem}.onnx"
                opset, diff = _convert_onnx_checked(model, folder / files["onnx"], raw, y)
            rdf = _rdf(model, files, formats, authors=authors, license=license, opset=opset)
            _write_yaml(rdf, folder / "rdf.yaml")
            descr = validate_package(folder / "rdf.yaml")
            from bioimageio.spec import save_bioimageio_package

            with _quiet_converters():
                save_bioimageio_package(descr, output_path=tmp)
        validate_package(tmp)  # what is written, not only what was described
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(output, formats, diff, rdf["format_version"])


def _write_keras_v3(model: LoadedModel, path: Path) -> None:
    """The model file itself when it is at hand (byte for byte), else a fresh save."""
    from .files import save_model

    if model.path is not None and Path(model.path).suffix == ".keras" and \
            Path(model.path).is_file():
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
        "serve", lambda image: {OUTPUT_ID: network(image, training=False)},
        input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32, name=INPUT_ID)])
    with tempfile.TemporaryDirectory(prefix="em-unet-savedmodel-") as folder:
        with _quiet_converters():
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
def _read_rdf(archive: zipfile.ZipFile, path: Path) -> dict:
    import yaml

    names = set(archive.namelist())
    name = next((n for n in _RDF_NAMES if n in names), None)
    if name is None:
        raise ModelFileError(f"{path.name} is a zip file but not a bioimage.io package "
                             "(no rdf.yaml)")
    try:
        rdf = yaml.safe_load(archive.read(name))
    except yaml.YAMLError as exc:
        raise ModelFileError(f"{path.name} has an unreadable rdf.yaml "
                             f"({str(exc).splitlines()[0][:150]})") from None
    if not isinstance(rdf, dict) or rdf.get("type") != "model":
        raise ModelFileError(f"{path.name} is a bioimage.io package but not a model")
    return rdf


def _keras_member(rdf: dict, archive: zipfile.ZipFile, path: Path) -> str:
    weights = rdf.get("weights") or {}
    entry = weights.get("keras_v3") if isinstance(weights, dict) else None
    source = entry.get("source") if isinstance(entry, dict) else None
    if not isinstance(source, str):
        available = ", ".join(weights) if isinstance(weights, dict) else "none"
        raise ModelFileError(f"{path.name} has no keras_v3 weights (it has: {available}); "
                             "only packages with Keras 3 weights can be used here")
    member = Path(source).name  # never follow a path out of the archive
    if member not in archive.namelist():
        raise ModelFileError(f"{path.name} lists {member} but does not contain it")
    return member


def _info_from_rdf(rdf: dict, path: Path) -> ModelInfo | None:
    """Metadata for a package made elsewhere: percentiles and pixel size from the rdf."""
    ours = (rdf.get("config") or {}).get("napari_em_unet")
    if isinstance(ours, dict):
        return ModelInfo.from_dict(ours)
    inputs = rdf.get("inputs") or [{}]
    steps = [p for p in inputs[0].get("preprocessing") or [] if p.get("id") != "ensure_dtype"]
    if len(steps) != 1 or steps[0].get("id") != "scale_range":
        ids = [p.get("id") for p in steps] or ["none"]
        raise ModelFileError(f"{path.name} expects preprocessing {', '.join(map(str, ids))}; "
                             "only a single percentile scale_range is supported")
    kwargs = steps[0].get("kwargs") or {}
    percentiles = [float(kwargs.get("min_percentile", 0.0)),
                   float(kwargs.get("max_percentile", 100.0))]
    pixel = None
    for axis in inputs[0].get("axes") or []:
        if isinstance(axis, dict) and axis.get("id") == "x" and axis.get("unit") in (
                "nanometer", "micrometer"):
            pixel = float(axis.get("scale", 1.0)) * (1e3 if axis["unit"] == "micrometer" else 1)
    return ModelInfo(name=str(rdf.get("name", path.stem)), pixel_size_nm=pixel,
                     normalization={"method": "percentile", "percentiles": percentiles})


def read_package_info(path: str | os.PathLike) -> ModelInfo:
    """The :class:`ModelInfo` of a bioimage.io package (no TensorFlow)."""
    from .files import METADATA_ENTRY, _existing_model_path

    path = _existing_model_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            rdf = _read_rdf(archive, path)
            member = _keras_member(rdf, archive, path)
            with archive.open(member) as inner, zipfile.ZipFile(inner) as keras_file:
                if METADATA_ENTRY in keras_file.namelist():
                    return ModelInfo.from_dict(json.loads(keras_file.read(METADATA_ENTRY)))
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, KeyError) as exc:
        raise ModelFileError(f"{path.name} is not a readable model package "
                             f"({str(exc).splitlines()[0][:150] if str(exc) else exc})") from None
    return _info_from_rdf(rdf, path)


def load_package(path: str | os.PathLike) -> LoadedModel:
    """Load the Keras 3 weights of a bioimage.io package, in safe mode, with their metadata."""
    from .files import load_model

    path = Path(path)
    info = read_package_info(path)
    with tempfile.TemporaryDirectory(prefix="em-unet-package-") as folder:
        inner = Path(folder) / "model.keras"
        with zipfile.ZipFile(path) as archive:
            member = _keras_member(_read_rdf(archive, path), archive, path)
            with archive.open(member) as src, open(inner, "wb") as dst:
                shutil.copyfileobj(src, dst)
        try:
            loaded = load_model(inner)
        except ModelFileError as exc:
            raise ModelFileError(str(exc).replace("model.keras", f"{path.name} ({member})")) \
                from None
    return dataclasses.replace(loaded, info=info, path=path)
