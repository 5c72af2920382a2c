"""Training and fine-tuning: a generator that yields progress and returns the best model.

``train(...)`` prepares the chosen slices (normalised, resampled to the model's pixel size,
labels turned into membrane targets by :mod:`.targets`), then runs epochs of random
augmented patches. After every epoch it predicts the validation data, tunes the watershed
on it and scores V_rand; the weights of the best epoch are kept. Fine-tuning counts the
base model as epoch 0, so the result is never worse than the base on the validation data.

Stopping is cooperative: pass a ``threading.Event`` (or anything with ``is_set()``) as
``stop``; the generator finishes the current step, restores the best weights and returns.
Progress records are small frozen dataclasses, for the CLI's progress bar and napari's
thread worker alike.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..model.files import LoadedModel, ModelInfo
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
from .metrics import score_slice
from .targets import labelled_slices, membrane_width, training_target


@dataclass(frozen=True)
class TrainConfig:
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
    extra_share: float = 0.5
    """Share of training patches drawn from ``extra`` sources (when there are any)."""
    seed: int = 0
    architecture: UNetConfig = field(default_factory=UNetConfig)


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


def prepare(
    image: np.ndarray,
    labels: np.ndarray,
    slices: Sequence[int],
    *,
    factor: float,
    percentiles: tuple[float, float],
    width: float,
    border_weight: float,
) -> list[_Sample]:
    """Normalise, resample to the model's scale and derive targets for the given slices."""
    samples = []
    for index in slices:
        plane = normalize(np.asarray(image[index]), percentiles)
        lab = np.asarray(labels[index])
        if factor != 1.0:
            shape = scaled_shape(plane.shape, factor)
            plane, lab = zoom_to(plane, shape, order=1), zoom_to(lab, shape, order=0)
        target = training_target(lab, width, border_weight)
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
    stop=None,
) -> Generator[StepProgress | EpochProgress, None, TrainResult]:
    """Train a new U-Net (``base=None``) or fine-tune ``base`` on the labelled slices.

    ``labels`` follows the rule in :mod:`.targets`; ``slices`` defaults to every slice with
    a non-zero label (minus ``validation_slices``). ``pixel_size_nm`` is the data's pixel
    size, used to resample to the base model's scale (and stored in a new model). ``extra``
    volumes are resampled to the same scale and add training patches only
    (``config.extra_share`` of them), never validation data.
    """
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
    validation_slices = _check_slices(validation_slices or [], stack.shape[0], "validation slices")
    if slices is None:
        slices = [s for s in labelled_slices(label_stack) if s not in validation_slices]
        if not slices:
            raise InputError("no labelled slice to train on: every slice's labels are all 0")
    slices = _check_slices(slices, stack.shape[0], "training slices")
    empty = [s for s in slices + validation_slices if not np.any(label_stack[s] != 0)]
    if empty:
        raise InputError(f"slices {empty} are all membrane (no cell labelled); nothing to learn")

    keras = _keras()
    if base is not None:
        info = base.info
        model_px = info.pixel_size_nm
        width = info.membrane_width_px
        params = WatershedParams.from_dict(info.postprocessing)
        model = keras.models.clone_model(base.keras_model)
        model.set_weights(base.keras_model.get_weights())
    else:
        model_px = pixel_size_nm
        width = membrane_width(label_stack[slices])
        params = WatershedParams()
        model = build_unet(config.architecture, seed=config.seed)
        info = ModelInfo(architecture=config.architecture.to_dict(), pixel_size_nm=model_px)
    percentiles = info.percentiles
    factor = resample_factor(pixel_size_nm, model_px)
    border_width = config.border_width_px or width
    prep = {"factor": factor, "percentiles": percentiles, "width": border_width,
            "border_weight": config.border_weight}
    train_samples = prepare(stack, label_stack, slices, **prep)
    if validation_slices:
        val_samples = prepare(stack, label_stack, validation_slices, **prep)
    else:
        train_samples, val_samples = _split_band(train_samples, config.validation_fraction)

    tf = _tf()
    rng = np.random.default_rng(config.seed)
    keras.utils.set_random_seed(config.seed)
    total_steps = max(1, config.epochs * config.steps_per_epoch)
    schedule = keras.optimizers.schedules.CosineDecay(
        config.learning_rate, decay_steps=total_steps, alpha=0.05
    )
    optimizer = keras.optimizers.Adam(schedule)
    optimizer.build(model.trainable_variables)

    @tf.function(reduce_retracing=True)
    def step_fn(x, y, w):
        with tf.GradientTape() as tape:
            p = tf.clip_by_value(model(x, training=True), 1e-6, 1 - 1e-6)
            bce = -(y * tf.math.log(p) + (1 - y) * tf.math.log(1 - p))
            loss = tf.reduce_mean(bce * w)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    augment = AugmentConfig(enabled=config.augment, elastic=config.elastic)
    extra_samples = _extra_samples(extra, model_px, prep)
    sample_weights = _mixed_weights(train_samples, extra_samples, config.extra_share)
    train_samples = train_samples + extra_samples

    def evaluate(start: WatershedParams) -> tuple[float | None, float | None, WatershedParams]:
        """Validation loss, V_rand and the watershed parameters tuned from ``start``."""
        if not val_samples:
            return None, None, start
        probs = [predict_slice(model, s.image) for s in val_samples]
        losses = [_weighted_bce(p, s.target, s.weight)
                  for p, s in zip(probs, val_samples, strict=True)]
        gts = [s.labels for s in val_samples]
        tuned = start
        if config.tune_postprocessing:
            tuned, score = tune_watershed(probs, gts, start)
        else:
            score = float(np.mean([score_slice(instances_from_probability(p, start), g,
                                                   grown=False).v_rand
                                   for p, g in zip(probs, gts, strict=True)]))
        return float(np.mean(losses)), score, tuned

    history: list[dict] = []
    best_epoch, best_weights, best_score, best_params = 0, None, None, params
    if base is not None and val_samples:
        val_loss, best_score, best_params = evaluate(params)
        best_weights = model.get_weights()
        history.append({"epoch": 0, "loss": None, "val_loss": val_loss, "val_v_rand": best_score})
        yield EpochProgress(0, config.epochs, float("nan"), val_loss, best_score, 0, 0.0)

    stopped = False
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        started, losses = time.perf_counter(), []
        for step in range(1, config.steps_per_epoch + 1):
            if stop is not None and stop.is_set():
                stopped = True
                break
            batch = [random_patch(rng, *_pick(rng, train_samples, sample_weights),
                                  config.patch_size, augment) for _ in range(config.batch_size)]
            x, y, w = (np.stack([b[i] for b in batch])[..., None] for i in range(3))
            loss = float(step_fn(x, y, w))
            losses.append(loss)
            yield StepProgress(epoch, config.epochs, step, config.steps_per_epoch, loss)
        if stopped and not losses:
            epoch -= 1
            break
        val_loss, score, tuned = evaluate(best_params)
        mean_loss = float(np.mean(losses))
        improved = score is None or best_score is None or score > best_score
        if improved:
            best_epoch, best_score, best_params = epoch, score, tuned
            best_weights = model.get_weights()
        history.append({"epoch": epoch, "loss": mean_loss, "val_loss": val_loss,
                        "val_v_rand": score})
        yield EpochProgress(epoch, config.epochs, mean_loss, val_loss, score, best_epoch,
                            time.perf_counter() - started)
        if stopped:
            break

    if best_weights is not None:
        model.set_weights(best_weights)
    if not val_samples and config.tune_postprocessing:
        # No held-out data: tune on the training slices themselves (better than nothing).
        probs = [predict_slice(model, s.image) for s in train_samples]
        best_params, _ = tune_watershed(probs, [s.labels for s in train_samples], best_params)

    new_info = dataclasses.replace(
        info,
        name=name,
        pixel_size_nm=model_px,
        membrane_width_px=float(width),
        postprocessing=best_params.to_dict(),
        trained_on=list(info.trained_on if base is not None else [])
        + [{"source": source, "slices": slices, "validation_slices": validation_slices,
            "pixel_size_nm": pixel_size_nm, "epochs": epoch, "best_epoch": best_epoch,
            **({"extra": [{"source": e.name, "pixel_size_nm": e.pixel_size_nm,
                           "slices": labelled_slices(_labels_array(e.labels))} for e in extra],
                "extra_share": config.extra_share} if extra else {})}],
        base_model=(base.info.name if base is not None else None),
        epochs=info.epochs + best_epoch if base is not None else best_epoch,
        validation={"v_rand": best_score,
                    "v_rand_before": history[0]["val_v_rand"] if base is not None and history
                    else None},
        history=history,
    )
    return TrainResult(LoadedModel(model, new_info, None), best_epoch, best_score, stopped, history)


def _extra_samples(extra: Sequence[TrainingSource], model_px, prep: dict) -> list[_Sample]:
    samples = []
    for source in extra:
        stack, _ = as_stack(source.image)
        labels = _labels_array(source.labels)
        labels = labels[np.newaxis] if labels.ndim == 2 else labels
        if stack.shape != labels.shape:
            raise InputError(f"extra source {source.name!r}: image {tuple(stack.shape)} and "
                             f"labels {tuple(labels.shape)} differ in shape")
        factor = resample_factor(source.pixel_size_nm, model_px)
        samples += prepare(stack, labels, labelled_slices(labels), **{**prep, "factor": factor})
    return samples


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


def run_to_completion(gen: Generator) -> TrainResult:
    """Drain a training generator and return its result (for scripts and tests)."""
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value
