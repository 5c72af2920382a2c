"""Huge slices: peak memory and time of ``em-unet segment`` on one large 2D image, today's
whole-slice path against the banded one (docs/large-volumes.md, "Huge slices").

For every size, the same input is segmented twice in one run of this script, as a user
would (``em-unet segment IN.tif -o OUT.tif``, instances, TIFF in and out, in a subprocess):

* **whole**: ``--bands-above 1000000``, the path every slice took before (one slice in
  memory, batches of 4 tiles);
* **bands**: ``--bands-above 0``, the slice in bands of rows (the default above 16 Mpx).

Peak RSS is read from the kernel when the process exits (``os.wait4``), so nothing is
missed between samples; seconds are the wall time of the whole command (TensorFlow's start
and the model load included). When both ran, the two label images are compared: cells in
each, pixels where one says membrane (0) and the other a cell, and the Rand F-score of
the two labellings over the pixels that are cells in both (1.0: the same cells).

The image is the first ISBI 2012 test slice (512 x 512, 4 nm) mirrored into tiles when
``../shared/data`` is there, a synthetic slice otherwise. Inputs are written row by row, so
this script itself stays small even for 20000 x 20000 (0.4 GB in, 1.6 GB out on disk).

    python benchmarks/huge_slice.py [--sizes 3000 6000 12000] [--whole-up-to 6000]
    python benchmarks/huge_slice.py --phases 6000    # where the whole-slice path's memory goes
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from _common import ISBI, machine, table

MIB = 2**20


def make_input(path: Path, size: int) -> str:
    """A ``size`` x ``size`` uint8 image at 4 nm, written 1024 rows at a time."""
    from napari_em_unet.io.writers import TiffSliceWriter

    if (ISBI / "test-volume.tif").exists():
        tile, source = tifffile.imread(ISBI / "test-volume.tif", key=0), "ISBI 2012 test slice 0"
    else:
        from napari_em_unet.learning.synthetic import make_synthetic_stack

        tile, source = make_synthetic_stack((1, 512, 512), seed=0)[0][0], "synthetic ssTEM"
    # Mirrored neighbours: no seams for the network; the pattern repeats every 1024 rows.
    row = np.concatenate([tile, tile[:, ::-1]] * (size // (2 * tile.shape[1]) + 1), 1)[:, :size]
    period = np.concatenate([row, row[::-1]])
    with TiffSliceWriter(path, (size, size), np.uint8, pixel_size_nm=4.0) as writer:
        for start in range(0, size, len(period)):
            writer.write_rows(0, start, period[: min(len(period), size - start)])
    return f"{source}, mirrored tiles"


def run(cmd: list[str]) -> tuple[float, float, str]:
    """Peak RSS (MiB) and wall seconds of a command, and its stderr's last line."""
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n" + "\n".join(lines[-5:]))
    return usage.ru_maxrss * 1024 / MIB, seconds, lines[-1] if lines else ""


def compare(a_path: Path, b_path: Path, rows: int = 1000) -> dict:
    """Cells, membrane disagreements and the Rand F-score between two label images."""
    from napari_em_unet.io.volumes import open_volume

    a_vol, b_vol = open_volume(a_path), open_volume(b_path)
    height = a_vol.shape[1]
    keys, disagree = [], 0
    for start in range(0, height, rows):
        a = a_vol.read_rows(0, start, min(height, start + rows)).astype(np.uint64)
        b = b_vol.read_rows(0, start, min(height, start + rows)).astype(np.uint64)
        disagree += int(((a == 0) != (b == 0)).sum())
        both = (a > 0) & (b > 0)
        pair, count = np.unique((a[both] << np.uint64(32)) | b[both], return_counts=True)
        keys.append((pair, count))
    pair = np.concatenate([k[0] for k in keys])
    count = np.concatenate([k[1] for k in keys]).astype(np.float64)
    pair, where = np.unique(pair, return_inverse=True)
    count = np.bincount(where, weights=count)
    a_ids, b_ids = pair >> np.uint64(32), pair & np.uint64(0xFFFFFFFF)
    _, ai = np.unique(a_ids, return_inverse=True)
    _, bi = np.unique(b_ids, return_inverse=True)
    sum_sq = float((count**2).sum())
    a_sq = float((np.bincount(ai, weights=count) ** 2).sum())
    b_sq = float((np.bincount(bi, weights=count) ** 2).sum())
    return {
        "cells": (int(ai.max()) + 1, int(bi.max()) + 1),
        "membrane_disagree": disagree,
        "rand_f": 2 * sum_sq / (a_sq + b_sq),
        "pixels": height * a_vol.shape[2],
    }


