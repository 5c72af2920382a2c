"""The inference copy: batch norm folded away, same probabilities, originals left alone."""

from __future__ import annotations

import numpy as np
import pytest

from napari_em_unet.model.inference import inference_model
from napari_em_unet.model.info import LoadedModel, ModelInfo
from napari_em_unet.model.unet import UNetConfig, build_unet
from napari_em_unet.segmentation.preprocessing import normalize
from napari_em_unet.segmentation.tiling import predict_slice, predict_stack


def _trained_looking(config: UNetConfig):
    """A U-Net whose batch-norm layers hold non-trivial statistics, as after training."""
    model = build_unet(config, seed=0)
    rng = np.random.default_rng(1)
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, n).astype(np.float32),  # gamma
                    rng.normal(0, 0.5, n).astype(np.float32),  # beta
                    rng.normal(0, 0.5, n).astype(np.float32),  # moving mean
                    rng.uniform(0.2, 3.0, n).astype(np.float32),  # moving variance
                ]
            )
    return LoadedModel(model, ModelInfo(architecture=config.to_dict(), pixel_size_nm=4.0))


def _layer_kinds(model) -> set[str]:
    return {layer.__class__.__name__ for layer in model.layers}


@pytest.mark.parametrize("light_decoder", [False, True])
def test_folded_copy_has_no_batch_norm_and_predicts_the_same(light_decoder):
    loaded = _trained_looking(UNetConfig(base_filters=4, depth=2, light_decoder=light_decoder))
    network = inference_model(loaded)

    assert network is not loaded.keras_model
    assert "BatchNormalization" in _layer_kinds(loaded.keras_model)
    assert "BatchNormalization" not in _layer_kinds(network)
    image = np.random.default_rng(2).random((70, 90), dtype=np.float32)
    expected = predict_slice(loaded.keras_model, image)
    assert np.abs(predict_slice(network, image) - expected).max() < 1e-4
    # The whole-stack path predicts with the copy and gives the original's answer.
    (record,) = predict_stack(loaded, image[None])
    plane = normalize(image, loaded.info.percentiles)
    assert np.abs(record.probability - predict_slice(loaded.keras_model, plane)).max() < 1e-4


def test_copy_is_made_once_per_model():
    loaded = _trained_looking(UNetConfig(base_filters=4, depth=2))
    assert inference_model(loaded) is inference_model(loaded)


def test_a_network_without_batch_norm_is_used_as_it_is():
    loaded = _trained_looking(UNetConfig(base_filters=4, depth=2, batch_norm=False))
    assert inference_model(loaded) is loaded.keras_model


def test_a_foreign_network_is_used_as_it_is():
    from napari_em_unet.model.backend import keras_module

    keras = keras_module()
    inputs = keras.Input((None, None, 1))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.BatchNormalization()(x)
    outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    foreign = keras.Model(inputs, outputs)
    loaded = LoadedModel(foreign, ModelInfo(pixel_size_nm=4.0))
    assert inference_model(loaded) is foreign
