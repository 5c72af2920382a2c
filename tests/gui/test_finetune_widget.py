"""The Fine-tune widget's honesty: the CLI's defaults, what validation measures before / after,
a readable plot, and no model preselected that validation says is worse."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

from napari_em_unet._widgets.finetune_widget import FineTuneWidget
from napari_em_unet._widgets.loss_plot import LossPlot, smoothed, zoomed_range
from napari_em_unet._widgets.segment_widget import SegmentWidget
from napari_em_unet._widgets.session import session_for
from napari_em_unet.learning.config import TrainConfig
from napari_em_unet.model.info import METADATA_ENTRY

TIMEOUT_MS = 300_000


def test_the_form_starts_from_the_cli_defaults(sample_viewer):
    widget = FineTuneWidget(sample_viewer)
    d = TrainConfig()
    assert (
        widget._epochs.value,
        widget._steps.value,
        widget._batch.value,
        widget._patch.value,
        widget._augment.value,
    ) == (d.epochs, d.steps_per_epoch, d.batch_size, d.patch_size, d.augment)
    assert widget._learning_rate.value == pytest.approx(d.learning_rate)


def test_the_request_carries_a_few_uncorrected_slices(sample_viewer, gui_models):
    widget = FineTuneWidget(sample_viewer)
    session_for(sample_viewer).models.add_file(gui_models["threshold"])
    widget._labels_layer.value = sample_viewer.layers["synthetic ssTEM ground truth"]
    widget._slices.value = "1, 2"
    widget._validation.value = "5"
    request = widget.training_request()
    uncorrected = set(request.anchor_slices) | set(request.check_slices)
    assert uncorrected and not uncorrected & {1, 2, 5}
    assert set(request.numbers) == {1, 2, 5} | uncorrected
    assert len(request.anchor_slices) <= TrainConfig().anchor_slices
    for number, labels in zip(request.numbers, request.labels, strict=True):
        # the user's labels only on training and validation slices: the others are the
        # base's business (its predictions become the anchors' targets)
        assert np.any(labels) == (number in {1, 2, 5})


def test_a_model_validation_does_not_prefer_is_neither_saved_nor_selected(
    qtbot, sample_viewer, gui_models, plugin_home
):
    session = session_for(sample_viewer)
    segment = SegmentWidget(sample_viewer)
    session.models.add_file(gui_models["threshold"])  # good on the sample already
    assert segment._model.value == gui_models["threshold"].resolve()
    finetune = FineTuneWidget(sample_viewer)
    truth = sample_viewer.layers["synthetic ssTEM ground truth"]
    wrong = np.array(truth.data, copy=True)
    wrong[[1, 2]] = 0  # "corrections" calling everything membrane but for one square
    wrong[[1, 2], 200:260, 200:260] = 1
    finetune._labels_layer.value = sample_viewer.add_labels(wrong, name="wrong")
    finetune._base.value = gui_models["threshold"]
    finetune._slices.value, finetune._validation.value = "1, 2", "5"
    finetune._epochs.value, finetune._steps.value = 2, 6
    finetune._batch.value, finetune._patch.value = 2, 64
    finetune._learning_rate.value = 0.1
    models_before = [e.path for e in session.models.entries]
    finetune.run()
    qtbot.waitUntil(lambda: not finetune.runner.running, timeout=TIMEOUT_MS)

    assert finetune.last_outcome is None  # nothing to re-segment with
    assert [e.path for e in session.models.entries] == models_before
    assert not (plugin_home / "models").exists() or not any((plugin_home / "models").iterdir())
    assert segment._model.value == gui_models["threshold"].resolve()
    assert finetune._message.value.startswith("Not saved: kept the base model")
    shown = finetune.validation_text.value
    assert "Validation V_rand on the validation slices (never trained on) (slices 5)" in shown
    assert "before" in shown and "after" in shown and "base model kept" in shown
    plot = finetune.plot
    assert plot.steps == list(range(1, 13)) and plot.total == 12
    assert [r.step for r in plot.rounds] == [0, 6, 12]
    accepted, final = plot.final
    assert not accepted and final == pytest.approx(plot.base_v_rand)


def test_the_plot_zooms_to_the_data_and_has_a_legend(qtbot):
    plot = LossPlot()
    qtbot.addWidget(plot)
    plot.resize(400, 220)
    plot.set_total(80)
    for step in range(1, 81):
        plot.add_step(step, 80, 0.3 - step * 0.001, 0.1 + 0.0001 * step)
    for step, score in ((0, 0.951), (40, 0.957), (80, 0.962)):
        plot.add_round(step, score, 0.004 * step / 40)
    plot.set_final(True, 0.962)
    low, high = plot.score_range()
    assert 0.94 < low < 0.951 and 0.962 < high < 0.975  # not 0..1: a 0.01 gain is visible
    low, high = plot.loss_range()
    assert low > 0.07 and high < 0.33
    assert plot.change_range()[0] == 0.0 and 0.008 < plot.change_range()[1] < 0.012
    assert plot.base_v_rand == 0.951
    image = plot.grab().toImage()
    colours = {image.pixelColor(x, y).name() for x in range(0, 400, 3) for y in range(0, 220, 3)}
    assert len(colours) > 5  # lines, legend, axes drawn


def test_zoomed_range_and_smoothing():
    assert zoomed_range([0.95, 0.97]) == pytest.approx((0.948, 0.972))
    assert zoomed_range([None, float("nan")]) == (0.0, 1.0)
    assert zoomed_range([0.5]) == pytest.approx((0.4994, 0.5006))
    assert smoothed([1.0, None, 0.0], keep=0.5) == [1.0, None, 0.5]


def _fake_model(path, name, created, validation=None):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        archive.writestr(
            METADATA_ENTRY,
            json.dumps(
                {
                    "name": name,
                    "created": created,
                    "pixel_size_nm": 4.0,
                    "validation": validation or {},
                }
            ),
        )
    return path


def test_a_model_validated_worse_is_listed_but_not_preselected(sample_viewer, plugin_home):
    folder = plugin_home / "models"
    folder.mkdir(parents=True)
    good = _fake_model(
        folder / "good.keras",
        "good",
        "2027-01-02T00:00:00+00:00",
        {"accepted": True, "v_rand": 0.9, "v_rand_before": 0.8},
    )
    _fake_model(
        folder / "worse.keras",
        "worse",
        "2027-01-03T00:00:00+00:00",
        {"accepted": False, "v_rand": 0.8, "v_rand_before": 0.8},
    )
    _fake_model(
        folder / "older-code.keras",
        "older",
        "2027-01-04T00:00:00+00:00",
        {"v_rand": 0.7, "v_rand_before": 0.8},
    )  # before verdicts: lower than before
    session = session_for(sample_viewer)
    session.models.refresh()
    names = [e.name for e in session.models.entries]
    assert names[:3] == [
        "older",
        "worse",
        "good",
    ]  # newest first (after the bundled model), all listed
    labels = {e.name: e.label for e in session.models.entries}
    assert "not better than its base" in labels["worse"]
    assert "not better than its base" in labels["older"]
    assert session.models.default_entry().path == good.resolve()
    assert SegmentWidget(sample_viewer)._model.value == good.resolve()
    assert FineTuneWidget(sample_viewer)._base.value == good.resolve()
