"""Fixtures for the widget tests: real napari viewers (run under xvfb-run), small models.

TensorFlow never enters the test process: napari's OpenGL canvas and TensorFlow cannot share
a process on Mesa (see docs/plugin.md), which is why the plugin runs TensorFlow in a child
process. The test models are built in a subprocess too, and one TensorFlow process serves
every test (starting one costs TensorFlow's import).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

_MAKE_MODELS = r"""
import sys
from pathlib import Path
from napari_em_unet.model.backend import keras_module
from napari_em_unet.model.unet import UNetConfig, build_unet
from napari_em_unet.model.files import save_model
from napari_em_unet.model.info import ModelInfo

keras = keras_module()
folder = Path(sys.argv[1])
config = UNetConfig(base_filters=4, depth=2)
save_model(build_unet(config, seed=0),
           ModelInfo(name="tiny", architecture=config.to_dict(), pixel_size_nm=4.0,
                     postprocessing={"threshold": 0.5, "seed_threshold": 0.45}),
           folder / "tiny.keras")
# Dark pixels are membrane: on the synthetic sample this already finds most cells, so the
# widget tests can check real labels without a trained network.
inputs = keras.Input((None, None, 1))
outputs = keras.layers.Conv2D(
    1, 1, activation="sigmoid", name="membrane",
    kernel_initializer=keras.initializers.Constant(-14.0),
    bias_initializer=keras.initializers.Constant(5.0))(inputs)
save_model(keras.Model(inputs, outputs),
           ModelInfo(name="dark-is-membrane", pixel_size_nm=4.0,
                     postprocessing={"threshold": 0.5, "seed_threshold": 0.2, "sigma": 1.0,
                                     "min_seed_size": 20, "min_size": 30}),
           folder / "threshold.keras")
"""


@pytest.fixture(autouse=True)
def _no_tensorflow_here():
    """Fail clearly, not with a segmentation fault inside OpenGL, if TensorFlow got in."""
    assert "tensorflow" not in sys.modules, (
        "TensorFlow was imported into the process that opens napari windows "
        "(a test module importing it at collection, or a GUI test sharing a worker with core tests)"
    )


@pytest.fixture(autouse=True)
def plugin_home(tmp_path, monkeypatch) -> Path:
    """A private model folder and download cache for every test."""
    home = tmp_path / "em-unet-home"
    monkeypatch.setenv("NAPARI_EM_UNET_HOME", str(home))
    # Tests hand the shared TensorFlow process to their viewers; no extra ones, please.
    monkeypatch.setenv("NAPARI_EM_UNET_NO_PREWARM", "1")
    return home


@pytest.fixture(scope="session")
def _models_build(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gui-models")
    process = subprocess.Popen([sys.executable, "-c", _MAKE_MODELS, str(folder)])
    return folder, process


@pytest.fixture(scope="session")
def engine():
    """One TensorFlow process for the whole GUI suite (segmentation and fine-tuning)."""
    from napari_em_unet.engine.client import Engine

    shared = Engine()
    threading.Thread(target=shared.warm_up, daemon=True, name="warm-up").start()
    yield shared
    shared.close()


@pytest.fixture(scope="session", autouse=True)
def _start_early(_models_build, engine):
    """Build the models and import TensorFlow in the background while napari starts."""


@pytest.fixture(scope="session")
def gui_models(_models_build) -> dict[str, Path]:
    """``tiny``: a 4-filter U-Net (untrained); ``threshold``: a 1x1 convolution that calls
    dark pixels membrane."""
    folder, process = _models_build
    assert process.wait(timeout=600) == 0, "building the test models failed"
    return {"tiny": folder / "tiny.keras", "threshold": folder / "threshold.keras"}


@pytest.fixture
def sample_viewer(make_napari_viewer, engine):
    """A viewer with the synthetic sample (image + ground truth) and the shared engine."""
    from napari_em_unet._widgets.session import session_for

    viewer = make_napari_viewer()
    viewer.open_sample("napari-em-unet", "synthetic_sstem")
    session_for(viewer).use_engine(engine, for_training=True)
    return viewer


@pytest.fixture
def linking():
    """The linking core (segmentation.linking)."""
    from napari_em_unet.segmentation import linking

    return linking


@pytest.fixture
def accept_any_finetune(monkeypatch):
    """Fine-tuning in this test keeps whatever the untrained tiny network learns, even when
    validation says it is no better than its base (the verdict has tests of its own): the
    test is about what happens around a saved model."""
    import dataclasses

    from napari_em_unet._widgets.finetune_widget import FineTuneWidget

    original = FineTuneWidget.training_request

    def accepting(self):
        request = original(self)
        return dataclasses.replace(request, config=request.config.replace(min_gain=-1.0))

    monkeypatch.setattr(FineTuneWidget, "training_request", accepting)
