"""ONNX export: the bare network as one ``.onnx`` file, checked against Keras before it is kept.

The graph has no pre- or postprocessing: feed it slices normalised as its
``napari_em_unet.preprocessing`` metadata says, height and width multiples of
``size_multiple``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ..errors import EmUnetError
from ..io.atomic import atomic_path
from .export_common import (
    INPUT_ID,
    ONNX_OPSET,
    ONNX_TOLERANCE,
    OUTPUT_ID,
    ExportResult,
    normalised_test_input,
    quiet_converters,
    reference_output,
    require,
    sample_tile,
    size_multiple,
    test_sizes,
)
from .info import LoadedModel


def _convert_onnx(model: LoadedModel, path: Path, opset: int = ONNX_OPSET) -> int:
    """Write the network (no pre- or postprocessing) as ONNX with dynamic batch, height, width."""
    import onnx

    from .backend import tensorflow_module

    tf = tensorflow_module()
    spec = [tf.TensorSpec([None, None, None, 1], tf.float32, name=INPUT_ID)]
    raw = path.with_suffix(".raw.onnx")
    with quiet_converters():
        model.keras_model.export(
            str(raw), format="onnx", input_signature=spec, opset_version=opset, verbose=False
        )
    proto = onnx.load(str(raw))
    raw.unlink()
    _name_axes_and_output(proto.graph)
    del proto.metadata_props[:]
    for key, value in _metadata(model).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "napari-em-unet (tf2onnx)"
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return max(
        (o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=opset
    )


def _name_axes_and_output(graph) -> None:
    """tf2onnx names dimensions unk__N and the output Identity:0; readable names let other
    tools (and people) see which axis is which."""
    old_output = graph.output[0].name
    for node in graph.node:
        node.output[:] = [OUTPUT_ID if o == old_output else o for o in node.output]
    graph.output[0].name = OUTPUT_ID
    for value, names in (
        (graph.input[0], ("batch", "height", "width")),
        (graph.output[0], ("batch", "height", "width")),
    ):
        for dim, name in zip(value.type.tensor_type.shape.dim, names, strict=False):
            dim.dim_param = name


def _metadata(model: LoadedModel) -> dict[str, str]:
    """What a reader of the ONNX file needs to feed it and to know where it came from."""
    info = model.info
    return {
        "napari_em_unet.layout": "input (batch, height, width, 1) float32, output (batch, height, "
        "width, 1) membrane probability",
        "napari_em_unet.preprocessing": json.dumps(
            {
                "method": "percentile per slice",
                "percentiles": list(info.percentiles),
                "formula": "(x - p_low) / (p_high - p_low)",
                "size_multiple": size_multiple(model),
            }
        ),
        "napari_em_unet.pixel_size_nm": ""
        if info.pixel_size_nm is None
        else str(info.pixel_size_nm),
        "napari_em_unet.info": json.dumps(info.to_dict()),
    }


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


def convert_onnx_checked(
    model: LoadedModel, path: Path, raw: np.ndarray, expected: np.ndarray
) -> tuple[int, float]:
    """Convert to ONNX at ``path`` and check it against Keras' ``expected`` output.

    Returns the opset and the max abs difference; a mismatch deletes the file and says
    whether shapes, non-finite values or plain numbers differ.
    """
    x = normalised_test_input(model, raw)
    opset = _convert_onnx(model, path)
    diff = onnx_max_abs_diff(path, x, expected)
    if diff <= ONNX_TOLERANCE:
        return opset, diff
    note = _mismatch_note(path, x, expected)
    path.unlink(missing_ok=True)
    raise EmUnetError(
        f"the ONNX conversion differs from Keras by {diff:.2g} "
        f"(> {ONNX_TOLERANCE:g}{note}); nothing written"
    )


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
    ``napari_em_unet.preprocessing`` metadata, with height and width multiples of
    ``size_multiple``.
    """
    require("tf2onnx", "onnx", "onnxruntime", what="ONNX export")
    output = Path(output)
    if output.suffix.lower() != ".onnx":
        raise EmUnetError(f"the ONNX file name must end in .onnx: {output}")
    _, size = test_sizes(size_multiple(model))
    raw = sample_tile(size)
    _, expected = reference_output(model, raw)
    with atomic_path(output) as tmp:
        try:
            _, diff = convert_onnx_checked(model, tmp, raw, expected)
        finally:
            tmp.with_suffix(".raw.onnx").unlink(missing_ok=True)
    return ExportResult(output, ("onnx",), diff)
