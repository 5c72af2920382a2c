"""The one benchmark: official ISBI accuracy, cross-validated, and seconds per slice.

Accuracy is the ISBI 2012 leaderboard's V_rand / V_info after border thinning
(``napari_em_unet.learning.metrics``) of the instance output, by blocked cross-validation
over ISBI slices 0-19. Each fold model (``--folds``, made by
``scripts/train_bundled_model.py --holdout``: the shipped recipe and fixed schedule, no
epoch selection) was trained without a contiguous block of slices (``--holdouts``, by
default 0-9 and 10-19 for two models). Those slices are scored in blocks of 5; for each
block:

* the network is the fold model that never saw it (or a random forest fitted on the same
  training slices as that model, for the baseline);
* the instance step's parameters are tuned on the out-of-fold maps of the *other* blocks
  (each made by a model that never saw them), never on the block itself: by default the
  seeded watershed and the mutex watershed are both tuned there and the better of the two
  on those blocks is used (``--instance-step``);
* the block is segmented with them and scored. No figure of the new recipe or the forest
  saw its slices in training, selection or tuning; the previous bundled model's figures
  are labelled with what it saw.

The test-time flips row is tuned like the row without flips, on the other blocks' plain
maps, because ``em-unet segment --flips`` uses the model's stored watershed, which was
tuned without them (until 2026-12-05 this row was tuned on the flipped maps).

The parameters tuned on all out-of-fold maps are what the shipped model stores
(``--write-postprocessing``); they meet data nobody tuned on, so their merging is capped
(``--stored-max-merge``, default 0.7), where each held-out block's tuning is not. Speed:
``em-unet segment`` end to end on the 30-slice ISBI test volume, per slice after the
first, against the classic U-Net's bare network in the same run (as benchmarks/speed.py),
medians of ``--repeats`` alternating rounds.

    python benchmarks/benchmark.py --folds F0.keras F1.keras [--holdouts 0-9 10-19] \\
        [--first-stage S0.keras S1.keras] [--model M.keras] [--write-postprocessing P.json] \\
        [--more-folds F0b.keras F1b.keras ...] [--cache DIR] [--repeats 2] \\
        [--learned-views 1 0.67]

``--learned-views`` adds the bundled model's instance step since 2026-12-06 (the maps of
every pair averaged over those views, the learned edge rule): its steps are fitted per
block on all pairs as ``learned_edges.py`` does, which also writes what the model stores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

import numpy as np
from _common import ISBI, ROOT, VNC, machine, require_data, table

from napari_em_unet.io.tiff import read_tiff
from napari_em_unet.learning.metrics import score_stack
from napari_em_unet.segmentation.preprocessing import normalize
from napari_em_unet.segmentation.watershed import (
    UNSEEN_DATA_MAX_MERGE,
    WatershedParams,
    instances_from_probability,
    tune_instance_step,
    tune_watershed,
)

ISBI_SLICES = 20
BLOCK = 5
HOLDOUTS: list[list[int]] = []  # the slices each fold model never saw
FOLDS: list[list[int]] = []  # blocks of 5 of those slices, scored one by one
PREVIOUS_COMMIT = "5ce5730"  # the bundled model before issue 8: ISBI 0-15, selected on 16-19


def arguments():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--folds",
        nargs="+",
        required=True,
        help="fold models, each trained without one block of ISBI slices",
    )
    p.add_argument(
        "--holdouts",
        nargs="+",
        default=None,
        help="the slices each fold model left out, e.g. 0-9 10-19 (default: 0-19 "
        "split evenly over the models, in order)",
    )
    p.add_argument("--model", default=None, help="the shipped model (default: bundled)")
    p.add_argument("--write-postprocessing", default=None)
    p.add_argument(
        "--more-folds",
        nargs="+",
        default=[],
        help="more fold models of the same recipe (other seeds), one set per --folds set in "
        "the same order; their out-of-fold maps join the tuning of the stored parameters "
        "only (the held-out rows are --folds')",
    )
    p.add_argument(
        "--stored-max-merge",
        type=float,
        default=UNSEEN_DATA_MAX_MERGE,
        help="the highest merge_below of the parameters tuned on all out-of-fold maps (the "
        "ones a shipped model stores); 1 for no cap",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--skip-forest", action="store_true")
    p.add_argument("--skip-flips", action="store_true", help="no test-time flips row")
    p.add_argument(
        "--first-stage",
        nargs="+",
        default=None,
        help="the fold models before an ISBI-only second stage (--warm-start), "
        "for a row of what that stage adds",
    )
    p.add_argument(
        "--cut-seeds",
        action="store_true",
        help="let the watershed tuner cut seeds (seed_spacing / rejoin_below) for the U-Net "
        "rows; the random forest's row keeps today's grid",
    )
    p.add_argument(
        "--instance-step",
        choices=("seeded", "mutex", "best"),
        default="best",
        help="the U-Net rows' instance step, tuned on the other blocks: the seeded watershed, "
        "the mutex watershed, or the better of the two there (default); the random forest's "
        "row keeps the seeded watershed",
    )
    p.add_argument(
        "--learned-views",
        type=float,
        nargs="+",
        default=None,
        metavar="SCALE",
        help="also the bundled model's instance step: the maps averaged over these views "
        "(1 0.67) and the learned edge rule, each block's step fitted on the other blocks of "
        "every pair (benchmarks/learned_edges.py's protocol; needs scikit-learn)",
    )
    p.add_argument("--skip-speed", action="store_true", help="accuracy only")
    p.add_argument("--skip-accuracy", action="store_true", help="speed only")
    p.add_argument(
        "--cache",
        default=None,
        help="folder keeping the random forest's out-of-fold maps and the previous "
        "model's scores between runs (they do not depend on the new models)",
    )
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "benchmark.json"))
    return p.parse_args()


def unet_probabilities(path, image, slices, flips=False):
    from napari_em_unet.model.files import load_model
    from napari_em_unet.segmentation.tiling import predict_stack

    model = load_model(path)
    return {
        r.index: r.probability
        for r in predict_stack(model, image, slices=slices, pixel_size_nm=4.0, flips=flips)
    }


def slice_range(text: str) -> list[int]:
    lo, _, hi = text.partition("-")
    return list(range(int(lo), int(hi or lo) + 1))


def set_folds(args) -> None:
    if args.holdouts:
        HOLDOUTS.extend(slice_range(t) for t in args.holdouts)
    else:
        size = ISBI_SLICES // len(args.folds)
        HOLDOUTS.extend(list(range(k, k + size)) for k in range(0, ISBI_SLICES, size))
    if len(HOLDOUTS) != len(args.folds):
        sys.exit("error: one --holdouts range per fold model")
    if len(args.more_folds) % len(args.folds):
        sys.exit(f"error: --more-folds takes whole sets of {len(args.folds)} fold models")
    covered = sorted(s for held in HOLDOUTS for s in held)
    FOLDS.extend(covered[i : i + BLOCK] for i in range(0, len(covered), BLOCK))


def forest_probabilities(image, truth, fold):
    from baseline_random_forest import RandomForestBaseline

    train = [s for s in range(image.shape[0]) if s not in fold]
    forest = RandomForestBaseline().fit(
        [normalize(image[s]) for s in train], [truth[s] for s in train]
    )
    return {s: forest.membrane_probability(normalize(image[s])) for s in fold}


def cross_validate(
    oof: dict[int, np.ndarray], truth: np.ndarray, cut_seeds=False, tune_on=None, step="seeded"
) -> dict:
    """Per fold: watershed tuned on the other folds' out-of-fold maps, scored on this fold.

    ``tune_on``: other out-of-fold maps of the same slices to tune on instead (the plain
    maps for the flipped ones: `--flips` segments with the model's stored watershed, which
    was tuned without flips)."""
    tune_on = oof if tune_on is None else tune_on
    rows, labels = [], {}
    for fold in FOLDS:
        others = [s for s in sorted(tune_on) if s not in fold]
        params, _ = tuned([tune_on[s] for s in others], [truth[s] for s in others], step, cut_seeds)
        for s in fold:
            labels[s] = instances_from_probability(oof[s], params)
        score = score_stack(np.stack([labels[s] for s in fold]), truth[fold])
        rows.append(
            {
                "slices": f"{fold[0]}-{fold[-1]}",
                "v_rand": score.v_rand,
                "v_info": score.v_info,
                "params": params.to_dict(),
            }
        )
    every = sorted(oof)
    pooled = score_stack(np.stack([labels[s] for s in every]), truth[every])
    maps = score_stack(np.stack([oof[s] for s in every]), truth[every], grown=False)
    return {
        "folds": rows,
        "v_rand": pooled.v_rand,
        "v_info": pooled.v_info,
        "per_slice_v_rand": [s.v_rand for s in pooled.per_slice],
        "probability_map": {"v_rand": maps.v_rand, "v_info": maps.v_info},
    }


def tuned(maps: list, truths: list, step: str, cut_seeds: bool = False, max_merge: float = 1.0):
    """The instance step's parameters tuned on ``maps``: ``step`` "seeded" (the seeded
    watershed), "mutex" or "best" (the better of the two on ``maps``)."""
    if step == "best":
        return tune_instance_step(maps, truths, cut_seeds=cut_seeds, max_merge=max_merge)
    return tune_watershed(
        maps, truths, cut_seeds=cut_seeds, mutex=step == "mutex", max_merge=max_merge
    )


def previous_model_file(tmp: Path) -> Path:
    path = tmp / "previous_bundled.keras"
    blob = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "show",
            f"{PREVIOUS_COMMIT}:src/napari_em_unet/models/isbi2012_unet.keras",
        ],
        capture_output=True,
        check=True,
    ).stdout
    path.write_bytes(blob)
    return path


def previous_model_scores(path, image, truth, vnc) -> dict:
    """Not cross-validated: it trained on ISBI 0-15 and chose epoch and watershed on 16-19."""
    from napari_em_unet.model.files import load_model
    from napari_em_unet.segmentation.pipeline import segment_stack

    model = load_model(path)
    out = {}
    for name, img, gt, px in (
        ("isbi 16-19 (its selection slices)", image[16:], truth[16:], 4.0),
        ("vnc2013 0-19 (never trained on)", *vnc),
    ):
        labels = np.stack([r.result for r in segment_stack(model, img, pixel_size_nm=px)])
        s = score_stack(labels, gt)
        out[name] = {"v_rand": s.v_rand, "v_info": s.v_info}
    return out


def cached(args, name: str, compute):
    """``compute()``, or what an earlier run with the same ``--cache`` folder computed."""
    path = Path(args.cache) / name if args.cache else None
    if path is not None and path.exists():
        if path.suffix == ".npz":
            with np.load(path) as data:
                return {int(k): data[k] for k in data.files}
        return json.loads(path.read_text())
    value = compute()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".npz":
            np.savez_compressed(path, **{str(k): v for k, v in value.items()})
        else:
            path.write_text(json.dumps(value))
    return value


def accuracy(args, tmp: Path) -> dict:
    image = np.asarray(read_tiff(ISBI / "train-volume.tif").data)
    truth = np.asarray(read_tiff(ISBI / "train-labels.tif").data)
    results, oof = {}, {}
    variants = [("new", args.folds, False)]
    if not args.skip_flips:
        variants.append(("new, flips", args.folds, True))
    if args.first_stage:
        variants.append(("first stage", args.first_stage, False))
    for key, folds, flips in variants:
        maps = {}
        for path, held in zip(folds, HOLDOUTS, strict=True):
            maps.update(unet_probabilities(path, image, held, flips=flips))
        oof[key] = maps
        plain = oof["new"] if flips else None
        results[key] = cross_validate(
            maps, truth, cut_seeds=args.cut_seeds, tune_on=plain, step=args.instance_step
        )
        print(f"cross-validated {key} done", flush=True)
    if args.learned_views:
        results["views + learned rule"] = learned_rule_scores(args, image, truth)
        print("cross-validated views + learned rule done", flush=True)
    if not args.skip_forest:
        key = "_".join(f"{h[0]}-{h[-1]}" for h in HOLDOUTS)
        maps = cached(
            args,
            f"forest_oof_{key}.npz",
            lambda: {
                s: p
                for held in HOLDOUTS
                for s, p in forest_probabilities(image, truth, held).items()
            },
        )
        results["forest"] = cross_validate(maps, truth)
        print("cross-validated random forest done", flush=True)
    vnc = (
        np.asarray(read_tiff(VNC / "raw.tif").data),
        np.asarray(read_tiff(VNC / "membranes.tif").data),
        4.6,
    )
    previous = previous_model_file(tmp)
    results["previous"] = cached(
        args, "previous_scores.json", lambda: previous_model_scores(previous, image, truth, vnc)
    )
    every = sorted(oof["new"])
    pooled = [oof["new"]] + more_out_of_fold_maps(args, image)
    params, score = tuned(
        [maps[s] for maps in pooled for s in every],
        [truth[s] for _ in pooled for s in every],
        args.instance_step,
        args.cut_seeds,
        args.stored_max_merge,
    )
    results["shipped_postprocessing"] = {
        "params": params.to_dict(),
        "tuned_on": f"out-of-fold maps of ISBI {every} from {len(pooled)} set(s) of fold models",
        "v_rand_on_them": score,
    }
    if args.write_postprocessing:
        Path(args.write_postprocessing).write_text(json.dumps(params.to_dict()))
    return results


def learned_rule_scores(args, image, truth) -> dict:
    """The bundled model's instance step held out, on every pair of fold models: views
    averaged, borders decided by the learned rule (``learned_edges.py``); per block and
    pooled, the mean over the pairs."""
    import learned_edges

    # learned_edges reads the folds from the imported module, not this one run as a script.
    learned_edges.HOLDOUTS[:], learned_edges.FOLDS[:] = HOLDOUTS, FOLDS
    options = argparse.Namespace(views=args.learned_views, cache=args.cache)
    paths = args.folds + args.more_folds
    pairs = [paths[i : i + len(args.folds)] for i in range(0, len(paths), len(args.folds))]
    sets = [learned_edges.pair_maps(options, pair, image) for pair in pairs]
    labels = [{} for _ in sets]
    for block in FOLDS:
        step, _ = learned_edges.block_steps(options, paths, sets, truth, block)
        for maps, out in zip(sets, labels, strict=True):
            out.update({s: instances_from_probability(maps[s], step) for s in block})
    every = sorted(s for block in FOLDS for s in block)
    runs = [score_stack(np.stack([out[s] for s in every]), truth[every]) for out in labels]
    maps = [score_stack(np.stack([m[s] for s in every]), truth[every], grown=False) for m in sets]
    per_slice = np.mean([[p.v_rand for p in run.per_slice] for run in runs], axis=0)
    return {
        "folds": [
            {
                "slices": f"{b[0]}-{b[-1]}",
                "v_rand": float(np.mean([per_slice[every.index(s)] for s in b])),
            }
            for b in FOLDS
        ],
        "v_rand": float(np.mean([r.v_rand for r in runs])),
        "v_info": float(np.mean([r.v_info for r in runs])),
        "per_pair_v_rand": [r.v_rand for r in runs],
        "probability_map": {"v_rand": float(np.mean([m.v_rand for m in maps]))},
        "views": args.learned_views,
    }


def more_out_of_fold_maps(args, image) -> list[dict]:
    """The out-of-fold maps of each ``--more-folds`` set: the stored parameters tuned on
    several runs of the recipe depend less on one run's few large-cell decisions."""
    n = len(args.folds)
    sets = [args.more_folds[i : i + n] for i in range(0, len(args.more_folds), n)]
    out = []
    for paths in sets:
        maps = {}
        for path, held in zip(paths, HOLDOUTS, strict=True):
            maps.update(unet_probabilities(path, image, held))
        out.append(maps)
    return out


