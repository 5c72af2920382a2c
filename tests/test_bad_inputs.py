"""The bad-input catalogue: what users really load, through the real CLI entry point.

Every case either works (right output shape and type) or ends in exactly one ``error:``
line with exit code 2: no traceback, no output or temporary file left behind, and the
input files untouched (same bytes, same modification time). The run ends with
``bad-input catalogue: N/N handled`` in pytest's summary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_em_unet.cli import main

# ----------------------------------------------------------------------------- bookkeeping
STARTED: set[str] = set()
HANDLED: set[str] = set()
CATALOGUE: list[str] = []


class _CatalogueSummary:
    """Prints the catalogue figure at the end of the run (registered by the fixture below).

    Under pytest-xdist the figure is made in a worker, whose output nobody sees: it travels
    to the controller in ``workeroutput`` and tests/conftest.py prints it there.
    """

    @staticmethod
    def lines() -> list[str]:
        ran = [c for c in CATALOGUE if c in STARTED]
        if not ran:
            return []
        skipped = len(CATALOGUE) - len(ran)
        line = f"bad-input catalogue: {len(HANDLED & set(ran))}/{len(ran)} handled"
        lines = [line + (f" ({skipped} not run)" if skipped else "")]
        missing = sorted(set(ran) - HANDLED)
        if missing:
            lines.append(f"  not handled: {', '.join(missing)}")
        return lines

    def pytest_sessionfinish(self, session):
        workeroutput = getattr(session.config, "workeroutput", None)
        if workeroutput is not None:
            workeroutput["summary_lines"] = self.lines()

    def pytest_terminal_summary(self, terminalreporter):
        for line in self.lines():
            terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _summary(request):
    manager = request.config.pluginmanager
    if not manager.has_plugin("bad-input-catalogue"):
        manager.register(_CatalogueSummary(), "bad-input-catalogue")


def snapshot(*folders: Path) -> dict:
    """Every file under ``folders`` with its content hash and modification time."""
    state = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                state[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                    path.stat().st_mtime_ns)
    return state


def run(argv: list, capfd) -> tuple[int, list[str]]:
    """The console entry point in-process; stderr as the user's terminal would show it."""
    code = main([str(a) for a in argv])
    err = capfd.readouterr().err
    return code, [line for line in err.splitlines() if line.strip()]


def assert_one_error_line(code: int, lines: list[str], before: dict, after: dict) -> None:
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    assert "Traceback" not in lines[0]
    assert after == before, "files were written or changed"


@dataclass(frozen=True)
class Case:
    id: str
    make: Callable[[Path], Path | None]
    """Writes the input(s) into a folder; returns the main input path."""
    ok: bool
    shape: tuple | None = None
    """Expected output shape for valid cases."""


def _tif(data, **kwargs) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        path = folder / "input.tif"
        tifffile.imwrite(path, np.asarray(data), **kwargs)
        return path

    return make


def _bytes(content: bytes | Callable[[], bytes], name: str = "input.tif"):
    def make(folder: Path) -> Path:
        path = folder / name
        path.write_bytes(content() if callable(content) else content)
        return path

    return make


def _truncated(compress: bool):
    def make(folder: Path) -> Path:
        path = folder / "input.tif"
        data = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
        tifffile.imwrite(path, data, compression="zlib" if compress else None)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return path

    return make


rng = np.random.default_rng(42)
_stack = rng.integers(0, 255, (2, 48, 40), dtype=np.uint8)
_float = rng.random((2, 48, 40), dtype=np.float32)
_some_nan = _float.copy()
_some_nan[rng.random(_some_nan.shape) < 0.1] = np.nan
_some_nan[0, :5] = np.inf

