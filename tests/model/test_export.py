"""Models that travel: bioimage.io packages and ONNX files made by ``em-unet export``.

Every weight format in a package is run here on the package's own test input, with the
preprocessing written in its rdf.yaml implemented independently, and must reproduce the
package's test output: what a consumer (bioimageio.core, deepImageJ, ilastik) would check.
"""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile

# find_spec, not importorskip: importing tf2onnx imports TensorFlow, which must not enter a
# process that opens napari windows (tests/conftest.py) merely because this file was collected.
for _module in ("bioimageio.spec", "onnxruntime", "tf2onnx"):
    if importlib.util.find_spec(_module) is None:
        pytest.skip(f"{_module} is not installed (the [export] extra)", allow_module_level=True)

from napari_em_unet.cli import main  # noqa: E402
from napari_em_unet.errors import EmUnetError, ModelFileError  # noqa: E402
from napari_em_unet.model import export_bioimageio, export_common, export_onnx  # noqa: E402
from napari_em_unet.model.files import load_model, read_info  # noqa: E402

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def package(tiny_model_path, tmp_path_factory) -> Path:
    """The tiny model exported once through the CLI, as a user would."""
    out = tmp_path_factory.mktemp("export") / "tiny-package.zip"
    assert (
        main(
            [
                "export",
                "--model",
                str(tiny_model_path),
                "--format",
                "bioimageio",
                "-o",
                str(out),
                "--author",
                "Test Author",
            ]
        )
        == 0
    )
    return out


@pytest.fixture(scope="module")
def unpacked(package, tmp_path_factory) -> tuple[Path, dict]:
    import yaml

    folder = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(package) as archive:
        archive.extractall(folder)
    return folder, yaml.safe_load((folder / "rdf.yaml").read_text())


def _preprocess(raw: np.ndarray, rdf: dict) -> np.ndarray:
    """scale_range as the spec defines it, read from the rdf (not from our code)."""
    steps = [p for p in rdf["inputs"][0]["preprocessing"] if p["id"] == "scale_range"]
    assert len(steps) == 1
    kwargs = steps[0]["kwargs"]
    assert kwargs["axes"] == ["y", "x"]
    out = np.empty_like(raw, dtype=np.float32)
    for b in range(raw.shape[0]):
        plane = raw[b, :, :, 0].astype(np.float64)
        lo, hi = np.percentile(plane, [kwargs["min_percentile"], kwargs["max_percentile"]])
        out[b, :, :, 0] = (plane - lo) / (hi - lo + kwargs.get("eps", 1e-6))
    return out


def test_package_validates_with_bioimageio_spec(package, unpacked):
    descr = export_bioimageio.validate_package(package)
    assert descr.validation_summary.status in ("passed", "valid-format")
    assert str(descr.format_version).startswith("0.5.")
    _, rdf = unpacked
    assert set(rdf["weights"]) == set(export_bioimageio.WEIGHT_FORMATS)
    assert rdf["weights"]["keras_v3"].get("parent") is None  # the original
    assert all(w["parent"] == "keras_v3" for k, w in rdf["weights"].items() if k != "keras_v3")
    axes = rdf["inputs"][0]["axes"]
    assert [a["type"] for a in axes] == ["batch", "space", "space", "channel"]
    assert axes[1]["scale"] == 4.0 and axes[1]["unit"] == "nanometer"
    assert rdf["config"]["napari_em_unet"]["name"] == "tiny"
    assert "Validation" in (unpacked[0] / "README.md").read_text()


def test_every_weight_format_reproduces_the_test_output(unpacked):
    import onnxruntime as ort

    from napari_em_unet.model.backend import keras_module, tensorflow_module

    keras, tf = keras_module(), tensorflow_module()
    folder, rdf = unpacked
    x = np.load(folder / rdf["inputs"][0]["test_tensor"]["source"])
    expected = np.load(folder / rdf["outputs"][0]["test_tensor"]["source"])
    assert x.shape[-1] == 1 and expected.shape == x.shape and expected.dtype == np.float32
    normalised = _preprocess(x, rdf)
    weights = rdf["weights"]
    outputs = {}
    for fmt in ("keras_v3", "keras_hdf5"):
        net = keras.saving.load_model(folder / weights[fmt]["source"], compile=False)
        outputs[fmt] = np.asarray(net(normalised, training=False))
    bundle = folder / "savedmodel"
    with zipfile.ZipFile(folder / weights["tensorflow_saved_model_bundle"]["source"]) as z:
        z.extractall(bundle)
    serving = tf.saved_model.load(str(bundle)).signatures["serving_default"]
    outputs["tensorflow_saved_model_bundle"] = serving(image=tf.constant(normalised))[
        "membrane"
    ].numpy()
    session = ort.InferenceSession(
        str(folder / weights["onnx"]["source"]), providers=["CPUExecutionProvider"]
    )
    outputs["onnx"] = session.run(["membrane"], {"image": normalised})[0]
    diffs = {k: float(np.max(np.abs(v - expected))) for k, v in outputs.items()}
    assert max(diffs.values()) <= TOLERANCE, diffs