def time_cli(model: Path | None, volume: Path, out: Path, *extra) -> float:
    command = [
        sys.executable,
        "-m",
        "napari_em_unet.cli",
        "segment",
        str(volume),
        "-o",
        str(out),
        "--overwrite",  # the rounds write the same file
        *extra,
    ] + (["--model", str(model)] if model else [])
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def speed(args, tmp: Path) -> dict:
    import tifffile
    from speed import classic_unet, time_classic

    from napari_em_unet.model.backend import tensorflow_module

    tf = tensorflow_module()
    volume = tifffile.imread(ISBI / "test-volume.tif")
    net = classic_unet()
    fn = tf.function(lambda x: net(x, training=False))
    batch = [tf.constant((volume[i] / 255.0).astype(np.float32)[None, ..., None]) for i in range(4)]
    fn(batch[0])
    one = tmp / "one.tif"
    tifffile.imwrite(one, volume[:1], imagej=True, resolution=(250, 250), metadata={"unit": "um"})
    runs = {
        "new": (args.model, ()),
        "new, flips": (args.model, ("--flips",)),
        "previous": (tmp / "previous_bundled.keras", ()),
    }
    times = {"classic": []} | {k: [] for k in runs}
    for _ in range(args.repeats):
        times["classic"].append(time_classic(fn, batch))
        for name, (model, extra) in runs.items():
            whole = time_cli(model, ISBI / "test-volume.tif", tmp / "out.tif", *extra)
            first = time_cli(model, one, tmp / "out1.tif", *extra)
            times[name].append((whole - first) / (volume.shape[0] - 1))
    out = {k: statistics.median(v) for k, v in times.items()}
    if not args.skip_forest:
        out["forest"] = forest_seconds(volume)
    return out


