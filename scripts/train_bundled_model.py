"""Train the shipped model (or one cross-validation fold model) exactly as documented.

The recipe (docs/design.md, "The bundled model"): ISBI 2012 slices plus all of vnc2013,
resampled to ISBI's 4 nm, half of the training patches from each volume; a U-Net of
``--base-filters`` filters and depth 4 with batch norm; augmentation for other microscopes
(scale, contrast, gamma, blur, noise) and section defects (faded sections, missing bands);
a fixed schedule (Adam, cosine decay, no epoch selection, nothing held out for it).
A second stage (``--warm-start`` the first stage's model, ``--no-vnc``, 500 steps at a
fifth of the learning rate) sharpens the ISBI maps but did not raise the held-out score
(docs/design.md, "A second, ISBI-only stage"): the shipped model has one stage.

The watershed parameters are not tuned on the training data: ``--postprocessing`` stores
the ones cross-validation chose (tuned on out-of-fold predictions, see
benchmarks/benchmark.py). The git commit of the code is recorded in the model.

    python scripts/train_bundled_model.py -o src/napari_em_unet/models/isbi2012_unet.keras \\
        --postprocessing /work/ml-artifacts/cv/postprocessing.json
    python scripts/train_bundled_model.py --holdout 0-9 -o /work/ml-artifacts/fold0.keras
    python scripts/train_bundled_model.py --warm-start fold0.keras --no-vnc --steps 500 \\
        --learning-rate 2e-4 --seed 1 --holdout 0-9 -o fold0-stage2.keras
    python scripts/train_bundled_model.py --set-postprocessing P.json [--views 1 0.67] \
        -o M.keras  # no training
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EM_UNET_SHARED_DATA", ROOT.parent / "shared" / "data")).resolve()


def code_version() -> dict:
    """The git commit of this checkout and whether tracked files differ from it."""

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def slice_range(text: str | None) -> list[int]:
    if not text:
        return []
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def arguments(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-o", "--output", required=True)
    p.add_argument("--holdout", default="", help="ISBI slices left out (a CV fold), e.g. 0-4")
    p.add_argument("--no-vnc", action="store_true", help="train on ISBI only")
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--patch-size", type=int, default=256)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--base-filters", type=int, default=12)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument(
        "--light-decoder", action="store_true", help="added skips, one conv per decoder level"
    )
    p.add_argument(
        "--separation-weight",
        type=float,
        default=0.0,
        help="the U-Net paper's w0 on membranes between nearby cells (0: off)",
    )
    p.add_argument("--extra-share", type=float, default=0.5)
    p.add_argument("--elastic", action="store_true", help="add elastic deformation (slower)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--average-last",
        type=float,
        default=0.0,
        help="final weights: the mean of the epochs in this last share of the run, with "
        "batch-norm statistics re-measured (0: the last weights)",
    )
    p.add_argument(
        "--warm-start",
        default=None,
        metavar="MODEL",
        help="start from this model's weights (a second stage, see above)",
    )
    p.add_argument(
        "--postprocessing", default=None, help="JSON file with the watershed parameters to store"
    )
    p.add_argument(
        "--set-postprocessing",
        default=None,
        metavar="JSON",
        help="do not train: store these watershed parameters in the -o model",
    )
    p.add_argument(
        "--views",
        type=float,
        nargs="+",
        default=None,
        help="with --set-postprocessing: also store these view scales (ModelInfo.view_scales)",
    )
    return p.parse_args(argv)


def set_postprocessing(model_path: str, params_path: str, views=None) -> int:
    """Store cross-validation's instance step (and second view) in an already trained model."""
    from napari_em_unet.model.files import load_model, save_model

    model = load_model(model_path)
    model.info.postprocessing = json.loads(Path(params_path).read_text())
    model.info.trained_on[-1]["postprocessing"] = (
        "tuned on out-of-fold predictions (ISBI slices no fold model saw) by "
        "benchmarks/benchmark.py or benchmarks/learned_edges.py"
    )
    if views is not None:
        model.info.view_scales = list(views)
    save_model(model.keras_model, model.info, model_path)
    shown = {k: v for k, v in model.info.postprocessing.items() if k != "edge_rule"}
    print(f"stored {shown} (views {model.info.view_scales}) in {model_path}")
    return 0


def main(argv=None) -> int:
    from napari_em_unet.io.tiff import read_tiff
    from napari_em_unet.learning.training import TrainConfig, TrainingSource, train
    from napari_em_unet.model.files import load_model, save_model
    from napari_em_unet.model.unet import UNetConfig

    args = arguments(argv)
    if args.set_postprocessing:
        return set_postprocessing(args.output, args.set_postprocessing, args.views)
    version = code_version()  # now: the checkout may change while this trains
    isbi = read_tiff(DATA / "isbi2012" / "train-volume.tif")
    isbi_labels = np.asarray(read_tiff(DATA / "isbi2012" / "train-labels.tif").data)
    holdout = slice_range(args.holdout)
    slices = [s for s in range(isbi_labels.shape[0]) if s not in holdout]
    extra = []
    if not args.no_vnc:
        vnc = read_tiff(DATA / "vnc2013" / "raw.tif")
        vnc_labels = np.asarray(read_tiff(DATA / "vnc2013" / "membranes.tif").data)
        extra.append(
            TrainingSource(
                np.asarray(vnc.data),
                vnc_labels,
                vnc.pixel_size_nm,
                "vnc2013 raw.tif / membranes.tif",
            )
        )
    steps_per_epoch = 100
    config = TrainConfig(
        epochs=max(1, args.steps // steps_per_epoch),
        steps_per_epoch=steps_per_epoch,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.learning_rate,
        validation_fraction=0.0,
        tune_postprocessing=False,
        extra_share=args.extra_share,
        separation_weight=args.separation_weight,
        elastic=args.elastic,
        seed=args.seed,
        average_last=args.average_last,
        architecture=UNetConfig(
            base_filters=args.base_filters, depth=args.depth, light_decoder=args.light_decoder
        ),
    )
    started = time.perf_counter()
    gen = train(
        np.asarray(isbi.data),
        isbi_labels,
        slices=slices,
        pixel_size_nm=isbi.pixel_size_nm,
        config=config,
        name="isbi2012_vnc2013_unet",
        source="isbi2012 train-volume.tif / train-labels.tif",
        extra=extra,
        warm_start=load_model(args.warm_start) if args.warm_start else None,
    )
    result = _drain(gen, started)
    info = result.model.info
    info.trained_on[-1]["code_version"] = version
    info.trained_on[-1]["command"] = "python scripts/train_bundled_model.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    info.trained_on[-1]["minutes"] = round((time.perf_counter() - started) / 60, 1)
    info.validation = {"note": "no epoch selection; see docs/design.md for cross-validated scores"}
    if args.postprocessing:
        info.postprocessing = json.loads(Path(args.postprocessing).read_text())
    save_model(result.model.keras_model, info, args.output)
    print(f"saved {args.output} after {info.trained_on[-1]['minutes']} min", flush=True)
    return 0


def _drain(gen, started):
    from napari_em_unet.learning.training import EpochProgress

    while True:
        try:
            record = next(gen)
        except StopIteration as done:
            return done.value
        if isinstance(record, EpochProgress):
            print(
                f"epoch {record.epoch}/{record.epochs} loss {record.loss:.4f} "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )


if __name__ == "__main__":
    sys.exit(main())