IMAGE_CASES = [
    Case("missing file", lambda folder: folder / "nope.tif", ok=False),
    Case("zero-byte file", _bytes(b""), ok=False),
    Case("truncated TIFF", _truncated(compress=False), ok=False),
    Case("truncated compressed TIFF", _truncated(compress=True), ok=False),
    Case("text file named .tif", _bytes(b"hello, I am not an image\n" * 10), ok=False),
    Case("random bytes", _bytes(lambda: np.random.default_rng(1).bytes(5000)), ok=False),
    Case("random bytes after a TIFF header",
         _bytes(lambda: b"II*\x00" + np.random.default_rng(2).bytes(5000)), ok=False),
    Case("a folder named .tif", lambda folder: (folder / "dir.tif").mkdir() or folder / "dir.tif",
         ok=False),
    Case("4D array", _tif(rng.integers(0, 255, (2, 5, 32, 32), dtype=np.uint8)), ok=False),
    Case("5D array", _tif(rng.integers(0, 255, (2, 2, 3, 32, 32), dtype=np.uint8)), ok=False),
    # Accepted on purpose: whole NaN slices are missing sections in real ssTEM stacks, and a
    # chunk of a distributed run may hold only those. Where there is no data the result says
    # nothing: NaN probability, no cell.
    Case("all-NaN image", _tif(np.full((2, 32, 32), np.nan, np.float32)), ok=True,
         shape=(2, 32, 32)),
    Case("constant image", _tif(np.full((2, 40, 40), 7, np.uint8)), ok=True, shape=(2, 40, 40)),
    Case("some NaNs and infinities in float", _tif(_some_nan), ok=True, shape=(2, 48, 40)),
    Case("16-bit", _tif(_stack.astype(np.uint16) * 257), ok=True, shape=(2, 48, 40)),
    Case("signed 16-bit with negatives", _tif(_stack.astype(np.int16) - 128), ok=True,
         shape=(2, 48, 40)),
    Case("float64", _tif(_float.astype(np.float64)), ok=True, shape=(2, 48, 40)),
    Case("RGB", _tif(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), photometric="rgb"),
         ok=True, shape=(40, 50)),
    Case("RGB stack", _tif(rng.integers(0, 255, (2, 40, 50, 3), dtype=np.uint8),
                           photometric="rgb"), ok=True, shape=(2, 40, 50)),
    Case("tiny (9 x 13)", _tif(rng.integers(0, 255, (2, 9, 13), dtype=np.uint8)), ok=True,
         shape=(2, 9, 13)),
    Case("one pixel", _tif(np.array([[5]], np.uint8)), ok=True, shape=(1, 1)),
    Case("odd size 1001 x 777", _tif(rng.integers(0, 255, (1001, 777), dtype=np.uint8)),
         ok=True, shape=(1001, 777)),
    Case("one 2D image", _tif(_stack[0]), ok=True, shape=(48, 40)),
]
CATALOGUE += [f"segment: {c.id}" for c in IMAGE_CASES]


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c.id for c in IMAGE_CASES])
def test_segment(case: Case, tiny_model_path, tmp_path, capfd):
    name = f"segment: {case.id}"
    STARTED.add(name)
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = case.make(inputs)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "result.tif"
    before = snapshot(inputs, tiny_model_path.parent)
    code, lines = run(["segment", image, "-o", out, "--model", tiny_model_path,
                       "--output-kind", "probabilities"], capfd)
    after = snapshot(inputs, tiny_model_path.parent)
    if not case.ok:
        assert_one_error_line(code, lines, before, after)
        assert list(out_dir.iterdir()) == []
    else:
        assert code == 0, lines
        assert after == before, "the input was changed"
        result = tifffile.imread(out)
        assert result.shape == case.shape and result.dtype == np.float32
        source = tifffile.imread(image)
        no_data = ~np.isfinite(source) if source.dtype.kind == "f" else np.zeros(source.shape, bool)
        if source.ndim == result.ndim + 1:  # RGB: a pixel without data in any channel
            no_data = no_data.any(axis=-1)
        # NaN exactly where the input has no data; a probability everywhere else
        assert np.array_equal(np.isnan(result), no_data.reshape(result.shape))
        valid = result[~no_data.reshape(result.shape)]
        assert valid.size == 0 or (valid.min() >= 0 and valid.max() <= 1)
        assert [p.name for p in out_dir.iterdir()] == ["result.tif"]
    HANDLED.add(name)


