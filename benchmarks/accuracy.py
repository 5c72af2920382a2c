"""Accuracy of the bundled model next to an ilastik-style random-forest baseline.

ISBI 2012 slices 16-19 (never trained on; both methods tune their watershed there) and the
whole vnc2013 volume (another acquisition, 4.6 nm pixels; no training there at all).

    python benchmarks/accuracy.py [--model M.keras] [--vnc-slices 0-19]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import ISBI, ROOT, VNC, machine, require_data, table
from baseline_random_forest import RandomForestBaseline

from napari_em_unet.io.tiff import read_tiff
from napari_em_unet.learning.metrics import score_stack
from napari_em_unet.model.files import load_model
from napari_em_unet.segmentation.pipeline import segment_stack
from napari_em_unet.segmentation.preprocessing import normalize
from napari_em_unet.segmentation.watershed import (
    WatershedParams,
    instances_from_probability,
    tune_watershed,
)

VAL = [16, 17, 18, 19]


def unet_scores(model, image, truth, pixel_size):
    start = time.perf_counter()
    labels = np.stack([r.result for r in segment_stack(model, image, pixel_size_nm=pixel_size)])
    return score_stack(labels, truth), time.perf_counter() - start


def rf_scores(forest, params, image, truth):
    start = time.perf_counter()
    labels = np.stack([instances_from_probability(
        forest.membrane_probability(normalize(plane)), params) for plane in image])
    return score_stack(labels, truth), time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model file (default: bundled)")
    parser.add_argument("--vnc-slices", default="0-19")
    args = parser.parse_args()
    require_data()
    lo, hi = map(int, args.vnc_slices.split("-"))
    isbi = read_tiff(ISBI / "train-volume.tif")
    isbi_img, isbi_gt = np.asarray(isbi.data), np.asarray(read_tiff(ISBI / "train-labels.tif").data)
    vnc = read_tiff(VNC / "raw.tif")
    vnc_img = np.asarray(vnc.data)[lo : hi + 1]
    vnc_gt = np.asarray(read_tiff(VNC / "membranes.tif").data)[lo : hi + 1]

    model = load_model(args.model)
    u_isbi, t_isbi = unet_scores(model, isbi_img[VAL], isbi_gt[VAL], isbi.pixel_size_nm)
    u_vnc, t_vnc = unet_scores(model, vnc_img, vnc_gt, vnc.pixel_size_nm)

    start = time.perf_counter()
    train = [normalize(p) for p in isbi_img[:16]]
    forest = RandomForestBaseline().fit(train, list(isbi_gt[:16]))
    val_probs = [forest.membrane_probability(normalize(p)) for p in isbi_img[VAL]]
    params, _ = tune_watershed(val_probs, list(isbi_gt[VAL]), WatershedParams())
    rf_train_s = time.perf_counter() - start
    r_isbi, _ = rf_scores(forest, params, isbi_img[VAL], isbi_gt[VAL])
    r_vnc, _ = rf_scores(forest, params, vnc_img, vnc_gt)

    def row(name, a, b):
        return (name, f"{a.v_rand:.4f}", f"{a.v_info:.4f}", f"{a.pixel_error:.4f}",
                f"{b.v_rand:.4f}", f"{b.v_info:.4f}", f"{b.pixel_error:.4f}")

    print(f"accuracy benchmark ({machine()})")
    print(f"ISBI 2012 held-out slices {VAL}; vnc2013 slices {lo}-{hi} (zero-shot)")
    print(table([row(f"U-Net ({model.info.name})", u_isbi, u_vnc),
                 row("random forest (ilastik-style)", r_isbi, r_vnc)],
                ("method", "ISBI V_rand", "V_info", "pixel err", "VNC V_rand", "V_info",
                 "pixel err")))
    print(f"U-Net segmentation time: ISBI {t_isbi:.1f} s / {len(VAL)} slices, "
          f"VNC {t_vnc:.1f} s / {len(vnc_img)} slices; forest training {rf_train_s:.0f} s")
    print("per-slice ISBI V_rand, U-Net:", [round(s.v_rand, 4) for s in u_isbi.per_slice])
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "accuracy.json").write_text(json.dumps({
        "machine": machine(), "unet": {"isbi": u_isbi.to_dict(), "vnc": u_vnc.to_dict()},
        "random_forest": {"isbi": r_isbi.to_dict(), "vnc": r_vnc.to_dict()}}, indent=1))


if __name__ == "__main__":
    main()
