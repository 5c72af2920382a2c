"""Stochastic weight averaging: the mean of a model's weights over the end of a run.

A run ends somewhere in the region its last, small steps wander through; the mean of the
weights it visited sits nearer the middle of that region, which tends to generalise better
(Izmailov et al. 2018, "Averaging weights leads to wider optima"). Fine-tuning averages
the last epochs of every run (:mod:`.finetuning`); training from scratch may too
(``TrainConfig.average_last``, docs/design.md for what it measured).

The mean of batch-normalisation statistics is not the statistics of the mean network, so
a network whose statistics were learned with it gets them re-measured
(:func:`recompute_batch_norm`); fine-tuning freezes them, and there averaging them changes
nothing.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class WeightAverage:
    """The running mean of snapshots of a model's weights.

    Single fine-tuning runs on a few slices end in quite different places: on the
    FIB-SEM-like proxy the far slices scored 0.869-0.881 with three seeds, one slice moving
    by 0.12 between runs; the mean of the last epochs gained 0.006 there on average
    (docs/design.md).
    """

    def __init__(self):
        self.total: list[np.ndarray] | None = None
        self.count = 0

    def add(self, weights: list) -> None:
        if self.total is None:
            self.total = [np.asarray(w, np.float64).copy() for w in weights]
        else:
            for total, w in zip(self.total, weights, strict=True):
                total += w
        self.count += 1

    def mean(self, like: list) -> list:
        """The mean of the snapshots, with the dtypes of ``like`` (``like`` when none)."""
        if self.total is None:
            return like
        return [
            (t / self.count).astype(np.asarray(w).dtype)
            for t, w in zip(self.total, like, strict=True)
        ]


def averaged_from(epochs: int, share: float) -> int:
    """The first epoch whose weights go into the average (``epochs + 1``: none do)."""
    if share <= 0 or epochs <= 0:
        return epochs + 1
    averaged = int(np.ceil(epochs * min(share, 1.0) - 1e-9))
    return max(1, epochs - averaged + 1)


def recompute_batch_norm(model, batches: Iterable[np.ndarray]) -> int:
    """Set every batch-normalisation layer's statistics to their mean over ``batches``
    (arrays shaped like the model's input) in training mode, no gradient; return how many
    batches were seen.

    Keras keeps ``moving = momentum * moving + (1 - momentum) * batch``; a momentum of
    ``k / (k + 1)`` at the k-th batch (from 0) makes that the plain mean of all batches.
    """
    layers = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    saved = [layer.momentum for layer in layers]
    seen = 0
    try:
        for batch in batches:
            for layer in layers:
                layer.momentum = seen / (seen + 1)
            model(np.asarray(batch, np.float32), training=True)
            seen += 1
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return seen
