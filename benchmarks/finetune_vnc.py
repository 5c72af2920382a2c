"""Fine-tuning on a few corrected slices of another EM volume (vnc2013), with the CLI defaults.

The corrections are instance labels as napari's brush makes them: the published membrane
masks of the chosen slices are turned into cells grown until they touch (one-pixel borders,
no membrane drawn), all other slices are left unlabelled (0). ``em-unet finetune`` runs with
its defaults on the bundled model; both models then segment slices far from the corrected
ones and are scored against the published masks.

    python benchmarks/finetune_vnc.py [--variants 0,1,2] [--eval-slices 10-19]
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


VARIANTS = {
    # name: (corrected slices, extra finetune arguments)
    "5 slices, CLI defaults": ("0-4", []),
    "3 slices, CLI defaults": ("0-2", []),
    "5 slices, thin borders taken literally": ("0-4", ["--border-width", "1", "--border-weight", "0"]),
}


def finetune(image_path: Path, corrections: Path, out: Path, extra: list[str],
             base) -> tuple[float, list[str]]:
    command = [sys.executable, "-m", "napari_em_unet.cli", "finetune", "--image", str(image_path),
               "--labels", str(corrections), "-o", str(out), *extra]
    if base:
        command += ["--model", base]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    epochs = [line for line in proc.stderr.splitlines() if line.startswith("epoch ") and "loss" in line]
    return time.perf_counter() - start, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-slices", default="10-19")
    parser.add_argument("--base", default=None, help="base model (default: bundled)")
    parser.add_argument("--variants", default=",".join(str(i) for i in range(len(VARIANTS))),
                        help="which variants to run, by index: " + "; ".join(
                            f"{i}: {n}" for i, n in enumerate(VARIANTS)))
    args = parser.parse_args()
    require_data()
    eval_slices = span(args.eval_slices)
    raw = read_tiff(VNC / "raw.tif")
    image = np.asarray(raw.data)
    truth = np.asarray(read_tiff(VNC / "membranes.tif").data)
    tmp = Path(tempfile.mkdtemp())

    def score(path):
        model = load_model(path)
        labels = np.stack([r.result for r in segment_stack(
            model, image, slices=eval_slices, pixel_size_nm=raw.pixel_size_nm)])
        return score_stack(labels, truth[eval_slices])

    before = score(args.base)
    rows = [("bundled model, no fine-tuning", "-", f"{before.v_rand:.4f}", f"{before.v_info:.4f}",
             f"{before.pixel_error:.4f}", "-", "-")]
    logs = []
    for index in map(int, args.variants.split(",")):
        name = list(VARIANTS)[index]
        slices_text, extra = VARIANTS[name]
        slices = span(slices_text)
        corrections = np.zeros(truth.shape, dtype=np.uint32)
        corrections[slices] = napari_like_labels(truth[slices])
        labels_path = tmp / f"corrections-{index}.tif"
        write_tiff(labels_path, corrections, raw.pixel_size_nm)
        wall, epochs = finetune(VNC / "raw.tif", labels_path, tmp / f"ft-{index}.keras", extra,
                                args.base)
        after = score(tmp / f"ft-{index}.keras")
        rows.append((name, slices_text, f"{after.v_rand:.4f}", f"{after.v_info:.4f}",
                     f"{after.pixel_error:.4f}", f"{after.v_rand - before.v_rand:+.4f}",
                     f"{wall / 60:.1f}"))
        logs.append((name, epochs))
    print(f"fine-tuning benchmark ({machine()})")
    print(f"vnc2013 (pixel size {raw.pixel_size_nm:.2f} nm, the bundled model's 4 nm): "
          f"corrections are napari-style touching instance labels; scored on slices "
          f"{args.eval_slices}, far from the corrected ones")
    print(table(rows, ("model", "corrected", "V_rand", "V_info", "pixel error", "V_rand change",
                       "minutes")))
    remaining = 1 - before.v_rand
    for row in rows[1:]:
        gain = float(row[5])
        print(f"{row[0]}: removes {gain / remaining:.0%} of the remaining V_rand error")
    for name, epochs in logs:
        print(f"\n{name}:\n" + "\n".join(epochs))


if __name__ == "__main__":
    main()
