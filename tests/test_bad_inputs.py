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
# Each distinct input counts once (a bad model file is tried with both segment and
# finetune, and counts as handled only when both refuse it in one line).
BAD: set[str] = set()
VALID: set[str] = set()
STARTED: set[str] = set()
HANDLED: dict[str, set[str]] = {}
"""Case id -> the commands that handled it."""
EXPECTED_COMMANDS: dict[str, set[str]] = {}


def register(case_id: str, ok: bool, commands: tuple[str, ...]) -> None:
    (VALID if ok else BAD).add(case_id)
    EXPECTED_COMMANDS[case_id] = set(commands)


def handled(case_id: str, command: str) -> None:
    HANDLED.setdefault(case_id, set()).add(command)


class _CatalogueSummary:
    """Prints the catalogue figure at the end of the run (registered by the fixture below).

    Under pytest-xdist the figure is made in a worker, whose output nobody sees: it travels
    to the controller in ``workeroutput`` and tests/conftest.py prints it there.
    """

    @staticmethod
    def lines() -> list[str]:
        ran = STARTED & (BAD | VALID)
        if not ran:
            return []
        done = {c for c in ran if HANDLED.get(c, set()) >= EXPECTED_COMMANDS[c]}
        bad, valid = ran & BAD, ran & VALID
        line = (
            f"bad-input catalogue: {len(done & bad)}/{len(bad)} distinct bad inputs refused "
            f"in one line, {len(done & valid)}/{len(valid)} awkward valid inputs handled"
        )
        skipped = len(BAD | VALID) - len(ran)
        lines = [line + (f" ({skipped} not run)" if skipped else "")]
        missing = sorted(ran - done)
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
                state[str(path)] = (
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                    path.stat().st_mtime_ns,
                )
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
    silent: tuple[int, ...] = ()
    """Slices with no signal: no prediction there (NaN) and a warning on stderr."""


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
    Case(
        "random bytes after a TIFF header",
        _bytes(lambda: b"II*\x00" + np.random.default_rng(2).bytes(5000)),
        ok=False,
    ),
    Case(
        "a folder named .tif",
        lambda folder: (folder / "dir.tif").mkdir() or folder / "dir.tif",
        ok=False,
    ),
    Case("4D array", _tif(rng.integers(0, 255, (2, 5, 32, 32), dtype=np.uint8)), ok=False),
    Case("5D array", _tif(rng.integers(0, 255, (2, 2, 3, 32, 32), dtype=np.uint8)), ok=False),
    # Accepted on purpose: whole NaN slices are missing sections in real ssTEM stacks, and a
    # chunk of a distributed run may hold only those. Where there is no data the result says
    # nothing: NaN probability, no cell.
    Case(
        "all-NaN image",
        _tif(np.full((2, 32, 32), np.nan, np.float32)),
        ok=True,
        shape=(2, 32, 32),
        silent=(0, 1),
    ),
    Case(
        "constant image",
        _tif(np.full((2, 40, 40), 7, np.uint8)),
        ok=True,
        shape=(2, 40, 40),
        silent=(0, 1),
    ),
    Case(
        "black section in a stack",
        _tif(np.stack([_stack[0], 0 * _stack[0], _stack[1]])),
        ok=True,
        shape=(3, 48, 40),
        silent=(1,),
    ),
    Case(
        "black section with noise",
        _tif(np.stack([_stack[0], _stack[1] % 3, _stack[1]])),
        ok=True,
        shape=(3, 48, 40),
        silent=(1,),
    ),
    Case("some NaNs and infinities in float", _tif(_some_nan), ok=True, shape=(2, 48, 40)),
    Case("16-bit", _tif(_stack.astype(np.uint16) * 257), ok=True, shape=(2, 48, 40)),
    Case(
        "signed 16-bit with negatives",
        _tif(_stack.astype(np.int16) - 128),
        ok=True,
        shape=(2, 48, 40),
    ),
    Case("float64", _tif(_float.astype(np.float64)), ok=True, shape=(2, 48, 40)),
    Case(
        "RGB",
        _tif(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8), photometric="rgb"),
        ok=True,
        shape=(40, 50),
    ),
    Case(
        "RGB stack",
        _tif(rng.integers(0, 255, (2, 40, 50, 3), dtype=np.uint8), photometric="rgb"),
        ok=True,
        shape=(2, 40, 50),
    ),
    Case(
        "tiny (9 x 13)",
        _tif(rng.integers(0, 255, (2, 9, 13), dtype=np.uint8)),
        ok=True,
        shape=(2, 9, 13),
    ),
    Case("one pixel", _tif(np.array([[5]], np.uint8)), ok=True, shape=(1, 1), silent=(0,)),
    Case(
        "odd size 1001 x 777",
        _tif(rng.integers(0, 255, (1001, 777), dtype=np.uint8)),
        ok=True,
        shape=(1001, 777),
    ),
    Case("one 2D image", _tif(_stack[0]), ok=True, shape=(48, 40)),
]
for _case in IMAGE_CASES:
    register(f"image: {_case.id}", _case.ok, ("segment",))


