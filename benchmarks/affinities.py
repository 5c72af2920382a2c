"""Experiment: predicted affinities and a mutex watershed, against the shipped recipe.

Issue 8's strongest lever (docs/design.md, "Affinities and a mutex watershed"). Not product
code yet: it measures whether the lever pays before the package grows a second output.

``train`` runs ``scripts/train_bundled_model.py`` unchanged except that the U-Net gets a
second head of 8 affinity channels (is the pixel at this offset in the same cell? offsets
1, 3, 9 and 27 pixels up and left), trained beside the membrane head with the same
patches (targets from each augmented patch's cells, both classes weighted equally).
It writes ``PREFIX.full.keras`` (both heads) and ``PREFIX.keras`` (the membrane head
alone, in the package's format, so ``benchmark.py --folds`` scores it as usual).

``score`` segments held-out ISBI slices: fragments from the membrane map (a watershed
from the peaks of the interior's distance transform, ``min_distance`` apart), a graph of
fragments whose edge weight is the mean predicted affinity over every pixel pair that
joins them (all offsets), and a mutex watershed on that graph (Wolf et al. 2018: strongest
edges first; an attractive edge merges unless the two sides are mutually exclusive, a
repulsive one makes them so). ``--membrane-only`` (and any model without an affinity head)
is the control: the same fragments and graph, the edge weights from the membrane map
(nearest pixel pairs). Each block of 5 slices is segmented with the parameters that
score best on the other block (the grid below was fixed before fold 0 was scored).

    python benchmarks/affinities.py train --holdout 10-19 -o /work/ml-artifacts/aff/fold1
    python benchmarks/affinities.py score /work/ml-artifacts/aff/fold1 --slices 10-19
    python benchmarks/affinities.py score PREFIX --slices 10-19 --membrane-only  # the control
    python benchmarks/affinities.py score /work/ml-artifacts/cv/fold1 --slices 10-19  # any model
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import numpy as np
from _common import ISBI, ROOT, require_data

OFFSETS = ((-1, 0), (0, -1), (-3, 0), (0, -3), (-9, 0), (0, -9), (-27, 0), (0, -27))
GRID = {
    "bias": (0.4, 0.5, 0.6, 0.7),
    "min_distance": (16, 24, 32),
    "interior_threshold": (0.3, 0.5, 0.7),
}


# ----------------------------------------------------------------------------- targets
def _pairs(shape: tuple[int, int], offset: tuple[int, int]):
    """Index pairs (p, p + offset) inside an image of ``shape``: two tuples of slices."""
    (h, w), (dy, dx) = shape, offset
    here = (slice(max(0, -dy), h - max(0, dy)), slice(max(0, -dx), w - max(0, dx)))
    there = (slice(max(0, dy), h + min(0, dy)), slice(max(0, dx), w + min(0, dx)))
    return here, there


def affinity_targets(membrane: np.ndarray, weight: np.ndarray):
    """(H, W, C) affinities (1 = same cell) and loss weights from one patch's membrane
    target; pairs leaving the patch or touching a pixel without data weigh 0."""
    from scipy import ndimage

    cells, _ = ndimage.label(membrane < 0.5)
    has_data = weight > 0
    aff = np.zeros((*cells.shape, len(OFFSETS)), np.float32)
    mask = np.zeros_like(aff)
    for c, offset in enumerate(OFFSETS):
        here, there = _pairs(cells.shape, offset)
        a, b = cells[here], cells[there]
        same = (a > 0) & (a == b)
        valid = has_data[here] & has_data[there]
        aff[(*here, c)] = same
        mask[(*here, c)] = valid
        share = same[valid].mean() if valid.any() else 0.0
        if 0 < share < 1:  # both classes weigh the same in the loss
            mask[(*here, c)] *= np.where(same, 0.5 / share, 0.5 / (1 - share))
    return aff, mask


# ----------------------------------------------------------------------------- training
def _two_headed(config, seed=None):
    from napari_em_unet.model.backend import keras_module
    from napari_em_unet.model.unet import build_unet

    keras = keras_module()
    unet = build_unet(config, seed=seed)
    features = unet.get_layer("membrane").input
    affinities = keras.layers.Conv2D(len(OFFSETS), 1, activation="sigmoid", name="affinities")
    return keras.Model(unet.input, [unet.output, affinities(features)], name="em_unet_aff")


def _affinity_trainer(training):
    """The recipe's trainer with the affinity loss added to every step."""

    class AffinityTrainer(training._Trainer):
        def _traced_step(self):
            tf, model, optimizer = training._tf(), self.model, self.optimizer

            def bce(y, p):
                p = tf.clip_by_value(p, 1e-6, 1 - 1e-6)
                return -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))

            @tf.function(reduce_retracing=True)
            def step_fn(x, y, w, y_aff, w_aff):
                with tf.GradientTape() as tape:
                    membrane, affinities = model(x, training=True)
                    per_patch = tf.reduce_mean(bce(y, membrane) * w, axis=[1, 2, 3])
                    aff_loss = tf.reduce_mean(bce(y_aff, affinities) * w_aff, axis=[1, 2, 3])
                    loss = tf.reduce_mean(per_patch + aff_loss)
                grads = tape.gradient(loss, model.trainable_variables)
                optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
                return per_patch

            return step_fn

        def step(self):
            config = self.config
            batch = [
                training.random_patch(
                    self.rng,
                    *training._pick(self.rng, self.train_samples, self.sample_weights),
                    config.patch_size,
                    self.augment,
                )
                for _ in range(config.batch_size)
            ]
            x, y, w = (np.stack([b[i] for b in batch])[..., None] for i in range(3))
            targets = [affinity_targets(b[1], b[2]) for b in batch]
            y_aff, w_aff = (np.stack([t[i] for t in targets]) for i in range(2))
            return float(np.mean(self.step_fn(x, y, w, y_aff, w_aff))), None

    return AffinityTrainer


