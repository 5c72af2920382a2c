"""Cut seeds (``WatershedParams.seed_spacing``) against today's watershed, on the held-out
ISBI slices of fold models, each block of 5 slices tuned on the other block.

A fold model never saw the slices it is scored on (``scripts/train_bundled_model.py
--holdout 0-9``). Both watersheds run on the same membrane maps in the same run; the tuner
is the package's (``tune_watershed``), with and without the ``seed_spacing`` /
``rejoin_below`` step. Prints official V_rand / V_info, per slice and overall, and the
watershed's milliseconds per slice with the parameters chosen.

    python benchmarks/split_seeds.py FOLD0.keras:0-9 FOLD1.keras:10-19
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _common import ISBI, require_data


def membrane_maps(model_path: str, slices: list[int]) -> np.ndarray:
    from napari_em_unet.io.tiff import read_tiff
    from napari_em_unet.model.files import load_model
    from napari_em_unet.segmentation.preprocessing import normalize
    from napari_em_unet.segmentation.tiling import predict_slice

    loaded = load_model(model_path)
    volume = np.asarray(read_tiff(ISBI / "train-volume.tif").data)
    return np.stack(
        [
            predict_slice(loaded.keras_model, normalize(volume[s], loaded.info.percentiles))
            for s in slices
        ]
    )


def cross_block(maps, truths, cut_seeds: bool) -> dict:
    """Each half of the slices scored with the parameters tuned on the other half."""
    from napari_em_unet.learning.metrics import score_slice
    from napari_em_unet.segmentation.watershed import instances_from_probability, tune_watershed

    half = len(maps) // 2
    blocks = [list(range(half)), list(range(half, len(maps)))]
    scores, params, seconds = {}, [], []
    for block, other in (blocks, blocks[::-1]):
        chosen, _ = tune_watershed(
            [maps[i] for i in other], [truths[i] for i in other], cut_seeds=cut_seeds
        )
        params.append(chosen.to_dict())
        for i in block:
            started = time.perf_counter()
            labels = instances_from_probability(maps[i], chosen)
            seconds.append(time.perf_counter() - started)
            scores[i] = score_slice(labels, truths[i], grown=False)
    ordered = [scores[i] for i in range(len(maps))]
    return {
        "v_rand": float(np.mean([s.v_rand for s in ordered])),
        "v_info": float(np.mean([s.v_info for s in ordered])),
        "per_slice_v_rand": [round(s.v_rand, 4) for s in ordered],
        "ms_per_slice": round(1000 * float(np.median(seconds)), 1),
        "params": params,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folds", nargs="+", help="MODEL.keras:LO-HI (its held-out slices)")
    args = parser.parse_args()
    require_data()
    from napari_em_unet.io.tiff import read_tiff

    labels = np.asarray(read_tiff(ISBI / "train-labels.tif").data)
    totals = {False: [], True: []}
    for fold in args.folds:
        path, span = fold.rsplit(":", 1)
        lo, hi = (int(x) for x in span.split("-"))
        slices = list(range(lo, hi + 1))
        maps = membrane_maps(path, slices)
        for cut in (False, True):
            result = cross_block(maps, [labels[s] for s in slices], cut)
            totals[cut].extend(result["per_slice_v_rand"])
            name = "cut seeds" if cut else "today"
            print(json.dumps({"model": path, "slices": span, "watershed": name, **result}))
    for cut, values in totals.items():
        name = "cut seeds" if cut else "today"
        print(f"{name:>9}: mean official V_rand over {len(values)} slices {np.mean(values):.4f}")


if __name__ == "__main__":
    main()