def test_16_bit_gives_the_same_result_as_8_bit(tiny_model):
    """No silent change with the dtype: percentile normalisation sees the same image."""
    from napari_em_unet.segmentation.pipeline import segment_stack

    results = [
        np.stack([s.result for s in segment_stack(tiny_model, data, output="probabilities")])
        for data in (_stack, _stack.astype(np.uint16) * 257, _stack.astype(np.float32) / 255)
    ]
    np.testing.assert_allclose(results[1], results[0], atol=1e-5)
    np.testing.assert_allclose(results[2], results[0], atol=1e-5)


# ----------------------------------------------------------------------------- fine-tuning
def _pair(image, labels):
    def make(folder: Path) -> Path:
        tifffile.imwrite(folder / "image.tif", np.asarray(image))
        if labels is not None:
            tifffile.imwrite(folder / "labels.tif", np.asarray(labels))
        return folder / "image.tif"

    return make


def _synthetic():
    from napari_em_unet.learning.synthetic import make_synthetic_stack

    return make_synthetic_stack((2, 64, 64), seed=5, cell_size=20)


_img, _lab = _synthetic()
_half = _lab.copy()
_half[0] = 0  # slice 0 all membrane, slice 1 labelled

FINETUNE_CASES = [
    Case("labels of another shape", _pair(_img, _lab[:, :32]), ok=False),
    Case("labels of another depth", _pair(_img, _lab[:1]), ok=False),
    Case("RGB labels", _pair(_img[0], np.stack([_lab[0]] * 3, axis=-1)), ok=False),
    Case("fractional float labels", _pair(_img, _lab.astype(np.float32) + 0.5), ok=False),
    Case("labels file missing", _pair(_img, None), ok=False),
    Case("no labelled slice", _pair(_img, np.zeros_like(_lab)), ok=False),
    Case("all-membrane slice asked for", _pair(_img, _half), ok=False),
    Case("whole-number float labels", _pair(_img, _lab.astype(np.float32)), ok=True),
    Case("ISBI 0/255 mask labels", _pair(_img, np.where(_lab > 0, 255, 0).astype(np.uint8)),
         ok=True),
    Case("labels without any membrane", _pair(_img, np.ones_like(_lab)), ok=True),
]
CATALOGUE += [f"finetune: {c.id}" for c in FINETUNE_CASES]


@pytest.mark.parametrize("case", FINETUNE_CASES, ids=[c.id for c in FINETUNE_CASES])
def test_finetune(case: Case, tiny_model_path, tmp_path, capfd):
    name = f"finetune: {case.id}"
    STARTED.add(name)
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = case.make(inputs)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "tuned.keras"
    extra = ["--slices", "0"] if case.id == "all-membrane slice asked for" else []
    before = snapshot(inputs, tiny_model_path.parent)
    code, lines = run(["finetune", "--image", image, "--labels", inputs / "labels.tif",
                       "-o", out, "--model", tiny_model_path, "--epochs", "1",
                       "--steps-per-epoch", "1", "--batch-size", "1", "--patch-size", "32",
                       *extra], capfd)
    after = snapshot(inputs, tiny_model_path.parent)
    if not case.ok:
        assert_one_error_line(code, lines, before, after)
        assert list(out_dir.iterdir()) == []
    else:
        assert code == 0, lines
        assert after == before, "an input or the base model was changed"
        from napari_em_unet.model.files import load_model

        assert load_model(out).info.base_model == "tiny"
        assert [p.name for p in out_dir.iterdir()] == ["tuned.keras"]
    HANDLED.add(name)