def forest_seconds(volume) -> float:
    """Features, forest and watershed per slice (fitted on 3 slices: the fit is not timed)."""
    from baseline_random_forest import RandomForestBaseline

    image = np.asarray(read_tiff(ISBI / "train-volume.tif").data)
    truth = np.asarray(read_tiff(ISBI / "train-labels.tif").data)
    forest = RandomForestBaseline().fit([normalize(p) for p in image[:3]], list(truth[:3]))
    start = time.perf_counter()
    for plane in volume[:4]:
        instances_from_probability(forest.membrane_probability(normalize(plane)), WatershedParams())
    return (time.perf_counter() - start) / 4


def report(acc: dict, sec: dict) -> None:
    print(f"benchmark ({machine()})")
    print(
        "accuracy: official ISBI V_rand / V_info (after thinning) of the instance output; "
        f"blocked CV, ISBI slices {FOLDS[0][0]}-{FOLDS[-1][-1]} in blocks of {BLOCK}, each "
        "block held out from training (fold models without "
        f"{', '.join(f'{h[0]}-{h[-1]}' for h in HOLDOUTS)}) and from watershed tuning"
    )
    n = sum(len(f) for f in FOLDS)
    header = (
        "method",
        *(f"block {f[0]}-{f[-1]}" for f in FOLDS),
        f"V_rand ({n} slices)",
        "V_info",
        "prob. map V_rand",
        "s / slice",
        "speed-up",
    )
    rows = []
    names = {
        "forest": "random forest (ilastik-style features)",
        "new": "new bundled recipe",
        "new, flips": "new bundled recipe + test-time flips (watershed tuned without)",
        "first stage": "new bundled recipe, first stage only",
        "views + learned rule": "new bundled recipe, views + learned edge rule (as shipped), "
        "mean over the pairs",
    }
    # The speed rows time the bundled model (--model): with --learned-views that is the
    # row of its step, not the one-view row of the recipe.
    timed = {key: key for key in names}
    if "views + learned rule" in acc:
        timed.update({"views + learned rule": "new", "new": None})
    for key, label in names.items():
        if key not in acc:
            continue
        r, clock = acc[key], timed[key]
        rows.append(
            (
                label,
                *(f"{f['v_rand']:.4f}" for f in r["folds"]),
                f"{r['v_rand']:.4f}",
                f"{r['v_info']:.4f}",
                f"{r['probability_map']['v_rand']:.4f}",
                f"{sec.get(clock, float('nan')):.3f}",
                f"{sec['classic'] / sec[clock]:.1f}x" if clock in sec else "-",
            )
        )
    rows.append(
        (
            "classic U-Net (31 M params), network only",
            *["-"] * (len(FOLDS) + 3),
            f"{sec['classic']:.3f}",
            "1.0x",
        )
    )
    print(table(rows, header))
    print(
        "previous bundled model (not cross-validated; trained on ISBI 0-15, epoch and "
        f"watershed chosen on 16-19): {json.dumps(acc['previous'])}; "
        f"{sec['previous']:.3f} s / slice ({sec['classic'] / sec['previous']:.1f}x)"
    )
    if "views + learned rule" in acc:
        runs = acc["views + learned rule"]["per_pair_v_rand"]
        print("views + learned rule, V_rand per pair:", " / ".join(f"{v:.4f}" for v in runs))
    # Since 2026-12-06 the bundled model stores learned_edges.py's step instead.
    print(
        "instance step tuned on all out-of-fold maps (--write-postprocessing):",
        json.dumps(acc["shipped_postprocessing"]),
    )


def main() -> None:
    args = arguments()
    require_data()
    if not (args.skip_forest or args.skip_accuracy) and find_spec("sklearn") is None:
        # Fail before the fold models' 15 minutes, not after them.
        sys.exit(
            "the random forest row needs scikit-learn: pip install -e '.[benchmarks]', "
            "or pass --skip-forest"
        )
    set_folds(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.skip_accuracy:
            previous_model_file(tmp)
            acc = None
        else:
            acc = accuracy(args, tmp)
        sec = (
            {"classic": float("nan"), "previous": float("nan")}
            if args.skip_speed
            else speed(args, tmp)
        )
    if acc is None:
        print(
            f"speed ({machine()}, medians of {args.repeats} rounds): "
            + ", ".join(f"{k} {v:.3f} s/slice ({sec['classic'] / v:.1f}x)" for k, v in sec.items())
        )
    else:
        report(acc, sec)
    out = Path(args.json)
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine(), "accuracy": acc, "seconds": sec}, indent=1))


if __name__ == "__main__":
    main()
