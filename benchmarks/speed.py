"""Inference speed: ``em-unet segment`` end to end versus the classic U-Net's bare inference.

The classic U-Net is the one the Keras tutorials build (64-128-256-512-1024 filters, depth 4,
'same' padding, 31 M parameters). It is timed in this process on 512 x 512 slices inside a
``tf.function`` (network only: no I/O, no post-processing). Ours is timed as a user runs it:
the ``em-unet segment`` command on the 30-slice ISBI test volume repeated ``--copies`` times
(120 slices by default), reading the TIFF, tiled inference, watershed and writing the labels,
and on its first slice alone; the steady-state time per slice is the difference over the
extra slices of the time the command reports for its slices (TensorFlow's import, which
varies by up to a second between runs here, is left out of it; the whole command's time is
reported too). (With the 30 slices alone that difference was 6-8 s and moved from 12x to
17x between runs of the same hour; a longer volume makes it less sensitive to a busy second.)
The two alternate for ``--repeats`` rounds so that the shared machine's load hits both
alike; medians are reported. ``--old-commit`` times the package at that commit too, in
the same rounds (its source on PYTHONPATH), so that a change is judged by a ratio measured
at the same moments rather than against figures from another hour.

    python benchmarks/speed.py [--repeats 3] [--copies 4] [--old-commit 265c14a] [--model F]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from _common import ISBI, machine, old_code, require_data, table


def classic_unet():
    from napari_em_unet.model.backend import keras_module

    keras = keras_module()
    layers = keras.layers
    inputs = keras.Input((None, None, 1))
    x, skips = inputs, []
    for f in (64, 128, 256, 512):
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(1024, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(1024, 3, padding="same", activation="relu")(x)
    for f, skip in zip((512, 256, 128, 64), reversed(skips), strict=True):
        x = layers.Conv2DTranspose(f, 2, strides=2)(x)
        x = layers.Concatenate()([x, skip])
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, layers.Conv2D(1, 1, activation="sigmoid")(x))


def time_classic(fn, slices) -> float:
    start = time.perf_counter()
    for s in slices:
        fn(s).numpy()
    return (time.perf_counter() - start) / len(slices)


def time_cli(
    path: Path, out: Path, source: Path | None = None, model: str = ""
) -> tuple[float, float]:
    """``em-unet segment`` on ``path``: seconds for the whole command, and for the slices
    alone as the command reports them (from the first slice's start to the last one's
    end: TensorFlow's import, whose time varies by a second from run to run here, is left
    out). ``source``: the package to run instead of the installed one; ``model``: a model
    file instead of the bundled one."""
    env = dict(os.environ, PYTHONPATH=str(source)) if source else None
    start = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "napari_em_unet.cli",
            "segment",
            str(path),
            "-o",
            str(out),
            "--overwrite",
            *(["--model", model] if model else []),
        ],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    )
    whole = time.perf_counter() - start
    found = re.search(r"(\d+) slices? in ([\d.]+) s", done.stderr)
    return whole, float(found.group(2)) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--classic-slices", type=int, default=4)
    parser.add_argument(
        "--copies", type=int, default=4, help="times the 30-slice test volume is repeated"
    )
    parser.add_argument("--old-commit", default="", help="also time the package at this commit")
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        help="also time this model file (repeatable), e.g. one whose postprocessing differs",
    )
    args = parser.parse_args()
    require_data()
    from napari_em_unet.model.backend import tensorflow_module

    tf = tensorflow_module()
    volume = tifffile.imread(ISBI / "test-volume.tif")
    model = classic_unet()
    fn = tf.function(lambda x: model(x, training=False))
    batch = [
        tf.constant((volume[i] / 255.0).astype(np.float32)[None, ..., None])
        for i in range(args.classic_slices)
    ]
    fn(batch[0])  # trace once, outside the timing

    tmp = Path(tempfile.mkdtemp())
    one, stack = tmp / "one.tif", tmp / "stack.tif"
    long_volume = np.concatenate([volume] * max(1, args.copies))
    for path, data in ((one, volume[:1]), (stack, long_volume)):
        tifffile.imwrite(path, data, imagej=True, resolution=(250, 250), metadata={"unit": "um"})
    sources: dict[str, tuple[Path | None, str]] = {"": (None, "")}
    if args.old_commit:
        (tmp / "old").mkdir()
        sources[f" at {args.old_commit}"] = (old_code(args.old_commit, tmp / "old"), "")
    for path in args.model:
        sources[f" with {Path(path).name}"] = (None, path)
    classic = []
    full: dict[str, list[float]] = {name: [] for name in sources}
    single: dict[str, list[float]] = {name: [] for name in sources}
    slices_only: dict[str, list[float]] = {name: [] for name in sources}
    for _ in range(args.repeats):
        classic.append(time_classic(fn, batch))
        for name, (source, model_file) in sources.items():
            full[name].append(time_cli(stack, tmp / "out.tif", source, model_file))
            single[name].append(time_cli(one, tmp / "out1.tif", source, model_file))
            slices_only[name].append(full[name][-1][1] - single[name][-1][1])
    n = long_volume.shape[0]
    c = statistics.median(classic)
    rows = [("classic U-Net (31 M params), network only", f"{c:.3f}", "1.0x")]
    for name in sources:
        f = statistics.median(whole for whole, _ in full[name])
        steady = statistics.median(slices_only[name]) / (n - 1)
        what = f"em-unet segment{name}"
        rows += [
            (f"{what}, {n} slices incl. start-up", f"{f / n:.3f}", f"{c / (f / n):.1f}x"),
            (f"{what}, per extra slice (steady state)", f"{steady:.3f}", f"{c / steady:.1f}x"),
        ]
    print(f"speed benchmark ({machine()}), medians of {args.repeats} alternating rounds")
    print(table(rows, ("what", "s / 512x512 slice", "speed-up")))
    for name in sources:
        f = statistics.median(whole for whole, _ in full[name])
        s = statistics.median(whole for whole, _ in single[name])
        rounds = " ".join(
            f"{k / (t / (n - 1)):.1f}x" for t, k in zip(slices_only[name], classic, strict=True)
        )
        print(
            f"em-unet{name} start-up (TF import, model load, 1 slice): {s:.2f} s; "
            f"whole {n}-slice command: {f:.1f} s; steady state by round: {rounds}"
        )
    os.environ.get("CI")  # nothing else to clean: tmp is left for inspection


if __name__ == "__main__":
    main()
