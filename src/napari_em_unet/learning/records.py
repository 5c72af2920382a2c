"""The progress records training yields (plain data: the widgets and the CLI read them)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..model.info import LoadedModel


@dataclass(frozen=True)
class StepProgress:
    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float
    """Loss on the patches of corrected (or, from scratch, labelled) slices."""
    done: int = 0
    """Steps done in the whole run, this one included."""
    total: int = 0
    """Steps in the whole run."""
    anchor_loss: float | None = None
    """Fine-tuning: loss on the anchor patches (the base model's own predictions)."""


@dataclass(frozen=True)
class EpochProgress:
    epoch: int
    epochs: int
    loss: float
    val_loss: float | None
    val_v_rand: float | None
    best_epoch: int
    seconds: float
    done: int = 0
    """Steps done in the whole run when this validation was made."""
    val_change: float | None = None
    """Fine-tuning: largest change of an uncorrected check slice's segmentation against the
    base model's (1 - V_rand between the two), 0 = unchanged."""


@dataclass(frozen=True)
class FineTunePlan:
    """What a fine-tuning run will do and what its validation measures (yielded first)."""

    corrected: tuple[int, ...]
    """Training slices (indices into the stack handed to ``train``)."""
    validation: str
    """What the validation V_rand is computed on, in words."""
    validation_slices: tuple[int, ...]
    anchors: tuple[int, ...]
    """Uncorrected slices whose base predictions are mixed into every batch."""
    check: tuple[int, ...]
    """Uncorrected slices on which the change against the base is measured."""
    base_corrected_v_rand: float | None
    """The base model's V_rand on the whole corrected slices, before any training."""
    familiar: bool
    """The base already does well on the corrected slices: changes elsewhere are capped."""
    change_budget: float | None
    """Largest change allowed on an uncorrected check slice (None: no cap)."""
    total_steps: int
    base_val_v_rand: float | None = None
    """The base model's validation V_rand (the score to beat)."""
    averaged_epochs: tuple[int, int] | None = None
    """First and last epoch whose weights are averaged into the result (None: the last)."""


@dataclass(frozen=True)
class Candidate:
    """One set of weights the run could end with: the base plus ``blend`` of the change."""

    blend: float
    v_rand: float | None
    change: float | None
    tuned_watershed: bool = False


@dataclass(frozen=True)
class Verdict:
    """Whether the fine-tuned model replaces its base, and why (in words for the user)."""

    accepted: bool
    blend: float
    """Share of the fine-tuned change kept in the final weights (1 = all, 0 = the base)."""
    v_rand_before: float | None
    v_rand_after: float | None
    change: float | None
    reason: str
    candidates: tuple[Candidate, ...] = ()

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class TrainResult:
    model: LoadedModel
    best_epoch: int
    best_v_rand: float | None
    stopped: bool
    history: list[dict]
    verdict: Verdict | None = None
    """Fine-tuning: accepted or not (``model`` then holds the base's weights)."""
    plan: FineTunePlan | None = None
    extra: dict = field(default_factory=dict)
