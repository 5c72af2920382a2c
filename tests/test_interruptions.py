"""The quick version of benchmarks/interruptions.py: kill -9 in the save, Ctrl-C in training.

The benchmark does 8 interruptions at random moments; here two deterministic ones cover
both guarantees: no half-written model in the output folder, base model untouched.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import pytest
import tifffile

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location(
        "interruptions", ROOT / "benchmarks" / "interruptions.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["interruptions"] = module  # dataclasses look their module up while defined
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("interruptions", None)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_kill_9_in_the_save_and_ctrl_c_in_training(bench, tiny_model_path, tmp_path):
    from napari_em_unet.learning.synthetic import make_synthetic_stack
    from napari_em_unet.model.files import load_model, read_info

    # 96 px tall slices keep a validation band, so the base model is scored first and
    # "epoch 0" is printed before any training step.
    image, labels = make_synthetic_stack((2, 96, 96), seed=4, cell_size=24)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    output = out_dir / "tuned.keras"
    base_hash = _sha(tiny_model_path)
    cmd = bench.command(tiny_model_path, tmp_path / "image.tif", tmp_path / "labels.tif", output)
    cmd[cmd.index("--epochs") + 1] = "3"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}

    sent, code, _, _ = bench.interrupt(cmd, output, "SIGKILL", "save", 0, env)
    assert sent and code == -9
    count, damaged, leftovers = bench.check_folder(out_dir)
    assert (count, damaged) == (0, [])  # nothing, rather than half a model
    assert all(name.startswith(".tuned.keras.") and name.endswith(".part") for name in leftovers)
    assert _sha(tiny_model_path) == base_hash

    sent, code, last, _ = bench.interrupt(cmd, output, "SIGINT", "epoch", 0, env)
    assert sent and code == 0, last
    # The verdict is made on the weights so far (with no step or two, the base's usually).
    assert last.startswith(
        ("stopped early; kept the base model", "stopped early; saved the fine-tuned model")
    ), last
    assert str(output) in last
    count, damaged, _ = bench.check_folder(out_dir)
    assert (count, damaged) == (1, [])
    assert load_model(output).info.base_model == "tiny"
    assert _sha(tiny_model_path) == base_hash

    # The killed save's hidden folder goes away with the next save, however young it is:
    # the process that wrote it is gone.
    from napari_em_unet.model.files import save_model

    save_model(load_model(output).keras_model, read_info(output), output)
    assert sorted(p.name for p in out_dir.iterdir()) == ["tuned.keras"]


@pytest.mark.parametrize("command", ["segment", "finetune", "train"])
def test_ctrl_c_in_the_first_seconds_ends_the_command(command, tiny_model_path, tmp_path):
    """Ctrl-C 1.5 s after the start (while TensorFlow imports): out within 30 s, nothing
    written. Sent to a process started in the background, which inherits an ignored
    SIGINT from a non-interactive shell: the command installs its own handler first."""
    import signal
    import subprocess
    import time

    from napari_em_unet.learning.synthetic import make_synthetic_stack

    image, labels = make_synthetic_stack((2, 96, 96), seed=4, cell_size=24)
    tifffile.imwrite(tmp_path / "image.tif", image)
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    out = tmp_path / "out"
    out.mkdir()
    argv = {
        "segment": ["segment", "image.tif", "-o", "out/seg.tif", "--model", str(tiny_model_path)],
        "finetune": [
            "finetune",
            "--image",
            "image.tif",
            "--labels",
            "labels.tif",
            "-o",
            "out/m.keras",
            "--model",
            str(tiny_model_path),
        ],
        "train": [
            "train",
            "--image",
            "image.tif",
            "--labels",
            "labels.tif",
            "-o",
            "out/m.keras",
            "--base-filters",
            "4",
            "--depth",
            "2",
        ],
    }[command]
    proc = subprocess.Popen(
        [sys.executable, "-m", "napari_em_unet.cli", *argv],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    time.sleep(1.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 30
    assert proc.returncode == 130, err
    assert "interrupted; nothing was written" in err
    assert list(out.iterdir()) == []