def train(args) -> int:
    import napari_em_unet.model.files as files
    from napari_em_unet.learning import training
    from napari_em_unet.model.backend import keras_module

    sys.path.insert(0, str(ROOT / "scripts"))
    import train_bundled_model

    training._Trainer = _affinity_trainer(training)
    training.build_unet = _two_headed
    save_model = files.save_model

    def save_both(keras_model, info, _path):
        keras = keras_module()
        keras_model.save(f"{args.output}.full.keras")
        membrane = keras.Model(keras_model.input, keras_model.get_layer("membrane").output)
        save_model(membrane, info, f"{args.output}.keras")

    files.save_model = save_both
    argv = ["--holdout", args.holdout, "--steps", str(args.steps), "-o", f"{args.output}.keras"]
    return train_bundled_model.main(argv)


# ----------------------------------------------------------------------------- instances
def fragments(probability: np.ndarray, min_distance: int, interior_threshold: float):
    """Over-segmentation: a watershed of the (smoothed) membrane map from the peaks of the
    interior's distance transform; every interior component has at least one seed."""
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    smooth = ndimage.gaussian_filter(probability.astype(np.float32), 1.0)
    interior = smooth < interior_threshold
    distance = ndimage.gaussian_filter(ndimage.distance_transform_edt(interior), 1.0)
    components, _ = ndimage.label(interior)
    peaks = peak_local_max(
        distance, min_distance=min_distance, labels=components, exclude_border=False
    )
    seeds = np.zeros(probability.shape, np.int32)
    seeds[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    unseeded = np.setdiff1d(np.unique(components[components > 0]), components[seeds > 0])
    for k, at in enumerate(ndimage.maximum_position(distance, components, unseeded)):
        seeds[at] = len(peaks) + 1 + k
    return watershed(smooth, seeds)


def fragment_graph(fragments: np.ndarray, affinities: np.ndarray, offsets=OFFSETS):
    """Fragment pairs (u < v) joined by at least one pixel pair at some offset, and the
    mean affinity over all those pixel pairs."""
    n = int(fragments.max()) + 1
    keys, values = [], []
    for c, offset in enumerate(offsets):
        here, there = _pairs(fragments.shape, offset)
        a, b = fragments[here].ravel(), fragments[there].ravel()
        crossing = a != b
        a, b = a[crossing].astype(np.int64), b[crossing].astype(np.int64)
        keys.append(np.minimum(a, b) * n + np.maximum(a, b))
        values.append(affinities[(*here, c)].ravel()[crossing])
    unique, inverse = np.unique(np.concatenate(keys), return_inverse=True)
    mean = np.bincount(inverse, np.concatenate(values)) / np.bincount(inverse)
    return unique // n, unique % n, mean


def mutex_watershed(n: int, u: np.ndarray, v: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Each node's cluster: edges strongest first, ``weight > 0`` merges two clusters unless
    a repulsive edge already separated them, ``weight < 0`` separates them for good."""
    parent = np.arange(n)

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    exclusive: dict[int, set] = {}
    for e in np.argsort(-np.abs(weight), kind="stable"):
        a, b = find(u[e]), find(v[e])
        if a == b:
            continue
        if weight[e] < 0:
            exclusive.setdefault(a, set()).add(b)
            exclusive.setdefault(b, set()).add(a)
        elif b not in exclusive.get(a, ()):
            parent[b] = a
            for other in exclusive.pop(b, ()):
                exclusive[other].discard(b)
                exclusive[other].add(a)
                exclusive.setdefault(a, set()).add(other)
    return np.array([find(i) for i in range(n)])


def membrane_affinities(probability: np.ndarray) -> np.ndarray:
    """The control: affinities of the two nearest offsets from the membrane map alone
    (1 - the larger membrane probability of the two pixels)."""
    out = np.zeros((*probability.shape, 2), np.float32)
    for c, offset in enumerate(OFFSETS[:2]):
        here, there = _pairs(probability.shape, offset)
        out[(*here, c)] = 1 - np.maximum(probability[here], probability[there])
    return out


def instances(probability, affinities, bias, min_distance, interior_threshold) -> np.ndarray:
    pieces = fragments(probability, min_distance, interior_threshold)
    offsets = OFFSETS if affinities.shape[-1] == len(OFFSETS) else OFFSETS[:2]
    u, v, mean = fragment_graph(pieces, affinities, offsets)
    clusters = mutex_watershed(int(pieces.max()) + 1, u, v, mean - bias)
    return (np.unique(clusters, return_inverse=True)[1][pieces] + 1).astype(np.uint32)


# ----------------------------------------------------------------------------- scoring
def predictions(prefix: str, slices: list[int]):
    """Membrane maps and affinities of ISBI ``slices`` (cached beside the model); a model
    without ``PREFIX.full.keras`` (any package model) gives membrane maps only."""
    cache = Path(f"{prefix}.predictions-{slices[0]}-{slices[-1]}.npz")  # one per fold
    if cache.exists():
        saved = np.load(cache)
        return saved["membrane"], saved["affinities"]
    from napari_em_unet.io.tiff import read_tiff
    from napari_em_unet.model.backend import keras_module
    from napari_em_unet.model.files import load_model
    from napari_em_unet.segmentation.preprocessing import normalize
    from napari_em_unet.segmentation.tiling import predict_slice

    loaded = load_model(f"{prefix}.keras")
    volume = np.asarray(read_tiff(ISBI / "train-volume.tif").data)
    if not Path(f"{prefix}.full.keras").exists():
        membrane = [
            predict_slice(loaded.keras_model, normalize(volume[s], loaded.info.percentiles))
            for s in slices
        ]
        return np.stack(membrane), None
    percentiles = loaded.info.percentiles
    model = keras_module().models.load_model(f"{prefix}.full.keras", compile=False)
    membrane, affinities = [], []
    for s in slices:  # 512 + 2 * 16 is a multiple of 16: one tile, reflected margins
        padded = np.pad(normalize(volume[s], percentiles), 16, mode="reflect")
        m, a = model(padded[None, ..., None], training=False)
        membrane.append(np.asarray(m)[0, 16:-16, 16:-16, 0])
        affinities.append(np.asarray(a)[0, 16:-16, 16:-16])
    np.savez(cache, membrane=np.stack(membrane), affinities=np.stack(affinities))
    return np.stack(membrane), np.stack(affinities)


def score(args) -> int:
    from napari_em_unet.io.tiff import read_tiff
    from napari_em_unet.learning.metrics import prepare_truth, score_slice

    lo, hi = (int(x) for x in args.slices.split("-"))
    slices = list(range(lo, hi + 1))
    membrane, affinities = predictions(args.prefix, slices)
    if args.membrane_only or affinities is None:
        affinities = np.stack([membrane_affinities(m) for m in membrane])
    labels = np.asarray(read_tiff(ISBI / "train-labels.tif").data)
    truths = [prepare_truth(labels[s]) for s in slices]

    def run(indices, params):
        return [
            score_slice(instances(membrane[i], affinities[i], **params), truths[i], grown=False)
            for i in indices
        ]

    grid = [dict(zip(GRID, values, strict=True)) for values in itertools.product(*GRID.values())]
    blocks = [list(range(0, len(slices) // 2)), list(range(len(slices) // 2, len(slices)))]
    results, chosen = {}, []
    for block, other in (blocks, blocks[::-1]):
        started = time.perf_counter()
        best = max(grid, key=lambda p: np.mean([r.v_rand for r in run(other, p)]))
        results.update(zip(block, run(block, best), strict=True))
        chosen.append(best)
        mean = np.mean([results[i].v_rand for i in block])
        print(
            f"slices {[slices[i] for i in block]}: {best}, V_rand {mean:.4f} "
            f"(tuned on the other block in {time.perf_counter() - started:.0f} s)"
        )
    ordered = [results[i] for i in range(len(slices))]
    report = {
        "slices": slices,
        "v_rand": float(np.mean([r.v_rand for r in ordered])),
        "v_info": float(np.mean([r.v_info for r in ordered])),
        "per_slice_v_rand": [round(r.v_rand, 4) for r in ordered],
        "params": chosen,
    }
    print(json.dumps(report))
    suffix = ".membrane-mws" if args.membrane_only else ".mws"
    Path(f"{args.prefix}{suffix}.json").write_text(json.dumps(report, indent=1))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    t = commands.add_parser("train", help="train a fold model with an affinity head")
    t.add_argument("--holdout", required=True, help="ISBI slices left out, e.g. 10-19")
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("-o", "--output", required=True, help="prefix of the two model files")
    s = commands.add_parser("score", help="mutex watershed on held-out ISBI slices")
    s.add_argument("prefix")
    s.add_argument("--slices", required=True, help="the fold's held-out slices, e.g. 10-19")
    s.add_argument(
        "--membrane-only",
        action="store_true",
        help="the control: edge weights from the membrane map, not the affinities",
    )
    args = parser.parse_args(argv)
    require_data()
    return train(args) if args.command == "train" else score(args)


if __name__ == "__main__":
    sys.exit(main())