@pytest.mark.parametrize("case", IMAGE_CASES, ids=[c.id for c in IMAGE_CASES])
def test_segment(case: Case, tiny_model_path, tmp_path, capfd):
    name = f"image: {case.id}"
    STARTED.add(name)
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = case.make(inputs)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "result.tif"
    before = snapshot(inputs, tiny_model_path.parent)
    code, lines = run(
        ["segment", image, "-o", out, "--model", tiny_model_path, "--output-kind", "probabilities"],
        capfd,
    )
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
        no_data = no_data.reshape(result.shape)
        for index in case.silent:
            no_data[index] = True
        warnings = [line for line in lines if line.startswith("warning:")]
        assert len(warnings) == (1 if case.silent else 0), lines
        assert not case.silent or "no signal" in warnings[0]
        # NaN exactly where the input has no data; a probability everywhere else
        assert np.array_equal(np.isnan(result), no_data.reshape(result.shape))
        valid = result[~no_data.reshape(result.shape)]
        assert valid.size == 0 or (valid.min() >= 0 and valid.max() <= 1)
        assert [p.name for p in out_dir.iterdir()] == ["result.tif"]
    handled(name, "segment")


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
    Case(
        "ISBI 0/255 mask labels", _pair(_img, np.where(_lab > 0, 255, 0).astype(np.uint8)), ok=True
    ),
    Case("labels without any membrane", _pair(_img, np.ones_like(_lab)), ok=True),
]
for _case in FINETUNE_CASES:
    register(f"labels: {_case.id}", _case.ok, ("finetune",))


