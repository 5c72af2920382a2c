"""The progress records training yields (plain data: the widgets and the CLI read them)."""

from __future__ import annotations

from dataclasses import dataclass

from ..model.info import LoadedModel


@dataclass(frozen=True)
class StepProgress:
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class EpochProgress:
    epoch: int
    epochs: int
    loss: float
    val_loss: float | None
    val_v_rand: float | None
    best_epoch: int
    seconds: float


@dataclass
class TrainResult:
    model: LoadedModel
    best_epoch: int
    best_v_rand: float | None
    stopped: bool
    history: list[dict]
