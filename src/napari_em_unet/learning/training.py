"""Training and fine-tuning: a generator that yields progress and returns the best model.

``train(...)`` runs in phases: check the inputs (:func:`_checked_inputs`), start from the
base model or a new network (:func:`_starting_point`), prepare the chosen slices
(normalised, resampled to the model's pixel size, labels turned into membrane targets by
:mod:`.targets`), then run epochs of random augmented patches (:class:`_Trainer`). After
every epoch it predicts the validation data, tunes the watershed on it and scores V_rand;
the weights of the best epoch are kept (or, with ``average_last``, the mean of the last
epochs' weights when it validates at least as well: :mod:`.averaging`). Fine-tuning counts
the base model as epoch 0, so the result is never worse than the base on the validation
data.

Stopping is cooperative: pass a ``threading.Event`` (or anything with ``is_set()``) as
``stop``; the generator finishes the current step, restores the best weights and returns.
Progress records (:mod:`.records`) are small frozen dataclasses, for the CLI's progress bar
and napari's thread worker alike.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..model.info import LoadedModel, ModelInfo
from ..model.unet import UNetConfig, build_unet
from ..segmentation.preprocessing import (
    as_stack,
    normalize,
    resample_factor,
    scaled_shape,
    zoom_to,
)
from ..segmentation.tiling import predict_slice
from ..segmentation.watershed import WatershedParams, instances_from_probability, tune_watershed
from .augmentation import AugmentConfig, random_patch
from .averaging import WeightAverage, averaged_from, recompute_batch_norm
from .config import TrainConfig
from .finetuning import (
    BaseComparison,
    LabelledPlane,
    adapt_batch_norm,
    anchor_patch_count,
    anchor_samples,
    blended,
    freeze_batch_norm,
    model_scale_planes,
    uncorrected_roles,
)
from .metrics import score_slice
from .records import EpochProgress, FineTunePlan, StepProgress, TrainResult, Verdict
from .targets import labelled_slices, membrane_width, training_target


@dataclass(frozen=True)
class TrainingSource:
    """More labelled data for training only (another volume, at its own pixel size)."""

    image: np.ndarray
    labels: np.ndarray
    pixel_size_nm: float | None = None
    name: str = ""


@dataclass
class _Sample:
    image: np.ndarray
    target: np.ndarray
    weight: np.ndarray
    labels: np.ndarray


@dataclass
class _Start:
    """Where training starts: the network, what it knows, and at which scale it works."""

    model: object
    info: ModelInfo
    pixel_size_nm: float | None
    membrane_width_px: float
    params: WatershedParams


# ----------------------------------------------------------------------------- inputs
def _labels_array(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype == bool:
        return labels.astype(np.uint8)
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise InputError("labels must be whole numbers (0 = membrane, other values = cells)")
        return labels.astype(np.int64)
    if not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"labels must be integers, got {labels.dtype}")
    return labels


def _check_slices(slices: Sequence[int], depth: int, what: str) -> list[int]:
    slices = [int(s) for s in slices]
    bad = [s for s in slices if not 0 <= s < depth]
    if bad:
        raise InputError(f"{what} {bad} outside the stack (0..{depth - 1})")
    return sorted(set(slices))


def _checked_inputs(image, labels, slices, validation_slices):
    """The ZYX image and labels stacks, training slices and validation slices, checked."""
    stack, _ = as_stack(image)
    label_stack = _labels_array(labels)
    # Labels are never colour-converted: a trailing axis of 3 is a shape error, not RGB.
    if label_stack.ndim == 2:
        label_stack = label_stack[np.newaxis]
    elif label_stack.ndim != 3:
        raise InputError(f"labels must be 2D or a ZYX stack, got shape {label_stack.shape}")
    if stack.shape != label_stack.shape:
        raise InputError(
            f"image {tuple(stack.shape)} and labels {tuple(label_stack.shape)} differ in shape"
        )
    validation = _check_slices(validation_slices or [], stack.shape[0], "validation slices")
    if slices is None:
        slices = [s for s in labelled_slices(label_stack) if s not in validation]
        if not slices:
            raise InputError("no labelled slice to train on: every slice's labels are all 0")
    slices = _check_slices(slices, stack.shape[0], "training slices")
    empty = [s for s in slices + validation if not np.any(label_stack[s] != 0)]
    if empty:
        raise InputError(f"slices {empty} are all membrane (no cell labelled); nothing to learn")
    return stack, label_stack, slices, validation


def _starting_point(
    base: LoadedModel | None,
    config: TrainConfig,
    pixel_size_nm,
    train_labels: np.ndarray,
    warm_start: LoadedModel | None = None,
) -> _Start:
    """A copy of the base model (never modified itself), or a new network, with the
    weights of ``warm_start`` when given (whose training history it inherits)."""
    if base is None:
        info = ModelInfo(architecture=config.architecture.to_dict(), pixel_size_nm=pixel_size_nm)
        model = build_unet(config.architecture, seed=config.seed)
        params = WatershedParams()
        if warm_start is not None:
            _check_warm_start(warm_start, config, pixel_size_nm)
            model.set_weights(warm_start.keras_model.get_weights())
            info = dataclasses.replace(
                info, trained_on=list(warm_start.info.trained_on), epochs=warm_start.info.epochs
            )
            params = WatershedParams.from_dict(warm_start.info.postprocessing)
        return _Start(model, info, pixel_size_nm, membrane_width(train_labels), params)
    keras = _keras()
    model = keras.models.clone_model(base.keras_model)
    model.set_weights(base.keras_model.get_weights())
    info = base.info
    return _Start(
        model,
        info,
        info.pixel_size_nm,
        info.membrane_width_px,
        WatershedParams.from_dict(info.postprocessing),
    )


def prepare(
    image: np.ndarray,
    labels: np.ndarray,
    slices: Sequence[int],
    *,
    factor: float,
    percentiles: tuple[float, float],
    width: float,
    border_weight: float,
    separation_weight: float,
) -> list[_Sample]:
    """Normalise, resample to the model's scale and derive targets for the given slices."""
    samples = []
    for index in slices:
        plane = normalize(np.asarray(image[index]), percentiles)
        lab = np.asarray(labels[index])
        if factor != 1.0:
            shape = scaled_shape(plane.shape, factor)
            plane, lab = zoom_to(plane, shape, order=1), zoom_to(lab, shape, order=0)
        target = training_target(lab, width, border_weight, separation_weight)
        samples.append(_Sample(plane, target.membrane, target.weight, lab))
    return samples