@pytest.mark.parametrize("case", FINETUNE_CASES, ids=[c.id for c in FINETUNE_CASES])
def test_finetune(case: Case, tiny_model_path, tmp_path, capfd):
    name = f"labels: {case.id}"
    STARTED.add(name)
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = case.make(inputs)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "tuned.keras"
    extra = ["--slices", "0"] if case.id == "all-membrane slice asked for" else []
    before = snapshot(inputs, tiny_model_path.parent)
    code, lines = run(
        [
            "finetune",
            "--image",
            image,
            "--labels",
            inputs / "labels.tif",
            "-o",
            out,
            "--model",
            tiny_model_path,
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--batch-size",
            "1",
            "--patch-size",
            "32",
            *extra,
        ],
        capfd,
    )
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
    handled(name, "finetune")


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
    Case(
        "text file named .keras",
        lambda folder, base: _bytes(b"not a model\n", "text.keras")(folder),
        ok=False,
    ),
    Case("truncated model", _damaged_copy(0.6), ok=False),
    Case("model with corrupted bytes", _damaged_copy(None), ok=False),
    Case("model with RGB input", lambda folder, base: _keras_model("rgb-input", folder), ok=False),
    Case("model with 3D input", lambda folder, base: _keras_model("3d-input", folder), ok=False),
    Case(
        "model with two output channels",
        lambda folder, base: _keras_model("two-classes", folder),
        ok=False,
    ),
    Case(
        "model carrying code (Lambda layer)",
        lambda folder, base: _keras_model("lambda", folder),
        ok=False,
    ),
]
COMMANDS = ("segment", "finetune")
for _case in MODEL_CASES:
    register(f"model: {_case.id}", False, COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", MODEL_CASES, ids=[c.id for c in MODEL_CASES])
def test_bad_model(case: Case, command, tiny_model_path, tmp_path, capfd):
    name = f"model: {case.id}"
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
        argv = [
            "finetune",
            "--image",
            inputs / "image.tif",
            "--labels",
            inputs / "labels.tif",
            "-o",
            out_dir / "m.keras",
            "--model",
            model,
            "--epochs",
            "1",
            "--steps-per-epoch",
            "1",
            "--batch-size",
            "1",
            "--patch-size",
            "32",
        ]
    code, lines = run(argv, capfd)
    assert_one_error_line(code, lines, before, snapshot(inputs, tiny_model_path.parent))
    assert list(out_dir.iterdir()) == []
    if "Lambda" in case.id:
        assert "code" in lines[0]
    handled(name, command)


# ----------------------------------------------------------------------------- outputs
def _output_case(kind: str):
    """Returns a function making (input image, output path, extra arguments) in ``folder``."""

    def make(folder: Path) -> tuple[Path, Path, list[str]]:
        image = _tif(_stack)(folder)
        out = folder / "out"
        out.mkdir()
        if kind == "the input":
            return image, image, []
        if kind == "the input through a symbolic link":
            (out / "link.tif").symlink_to(image)
            return image, out / "link.tif", []
        if kind == "the input through ..":
            return image, out / ".." / image.name, []
        if kind in ("exists", "exists, --overwrite"):
            (out / "result.tif").write_bytes(b"an older result")
            return image, out / "result.tif", ["--overwrite"] if "overwrite" in kind else []
        if kind == "an existing folder":
            (out / "result.tif").mkdir()
            return image, out / "result.tif", []
        if kind == "the input, --overwrite":
            return image, image, ["--overwrite"]
        if kind == "in a folder that does not exist yet":
            return image, out / "new" / "result.tif", []
        return image, out / f"result{kind}", []  # an extension

    return make


OUTPUT_CASES = [
    Case("output is the input", _output_case("the input"), ok=False),
    Case("output is the input, --overwrite", _output_case("the input, --overwrite"), ok=False),
    Case(
        "output is the input through a symbolic link",
        _output_case("the input through a symbolic link"),
        ok=False,
    ),
    Case("output is the input through ..", _output_case("the input through .."), ok=False),
    Case("output already exists", _output_case("exists"), ok=False),
    Case("output is an existing folder", _output_case("an existing folder"), ok=False),
    Case("output .png", _output_case(".png"), ok=False),
    Case("output .jpg", _output_case(".jpg"), ok=False),
    Case("output without extension", _output_case(""), ok=False),
    Case("existing output with --overwrite", _output_case("exists, --overwrite"), ok=True),
    Case(
        "output in a folder that does not exist yet",
        _output_case("in a folder that does not exist yet"),
        ok=True,
    ),
]
for _case in OUTPUT_CASES:
    register(f"output: {_case.id}", _case.ok, ("segment",))


@pytest.mark.parametrize("case", OUTPUT_CASES, ids=[c.id for c in OUTPUT_CASES])
def test_output(case: Case, tiny_model_path, tmp_path, capfd):
    name = f"output: {case.id}"
    STARTED.add(name)
    image, out, extra = case.make(tmp_path)
    before = snapshot(tmp_path)
    code, lines = run(["segment", image, "-o", out, "--model", tiny_model_path, *extra], capfd)
    if not case.ok:
        assert_one_error_line(code, lines, before, snapshot(tmp_path))
    else:
        assert code == 0, lines
        assert tifffile.imread(out).shape == _stack.shape
        assert snapshot(tmp_path)[str(image)] == before[str(image)]  # the input is untouched
        assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    handled(name, "segment")


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask


# ----------------------------------------------------------------------------- model paths
def _model_path(kind: str):
    def make(folder: Path, base: Path) -> Path:
        if kind == "onnx":
            return _bytes(b"ONNX export bytes", "model.onnx")(folder)
        if kind == "h5":
            return _bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "model.h5")(folder)
        if kind == "folder":
            (folder / "models").mkdir()
            return folder / "models"
        if kind == "rdf without keras":
            package = folder / "package"
            package.mkdir()
            (package / "rdf.yaml").write_text(
                "type: model\nname: elsewhere\nweights:\n  onnx:\n    source: m.onnx\n"
            )
            return package / "rdf.yaml"
        return _bytes(b"not a model", "model.pt")(folder)

    return make


