"""Fine-tuning on a few corrected slices of another EM volume (vnc2013), with the CLI defaults.

The corrections are instance labels as napari's brush makes them: the published membrane
masks of the chosen slices are turned into cells grown until they touch (one-pixel borders,
no membrane drawn), all other slices are left unlabelled (0). ``em-unet finetune`` runs with
its defaults on the bundled model; both models then segment slices far from the corrected
ones and are scored against the published masks.

    python benchmarks/finetune_vnc.py [--train-slices 0-4] [--eval-slices 10-19]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import VNC, machine, napari_like_labels, require_data, table

from napari_em_unet.metrics import score_stack
from napari_em_unet.model_files import load_model
from napari_em_unet.segmentation import segment_stack
from napari_em_unet.tiff_io import read_tiff, write_tiff


def span(text: str) -> list[int]:
    lo, hi = map(int, text.split("-"))
    return list(range(lo, hi + 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train-slices", default="0-4")
    parser.add_argument("--eval-slices", default="10-19")
    parser.add_argument("--base", default=None, help="base model (default: bundled)")
    parser.add_argument("--extra", default="", help="extra arguments for em-unet finetune")
    args = parser.parse_args()
    require_data()
    train_slices, eval_slices = span(args.train_slices), span(args.eval_slices)
    raw = read_tiff(VNC / "raw.tif")
    image = np.asarray(raw.data)
    truth = np.asarray(read_tiff(VNC / "membranes.tif").data)
    corrections = np.zeros(truth.shape, dtype=np.uint32)
    corrections[train_slices] = napari_like_labels(truth[train_slices])

    tmp = Path(tempfile.mkdtemp())
    write_tiff(tmp / "corrections.tif", corrections, raw.pixel_size_nm)
    command = [sys.executable, "-m", "napari_em_unet.cli", "finetune",
               "--image", str(VNC / "raw.tif"), "--labels", str(tmp / "corrections.tif"),
               "-o", str(tmp / "finetuned.keras"), *args.extra.split()]
    if args.base:
        command += ["--model", args.base]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(proc.stderr)
    epochs = [line for line in proc.stderr.splitlines() if line.startswith("epoch ") and "loss" in line]

    results = []
    for name, path in (("before (bundled)", args.base), ("after fine-tuning", tmp / "finetuned.keras")):
        model = load_model(path)
        labels = np.stack([r.result for r in segment_stack(
            model, image, slices=eval_slices, pixel_size_nm=raw.pixel_size_nm)])
        results.append((name, score_stack(labels, truth[eval_slices])))
    before, after = results[0][1], results[1][1]
    print(f"fine-tuning benchmark ({machine()})")
    print(f"vnc2013: corrected slices {args.train_slices} (napari-style touching instance labels), "
          f"scored on slices {args.eval_slices}; pixel size {raw.pixel_size_nm:.2f} nm")
    print(table([(n, f"{s.v_rand:.4f}", f"{s.v_info:.4f}", f"{s.pixel_error:.4f}")
                 for n, s in results], ("model", "V_rand", "V_info", "pixel error")))
    print(f"V_rand change: {after.v_rand - before.v_rand:+.4f}; "
          f"em-unet finetune wall time {wall:.0f} s ({wall / 60:.1f} min) with its defaults")
    print("\n".join(epochs))


if __name__ == "__main__":
    main()
