"""The learned edge rule for the mutex watershed, held out as the README protocol (issue 8).

The mutex step decides which touching fragments are one cell from each border's mean
probability (``segmentation/mutex.py``); the learned rule (``segmentation/edge_rule.py``)
decides from 15 measurements of the border and its two fragments on the same map. This
script fits the rule and measures it on ISBI slices no fitting saw. Fold-model pairs
(``--folds`` and any ``--more-folds``) give out-of-fold maps, each predicted at the
``--views`` scales and averaged as the product does (``ModelInfo.view_scales``; ``1
0.67``: the slice and the slice shrunk to 0.67). For each ISBI block of 5, on the other
blocks' maps of every pair: the mutex watershed is tuned (fragments, threshold, dark
cells), the trees are fitted on the edges whose two sides lie in known ground-truth cells,
and the rule's bias is tuned; then the block is segmented with them. Printed side by side,
per pair: the mutex step with its border rule (tuned the same way) and with the learned
rule. scikit-learn is needed here (``pip install scikit-learn``), not in the product.

The maps are predicted as the product predicts them: in bfloat16 on OpenVINO where the CPU
has it, else (or with ``EM_UNET_RUNTIME=tensorflow``) in TensorFlow's float32; the cache
keeps the two apart. The per-block steps are cached by fold models and views only: a cache
folder fits them once, on the maps of its first run. The bundled model's were fitted on
float32 maps (before the bfloat16 path existed), and a run on that cache scores the
bfloat16 maps with them, as the product segments.

``--score-only`` pairs are scored with the steps fitted on the others and take no part in
fitting (a pair trained after the rule was chosen: the clean figure). ``--write-postprocessing
P.json`` stores the instance step fitted on all the maps (what
``scripts/train_bundled_model.py --set-postprocessing`` puts in the bundled model).

    python benchmarks/learned_edges.py --folds F0.keras F1.keras [--more-folds ...] \\
        --holdouts 0-9 10-19 [--score-only G0.keras G1.keras] [--views 1 0.67] \\
        [--cache DIR] [--write-postprocessing P]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
from _common import ISBI, require_data
from benchmark import FOLDS, HOLDOUTS, cached, set_folds, tuned

from napari_em_unet.io.tiff import read_tiff
from napari_em_unet.learning.metrics import objects, score_slice
from napari_em_unet.segmentation.edge_rule import EdgeRule, edge_features
from napari_em_unet.segmentation.watershed import (
    EDGE_BIASES,
    WatershedParams,
    instances_from_probability,
    mutex_fragments,
)

TREES = {"max_iter": 200, "learning_rate": 0.05, "max_leaf_nodes": 15, "min_samples_leaf": 20}


def view_maps(path: str, image, slices, views: list[float]) -> dict[int, np.ndarray]:
    from napari_em_unet.model.files import load_model
    from napari_em_unet.segmentation.tiling import predict_stack

    model = load_model(path)
    model.info.view_scales = list(views)
    return {
        r.index: r.probability
        for r in predict_stack(model, image, slices=slices, pixel_size_nm=4.0)
    }


def known_edges(params, prob: np.ndarray, truth: np.ndarray):
    """The rule's measurements of every edge whose two fragments lie mostly in ground-truth
    cells, and whether those are one cell (1) or two (0)."""
    pieces = mutex_fragments(prob, params)
    frag = pieces.labels
    u, v, _, x = edge_features(frag, pieces.probability)
    gt = objects(truth)
    inside = gt > 0
    m = int(gt.max()) + 1
    keys, counts = np.unique(frag[inside].astype(np.int64) * m + gt[inside], return_counts=True)
    majority = np.zeros(int(frag.max()) + 1, np.int64)
    order = np.argsort(counts)  # the largest share is written last
    majority[keys[order] // m] = keys[order] % m
    known = (majority[u] > 0) & (majority[v] > 0)
    return x[known], (majority[u] == majority[v])[known].astype(int)


def rule_from_trees(classifier) -> EdgeRule:
    """A fitted ``HistGradientBoostingClassifier`` as the product's :class:`EdgeRule`."""
    trees = [predictors[0].nodes for predictors in classifier._predictors]
    width = max(len(t) for t in trees)

    def padded(name, dtype):
        out = np.zeros((len(trees), width), dtype)
        for i, tree in enumerate(trees):
            out[i, : len(tree)] = tree[name]
        return out

    leaf = padded("is_leaf", bool) | (np.arange(width) >= np.array([[len(t)] for t in trees]))
    return EdgeRule(
        float(np.ravel(classifier._baseline_prediction)[0]),
        np.where(leaf, 0, padded("feature_idx", np.int64)),
        np.where(leaf, 0.0, padded("num_threshold", np.float64)),
        np.where(leaf, 0, padded("left", np.int64)),
        np.where(leaf, 0, padded("right", np.int64)),
        np.where(leaf, padded("value", np.float64), 0.0),
    )