MODEL_PATH_CASES = [
    Case("an ONNX export given as model", _model_path("onnx"), ok=False),
    Case("a legacy HDF5 model", _model_path("h5"), ok=False),
    Case("a folder given as model", _model_path("folder"), ok=False),
    Case(
        "a bioimage.io rdf.yaml without Keras weights", _model_path("rdf without keras"), ok=False
    ),
    Case("a PyTorch file given as model", _model_path("pt"), ok=False),
]
for _case in MODEL_PATH_CASES:
    register(f"model: {_case.id}", False, COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", MODEL_PATH_CASES, ids=[c.id for c in MODEL_PATH_CASES])
def test_model_path(case: Case, command, tiny_model_path, tmp_path, capfd):
    test_bad_model(case, command, tiny_model_path, tmp_path, capfd)


# ----------------------------------------------------------------------------- evaluate
def _evaluate_pair(kind: str):
    def make(folder: Path) -> tuple[Path, Path]:
        truth = np.where(_lab > 0, 255, 0).astype(np.uint8)
        prediction = _lab.astype(np.uint32)
        if kind == "probability as truth":
            truth = np.random.default_rng(3).random(_lab.shape, dtype=np.float32)
        elif kind == "shapes differ":
            truth = truth[:, :40]
        elif kind == "swapped":
            prediction, truth = truth, prediction
        tifffile.imwrite(folder / "prediction.tif", prediction)
        tifffile.imwrite(folder / "truth.tif", truth)
        return folder / "prediction.tif", folder / "truth.tif"

    return make


EVALUATE_CASES = [
    Case(
        "a probability map given as ground truth", _evaluate_pair("probability as truth"), ok=False
    ),
    Case(
        "prediction and ground truth of different shapes", _evaluate_pair("shapes differ"), ok=False
    ),
    Case(
        "arguments swapped (mask first, instance labels second)", _evaluate_pair("swapped"), ok=True
    ),
]
for _case in EVALUATE_CASES:
    register(f"evaluate: {_case.id}", _case.ok, ("evaluate",))


@pytest.mark.parametrize("case", EVALUATE_CASES, ids=[c.id for c in EVALUATE_CASES])
def test_evaluate(case: Case, tmp_path, capfd):
    name = f"evaluate: {case.id}"
    STARTED.add(name)
    prediction, truth = case.make(tmp_path)
    before = snapshot(tmp_path)
    code, lines = run(["evaluate", prediction, truth], capfd)
    if not case.ok:
        assert_one_error_line(code, lines, before, snapshot(tmp_path))
    else:  # numbers, and one warning saying the order looks wrong
        assert code == 0
        assert len(lines) == 1 and lines[0].startswith("warning:") and "PREDICTION" in lines[0]
    handled(name, "evaluate")


# ----------------------------------------------------------------------------- arguments
ARGUMENT_CASES = [
    Case("--slices 3-1", lambda f: ["--slices", "3-1"], ok=False),
    Case("--slices abc", lambda f: ["--slices", "abc"], ok=False),
    Case("--pixel-size 0", lambda f: ["--pixel-size", "0"], ok=False),
    Case("--epochs -5", lambda f: ["--epochs", "-5"], ok=False),
    Case("--average-last 1.5", lambda f: ["--average-last", "1.5"], ok=False),
    Case("an unknown option", lambda f: ["--fast"], ok=False),
]
for _case in ARGUMENT_CASES:
    register(f"arguments: {_case.id}", False, ("finetune",))


@pytest.mark.parametrize("case", ARGUMENT_CASES, ids=[c.id for c in ARGUMENT_CASES])
def test_arguments(case: Case, tiny_model_path, tmp_path, capfd):
    name = f"arguments: {case.id}"
    STARTED.add(name)
    image = _pair(_img, _lab)(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "finetune",
                "--image",
                str(image),
                "--labels",
                str(tmp_path / "labels.tif"),
                "-o",
                str(tmp_path / "m.keras"),
                "--model",
                str(tiny_model_path),
                *case.make(tmp_path),
            ]
        )
    lines = [line for line in capfd.readouterr().err.splitlines() if line.strip()]
    assert_one_error_line(exit_.value.code, lines, before, snapshot(tmp_path))
    handled(name, "finetune")


# ----------------------------------------------------------------------------- real processes
def _em_unet() -> str:
    """The installed console script, as a user runs it."""
    import shutil
    import sys

    script = Path(sys.executable).with_name("em-unet")
    return str(script) if script.exists() else shutil.which("em-unet")


SUBPROCESS_SAMPLE = [
    ("image", IMAGE_CASES, "truncated TIFF"),
    ("output", OUTPUT_CASES, "output is the input through a symbolic link"),
    ("output", OUTPUT_CASES, "output .png"),
    ("model", MODEL_PATH_CASES, "an ONNX export given as model"),
    ("model", MODEL_CASES, "model carrying code (Lambda layer)"),
]


@pytest.mark.parametrize(
    ("kind", "cases", "case_id"), SUBPROCESS_SAMPLE, ids=[s[2] for s in SUBPROCESS_SAMPLE]
)
def test_sample_through_the_installed_command(kind, cases, case_id, tiny_model_path, tmp_path):
    """A sample of the catalogue in fresh processes: the one-line promise holds end to end."""
    import subprocess

    case = next(c for c in cases if c.id == case_id)
    if kind == "image":
        image, out, extra = case.make(tmp_path), tmp_path / "out.tif", []
        model = tiny_model_path
    elif kind == "output":
        (image, out, extra), model = case.make(tmp_path), tiny_model_path
    else:
        image, out, extra = _tif(_stack)(tmp_path), tmp_path / "out.tif", []
        model = case.make(tmp_path, tiny_model_path)
    before = snapshot(tmp_path)
    proc = subprocess.run(
        [_em_unet(), "segment", str(image), "-o", str(out), "--model", str(model), *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert_one_error_line(proc.returncode, lines, before, snapshot(tmp_path))
