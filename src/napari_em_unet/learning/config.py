"""Training settings and their defaults: the one place the CLI and the widgets read them from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..model.unet import UNetConfig


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults are those of fine-tuning (:meth:`from_scratch`: a new model)."""

    epochs: int = 10
    steps_per_epoch: int = 40
    batch_size: int = 4
    patch_size: int = 256
    learning_rate: float = 3e-4
    augment: bool = True
    elastic: bool = False
    validation_fraction: float = 0.2
    """Without validation slices, this bottom band of every training slice is held out."""
    hold_out_from: int = 4
    """Fine-tuning without validation slices: from this many corrected slices on, the middle
    one is held out whole for validation instead of a band of each."""
    border_weight: float = 5.0
    """Extra loss weight on borders between touching cells (0: none)."""
    separation_weight: float = 0.0
    """The U-Net paper's w0: extra loss weight on membrane pixels between two nearby cells,
    for ISBI-style masks too (0: none; ``targets.separation_map``)."""
    border_width_px: float | None = None
    """Width derived borders are widened to; None: the membrane width of the base model (or
    of the training labels when training from scratch). 1 takes one-pixel borders literally."""
    tune_postprocessing: bool = False
    """Re-tune the watershed on the validation data. Fine-tuning keeps the base's: tuned on
    a band of the corrected slices it cost the other slices up to 0.08 V_rand (measured,
    docs/design.md)."""
    tune_new_data_watershed: bool = True
    """Fine-tuning on data new to the base with a corrected slice held out whole: re-tune
    the watershed on that slice too. New data give probabilities of a new shape, and a whole
    held-out slice (unlike a band of the trained ones) predicts far slices: parameters tuned
    on it gave +0.004 V_rand on the far slices of the FIB-SEM-like proxy, though in the
    benchmark run that used it the gain was not measurable (docs/design.md). Familiar data
    keep the base's."""
    extra_share: float = 0.5
    """Share of training patches drawn from ``extra`` volumes (when there are any)."""
    anchor_share: float = 0.5
    """Fine-tuning on familiar data: share of every batch drawn from uncorrected slices with
    the base model's own predictions as targets, so that it keeps its behaviour where nobody
    corrected (0: off)."""
    anchor_slices: int = 8
    """Fine-tuning: at most this many uncorrected slices serve as anchors."""
    check_slices: int = 24
    """Fine-tuning: uncorrected slices on which the change against the base is measured,
    fewer on large slices (``finetuning.CHECK_PIXELS``). Harm falls on few slices (the old
    fine-tuning's on 2 of 18 ISBI slices; with the mutex watershed, 8 checks missed slice
    18 losing 0.07), so a stack like ISBI's is checked whole (docs/design.md)."""
    freeze_batch_norm: bool = True
    """Fine-tuning: batch-normalisation statistics stay fixed while training (the base's, or
    on new data those re-estimated on the user's slices)."""
    adapt_batch_norm: bool = True
    """Fine-tuning on data new to the base: re-estimate the batch-normalisation statistics
    on the user's slices before training (AdaBN)."""
    familiar_v_rand: float = 0.9
    """Fine-tuning: when the base already scores this V_rand on the corrected slices, the
    data count as familiar and the change of any uncorrected check slice is capped."""
    change_budget: float = 0.02
    """Fine-tuning on familiar data: largest change (1 - V_rand against the base's
    segmentation) a check slice may undergo."""
    average_last: float = 0.5
    """The final weights are the mean of the weights at the end of every epoch in this last
    share of the run (stochastic weight averaging, :mod:`.averaging`; 0: the last weights).
    Fine-tuning: on the FIB-SEM-like proxy, far slices +0.006 on average over 5 paired runs
    (-0.010 to +0.032; the seed alone moves a run by 0.01), at no cost (docs/design.md).
    Training from scratch (0.3334 there; not yet in the bundled model's recipe): the mean,
    with batch-norm statistics re-measured, replaces the best epoch when it validates at
    least as well or when nothing validates."""
    blends: tuple[float, ...] = (1.0, 0.5, 0.25)
    """Fine-tuning: shares of the fine-tuned change the final weights may keep."""
    min_gain: float = 0.001
    """Fine-tuning: validation V_rand must beat the base's by more than this. Smaller gains
    are noise (a 25 % blend of a harmful change once validated 0.00007 better), and a model
    that is not really better should not replace the one the user has."""

    seed: int = 0
    architecture: UNetConfig = field(default_factory=UNetConfig)

    @classmethod
    def from_scratch(cls, **changes) -> TrainConfig:
        """Defaults for training a new network: more, larger steps at a higher rate."""
        return cls(**{**_FROM_SCRATCH, **changes})

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


_FROM_SCRATCH = {
    "epochs": 30,
    "steps_per_epoch": 100,
    "batch_size": 8,
    "learning_rate": 1e-3,
    "anchor_share": 0.0,
    "freeze_batch_norm": False,
    "tune_postprocessing": True,
    # the last 11 of 30 epochs: held out +0.005 over three paired runs, steadier, and +0.08
    # on an unseen microscope over six fold models (docs/design.md, "Stochastic weight averaging")
    "average_last": 0.3334,
}
