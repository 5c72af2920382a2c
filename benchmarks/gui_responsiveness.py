"""Does napari stay responsive while the plugin segments and fine-tunes?  (prints figures)

Run under a display, e.g.::

    xvfb-run -a -s "-screen 0 1920x1200x24" python benchmarks/gui_responsiveness.py

What it measures, in one fresh process (TensorFlow not yet imported anywhere):

* **Event-loop stall**: a QTimer ticks every 10 ms on napari's main thread; a stall is how
  late a tick comes (gap between ticks minus 10 ms). Reported as max and 99th percentile
  while idle, while segmenting and while fine-tuning (target: max < 100 ms).
* **Time to first labels**: from pressing Run in the Segment widget to the first slice in
  the labels layer, on a 512 x 512 stack, with TensorFlow's import in the child process
  included (cold), then again with the process running (warm). Target < 10 s cold.
* **Reference (``--reference``)**: the design we did not ship, TensorFlow fine-tuning in a
  thread of the GUI process, measured on a bare Qt event loop (no napari canvas: TensorFlow
  and Mesa's OpenGL crash together in one process, see docs/plugin.md).

The data are the ISBI 2012 training volume from ../shared/data when present (slices 0-7),
else the packaged synthetic stack; the model is the bundled one (or ``--model``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ISBI, machine, table  # noqa: E402


class StallMonitor:
    """Record how late a 10 ms QTimer fires on the thread that runs the Qt event loop."""

    def __init__(self, interval_ms: int = 10):
        from qtpy.QtCore import QTimer

        self.interval = interval_ms / 1000
        self.ticks: list[float] = []
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(lambda: self.ticks.append(time.perf_counter()))

    def start(self) -> None:
        self.ticks.clear()
        self.timer.start()

    def stop(self) -> dict:
        self.timer.stop()
        gaps = np.diff(np.array(self.ticks)) - self.interval
        gaps = np.clip(gaps, 0, None) * 1000
        if gaps.size == 0:
            return {"ticks": 0, "max_ms": float("nan"), "p99_ms": float("nan")}
        ticks = np.array(self.ticks)
        late = np.nonzero(gaps > 100)[0]
        return {
            "ticks": int(gaps.size + 1),
            "max_ms": float(gaps.max()),
            "p99_ms": float(np.percentile(gaps, 99)),
            "over_100ms": int(late.size),
            # when (s after the phase started) the long stalls began, to find their cause
            "stalls_over_100ms_at_s": [round(float(ticks[i] - ticks[0]), 2) for i in late],
        }


def spin(seconds: float) -> None:
    """Run the Qt event loop for ``seconds`` (a real, blocking loop: no busy polling that
    would steal CPU from the TensorFlow process)."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def spin_until(predicate, timeout: float) -> None:
    """Run the Qt event loop until ``predicate()`` is true (checked every 50 ms)."""
    from napari_em_unet._widgets.demo import wait_for

    if not wait_for(predicate, timeout=timeout):
        raise TimeoutError("the benchmark step did not finish in time")


def load_data():
    """(image, labels, pixel size, name): ISBI slices 0-7 if available, else the sample."""
    from napari_em_unet.io.tiff import read_tiff

    if (ISBI / "train-volume.tif").exists():
        image = read_tiff(ISBI / "train-volume.tif", memmap=False)
        labels = read_tiff(ISBI / "train-labels.tif", memmap=False)
        return (
            np.asarray(image.data[:8]),
            np.asarray(labels.data[:8]),
            image.pixel_size_nm or 4.0,
            "ISBI 2012 slices 0-7",
        )
    from napari_em_unet._sample_data import make_synthetic_sample

    (image, meta, _), (labels, _, _) = make_synthetic_sample()
    return image, labels, meta["metadata"]["pixel_size_nm"], "synthetic sample"


