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



_STANDIN = r'''
"""Stand-in for napari_em_unet.segmentation.linking (branch link3d), for the GUI tests only:
the same API, linking by 3D connectivity of the foreground (cells that overlap between
sections join)."""
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from napari_em_unet.errors import InputError


@dataclass(frozen=True)
class LinkParams:
    bias: float = 0.5
    min_sections: int = 1

    def __post_init__(self):
        if not 0 < self.bias < 1:
            raise InputError(f"the bias must be between 0 and 1 (exclusive); got {self.bias}")


@dataclass(frozen=True)
class LinkProgress:
    done: int
    total: int


def link_into(labels, target, *, probability=None, voxel_size_nm=None, params=LinkParams()):
    depth = int(labels.shape[0])
    volume = np.stack([np.asarray(labels[z]) for z in range(depth)])
    objects, _ = ndimage.label(volume > 0)
    if params.min_sections > 1:
        sections = np.zeros(objects.max() + 1, dtype=int)
        for z in range(depth):
            sections[np.unique(objects[z])] += 1
        objects[sections[objects] < params.min_sections] = 0
    for z in range(depth):
        target[z] = objects[z].astype(np.uint32)
        yield LinkProgress(z + 1, depth)


def link_labels(labels, probability=None, *, voxel_size_nm=None, params=LinkParams()):
    out = np.zeros(tuple(labels.shape), dtype=np.uint32)
    for _ in link_into(labels, out, params=params):
        pass
    return out
'''


@pytest.fixture
def linking(monkeypatch):
    """The linking core: the real one when this checkout has it (branch link3d merged),
    otherwise a stand-in with the same API installed for the test."""
    import importlib
    import types

    try:
        return importlib.import_module("napari_em_unet.segmentation.linking")
    except ImportError:
        pass
    import napari_em_unet.segmentation as package

    module = types.ModuleType("napari_em_unet.segmentation.linking")
    monkeypatch.setitem(sys.modules, module.__name__, module)  # dataclasses look it up
    exec(compile(_STANDIN, "linking-stand-in", "exec"), module.__dict__)
    monkeypatch.setattr(package, "linking", module, raising=False)
    return module