def test_package_is_a_model_for_segment_and_finetune(package, tiny_model_path, tmp_path):
    info = read_info(package)
    assert info.name == "tiny" and info.pixel_size_nm == 4.0
    loaded = load_model(package)
    assert loaded.path == package and loaded.info.postprocessing["threshold"] == 0.5

    from napari_em_unet.learning.synthetic import make_synthetic_stack

    image, labels = make_synthetic_stack((2, 64, 64), seed=2, cell_size=20)
    tifffile.imwrite(tmp_path / "img.tif", image)
    tifffile.imwrite(tmp_path / "lab.tif", labels)
    seg = {}
    for name, model in (("keras", tiny_model_path), ("package", package)):
        out = tmp_path / f"{name}.tif"
        assert (
            main(
                [
                    "segment",
                    str(tmp_path / "img.tif"),
                    "-o",
                    str(out),
                    "--model",
                    str(model),
                    "--output-kind",
                    "probabilities",
                ]
            )
            == 0
        )
        seg[name] = tifffile.imread(out)
    np.testing.assert_array_equal(seg["keras"], seg["package"])

    tuned = tmp_path / "tuned.keras"
    assert (
        main(
            [
                "finetune",
                "--image",
                str(tmp_path / "img.tif"),
                "--labels",
                str(tmp_path / "lab.tif"),
                "-o",
                str(tuned),
                "--model",
                str(package),
                "--epochs",
                "1",
                "--steps-per-epoch",
                "1",
                "--batch-size",
                "1",
                "--patch-size",
                "32",
            ]
        )
        == 0
    )
    assert read_info(tuned).base_model == "tiny"


def test_onnx_export_matches_keras(tiny_model, tmp_path, capsys):
    import onnx

    out = tmp_path / "tiny.onnx"
    assert (
        main(["export", "--model", str(tiny_model.path), "--format", "onnx", "-o", str(out)]) == 0
    )
    line = capsys.readouterr().err.strip()
    assert line.startswith("wrote") and "\n" not in line
    proto = onnx.load(str(out))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["napari_em_unet.preprocessing"])["percentiles"] == [1.0, 99.0]
    output = proto.graph.output[0]
    assert output.name == export_onnx.OUTPUT_ID
    axes = [d.dim_param for d in output.type.tensor_type.shape.dim]
    assert axes[:3] == ["batch", "height", "width"]
    raw = export_common.sample_tile(96)
    _, expected = export_common.reference_output(tiny_model, raw)
    normalised = _preprocess(
        raw[None, :, :, None],
        {
            "inputs": [
                {
                    "preprocessing": [
                        {
                            "id": "scale_range",
                            "kwargs": {
                                "axes": ["y", "x"],
                                "min_percentile": 1.0,
                                "max_percentile": 99.0,
                            },
                        }
                    ]
                }
            ]
        },
    )
    diff = export_onnx.onnx_max_abs_diff(out, normalised, expected)
    print(f"ONNX vs Keras max abs difference: {diff:.2e}")
    assert diff <= TOLERANCE
    assert [p.name for p in tmp_path.iterdir()] == ["tiny.onnx"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not private like a temp file


def test_a_failed_check_writes_nothing(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(export_onnx, "onnx_max_abs_diff", lambda *a: 0.5)
    with pytest.raises(EmUnetError, match="differs from Keras"):
        export_onnx.export_onnx(tiny_model, tmp_path / "bad.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("fmt", "name"), [("bioimageio", "m.onnx"), ("onnx", "m.zip")])
def test_wrong_suffix_is_one_error_line(tiny_model_path, tmp_path, capsys, fmt, name):
    assert (
        main(
            ["export", "--model", str(tiny_model_path), "--format", fmt, "-o", str(tmp_path / name)]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")
    assert list(tmp_path.iterdir()) == []


def test_missing_converter_names_the_extra(tiny_model, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("tf2onnx") else real(name, *a),
    )
    with pytest.raises(EmUnetError, match=r"tf2onnx.*\[export\]"):
        export_onnx.export_onnx(tiny_model, tmp_path / "m.onnx")


def test_zips_that_are_not_our_packages_are_refused(tmp_path, package):
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("hello.txt", "hi")
    with pytest.raises(ModelFileError, match="not a bioimage.io package"):
        load_model(plain)
    # A package with only ONNX weights: say which weights it has instead of failing later.
    import yaml

    onnx_only = tmp_path / "onnx-only.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(onnx_only, "w") as dst:
        rdf = yaml.safe_load(src.read("rdf.yaml"))
        rdf["weights"] = {"onnx": rdf["weights"]["onnx"]}
        dst.writestr("rdf.yaml", yaml.safe_dump(rdf))
    with pytest.raises(ModelFileError, match="no keras_v3 weights.*onnx"):
        load_model(onnx_only)
    garbage = tmp_path / "garbage.zip"
    garbage.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ModelFileError) as err:
        load_model(garbage)
    assert "\n" not in str(err.value)


def test_the_package_readme_says_how_views_are_averaged():
    from napari_em_unet.model.info import ModelInfo

    plain = export_bioimageio._readme(ModelInfo(name="one"), ("keras_v3",), 16)
    two = export_bioimageio._readme(ModelInfo(name="two", view_scales=[1.0, 0.67]), ("onnx",), 16)
    assert "times its size" not in plain
    assert "resized to 1, 0.67 times its size" in two