def _split_band(samples: list[_Sample], fraction: float) -> tuple[list[_Sample], list[_Sample]]:
    """Hold out the bottom ``fraction`` of each slice for validation, if tall enough."""
    train, val = [], []
    for s in samples:
        cut = int(round(s.image.shape[0] * (1 - fraction)))
        if fraction <= 0 or cut < 32 or s.image.shape[0] - cut < 16:
            train.append(s)
            continue
        top = _Sample(s.image[:cut], s.target[:cut], s.weight[:cut], s.labels[:cut])
        bottom = _Sample(s.image[cut:], s.target[cut:], s.weight[cut:], s.labels[cut:])
        train.append(top)
        if np.any(bottom.labels != 0):
            val.append(bottom)
    return train, val


def _samples(
    stack, label_stack, slices, validation, start: _Start, config: TrainConfig, pixel_size_nm
) -> tuple[list[_Sample], list[_Sample], list[_Sample]]:
    """Training and validation samples at the model's scale, and the whole training slices."""
    prep = {"factor": resample_factor(pixel_size_nm, start.pixel_size_nm)}
    prep.update(_target_settings(start, config))
    whole = prepare(stack, label_stack, slices, **prep)
    if validation:
        return whole, prepare(stack, label_stack, validation, **prep), whole
    return (*_split_band(whole, config.validation_fraction), whole)