def run_gui(args) -> dict:
    import napari

    from napari_em_unet._widgets.finetune_widget import FineTuneWidget
    from napari_em_unet._widgets.segment_widget import SegmentWidget
    from napari_em_unet._widgets.session import session_for

    image, labels, pixel_size, data_name = load_data()
    viewer = napari.Viewer(show=True)
    viewer.window.resize(1500, 950)
    viewer.add_image(image, name="em", metadata={"pixel_size_nm": pixel_size})
    truth = viewer.add_labels(labels, name="ground truth", visible=False)
    segment, finetune = SegmentWidget(viewer), FineTuneWidget(viewer)
    viewer.window.add_dock_widget(segment)
    viewer.window.add_dock_widget(finetune)
    session = session_for(viewer)
    if args.model:
        session.models.add_file(args.model)
    engine = session.segment_engine()
    engine.nice = args.nice
    model = session.models.find(segment._model.value)
    monitor = StallMonitor()
    results: dict = {
        "data": f"{data_name}, {image.shape}",
        "model": model.label,
        "child_nice": args.nice,
    }
    spin(2.0)

    monitor.start()
    spin(3.0)
    results["idle"] = monitor.stop()

    for phase in ("segment_cold", "segment_warm"):
        first: list[float] = []
        segment.runner.slice_written.connect(
            lambda i, first=first: first.append(time.perf_counter())
        )
        monitor.start()
        pressed = time.perf_counter()
        segment._on_run()  # what clicking Run does
        spin_until(lambda: not segment.runner.running, timeout=900)
        ended = time.perf_counter()
        stalls = monitor.stop()
        stalls["first_labels_s"] = first[0] - pressed if first else None
        ready = segment.runner.model_ready_at
        stalls["model_ready_s"] = ready - pressed if ready else None
        stalls["total_s"] = ended - pressed
        stalls["slices"] = len(first)
        results[phase] = stalls
        spin(1.0)

    finetune._image.value = viewer.layers["em"]
    finetune._labels_layer.value = truth
    finetune._slices.value = "0-5"
    finetune._validation.value = "6-7"
    finetune._epochs.value = args.epochs
    finetune._steps.value = args.steps
    steps: list[float] = []
    monitor.start()
    pressed = time.perf_counter()
    finetune._on_run()
    finetune.runner.worker.yielded.connect(
        lambda r: steps.append(time.perf_counter()) if type(r).__name__ == "StepProgress" else None
    )
    spin_until(lambda: not finetune.runner.running, timeout=3600)
    stalls = monitor.stop()
    stalls["total_s"] = time.perf_counter() - pressed
    stalls["steps"] = len(steps)
    stalls["s_per_step"] = float(np.median(np.diff(steps))) if len(steps) > 2 else None
    stalls["saved"] = finetune.last_outcome is not None
    results["finetune"] = stalls
    session.close()
    viewer.close()
    return results


_REFERENCE = r"""
import json, sys, threading, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from gui_responsiveness import StallMonitor, spin, spin_until, load_data
from qtpy.QtWidgets import QApplication
app = QApplication([])
image, labels, pixel_size, _ = load_data()
from napari_em_unet.model.files import load_model
from napari_em_unet.learning.config import TrainConfig
from napari_em_unet.learning.training import train
model_path = sys.argv[2] or None
done = []
def work():
    base = load_model(model_path)
    gen = train(image, labels, base=base, slices=list(range(6)), validation_slices=[6, 7],
                pixel_size_nm=pixel_size,
                config=TrainConfig(epochs=int(sys.argv[3]), steps_per_epoch=int(sys.argv[4])))
    for _ in gen:
        pass
    done.append(1)
monitor = StallMonitor()
monitor.start()
started = time.perf_counter()
thread = threading.Thread(target=work)
thread.start()
spin_until(lambda: bool(done) or not thread.is_alive(), timeout=3600)
result = monitor.stop()
result["total_s"] = time.perf_counter() - started
print(json.dumps(result))
"""


def run_reference(args) -> dict:
    """TensorFlow import + fine-tuning in a thread of a Qt process (no napari canvas)."""
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    here = str(Path(__file__).resolve().parent)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _REFERENCE,
            here,
            args.model or "",
            str(args.epochs),
            str(args.steps),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=3600,
    )
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: the bundled one)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20, help="steps per epoch (batch 4, 256 px)")
    parser.add_argument(
        "--nice",
        type=int,
        default=10,
        help="priority decrease of the TensorFlow process (default 10)",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also measure TensorFlow training in a GUI thread (bare Qt)",
    )
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    os.environ.setdefault("NAPARI_EM_UNET_HOME", tempfile.mkdtemp(prefix="em-unet-bench-"))
    # Measure the cold start honestly: the TensorFlow process starts when Run is pressed
    # (by default the Segment widget starts it as soon as it opens).
    os.environ["NAPARI_EM_UNET_NO_PREWARM"] = "1"

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    results = {"machine": machine(), "load_average_1min_at_start": load}
    results["gui"] = run_gui(args)
    if args.reference:
        results["reference_thread"] = run_reference(args)

    gui = results["gui"]

    def fmt(value, digits=1):
        return "-" if value is None else f"{value:.{digits}f}"

    rows = [("idle", fmt(gui["idle"]["max_ms"]), fmt(gui["idle"]["p99_ms"]), "", "")]
    for key, label in (
        ("segment_cold", "segment (cold: TF import)"),
        ("segment_warm", "segment (warm)"),
        ("finetune", "fine-tune"),
    ):
        r = gui[key]
        rows.append(
            (
                label,
                fmt(r["max_ms"]),
                fmt(r["p99_ms"]),
                fmt(r.get("first_labels_s"), 2),
                fmt(r["total_s"]),
            )
        )
    if "reference_thread" in results and "max_ms" in results["reference_thread"]:
        r = results["reference_thread"]
        rows.append(
            (
                "reference: TF in a GUI thread",
                fmt(r["max_ms"]),
                fmt(r["p99_ms"]),
                "",
                fmt(r["total_s"]),
            )
        )
    print(f"# GUI responsiveness ({results['machine']}; load average {load:.1f})")
    print(f"# data: {gui['data']}; model: {gui['model']}; TF process nice {gui['child_nice']}")
    print(table(rows, ("phase", "max stall ms", "p99 stall ms", "first labels s", "total s")))
    ft = gui["finetune"]
    print(
        f"fine-tune: {ft['steps']} steps, {fmt(ft['s_per_step'], 2)} s/step, "
        f"model saved: {ft['saved']}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
