"""The U-Net's two decoders: the light one is smaller, saves and loads like the full one."""

from __future__ import annotations

import numpy as np

from napari_em_unet.model.files import ModelInfo, load_model, save_model
from napari_em_unet.model.inference import _config_of
from napari_em_unet.model.unet import UNetConfig, build_unet


def _decoder_convs(model) -> list[str]:
    return [
        layer.name
        for layer in model.layers
        if layer.name.startswith("dec") and "_conv" in layer.name
    ]


def test_light_decoder_adds_skips_and_has_one_conv_per_level():
    full = build_unet(UNetConfig(base_filters=4, depth=2), seed=0)
    light = build_unet(UNetConfig(base_filters=4, depth=2, light_decoder=True), seed=0)
    assert type(light.get_layer("skip0")).__name__ == "Add"
    assert type(full.get_layer("skip0")).__name__ == "Concatenate"
    assert sorted(_decoder_convs(light)) == ["dec0_conv0", "dec1_conv0"]
    # Decoder level 0 of the full network: a 3x3 conv from 8 to 4 channels and one from
    # 4 to 4 (no biases: batch norm follows each, 4 numbers per channel); the light one keeps
    # one 3x3 from 4 to 4 and its batch norm. Level 1 likewise at 8 channels.
    saved = (8 * 4 + 4 * 4 - 4 * 4) * 9 + 4 * 4 + (16 * 8 + 8 * 8 - 8 * 8) * 9 + 4 * 8
    assert full.count_params() - light.count_params() == saved


def test_light_decoder_survives_a_file_round_trip(tmp_path):
    config = UNetConfig(base_filters=4, depth=2, light_decoder=True)
    model = build_unet(config, seed=0)
    path = save_model(model, ModelInfo(architecture=config.to_dict()), tmp_path / "l.keras")
    loaded = load_model(path)
    assert _config_of(loaded.keras_model) == config
    image = np.random.default_rng(0).random((1, 32, 32, 1), dtype=np.float32)
    np.testing.assert_allclose(
        np.asarray(loaded.keras_model(image)), np.asarray(model(image)), atol=1e-6
    )
