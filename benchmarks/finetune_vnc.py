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

from napari_em_unet.io.tiff import read_tiff, write_tiff
from napari_em_unet.learning.metrics import score_stack
from napari_em_unet.model.files import load_model
from napari_em_unet.segmentation.pipeline import segment_stack


def span(text: str) -> list[int]:
    lo, hi = map(int, text.split("-"))
    return list(range(lo, hi + 1))


VARIANTS = {
    # name: (data set, corrected slices, extra finetune arguments)
    "5 slices, CLI defaults": ("vnc", "0-4", []),
    "3 slices, CLI defaults": ("vnc", "0-2", []),
    "5 slices, thin borders taken literally": (
        "vnc",
        "0-4",
        ["--border-width", "1", "--border-weight", "0"],
    ),
    "5 slices, CLI defaults, binned 2x, no pixel size": ("binned", "0-4", []),
}
DATASETS = {
    "vnc": "vnc2013 as published (4.6 nm pixels, recorded in the TIFF)",
    "binned": "vnc2013 binned 2x (9.2 nm pixels) with no pixel size in the file: another "
    "scale the model is not told about",
}


def binned(image: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2x2 mean of the image; a binned pixel is membrane if any of its four pixels is."""
    z, h, w = image.shape
    blocks = image[:, : h // 2 * 2, : w // 2 * 2].reshape(z, h // 2, 2, w // 2, 2)
    mask = truth[:, : h // 2 * 2, : w // 2 * 2].reshape(z, h // 2, 2, w // 2, 2)
    return blocks.mean(axis=(2, 4)).astype(np.uint8), mask.min(axis=(2, 4))


def finetune(
    image_path: Path, corrections: Path, out: Path, extra: list[str], base
) -> tuple[float, list[str]]:
    command = [
        sys.executable,
        "-m",
        "napari_em_unet.cli",
        "finetune",
        "--image",
        str(image_path),
        "--labels",
        str(corrections),
        "-o",
        str(out),
        *extra,
    ]
    if base:
        command += ["--model", base]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr)
    epochs = [
        line for line in proc.stderr.splitlines() if line.startswith("epoch ") and "loss" in line
    ]
    return time.perf_counter() - start, epochs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--eval-slices", default="10-19")
    parser.add_argument("--base", default=None, help="base model (default: bundled)")
    parser.add_argument(
        "--variants",
        default=",".join(str(i) for i in range(len(VARIANTS))),
        help="which variants to run, by index: "
        + "; ".join(f"{i}: {n}" for i, n in enumerate(VARIANTS)),
    )
    parser.add_argument(
        "--finetune-args",
        default="",
        help="extra arguments for every em-unet finetune run, e.g. '--learning-rate 1e-3'",
    )
    args = parser.parse_args()
    require_data()
    eval_slices = span(args.eval_slices)
    tmp = Path(tempfile.mkdtemp())
    raw = read_tiff(VNC / "raw.tif")
    truth = np.asarray(read_tiff(VNC / "membranes.tif").data)
    small_image, small_truth = binned(np.asarray(raw.data), truth)
    write_tiff(tmp / "binned.tif", small_image)  # no pixel size recorded
    data = {  # name: (image file, image, truth, pixel size given to the tools)
        "vnc": (VNC / "raw.tif", np.asarray(raw.data), truth, raw.pixel_size_nm),
        "binned": (tmp / "binned.tif", small_image, small_truth, None),
    }

    def score(path, dataset):
        _, image, truth, pixel_size = data[dataset]
        labels = np.stack(
            [
                r.result
                for r in segment_stack(
                    load_model(path), image, slices=eval_slices, pixel_size_nm=pixel_size
                )
            ]
        )
        return score_stack(labels, truth[eval_slices])

    def cells(s) -> tuple[str, str, str]:
        return f"{s.v_rand:.4f}", f"{s.v_info:.4f}", f"{s.pixel_error:.4f}"

    chosen = [list(VARIANTS)[i] for i in map(int, args.variants.split(","))]
    rows, logs, before = [], [], {}
    for dataset in dict.fromkeys(VARIANTS[name][0] for name in chosen):
        before[dataset] = score(args.base, dataset)
        rows.append(
            (
                f"bundled model, no fine-tuning [{dataset}]",
                "-",
                *cells(before[dataset]),
                "-",
                "-",
                "-",
            )
        )
    for index, name in enumerate(chosen):
        dataset, slices_text, extra = VARIANTS[name]
        image_path, _, truth_d, pixel_size = data[dataset]
        slices = span(slices_text)
        corrections = np.zeros(truth_d.shape, dtype=np.uint32)
        corrections[slices] = napari_like_labels(truth_d[slices])
        labels_path = tmp / f"corrections-{index}.tif"
        write_tiff(labels_path, corrections, pixel_size)
        wall, epochs = finetune(
            image_path,
            labels_path,
            tmp / f"ft-{index}.keras",
            extra + args.finetune_args.split(),
            args.base,
        )
        after = score(tmp / f"ft-{index}.keras", dataset)
        gain = after.v_rand - before[dataset].v_rand
        rows.append(
            (
                f"{name} [{dataset}]",
                slices_text,
                *cells(after),
                f"{gain:+.4f}",
                f"{gain / (1 - before[dataset].v_rand):.0%}",
                f"{wall / 60:.1f}",
            )
        )
        logs.append((name, epochs))
    print(f"fine-tuning benchmark ({machine()})")
    print(
        "corrections are napari-style touching instance labels of the corrected slices; "
        f"scores on slices {args.eval_slices}, far from them"
    )
    for key, text in DATASETS.items():
        print(f"  [{key}] {text}")
    print(
        table(
            rows,
            (
                "model",
                "corrected",
                "V_rand",
                "V_info",
                "pixel error",
                "V_rand change",
                "error removed",
                "minutes",
            ),
        )
    )
    for name, epochs in logs:
        print(f"\n{name}:\n" + "\n".join(epochs))


if __name__ == "__main__":
    main()