def phases(path: Path) -> None:
    """Where the whole-slice path's memory goes: peak RSS per step, sampled every 5 ms."""
    import threading

    import psutil

    process, peaks, step = psutil.Process(), {}, ["reading"]

    def sample():
        while True:
            peaks[step[0]] = max(peaks.get(step[0], 0), process.memory_info().rss)
            time.sleep(0.005)

    def enter(name):
        time.sleep(0.05)  # the sampler sees the end of the previous step
        step[0] = name

    threading.Thread(target=sample, daemon=True).start()
    image = tifffile.imread(path)
    enter("TensorFlow and the model")
    from napari_em_unet.model.files import load_model
    from napari_em_unet.segmentation.preprocessing import normalize
    from napari_em_unet.segmentation.tiling import predict_slice
    from napari_em_unet.segmentation.watershed import WatershedParams, instances_from_probability

    model = load_model()
    enter("normalising")
    plane = normalize(image)
    enter("tiles, batch of 4")
    probability = predict_slice(model.keras_model, plane, batch_size=4)
    del plane
    enter("watershed")
    instances_from_probability(probability, WatershedParams.from_dict(model.info.postprocessing))
    enter("end")
    previous = 0
    for name, peak in peaks.items():
        if name != "end":
            print(f"  {name:<26} peak RSS {peak / MIB:6.0f} MiB ({(peak - previous) / MIB:+.0f})")
            previous = peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3000, 6000])
    parser.add_argument(
        "--whole-up-to",
        type=int,
        default=6000,
        help="run the whole-slice path only up to this size (it needs about 100 bytes per pixel)",
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--keep", default=None, help="folder for inputs and outputs")
    parser.add_argument(
        "--phases",
        type=int,
        default=None,
        metavar="SIZE",
        help="only: peak RSS step by step of the whole-slice path in this "
        "process, on a SIZE x SIZE image",
    )
    args = parser.parse_args()
    if args.phases:
        source = Path(tempfile.mkdtemp(prefix="huge-slice-")) / "in.tif"
        make_input(source, args.phases)
        print(f"whole-slice path, {args.phases} x {args.phases}, step by step:")
        phases(source)
        return
    em_unet = [sys.executable, "-m", "napari_em_unet.cli"]
    extra = ["--model", args.model] if args.model else []
    folder = Path(args.keep or tempfile.mkdtemp(prefix="huge-slice-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{machine()}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for size in args.sizes:
        source = folder / f"in{size}.tif"
        if not source.exists():
            note = make_input(source, size)
            print(f"{size} x {size}: {note}", flush=True)
        outputs = {}
        for path in (["whole"] if size <= args.whole_up_to else []) + ["bands"]:
            out = folder / f"out{size}-{path}.tif"
            limit = "0" if path == "bands" else "1000000"
            cmd = [
                *em_unet,
                "segment",
                str(source),
                "-o",
                str(out),
                "--bands-above",
                limit,
                "--overwrite",
                *extra,
            ]
            rss, seconds, last = run(cmd)
            outputs[path] = out
            rows.append([f"{size} x {size}", path, f"{rss:.0f}", f"{seconds:.0f}"])
            print(f"  {path}: peak RSS {rss:.0f} MiB, {seconds:.0f} s ({last})", flush=True)
        if len(outputs) == 2:
            c = compare(outputs["whole"], outputs["bands"])
            rows[-1] += [
                f"{c['cells'][0]} / {c['cells'][1]}",
                f"{c['membrane_disagree']} of {c['pixels']}",
                f"{c['rand_f']:.5f}",
            ]
            rows[-2] += ["", "", ""]
        else:
            rows[-1] += ["", "", ""]
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(
        table(
            rows,
            (
                "image",
                "path",
                "peak RSS (MiB)",
                "seconds",
                "cells whole / bands",
                "membrane pixels differing",
                "Rand F whole vs bands",
            ),
        )
    )


if __name__ == "__main__":
    main()
