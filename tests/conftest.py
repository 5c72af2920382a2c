"""Shared fixtures: tiny real Keras models, small synthetic stacks, and the shared EM data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# The network runs in TensorFlow's float32 unless a test asks for OpenVINO's bfloat16
# (tests/model/test_openvino_runtime.py): most tests compare probabilities within 1e-6,
# which bfloat16 rounding (up to 0.09) would not meet.
os.environ.setdefault("EM_UNET_RUNTIME", "tensorflow")

SHARED_DATA = Path(
    os.environ.get(
        "EM_UNET_SHARED_DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    )
).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip the test when it is not beside the checkout."""
    if not (SHARED_DATA / "isbi2012" / "train-volume.tif").exists():
        pytest.skip("../shared/data is not available")
    return SHARED_DATA


@pytest.fixture(scope="session")
def small_stack() -> tuple[np.ndarray, np.ndarray]:
    """A 3 x 96 x 96 synthetic ssTEM stack (uint8) and its instance labels (uint16)."""
    from napari_em_unet.learning.synthetic import make_synthetic_stack

    return make_synthetic_stack((3, 96, 96), seed=1, cell_size=24)


@pytest.fixture(scope="session")
def tiny_model_path(tmp_path_factory) -> Path:
    """A real but tiny U-Net (4 base filters, depth 2) saved as a model file."""
    from napari_em_unet.model.files import save_model
    from napari_em_unet.model.info import ModelInfo
    from napari_em_unet.model.unet import UNetConfig, build_unet

    config = UNetConfig(base_filters=4, depth=2)
    model = build_unet(config, seed=0)
    info = ModelInfo(
        name="tiny",
        architecture=config.to_dict(),
        pixel_size_nm=4.0,
        postprocessing={"threshold": 0.5, "seed_threshold": 0.45},
    )
    return save_model(model, info, tmp_path_factory.mktemp("models") / "tiny.keras")


@pytest.fixture()
def tiny_model(tiny_model_path):
    from napari_em_unet.model.files import load_model

    return load_model(tiny_model_path)


def _is_gui_test(nodeid: str) -> bool:
    return nodeid.replace("\\", "/").startswith("tests/gui/")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Keep napari windows and TensorFlow in different test processes.

    Mesa's OpenGL driver and TensorFlow each bring their own LLVM and crash when loaded into
    one process (see docs/plugin.md), which is also why the plugin runs TensorFlow in a child
    process. With pytest-xdist (``-n 2``, the default in pyproject.toml) the GUI tests form
    one work unit and everything else the other, so each worker runs one kind only. (Our own
    scheduler rather than ``--dist loadgroup``: the latter renames test ids through a private
    attribute that pytest 9 no longer has.)
    """
    from xdist.scheduler import LoadScopeScheduling

    class GuiApart(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "gui" if _is_gui_test(nodeid) else "core"

    return GuiApart(config, log)


def pytest_collection_modifyitems(config, items):
    """Mark tests by what they need: ``-m "not data"`` runs without ../shared/data."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.data)
        if _is_gui_test(item.nodeid):
            item.add_marker(pytest.mark.gui)


def pytest_collection_finish(session):
    """Refuse, in one clear line, a single-process run that would mix the two kinds (after
    ``-m``/``-k`` selection, so ``-n 0 -m gui`` works)."""
    config = session.config
    if hasattr(config, "workerinput") or (config.getoption("numprocesses", None) or 0) >= 2:
        return
    if len({_is_gui_test(item.nodeid) for item in session.items}) == 2:
        raise pytest.UsageError(
            "napari window tests (tests/gui) and TensorFlow tests cannot share one process: "
            "run with -n 2 (the default; pytest-xdist) or select one kind of test."
        )


_WORKER_SUMMARIES: list[str] = []


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """pytest-xdist controller: collect the summary lines a worker made (test_bad_inputs)."""
    _WORKER_SUMMARIES.extend(getattr(node, "workeroutput", {}).get("summary_lines", []))


def pytest_terminal_summary(terminalreporter):
    for line in _WORKER_SUMMARIES:
        terminalreporter.write_line(line)
