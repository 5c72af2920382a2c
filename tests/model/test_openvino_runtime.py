"""The bfloat16 OpenVINO path: used by default for inference, close to TensorFlow's float32,
safe from several threads, and TensorFlow whenever it cannot be used."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from napari_em_unet.model import openvino_runtime
from napari_em_unet.model.inference import inference_model
from napari_em_unet.segmentation.preprocessing import normalize
from napari_em_unet.segmentation.tiling import SlicePredictor, _forward, predict_slice

ov = pytest.importorskip("openvino")
if "BF16" not in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
    pytest.skip("this CPU has no bfloat16: TensorFlow predicts", allow_module_level=True)


@pytest.fixture()
def openvino_on(monkeypatch):
    monkeypatch.delenv(openvino_runtime.RUNTIME_ENV, raising=False)


def test_bfloat16_probabilities_are_close_to_float32(openvino_on, tiny_model, small_stack):
    network = inference_model(tiny_model)
    forward = openvino_runtime.bfloat16_forward(network, _forward(network), streams=2)
    assert forward is not None
    plane = normalize(small_stack[0][0])
    fast = predict_slice(network, plane, forward=forward)
    exact = predict_slice(network, plane)
    assert fast.shape == exact.shape and fast.dtype == np.float32
    difference = np.abs(fast - exact)
    assert 0 < difference.max() < 0.1  # rounded to bfloat16, not a different network
    assert difference.mean() < 0.01


def test_the_product_path_uses_openvino_and_threads_agree(openvino_on, tiny_model, small_stack):
    predictor = SlicePredictor(tiny_model, workers=3)
    forward = predictor.options["forward"]
    assert forward is not _forward(predictor.network)
    raw = small_stack[0]
    alone = [predictor(s)[0] for s in raw]
    with ThreadPoolExecutor(3) as pool:  # one request per thread: no result overwritten
        together = list(pool.map(lambda s: predictor(s)[0], list(raw) * 3))
    for i, prob in enumerate(together):
        np.testing.assert_array_equal(prob, alone[i % len(alone)])
    exact = SlicePredictor(tiny_model, workers=3)
    assert exact.options["forward"] is forward  # compiled once per network and streams


def test_tensorflow_when_asked_or_when_openvino_fails(monkeypatch, tiny_model):
    network = inference_model(tiny_model)
    monkeypatch.setenv(openvino_runtime.RUNTIME_ENV, "tensorflow")
    assert openvino_runtime.bfloat16_forward(network, _forward(network), streams=1) is None
    assert SlicePredictor(tiny_model).options["forward"] is _forward(network)

    monkeypatch.delenv(openvino_runtime.RUNTIME_ENV)

    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(ov, "convert_model", broken)
    assert openvino_runtime.bfloat16_forward(network, _forward(network), streams=7) is None


def test_a_conversion_that_disagrees_is_not_used(openvino_on, monkeypatch, tiny_model):
    network = inference_model(tiny_model)
    traced = _forward(network)
    monkeypatch.setattr(openvino_runtime, "MEAN_TOLERANCE", -1.0)
    assert openvino_runtime.bfloat16_forward(network, traced, streams=5) is None


def test_em_unet_segment_says_how_the_network_ran(tiny_model_path, small_stack, tmp_path, capsys):
    import tifffile

    from napari_em_unet.cli import main

    image = tmp_path / "stack.tif"
    tifffile.imwrite(image, small_stack[0])
    for runtime, said in (("openvino", "bfloat16 (OpenVINO)"), ("tensorflow", "float32")):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv(openvino_runtime.RUNTIME_ENV, runtime)
            out = tmp_path / f"{runtime}.tif"
            assert (
                main(["segment", str(image), "-o", str(out), "--model", str(tiny_model_path)]) == 0
            )
        assert f"network in {said}" in capsys.readouterr().err
        assert tifffile.imread(out).shape == small_stack[0].shape