# ----------------------------------------------------------------------------- the loop
BATCH_NORM_BATCHES = 50
"""Training batches whose mean batch-norm statistics the averaged weights get (400 patches
of 256 x 256 by default: the statistics of a few batches would be noise)."""


class _Trainer:
    """The optimiser, one training step, validation, and the best epoch so far."""

    def __init__(
        self, start: _Start, config: TrainConfig, train_samples, val_samples, anchors: Sequence = ()
    ):
        self.model, self.config = start.model, config
        self.train_samples, self.val_samples = train_samples, val_samples
        self.anchors = list(anchors)
        self.anchor_patches = anchor_patch_count(
            config.batch_size, config.anchor_share, bool(self.anchors)
        )
        anchor_area = np.array([a.image.size for a in self.anchors], dtype=float)
        self.anchor_weights = anchor_area / anchor_area.sum() if self.anchors else anchor_area
        self.rng = np.random.default_rng(config.seed)
        keras = _keras()
        keras.utils.set_random_seed(config.seed)
        total_steps = max(1, config.epochs * config.steps_per_epoch)
        schedule = keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps=total_steps, alpha=0.05
        )
        self.optimizer = keras.optimizers.Adam(schedule)
        self.optimizer.build(self.model.trainable_variables)
        self.step_fn = self._traced_step()
        self.augment = AugmentConfig(enabled=config.augment, elastic=config.elastic)
        weights = np.array([s.image.size for s in train_samples], dtype=float)
        self.sample_weights = weights / weights.sum()
        self.history: list[dict] = []
        self.done = 0
        self.best_epoch, self.best_weights, self.best_score = 0, None, None
        self.best_params = start.params
        self.average = WeightAverage()
        self.average_from = averaged_from(config.epochs, config.average_last)
        self.averaged: dict | None = None

    def _traced_step(self):
        tf, model, optimizer = _tf(), self.model, self.optimizer

        @tf.function(reduce_retracing=True)
        def step_fn(x, y, w):
            with tf.GradientTape() as tape:
                p = tf.clip_by_value(model(x, training=True), 1e-6, 1 - 1e-6)
                bce = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
                per_patch = tf.reduce_mean(bce * w, axis=[1, 2, 3])
                loss = tf.reduce_mean(per_patch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
            return per_patch

        return step_fn

    def batch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """Inputs, targets and weights of one batch: augmented patches of the training
        data, then of the anchors; and how many of them are training patches."""
        config = self.config
        corrected = config.batch_size - self.anchor_patches
        batch = [
            random_patch(
                self.rng,
                *_pick(self.rng, self.train_samples, self.sample_weights),
                config.patch_size,
                self.augment,
            )
            for _ in range(corrected)
        ]
        batch += [
            random_patch(
                self.rng,
                *_pick(self.rng, self.anchors, self.anchor_weights),
                config.patch_size,
                self.augment,
                soft=True,
            )
            for _ in range(self.anchor_patches)
        ]
        x, y, w = (np.stack([b[i] for b in batch])[..., None] for i in range(3))
        return x, y, w, corrected

    def step(self) -> tuple[float, float | None]:
        """One optimiser step; the mean loss of the corrected patches and of the anchors."""
        x, y, w, corrected = self.batch()
        per_patch = np.asarray(self.step_fn(x, y, w))
        anchor = float(per_patch[corrected:].mean()) if self.anchor_patches else None
        return float(per_patch[:corrected].mean()), anchor

    def evaluate(self, start: WatershedParams):
        """Validation loss, V_rand and the watershed parameters tuned from ``start``."""
        if not self.val_samples:
            return None, None, start
        probs = [predict_slice(self.model, s.image) for s in self.val_samples]
        losses = [
            _weighted_bce(p, s.target, s.weight)
            for p, s in zip(probs, self.val_samples, strict=True)
        ]
        gts = [s.labels for s in self.val_samples]
        tuned = start
        if self.config.tune_postprocessing:
            tuned, score = tune_watershed(probs, gts, start)
        else:
            score = float(
                np.mean(
                    [
                        score_slice(instances_from_probability(p, start), g, grown=False).v_rand
                        for p, g in zip(probs, gts, strict=True)
                    ]
                )
            )
        return float(np.mean(losses)), score, tuned

    def score_base(self) -> EpochProgress:
        """Epoch 0: the base model itself, the score fine-tuning has to beat."""
        val_loss, self.best_score, self.best_params = self.evaluate(self.best_params)
        self.best_weights = self.model.get_weights()
        self.history.append(
            {"epoch": 0, "loss": None, "val_loss": val_loss, "val_v_rand": self.best_score}
        )
        return EpochProgress(0, self.config.epochs, float("nan"), val_loss, self.best_score, 0, 0.0)

    def end_epoch(self, epoch: int, losses: list[float], started: float) -> EpochProgress:
        val_loss, score, tuned = self.evaluate(self.best_params)
        mean_loss = float(np.mean(losses))
        if score is None or self.best_score is None or score > self.best_score:
            self.best_epoch, self.best_score, self.best_params = epoch, score, tuned
            self.best_weights = self.model.get_weights()
        self.history.append(
            {"epoch": epoch, "loss": mean_loss, "val_loss": val_loss, "val_v_rand": score}
        )
        return EpochProgress(
            epoch,
            self.config.epochs,
            mean_loss,
            val_loss,
            score,
            self.best_epoch,
            time.perf_counter() - started,
            self.done,
        )

    def epochs(self, stop) -> Generator[StepProgress | EpochProgress, None, tuple[int, bool]]:
        """Run the epochs; return the last epoch run and whether ``stop`` ended them."""
        config, epoch = self.config, 0
        total = config.epochs * config.steps_per_epoch
        for epoch in range(1, config.epochs + 1):
            started, losses, stopped = time.perf_counter(), [], False
            for step in range(1, config.steps_per_epoch + 1):
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                loss, anchor_loss = self.step()
                losses.append(loss)
                self.done += 1
                yield StepProgress(
                    epoch,
                    config.epochs,
                    step,
                    config.steps_per_epoch,
                    loss,
                    self.done,
                    total,
                    anchor_loss,
                )
            if stopped and not losses:
                return epoch - 1, True
            if epoch >= self.average_from:
                self.average.add(self.model.get_weights())
            yield self.end_epoch(epoch, losses, started)
            if stopped:
                return epoch, True
        return epoch, False

    def restore_best(self) -> None:
        """The final weights: the best epoch's, or the average of the last epochs when it
        validates at least as well (or nothing validates)."""
        averaged = self.average.count > 0 and self._average_wins()
        if not averaged and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
        if not self.val_samples and self.config.tune_postprocessing:
            # No held-out data: tune on the training slices themselves (better than nothing).
            probs = [predict_slice(self.model, s.image) for s in self.train_samples]
            self.best_params, _ = tune_watershed(
                probs, [s.labels for s in self.train_samples], self.best_params
            )

    def _average_wins(self) -> bool:
        """Try the mean of the snapshots (batch-norm statistics re-measured on training
        batches); keep it when it validates at least as well as the best epoch."""
        self.model.set_weights(self.average.mean(self.model.get_weights()))
        recompute_batch_norm(self.model, (self.batch()[0] for _ in range(BATCH_NORM_BATCHES)))
        _, score, tuned = self.evaluate(self.best_params)
        first = self.average_from
        kept = score is None or self.best_score is None or score >= self.best_score
        self.averaged = {
            "epochs": [first, first + self.average.count - 1],
            "v_rand": score,
            "kept": kept,
        }
        if not kept:
            return False
        self.best_epoch = first + self.average.count - 1
        self.best_score, self.best_params = score, tuned
        return True


class _FineTuner(_Trainer):
    """Fine-tuning: anchors in every batch, progress measured against the base (held-out
    corrected data and uncorrected check slices), and the verdict at the end instead of
    the best epoch on a band of the training slices."""

    def __init__(
        self,
        start: _Start,
        config: TrainConfig,
        train_samples,
        val_samples,
        anchors: Sequence,
        comparison: BaseComparison,
    ):
        super().__init__(start, config, train_samples, val_samples, anchors)
        self.comparison = comparison
        self.base_weights = self.model.get_weights()
        self.best_params = comparison.params
        self.verdict: Verdict | None = None

    def score_base(self) -> EpochProgress:
        before = self.comparison.base_v_rand
        self.best_score = before
        self.history.append(
            {"epoch": 0, "step": 0, "loss": None, "val_v_rand": before, "val_change": 0.0}
        )
        return EpochProgress(0, self.config.epochs, float("nan"), None, before, 0, 0.0, 0, 0.0)

    def end_epoch(self, epoch: int, losses: list[float], started: float) -> EpochProgress:
        # A quick look (two check slices) to show progress; the verdict looks at all.
        score, change, _ = self.comparison.measure(self.model, checks=2)
        mean_loss = float(np.mean(losses))
        self.best_epoch = epoch
        self.history.append(
            {
                "epoch": epoch,
                "step": self.done,
                "loss": mean_loss,
                "val_v_rand": score,
                "val_change": change,
            }
        )
        return EpochProgress(
            epoch,
            self.config.epochs,
            mean_loss,
            None,
            score,
            epoch,
            time.perf_counter() - started,
            self.done,
            change,
        )

    def restore_best(self) -> None:
        """Nothing to restore: :meth:`conclude` chooses the final weights."""

    def conclude(self, what: str, tune: bool) -> Verdict:
        """Measure the candidates, keep the verdict's weights and watershed parameters."""
        # Stopped before the averaged epochs: the last weights are all there is.
        tuned_weights = self.average.mean(self.model.get_weights())
        found, tuned_params = self.comparison.candidates(
            self.model, self.base_weights, tuned_weights, tune
        )
        verdict = self.comparison.verdict(found, what)
        self.model.set_weights(blended(self.base_weights, tuned_weights, verdict.blend))
        chosen = next(
            (c for c in found if c.blend == verdict.blend and c.v_rand == verdict.v_rand_after),
            None,
        )
        if verdict.accepted and chosen is not None and chosen.tuned_watershed:
            self.best_params = tuned_params
        self.best_score, self.verdict = verdict.v_rand_after, verdict
        return verdict


def _fine_tuner(
    base: LoadedModel,
    stack,
    slices,
    validation,
    roles,
    start: _Start,
    config: TrainConfig,
    pixel_size_nm,
    samples,
    held_out: bool,
) -> tuple[_FineTuner, FineTunePlan]:
    """The fine-tuning trainer and the plan it follows.

    Familiar data (the base already does well on the corrected slices): the base's
    predictions on anchor slices are mixed into every batch and the change of uncorrected
    check slices is capped. New data: the batch-norm statistics are first re-estimated on
    the user's slices, and neither anchors nor a cap hold the model back.
    """
    train_samples, val_samples, whole = samples
    anchor_slices, check_slices = _uncorrected_slices(stack, slices, validation, roles, config)
    scale = {
        "factor": resample_factor(pixel_size_nm, start.pixel_size_nm),
        "percentiles": start.info.percentiles,
    }
    check_planes = model_scale_planes(stack, check_slices, **scale)
    comparison = BaseComparison(
        base.keras_model,
        start.params,
        [LabelledPlane(s.image, s.labels) for s in val_samples],
        [LabelledPlane(s.image, s.labels) for s in whole],
        check_planes,
        config,
        views=base.info.view_scales,
    )
    anchors = []
    if comparison.familiar and config.anchor_share > 0:
        anchors = anchor_samples(
            lambda plane: predict_slice(base.keras_model, plane), stack, anchor_slices, **scale
        )
    elif not comparison.familiar and config.adapt_batch_norm:
        planes = (
            [s.image for s in whole]
            + check_planes
            + model_scale_planes(stack, anchor_slices, **scale)
        )
        adapt_batch_norm(start.model, planes, seed=config.seed)
    if config.freeze_batch_norm:
        freeze_batch_norm(start.model)
    plan = FineTunePlan(
        corrected=tuple(slices),
        validation=_what_validates(held_out, validation, config)
        if val_samples
        else "nothing (slices too small)",
        validation_slices=tuple(validation),
        anchors=tuple(anchor_slices) if anchors else (),
        check=tuple(check_slices),
        base_corrected_v_rand=comparison.base_corrected_v_rand,
        familiar=comparison.familiar,
        change_budget=comparison.change_budget,
        total_steps=config.epochs * config.steps_per_epoch,
        base_val_v_rand=comparison.base_v_rand,
        averaged_epochs=_averaged_epochs(config),
    )
    return _FineTuner(start, config, train_samples, val_samples, anchors, comparison), plan


def _what_validates(held_out: bool, validation, config: TrainConfig) -> str:
    """The plan's words for the validation data (the widget shows them)."""
    if held_out:
        return "a corrected slice held out from training"
    if validation:
        return "the validation slices (never trained on)"
    return f"the bottom {config.validation_fraction:.0%} of each corrected slice (never trained on)"


def _averaged_epochs(config: TrainConfig) -> tuple[int, int] | None:
    first = averaged_from(config.epochs, config.average_last)
    return (first, config.epochs) if first <= config.epochs else None


def _uncorrected_slices(
    stack, slices, validation, roles, config: TrainConfig
) -> tuple[list[int], list[int]]:
    """Anchor and check slices: the caller's, or spread over the rest of the stack."""
    depth = stack.shape[0]
    anchor_slices, check_slices = roles
    if anchor_slices is None or check_slices is None:
        auto_anchors, auto_checks = uncorrected_roles(
            depth,
            [*slices, *validation],
            config.anchor_slices,
            config.check_slices,
            int(np.prod(stack.shape[-2:])),
        )
        anchor_slices = auto_anchors if anchor_slices is None else anchor_slices
        check_slices = auto_checks if check_slices is None else check_slices
    return (
        _check_slices(anchor_slices, depth, "anchor slices"),
        _check_slices(check_slices, depth, "check slices"),
    )


# ----------------------------------------------------------------------------- train
def _add_extra_samples(trainer, extra: Sequence[TrainingSource], start, config) -> None:
    """Add the ``extra`` volumes' patches, ``config.extra_share`` of every batch."""
    extra_samples = _extra_samples(extra, start, config)
    trainer.sample_weights = _mixed_weights(
        trainer.train_samples, extra_samples, config.extra_share
    )
    trainer.train_samples = trainer.train_samples + extra_samples


def _extra_record(extra: Sequence[TrainingSource], config: TrainConfig) -> dict:
    """What the model file says about the extra volumes it was trained on."""
    return {
        "extra": [
            {
                "source": e.name,
                "pixel_size_nm": e.pixel_size_nm,
                "slices": labelled_slices(_labels_array(e.labels)),
            }
            for e in extra
        ],
        "extra_share": config.extra_share,
    }


def _held_out_slice(base, slices, validation, config) -> tuple[list, list, bool]:
    """Training slices, validation slices, and whether one corrected slice was set aside
    for validation (fine-tuning on enough slices with no validation slices given)."""
    held_out = base is not None and not validation and len(slices) >= config.hold_out_from
    if held_out:
        # A whole corrected slice says more about the slices nobody corrected than a band
        # of the slices trained on (docs/design.md, "Fine-tuning").
        validation = [slices[len(slices) // 2]]
        slices = [s for s in slices if s not in validation]
    return slices, validation, held_out


def _run_record(source, slices, validation, pixel_size_nm, last_epoch, trainer) -> dict:
    """What the model file records about this training run."""
    return {
        "source": source,
        "slices": slices,
        "validation_slices": validation,
        "pixel_size_nm": pixel_size_nm,
        "epochs": last_epoch,
        "best_epoch": trainer.best_epoch,
        **({"averaged": trainer.averaged} if trainer.averaged else {}),
    }


def train(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    base: LoadedModel | None = None,
    slices: Sequence[int] | None = None,
    validation_slices: Sequence[int] | None = None,
    pixel_size_nm: float | None = None,
    config: TrainConfig = TrainConfig(),
    name: str = "em-unet",
    source: str = "",
    extra: Sequence[TrainingSource] = (),
    anchor_slices: Sequence[int] | None = None,
    check_slices: Sequence[int] | None = None,
    warm_start: LoadedModel | None = None,
    stop=None,
) -> Generator[StepProgress | EpochProgress | FineTunePlan, None, TrainResult]:
    """Train a new U-Net (``base=None``) or fine-tune ``base`` on the labelled slices.

    ``labels`` follows the rule in :mod:`.targets`; ``slices`` defaults to every slice with
    a non-zero label (minus ``validation_slices``). ``pixel_size_nm`` is the data's pixel
    size, used to resample to the base model's scale (and stored in a new model). ``extra``
    volumes are resampled to the same scale and add training patches only
    (``config.extra_share`` of them), never validation data.

    Fine-tuning (:mod:`.finetuning`) also uses slices nobody corrected: ``anchor_slices``
    (the base's predictions there are mixed into every batch) and ``check_slices`` (where
    the change against the base is measured); both default to slices spread over the stack
    that are neither training nor validation slices. It yields a :class:`FineTunePlan`
    first, and its result carries the :class:`Verdict`: when the fine-tuned model does not
    validate better than the base, the result holds the base's weights.

    ``warm_start`` (with ``base=None``): a new training run, with its own schedule and no
    fine-tuning guard, that starts from that model's weights (a second training stage,
    ``scripts/train_bundled_model.py --warm-start``).
    """
    stack, label_stack, slices, validation = _checked_inputs(
        image, labels, slices, validation_slices
    )
    slices, validation, held_out = _held_out_slice(base, slices, validation, config)
    if base is not None and warm_start is not None:
        raise InputError("fine-tuning a base model and a warm start exclude each other")
    start = _starting_point(base, config, pixel_size_nm, label_stack[slices], warm_start)
    samples = _samples(stack, label_stack, slices, validation, start, config, pixel_size_nm)
    trainer, plan = (
        (_Trainer(start, config, samples[0], samples[1]), None)
        if base is None
        else _fine_tuner(
            base,
            stack,
            slices,
            validation,
            (anchor_slices, check_slices),
            start,
            config,
            pixel_size_nm,
            samples,
            held_out,
        )
    )
    if extra:
        _add_extra_samples(trainer, extra, start, config)
    if plan is not None:
        yield plan
        yield trainer.score_base()
    last_epoch, stopped = yield from trainer.epochs(stop)
    trainer.restore_best()
    run = _run_record(source, slices, validation, pixel_size_nm, last_epoch, trainer)
    if extra:
        run.update(_extra_record(extra, config))
    if plan is not None:
        _conclude(trainer, plan, config, held_out)
        run.update(anchor_slices=list(plan.anchors), check_slices=list(plan.check))
    info = _trained_info(start, base, trainer, name, run)
    return TrainResult(
        LoadedModel(start.model, info, None),
        trainer.best_epoch,
        trainer.best_score,
        stopped,
        trainer.history,
        getattr(trainer, "verdict", None),
        plan,
    )


def _conclude(trainer: _FineTuner, plan: FineTunePlan, config: TrainConfig, held_out: bool):
    """The verdict. The watershed is re-tuned when asked, or on new data with a corrected
    slice held out whole (``tune_new_data_watershed``); familiar data keep the base's."""
    tune = config.tune_postprocessing or (
        held_out and not plan.familiar and config.tune_new_data_watershed
    )
    trainer.conclude(plan.validation, tune=tune)


def _check_warm_start(warm_start: LoadedModel, config: TrainConfig, pixel_size_nm) -> None:
    # Files from before an option existed lack its key, and were built with its default.
    theirs = {**UNetConfig().to_dict(), **warm_start.info.architecture}
    if theirs != config.architecture.to_dict():
        raise InputError(
            f"the warm-start model's architecture {warm_start.info.architecture} is not the "
            f"configured one {config.architecture.to_dict()}"
        )
    theirs, ours = warm_start.info.pixel_size_nm, pixel_size_nm
    if (theirs is None) != (ours is None) or (ours is not None and not np.isclose(theirs, ours)):
        raise InputError(
            f"the warm-start model works at {warm_start.info.pixel_size_nm} nm per pixel, "
            f"the training data are at {pixel_size_nm}"
        )


def _trained_info(start: _Start, base, trainer: _Trainer, name: str, run: dict) -> ModelInfo:
    """The new model's metadata: what it was trained on and how well it validated."""
    info, history = start.info, trainer.history
    verdict = getattr(trainer, "verdict", None)
    if verdict is not None:
        validation = {
            "v_rand": verdict.v_rand_after,
            "v_rand_before": verdict.v_rand_before,
            **verdict.to_dict(),
        }
        epochs = info.epochs + (run["epochs"] if verdict.accepted else 0)
    else:
        validation = {
            "v_rand": trainer.best_score,
            "v_rand_before": history[0]["val_v_rand"] if base is not None and history else None,
        }
        epochs = info.epochs + trainer.best_epoch
    return dataclasses.replace(
        info,
        name=name,
        pixel_size_nm=start.pixel_size_nm,
        membrane_width_px=float(start.membrane_width_px),
        postprocessing=trainer.best_params.to_dict(),
        trained_on=list(info.trained_on) + [run],
        base_model=(base.info.name if base is not None else None),
        epochs=epochs,
        validation=validation,
        history=history,
    )


def _extra_samples(
    extra: Sequence[TrainingSource], start: _Start, config: TrainConfig
) -> list[_Sample]:
    samples = []
    for source in extra:
        stack, _ = as_stack(source.image)
        labels = _labels_array(source.labels)
        labels = labels[np.newaxis] if labels.ndim == 2 else labels
        if stack.shape != labels.shape:
            raise InputError(
                f"extra source {source.name!r}: image {tuple(stack.shape)} and "
                f"labels {tuple(labels.shape)} differ in shape"
            )
        samples += prepare(
            stack,
            labels,
            labelled_slices(labels),
            factor=resample_factor(source.pixel_size_nm, start.pixel_size_nm),
            **_target_settings(start, config),
        )
    return samples


def _target_settings(start: _Start, config: TrainConfig) -> dict:
    """How every training source is normalised and turned into targets (see ``prepare``)."""
    return {
        "percentiles": start.info.percentiles,
        "width": config.border_width_px or start.membrane_width_px,
        "border_weight": config.border_weight,
        "separation_weight": config.separation_weight,
    }


def _mixed_weights(main: list[_Sample], extra: list[_Sample], extra_share: float) -> np.ndarray:
    """Patch-sampling probabilities: by slice area within each group, ``extra_share`` to the
    extra volumes, so a large extra volume does not drown the data the model is for."""

    def by_area(samples):
        w = np.array([s.image.size for s in samples], dtype=float)
        return w / w.sum() if w.size else w

    if not extra:
        return by_area(main)
    share = float(np.clip(extra_share, 0.0, 1.0))
    return np.concatenate([by_area(main) * (1 - share), by_area(extra) * share])


def _pick(rng, samples: list[_Sample], weights: np.ndarray):
    s = samples[rng.choice(len(samples), p=weights)]
    return s.image, s.target, s.weight


def _weighted_bce(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p)) * w))


def _keras():
    from ..model.backend import keras_module

    return keras_module()


def _tf():
    from ..model.backend import tensorflow_module

    return tensorflow_module()
