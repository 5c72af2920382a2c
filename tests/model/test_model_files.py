"""Model files: metadata round trip, atomic saves, and refusal of damaged or unsafe files."""

import zipfile

import numpy as np
import pytest

from napari_em_unet.errors import ModelFileError
from napari_em_unet.model.files import (
    ModelInfo,
    load_model,
    read_info,
    save_model,
)


def test_round_trip_keeps_weights_and_metadata(tiny_model, tmp_path):
    info = ModelInfo(
        name="mine",
        pixel_size_nm=4.6,
        membrane_width_px=4.5,
        postprocessing={"threshold": 0.4},
        trained_on=[{"slices": [1, 2]}],
        epochs=3,
        validation={"v_rand": 0.9},
    )
    path = save_model(tiny_model.keras_model, info, tmp_path / "mine.keras")
    loaded = load_model(path)
    assert loaded.info.pixel_size_nm == 4.6 and loaded.info.trained_on == [{"slices": [1, 2]}]
    assert loaded.info.keras_version and loaded.info.created
    for a, b in zip(
        tiny_model.keras_model.get_weights(), loaded.keras_model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert read_info(path).name == "mine"  # metadata readable without TensorFlow


def test_unknown_metadata_from_a_newer_version_is_kept(tiny_model_path, tmp_path):
    info = ModelInfo.from_dict({"name": "x", "some_future_field": 1})
    assert info.extra == {"some_future_field": 1}
    newer = ModelInfo.from_dict({"format_version": 99})
    path = save_model(load_model(tiny_model_path).keras_model, newer, tmp_path / "new.keras")
    with pytest.raises(ModelFileError, match="newer"):
        load_model(path)


def test_interrupted_save_leaves_the_previous_file_intact(tiny_model, tmp_path, monkeypatch):
    path = save_model(tiny_model.keras_model, ModelInfo(name="v1"), tmp_path / "m.keras")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt  # as if Ctrl-C arrived in the middle of writing

    monkeypatch.setattr(zipfile.ZipFile, "writestr", crash)
    with pytest.raises(KeyboardInterrupt):
        save_model(tiny_model.keras_model, ModelInfo(name="v2"), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"]  # no temporary left behind


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip at all", b"PK\x03\x04" + b"\0" * 50],
    ids=["empty", "text", "truncated"],
)
def test_damaged_files_are_refused_with_one_line(tmp_path, content):
    path = tmp_path / "bad.keras"
    path.write_bytes(content)
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.keras")


def test_model_carrying_code_is_refused(tmp_path):
    from napari_em_unet.model.backend import keras_module

    keras = keras_module()
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Lambda(lambda x: x * 2)(inputs)
    path = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelFileError, match="code"):
        load_model(path)


def test_model_with_another_input_shape_is_refused(tmp_path):
    from napari_em_unet.model.backend import keras_module

    keras = keras_module()
    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Conv2D(2, 1)(inputs)
    path = tmp_path / "rgb.keras"
    keras.Model(inputs, outputs).save(path)
    with pytest.raises(ModelFileError, match="single-channel"):
        load_model(path)
