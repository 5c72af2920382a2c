"""The npe2 manifest: valid, importable, conventional names, and no TensorFlow on the way.

The TensorFlow check runs in a subprocess so that what other tests imported cannot hide
an eager import.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import resources

import pytest
import yaml

PLUGIN = "napari-em-unet"


@pytest.fixture(scope="module")
def manifest() -> dict:
    text = (resources.files("napari_em_unet") / "napari.yaml").read_text()
    return yaml.safe_load(text)


def test_npe2_validate_with_imports():
    result = subprocess.run(
        [sys.executable, "-m", "npe2", "validate", PLUGIN, "--imports"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid" in result.stdout


def test_command_ids_and_menus(manifest):
    commands = manifest["contributions"]["commands"]
    ids = [c["id"] for c in commands]
    assert len(ids) == len(set(ids))
    for command_id in ids:
        assert re.fullmatch(rf"{PLUGIN}\.[a-z]+(_[a-z0-9]+)+", command_id), command_id
    widgets = {w["command"] for w in manifest["contributions"]["widgets"]}
    assert widgets == {
        f"{PLUGIN}.make_segment_widget",
        f"{PLUGIN}.make_finetune_widget",
        f"{PLUGIN}.make_evaluate_widget",
        f"{PLUGIN}.make_measure_widget",
        f"{PLUGIN}.make_proofread_widget",
    }
    menus = manifest["contributions"]["menus"]
    submenus = [item["submenu"] for item in menus["napari/layers/segment"]]
    in_segment_menu = {item["command"] for sub in submenus for item in menus[sub]}
    assert widgets <= in_segment_menu
    keys = {s["key"] for s in manifest["contributions"]["sample_data"]}
    assert keys == {"synthetic_sstem", "isbi2012"}


_NO_TF = r"""
import json, sys, importlib, os
from importlib import resources
import numpy as np, tifffile, yaml
manifest = yaml.safe_load((resources.files("napari_em_unet") / "napari.yaml").read_text())
for command in manifest["contributions"]["commands"]:
    module, _, attr = command["python_name"].partition(":")
    getattr(importlib.import_module(module), attr)
from napari_em_unet._reader import napari_get_reader
path = os.path.join(sys.argv[1], "stack.tif")
tifffile.imwrite(path, np.zeros((2, 16, 16), np.uint8), photometric="minisblack")
layers = napari_get_reader(path)(path)
from napari_em_unet._sample_data import make_synthetic_sample
samples = make_synthetic_sample()
from qtpy.QtWidgets import QApplication
app = QApplication([])
from napari.components import ViewerModel
viewer = ViewerModel()
for data, kwargs, kind in samples:
    getattr(viewer, f"add_{kind}")(data, **kwargs)
from napari_em_unet._widgets.segment_widget import SegmentWidget
from napari_em_unet._widgets.finetune_widget import FineTuneWidget
from napari_em_unet._widgets.evaluate_widget import EvaluateWidget
from napari_em_unet._widgets.measure_widget import MeasureWidget
from napari_em_unet._widgets.proofread_widget import ProofreadWidget
widgets = [SegmentWidget(viewer), FineTuneWidget(viewer), EvaluateWidget(viewer),
           MeasureWidget(viewer), ProofreadWidget(viewer)]
print(json.dumps({"layers": len(layers) + len(samples), "widgets": len(widgets),
                  "tensorflow": "tensorflow" in sys.modules, "keras": "keras" in sys.modules}))
sys.stdout.flush()
os._exit(0)  # what is tested is above; Qt's teardown order at exit is not
"""


def test_reader_samples_and_widgets_do_not_import_tensorflow(tmp_path):
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        NAPARI_EM_UNET_HOME=str(tmp_path),
        NAPARI_EM_UNET_NO_PREWARM="1",
    )
    result = subprocess.run(
        [sys.executable, "-c", _NO_TF, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"layers": 3, "widgets": 5, "tensorflow": False, "keras": False}
