"""Fine-tuning settings on new data, compared seed by seed in one process.

The new-modality case of ``finetune.py`` (the FIB-SEM-like proxy of ``_common.fibsem_like``,
slices 0-4 corrected, far slices 10-19 scored, a base that never saw vnc2013), but with
the fine-tuning called in this process (the same ``train()`` that ``em-unet finetune``
runs; with the defaults it gives the command's figures to four decimals) and one or more
settings changed against the defaults:

    python benchmarks/finetune_settings.py --base bundled-5b8bd3e.keras --seeds 0,1,2 \\
        --setting defaults='{}' --setting last-weights='{"average_last": 0}'

Each ``--setting`` is a name and TrainConfig changes as JSON. ``--oracle`` also scores every
candidate the verdict weighed on the far slices themselves (at the model's scale; for
analysis only: nothing may be chosen by it). Runs are appended to ``--results`` (JSON lines)
and skipped when already there.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from _common import VNC, fibsem_like, machine, require_data, table

from napari_em_unet.generators import drain
from napari_em_unet.io.tiff import read_tiff
from napari_em_unet.learning import finetuning
from napari_em_unet.learning.config import TrainConfig
from napari_em_unet.learning.metrics import score_slice
from napari_em_unet.learning.training import train
from napari_em_unet.model.files import load_model
from napari_em_unet.segmentation.pipeline import segment_stack
from napari_em_unet.segmentation.preprocessing import zoom_to
from napari_em_unet.segmentation.tiling import predict_slice
from napari_em_unet.segmentation.watershed import instances_from_probability

CORRECTED, FAR, PIXEL_NM = range(5), list(range(10, 20)), 10.0
MEASURE = finetuning.BaseComparison.candidates


def proxy() -> tuple[np.ndarray, np.ndarray]:
    raw = read_tiff(VNC / "raw.tif")
    membranes = np.asarray(read_tiff(VNC / "membranes.tif").data)
    return fibsem_like(np.asarray(raw.data), membranes, raw.pixel_size_nm)


def far_scores(model, image, truth) -> list[float]:
    results = segment_stack(model, image, slices=FAR, pixel_size_nm=PIXEL_NM)
    return [score_slice(r.result, truth[s]).v_rand for s, r in zip(FAR, results, strict=True)]


def watch_candidates(image, truth, base, found: list) -> None:
    """Score each blend the verdict weighs on the far slices too (``--oracle``)."""
    planes = finetuning.model_scale_planes(
        image,
        FAR,
        factor=PIXEL_NM / base.info.pixel_size_nm,
        percentiles=base.info.percentiles,
    )
    truths = [zoom_to(truth[s], p.shape, order=0) for s, p in zip(FAR, planes, strict=True)]

    def candidates(self, model, base_weights, tuned_weights, tune):
        result = MEASURE(self, model, base_weights, tuned_weights, tune)
        for blend in (0.0, *self.config.blends):
            model.set_weights(finetuning.blended(base_weights, tuned_weights, blend))
            probabilities = [predict_slice(model, p) for p in planes]
            for name, params in (("base", self.params), ("re-tuned", result[1])):
                if params is not None:
                    v = np.mean(
                        [
                            score_slice(instances_from_probability(p, params), t).v_rand
                            for p, t in zip(probabilities, truths, strict=True)
                        ]
                    )
                    found.append((blend, name, round(float(v), 4)))
        model.set_weights(tuned_weights)
        return result

    finetuning.BaseComparison.candidates = candidates


def run(name, changes, seed, base_path, image, truth, oracle) -> dict:
    base = load_model(base_path)
    corrections = np.zeros(truth.shape, np.uint32)
    corrections[list(CORRECTED)] = truth[list(CORRECTED)]
    found: list = []
    if oracle:
        watch_candidates(image, truth, base, found)
    config = TrainConfig().replace(**{**changes, "seed": seed})
    started = time.perf_counter()
    result = drain(train(image, corrections, base=base, pixel_size_nm=PIXEL_NM, config=config))
    seconds = time.perf_counter() - started
    after = far_scores(result.model, image, truth)
    return {
        "setting": name,
        "changes": changes,
        "seed": seed,
        "base": str(base_path),
        "far_mean": float(np.mean(after)),
        "far": [round(v, 4) for v in after],
        "train_s": round(seconds, 1),
        "verdict": result.verdict.reason if result.verdict else None,
        "oracle": found,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="a model that never saw vnc2013")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--setting", action="append", default=[], help="NAME=JSON")
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--results", default="finetune-settings.jsonl")
    args = parser.parse_args()
    require_data()
    settings = [s.partition("=") for s in args.setting] or [("defaults", "=", "{}")]
    image, truth = proxy()
    results = Path(args.results)
    done = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.is_file() else []
    )
    for name, _, changes in settings:
        for seed in (int(s) for s in args.seeds.split(",")):
            if any(d["setting"] == name and d["seed"] == seed for d in done):
                continue
            record = run(name, json.loads(changes), seed, args.base, image, truth, args.oracle)
            with open(results, "a") as fh:
                fh.write(json.dumps(record) + "\n")
            done.append(record)
    rows = {}
    for d in done:
        rows.setdefault(d["setting"], {})[d["seed"]] = d["far_mean"]
    seeds = sorted({d["seed"] for d in done})
    print(f"fine-tuning settings on the FIB-SEM-like proxy ({machine()}); far slices 10-19")
    print(
        table(
            [
                (
                    name,
                    *(f"{by_seed[s]:.4f}" if s in by_seed else "" for s in seeds),
                    f"{np.mean(list(by_seed.values())):.4f}",
                )
                for name, by_seed in rows.items()
            ],
            ("setting", *(f"seed {s}" for s in seeds), "mean"),
        )
    )


if __name__ == "__main__":
    main()
