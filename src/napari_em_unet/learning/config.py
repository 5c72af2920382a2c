"""Training settings and their defaults: the one place the CLI and the widgets read them from."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..model.unet import UNetConfig


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults are those of fine-tuning (:meth:`from_scratch` for a new model)."""

    epochs: int = 10
    steps_per_epoch: int = 40
    batch_size: int = 4
    patch_size: int = 256
    learning_rate: float = 3e-4
    augment: bool = True
    elastic: bool = False
    validation_fraction: float = 0.2
    """Without validation slices, this bottom band of every training slice is held out."""
    border_weight: float = 5.0
    """Extra loss weight on borders between touching cells (0: none)."""
    border_width_px: float | None = None
    """Width derived borders are widened to; None: the membrane width of the base model (or
    of the training labels when training from scratch). 1 takes one-pixel borders literally."""
    tune_postprocessing: bool = True
    seed: int = 0
    architecture: UNetConfig = field(default_factory=UNetConfig)

    @classmethod
    def from_scratch(cls, **changes) -> TrainConfig:
        """Defaults for training a new network: more, larger steps at a higher rate."""
        return cls(**{**_FROM_SCRATCH, **changes})

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)


_FROM_SCRATCH = {"epochs": 30, "steps_per_epoch": 100, "batch_size": 8, "learning_rate": 1e-3}
