"""``em-unet`` end to end on the packaged sample, and its error path."""

import json
import os
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_em_unet.cli import main

SAMPLE = Path(str(resources.files("napari_em_unet.sample_data")))


def run_cli(*args) -> subprocess.CompletedProcess:
    """Run the real console entry point in a fresh interpreter, as a user would."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "napari_em_unet.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


@pytest.fixture()
def sample_slices(tmp_path):
    """Two 128 x 128 crops of the packaged sample (image, labels), with its pixel size."""
    image = tifffile.imread(SAMPLE / "synthetic-sstem.tif")[:2, :128, :128]
    labels = tifffile.imread(SAMPLE / "synthetic-sstem-labels.tif")[:2, :128, :128]
    meta = {"imagej": True, "resolution": (250, 250), "metadata": {"unit": "um"}}
    tifffile.imwrite(tmp_path / "img.tif", image, **meta)
    tifffile.imwrite(tmp_path / "lab.tif", labels, **meta)
    return tmp_path / "img.tif", tmp_path / "lab.tif"


def test_segment_then_evaluate(sample_slices, tiny_model_path, tmp_path, capsys):
    image, labels = sample_slices
    out = tmp_path / "seg.tif"
    assert main(["segment", str(image), "-o", str(out), "--model", str(tiny_model_path)]) == 0
    seg = tifffile.imread(out)
    assert seg.shape == (2, 128, 128) and seg.dtype == np.uint32
    assert main(["evaluate", str(out), str(labels), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0 <= scores["v_rand"] <= 1 and len(scores["per_slice"]["v_rand"]) == 2


def test_evaluate_scores_a_probability_map_the_leaderboard_way(tmp_path, capsys):
    truth = np.full((2, 10, 21), 255, dtype=np.uint8)
    truth[:, :, 10] = 0
    prob = np.where(truth == 0, 0.9, 0.1).astype(np.float32)
    prob[1, :, 9] = 0.6  # slice 1: a faint second line inside the left cell
    tifffile.imwrite(tmp_path / "gt.tif", truth)
    tifffile.imwrite(tmp_path / "prob.tif", prob)
    assert main(["evaluate", str(tmp_path / "prob.tif"), str(tmp_path / "gt.tif"), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    # Thresholds 0.2 and 0.3 (cell = 1 - p > t) see only the true line: 1.0 on both slices.
    assert scores["v_rand"] == pytest.approx(1.0)
    assert scores["thresholds"]["v_rand"] == pytest.approx(0.2)
    assert scores["per_slice"]["v_rand"] == pytest.approx([1.0, 1.0])
    assert 0 < scores["v_rand_grown"] <= 1


@pytest.mark.parametrize(
    ("kind", "dtype"), [("membranes", np.uint8), ("probabilities", np.float32)]
)
def test_segment_output_kinds_and_2d(sample_slices, tiny_model_path, tmp_path, kind, dtype):
    image2d = tmp_path / "one.tif"
    tifffile.imwrite(image2d, tifffile.imread(sample_slices[0])[0])
    out = tmp_path / "out.tif"
    assert (
        main(
            [
                "segment",
                str(image2d),
                "-o",
                str(out),
                "--model",
                str(tiny_model_path),
                "--output-kind",
                kind,
            ]
        )
        == 0
    )
    result = tifffile.imread(out)
    assert result.shape == (128, 128) and result.dtype == dtype


def test_rgb_image_gives_a_grey_yx_result(tiny_model_path, tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (40, 50, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    out = tmp_path / "out.tif"
    assert (
        main(
            ["segment", str(tmp_path / "rgb.tif"), "-o", str(out), "--model", str(tiny_model_path)]
        )
        == 0
    )
    assert tifffile.imread(out).shape == (40, 50)


def test_finetune_writes_a_model_with_metadata(sample_slices, tiny_model_path, tmp_path, capsys):
    image, labels = sample_slices
    out = tmp_path / "ft.keras"
    code = main(
        [
            "finetune",
            "--image",
            str(image),
            "--labels",
            str(labels),
            "-o",
            str(out),
            "--model",
            str(tiny_model_path),
            "--epochs",
            "1",
            "--steps-per-epoch",
            "2",
            "--batch-size",
            "2",
            "--patch-size",
            "64",
        ]
    )
    assert code == 0
    from napari_em_unet.model.files import read_info

    info = read_info(out)
    assert info.base_model == "tiny" and info.trained_on[-1]["slices"] == [0, 1]
    assert info.pixel_size_nm == 4.0
    # The last line says what was written and what validation said, either way.
    last = capsys.readouterr().err.strip().splitlines()[-1]
    if info.validation["accepted"]:
        assert last.startswith(f"saved the fine-tuned model to {out}: accepted: validation")
    else:
        assert last.startswith("kept the base model") and last.endswith(
            f"wrote the base model's weights to {out}"
        )


def test_finetune_options_default_to_the_training_config():
    from napari_em_unet.cli import build_parser
    from napari_em_unet.learning.config import TrainConfig

    args = build_parser().parse_args(
        ["finetune", "--image", "a.tif", "--labels", "b.tif", "-o", "m.keras"]
    )
    d = TrainConfig()
    assert (
        args.epochs,
        args.steps_per_epoch,
        args.batch_size,
        args.patch_size,
        args.learning_rate,
        args.anchor_share,
        args.change_budget,
        args.seed,
    ) == (
        d.epochs,
        d.steps_per_epoch,
        d.batch_size,
        d.patch_size,
        d.learning_rate,
        d.anchor_share,
        d.change_budget,
        d.seed,
    )


def test_bad_file_gives_one_error_line_and_no_output(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_text("this is not a TIFF")
    out = tmp_path / "out.tif"
    proc = run_cli("segment", bad, "-o", out)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.tif" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]


@pytest.mark.parametrize(
    "args",
    [
        ["segment", "missing.tif", "-o", "out.tif"],
        ["evaluate", "missing.tif", "other.tif"],
        ["finetune", "--image", "missing.tif", "--labels", "x.tif", "-o", "m.keras"],
    ],
)
def test_missing_inputs(tmp_path, args, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "not found" in err[0]
    assert list(tmp_path.iterdir()) == []


def test_bad_model_file(sample_slices, tmp_path, capsys):
    bad = tmp_path / "broken.keras"
    bad.write_bytes(b"garbage")
    assert (
        main(["segment", str(sample_slices[0]), "-o", str(tmp_path / "o.tif"), "--model", str(bad)])
        != 0
    )
    err = capsys.readouterr().err
    assert err.startswith("error:") and "broken.keras" in err
    assert not (tmp_path / "o.tif").exists()


def test_help_for_every_command():
    for command in ["segment", "finetune", "train", "evaluate"]:
        proc = run_cli(command, "--help")
        assert proc.returncode == 0 and "usage: em-unet " + command in proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="X11/Wayland checks")
def test_demo_without_a_display_is_one_error_line_not_a_qt_abort(capfd):
    from napari_em_unet._widgets.demo import display_problem

    missing = lambda name: None  # noqa: E731
    found = lambda name: f"lib{name}.so.0"  # noqa: E731
    assert "xvfb-run" in display_problem({}, found)
    assert "libxcb-cursor0" in display_problem({"DISPLAY": ":0"}, missing)
    assert display_problem({"DISPLAY": ":0"}, found) is None
    assert display_problem({"WAYLAND_DISPLAY": "wayland-0"}, missing) is None
    assert display_problem({"QT_QPA_PLATFORM": "offscreen"}, missing) is None

    from unittest import mock

    with mock.patch.dict(os.environ, {"DISPLAY": "", "WAYLAND_DISPLAY": "", "QT_QPA_PLATFORM": ""}):
        assert main(["demo"]) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: napari needs a display")


def test_finetune_that_validates_worse_writes_the_base_and_says_so(sample_slices, tmp_path, capsys):
    from napari_em_unet.model.backend import keras_module
    from napari_em_unet.model.files import load_model, save_model
    from napari_em_unet.model.info import ModelInfo

    keras = keras_module()
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(  # dark pixels are membrane: already good on the sample
        1,
        1,
        activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(-14.0),
        bias_initializer=keras.initializers.Constant(5.0),
    )(inputs)
    base = save_model(
        keras.Model(inputs, outputs),
        ModelInfo(
            name="dark",
            pixel_size_nm=4.0,
            postprocessing={"threshold": 0.5, "seed_threshold": 0.2, "sigma": 1.0},
        ),
        tmp_path / "dark.keras",
    )
    image, labels = sample_slices
    wrong = tifffile.imread(labels)
    wrong[0] = 0  # "corrections" calling slice 0 membrane but for one square
    wrong[0, 40:70, 40:70] = 1
    tifffile.imwrite(tmp_path / "wrong.tif", wrong)
    out = tmp_path / "ft.keras"
    assert (
        main(
            [
                "finetune",
                "--image",
                str(image),
                "--labels",
                str(tmp_path / "wrong.tif"),
                "--slices",
                "0",
                "--validation-slices",
                "1",
                "-o",
                str(out),
                "--model",
                str(base),
                "--epochs",
                "1",
                "--steps-per-epoch",
                "4",
                "--batch-size",
                "2",
                "--patch-size",
                "64",
                "--learning-rate",
                "0.3",
            ]
        )
        == 0
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(
        "kept the base model: the fine-tuned one is not better on the validation slices"
    ) and last.endswith(f"wrote the base model's weights to {out}")
    written, original = load_model(out), load_model(base)
    assert written.info.validation["accepted"] is False
    for a, b in zip(
        written.keras_model.get_weights(), original.keras_model.get_weights(), strict=True
    ):
        np.testing.assert_array_equal(a, b)


THREADS_AFTER = """
import sys
from napari_em_unet.cli import main
if sys.argv[1] == "command":
    sys.argv = ["em-unet", "segment", sys.argv[2], "-o", sys.argv[3], "--model", sys.argv[4]]
    main()
else:
    main(["segment", sys.argv[2], "-o", sys.argv[3], "--model", sys.argv[4]])
import tensorflow as tf
print(tf.config.threading.get_intra_op_parallelism_threads())
"""


@pytest.mark.parametrize(("how", "threads"), [("command", "1"), ("from-python", "0")])
def test_only_the_command_sets_tensorflow_threads(sample_slices, tiny_model_path, how, threads):
    """``em-unet segment`` owns its process and runs one thread per op (slices side by
    side); main() called from Python with arguments leaves the caller's TensorFlow alone."""
    image, _ = sample_slices
    out = image.with_name(f"out-{how}.tif")
    code = [sys.executable, "-c", THREADS_AFTER, how, str(image), str(out), str(tiny_model_path)]
    done = subprocess.run(code, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.split()[-1] == threads
    assert tifffile.imread(out).shape == (2, 128, 128)