def fitted_step(maps: list, truths: list):
    """The mutex step tuned on ``maps``, the rule fitted on them, its bias tuned; and the
    border rule's parameters for comparison."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    params, _ = tuned(maps, truths, "mutex")
    edges = [known_edges(params, p, t) for p, t in zip(maps, truths, strict=True)]
    x = np.concatenate([e[0] for e in edges])
    y = np.concatenate([e[1] for e in edges])
    rule = rule_from_trees(HistGradientBoostingClassifier(**TREES, random_state=0).fit(x, y))

    def mean_score(bias):
        step = replace(params, edge_rule=rule, edge_bias=bias)
        return np.mean([v_rand(step, p, t) for p, t in zip(maps, truths, strict=True)])

    bias = max(EDGE_BIASES, key=mean_score)
    return replace(params, edge_rule=rule, edge_bias=bias), params


def v_rand(params, prob, truth) -> float:
    return score_slice(instances_from_probability(prob, params), truth, grown=False).v_rand


def views_tag(args) -> str:
    return "-".join(f"{v:g}" for v in args.views)


def pair_maps(args, pair: list[str], image) -> dict[int, np.ndarray]:
    """The out-of-fold maps of one pair of fold models (cached; those predicted in bfloat16,
    the product's default where the CPU has it, apart from TensorFlow's float32 ones)."""
    from napari_em_unet.model.openvino_runtime import available

    runtime = "_bf16" if available() else ""
    name = "oof2_" + "_".join(Path(p).stem for p in pair) + f"_v{views_tag(args)}{runtime}.npz"
    return cached(
        args,
        name,
        lambda: {
            s: m
            for path, held in zip(pair, HOLDOUTS, strict=True)
            for s, m in view_maps(path, image, held, args.views).items()
        },
    )


def block_steps(args, paths: list[str], sets: list[dict], truth, block: list[int]):
    """The learned and the border-rule step for ``block``, tuned and fitted on the other
    blocks' maps of every pair in ``sets`` (cached by the fold models and views)."""
    fitted_on = "_".join(Path(p).stem for p in paths) + f"_v{views_tag(args)}"
    others = [s for s in sorted(sets[0]) if s not in block]
    steps = cached(
        args,
        f"steps_{fitted_on}_{block[0]}.json",
        lambda: [
            step.to_dict()
            for step in fitted_step(
                [m[s] for m in sets for s in others], [truth[s] for _ in sets for s in others]
            )
        ],
    )
    learned, border = (WatershedParams.from_dict(d) for d in steps)
    return learned, border


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--folds", nargs="+", required=True)
    ap.add_argument("--more-folds", nargs="*", default=[])
    ap.add_argument("--score-only", nargs="*", default=[])
    ap.add_argument("--holdouts", nargs="+")
    ap.add_argument("--views", type=float, nargs="+", default=[1.0])
    ap.add_argument("--cache", help="folder for the out-of-fold maps")
    ap.add_argument("--write-postprocessing", metavar="JSON")
    args = ap.parse_args()
    require_data()
    set_folds(args)
    image = np.asarray(read_tiff(ISBI / "train-volume.tif").data)
    truth = np.asarray(read_tiff(ISBI / "train-labels.tif").data)
    paths = args.folds + args.more_folds
    size = len(args.folds)
    pairs = [paths[i : i + size] for i in range(0, len(paths), size)]
    extra = [args.score_only[i : i + size] for i in range(0, len(args.score_only), size)]
    sets = [pair_maps(args, pair, image) for pair in pairs]
    scored = sets + [pair_maps(args, pair, image) for pair in extra]
    rows = {"border rule": [{} for _ in scored], "learned rule": [{} for _ in scored]}
    for block in FOLDS:
        learned, border = block_steps(args, paths, sets, truth, block)
        print(f"block {block[0]}-{block[-1]}: {learned}, bias {learned.edge_bias}", flush=True)
        for i, maps in enumerate(scored):
            for s in block:
                rows["border rule"][i][s] = v_rand(border, maps[s], truth[s])
                rows["learned rule"][i][s] = v_rand(learned, maps[s], truth[s])
    every = sorted(s for block in FOLDS for s in block)
    for name, per_pair in rows.items():
        figures = [np.mean([scores[s] for s in every]) for scores in per_pair]
        print(
            f"\n{name}: " + " / ".join(f"{f:.4f}" for f in figures), f"mean {np.mean(figures):.4f}"
        )
        for pair, scores in zip(pairs + extra, per_pair, strict=True):
            print(f"  {Path(pair[0]).stem}: " + " ".join(f"{scores[s]:.3f}" for s in every))
    if args.write_postprocessing:
        learned, _ = fitted_step(
            [m[s] for m in sets for s in every], [truth[s] for _ in sets for s in every]
        )
        Path(args.write_postprocessing).write_text(json.dumps(learned.to_dict()))
        print(f"wrote {args.write_postprocessing}: bias {learned.edge_bias}")


if __name__ == "__main__":
    main()