# ----------------------------------------------------------------------------- model files
def _keras_model(kind: str, folder: Path) -> Path:
    from napari_em_unet.model.backend import keras_module

    keras = keras_module()
    path = folder / f"{kind}.keras"
    if kind == "rgb-input":
        inputs = keras.Input((None, None, 3))
        outputs = keras.layers.Conv2D(1, 1, activation="sigmoid")(inputs)
    elif kind == "3d-input":
        inputs = keras.Input((None, None, None, 1))
        outputs = keras.layers.Conv3D(1, 1, activation="sigmoid")(inputs)
    elif kind == "two-classes":
        inputs = keras.Input((None, None, 1))
        outputs = keras.layers.Conv2D(2, 1, activation="softmax")(inputs)
    elif kind == "lambda":
        inputs = keras.Input((None, None, 1))
        outputs = keras.layers.Lambda(lambda x: x * 0 + 0.5)(inputs)
    else:
        raise ValueError(kind)
    keras.Model(inputs, outputs).save(path)
    return path


def _model_case(kind: str):
    def make(folder: Path) -> Path:
        return _keras_model(kind, folder)

    return make


def _damaged_copy(cut: float | None):
    """A copy of the tiny model cut short, or with 2000 bytes flipped in the middle."""

    def make(folder: Path, base: Path) -> Path:
        data = base.read_bytes()
        if cut is None:
            middle = len(data) // 2
            flipped = bytes(b ^ 0xFF for b in data[middle : middle + 2000])
            data = data[:middle] + flipped + data[middle + 2000 :]
        else:
            data = data[: int(len(data) * cut)]
        path = folder / "damaged.keras"
        path.write_bytes(data)
        return path

    return make


MODEL_CASES = [
    Case("model file missing", lambda folder, base: folder / "nope.keras", ok=False),
    Case("zero-byte model", lambda folder, base: _bytes(b"", "empty.keras")(folder), ok=False),
    Case("text file named .keras",
         lambda folder, base: _bytes(b"not a model\n", "text.keras")(folder), ok=False),
    Case("truncated model", _damaged_copy(0.6), ok=False),
    Case("model with corrupted bytes", _damaged_copy(None), ok=False),
    Case("model with RGB input", lambda folder, base: _keras_model("rgb-input", folder),
         ok=False),
    Case("model with 3D input", lambda folder, base: _keras_model("3d-input", folder), ok=False),
    Case("model with two output channels",
         lambda folder, base: _keras_model("two-classes", folder), ok=False),
    Case("model carrying code (Lambda layer)",
         lambda folder, base: _keras_model("lambda", folder), ok=False),
]
COMMANDS = ["segment", "finetune"]
CATALOGUE += [f"model ({command}): {c.id}" for c in MODEL_CASES for command in COMMANDS]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.id for c in MODEL_CASES])
def test_bad_model(case: Case, command, tiny_model_path, tmp_path, capfd):
    name = f"model ({command}): {case.id}"
    STARTED.add(name)
    inputs = tmp_path / "in"
    inputs.mkdir()
    model = case.make(inputs, tiny_model_path)
    _pair(_img, _lab)(inputs)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    before = snapshot(inputs, tiny_model_path.parent)
    if command == "segment":
        argv = ["segment", inputs / "image.tif", "-o", out_dir / "seg.tif", "--model", model]
    else:
        argv = ["finetune", "--image", inputs / "image.tif", "--labels", inputs / "labels.tif",
                "-o", out_dir / "m.keras", "--model", model, "--epochs", "1",
                "--steps-per-epoch", "1", "--batch-size", "1", "--patch-size", "32"]
    code, lines = run(argv, capfd)
    assert_one_error_line(code, lines, before, snapshot(inputs, tiny_model_path.parent))
    assert list(out_dir.iterdir()) == []
    if "Lambda" in case.id:
        assert "code" in lines[0]
    HANDLED.add(name)
