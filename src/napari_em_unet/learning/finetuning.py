"""What fine-tuning on a few corrected slices adds to training, so that it harms nowhere.

Measured on ISBI 2012 (docs/design.md, "Fine-tuning"): two corrected slices and the old
defaults lowered the 18 other slices from 0.983 to 0.954 (one slice -0.27), already after
the first 40 steps, with the base's own watershed parameters as much as with re-tuned ones;
the band of the corrected slices that chose the best epoch went up all the while. The
network itself drifted where nobody had corrected anything, and nothing looked there.
So fine-tuning here

* mixes **anchors** into every batch: uncorrected slices of the same stack with the base
  model's own membrane probability as a soft target, so that what the corrections do not
  contradict is taught back as it was;
* keeps the base's **batch-normalisation statistics** (a few patches of two slices are not
  a population);
* **looks where nobody corrected**: uncorrected *check* slices are segmented by the base
  and by the candidate, and how much their segmentation changes is measured next to the
  validation V_rand on held-out corrected data (:class:`BaseComparison`);
* ends with a **verdict**: the final weights are the base plus all, half or a quarter of
  the fine-tuned change, whichever validates best without changing a check slice more than
  the budget allows where the base already does well; when none validates better than the
  base, the base is kept and the user is told so.

Plain numpy here; the network is only touched through the model object handed in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..segmentation.preprocessing import normalize, scaled_shape, zoom_to
from ..segmentation.tiling import predict_views
from ..segmentation.watershed import WatershedParams, instances_from_probability, tune_watershed
from .config import TrainConfig
from .metrics import score_slice
from .records import Candidate, FineTunePlan, Verdict


@dataclass
class AnchorSample:
    """An uncorrected slice at the model's scale and the base model's prediction of it."""

    image: np.ndarray
    target: np.ndarray
    """The base model's membrane probability (a soft target)."""
    weight: np.ndarray


@dataclass(frozen=True)
class LabelledPlane:
    """A labelled image at the model's scale (held-out validation, or a corrected slice)."""

    image: np.ndarray
    labels: np.ndarray


# ----------------------------------------------------------------------------- slices
def spread(candidates: Sequence[int], limit: int) -> list[int]:
    """Up to ``limit`` of ``candidates``, evenly spread (all of them when there are few)."""
    candidates = sorted(candidates)
    if limit <= 0 or not candidates:
        return []
    if len(candidates) <= limit:
        return candidates
    positions = np.linspace(0, len(candidates) - 1, limit)
    return sorted({candidates[int(round(p))] for p in positions})


CHECK_PIXELS = 16 * 2**20
"""Check slices are held in memory: at most this many pixels of them
(24 slices of 512 x 512 take 6 Mpx, a 4096 x 4096 slice 16), but never fewer than
:data:`MIN_CHECKS` slices."""
MIN_CHECKS = 8


def uncorrected_roles(
    depth: int, exclude: Sequence[int], anchors: int, checks: int, plane_pixels: int = 0
) -> tuple[list[int], list[int]]:
    """Anchor and check slices among the slices not in ``exclude``, spread over the stack.

    Disjoint when there are enough slices, so that a check slice shows how far a change
    reaches beyond the anchors; otherwise the check slices are taken among the anchors
    (in a stack of ISBI's 20 slices every uncorrected slice is checked). ``plane_pixels``:
    the pixels of one slice, which cap the checks at :data:`CHECK_PIXELS`.
    """
    if plane_pixels > 0:
        checks = min(checks, max(MIN_CHECKS, CHECK_PIXELS // plane_pixels))
    free = [s for s in range(depth) if s not in set(exclude)]
    if checks <= 0 or len(free) < anchors + checks:
        return spread(free, anchors), spread(free, checks)
    chosen = spread(free, anchors + checks)
    every = len(chosen) / checks
    check = [chosen[int(every * i + every / 2)] for i in range(checks)]
    return [s for s in chosen if s not in check], check


# ----------------------------------------------------------------------------- anchors
def anchor_samples(
    predict: Callable,
    stack,
    slices: Sequence[int],
    *,
    factor: float,
    percentiles: tuple[float, float],
) -> list[AnchorSample]:
    """Normalise and resample ``slices`` of ``stack`` as training does, with ``predict``'s
    (the base model's) membrane probability of each as its target."""
    samples = []
    for plane in model_scale_planes(stack, slices, factor=factor, percentiles=percentiles):
        target = np.clip(np.nan_to_num(predict(plane), nan=1.0), 0.0, 1.0).astype(np.float32)
        samples.append(AnchorSample(plane, target, np.ones(plane.shape, np.float32)))
    return samples


def model_scale_planes(
    stack, slices: Sequence[int], *, factor: float, percentiles: tuple[float, float]
) -> list[np.ndarray]:
    """``slices`` of ``stack`` normalised and resampled to the model's scale."""
    planes = []
    for index in slices:
        plane = normalize(np.asarray(stack[index]), percentiles)
        if factor != 1.0:
            plane = zoom_to(plane, scaled_shape(plane.shape, factor), order=1)
        planes.append(plane)
    return planes


def anchor_patch_count(batch_size: int, share: float, have_anchors: bool) -> int:
    """How many patches of each batch come from anchors: at least one corrected patch."""
    if not have_anchors or share <= 0 or batch_size < 2:
        return 0
    return int(np.clip(round(batch_size * share), 1, batch_size - 1))


def freeze_batch_norm(model) -> int:
    """Run every batch-normalisation layer in inference mode from now on; return how many.

    In Keras 3 a BatchNormalization layer that is not trainable normalises with its moving
    statistics and leaves them (and its scale and offset) alone.
    """
    frozen = 0
    for layer in model.layers:
        if layer.__class__.__name__ == "BatchNormalization":
            layer.trainable = False
            frozen += 1
    return frozen


def adapt_batch_norm(
    model,
    planes: Sequence[np.ndarray],
    *,
    seed: int,
    batches: int = 30,
    batch_size: int = 4,
    patch: int = 256,
) -> int:
    """Re-estimate the batch-normalisation statistics on ``planes`` (AdaBN); return how many
    layers were adapted.

    On data new to the model (another microscope, contrast, noise) the statistics its layers
    normalise with are those of its training data, and that alone costs much: on the
    FIB-SEM-like proxy of docs/design.md the base went from V_rand 0.664 to 0.792 on far
    slices with new statistics and no training at all. Random unaugmented patches in training
    mode, no gradient; a momentum of 0.8 over ``batches`` batches forgets the old statistics.
    """
    layers = [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]
    if not layers or not planes:
        return 0
    rng = np.random.default_rng(seed)
    saved = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.8
    try:
        for _ in range(batches):
            batch = [
                _random_crop(rng, planes[rng.integers(len(planes))], patch)
                for _ in range(batch_size)
            ]
            model(np.stack(batch)[..., None], training=True)
    finally:
        for layer, momentum in zip(layers, saved, strict=True):
            layer.momentum = momentum
    return len(layers)


def _random_crop(rng, plane: np.ndarray, size: int) -> np.ndarray:
    height, width = plane.shape
    if height < size or width < size:
        plane = np.pad(
            plane, ((0, max(0, size - height)), (0, max(0, size - width))), mode="symmetric"
        )
        height, width = plane.shape
    y, x = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
    return np.ascontiguousarray(plane[y : y + size, x : x + size], dtype=np.float32)


def blended(base_weights: list, tuned_weights: list, blend: float) -> list:
    """The base's weights plus ``blend`` of the fine-tuned change (0: base, 1: fine-tuned)."""
    return [b + blend * (t - b) for b, t in zip(base_weights, tuned_weights, strict=True)]


# ----------------------------------------------------------------------------- comparison
def _v_rand(probabilities, planes: Sequence[LabelledPlane], params) -> float | None:
    if not planes:
        return None
    return float(
        np.mean(
            [
                score_slice(instances_from_probability(p, params), plane.labels).v_rand
                for p, plane in zip(probabilities, planes, strict=True)
            ]
        )
    )


class BaseComparison:
    """How candidate weights compare with the base model, on what can be seen.

    * ``validation``: held-out corrected data (never trained on): V_rand, higher is better;
    * ``check``: uncorrected slices: how much their segmentation changes against the base's
      (1 - V_rand of one against the other; 0 = unchanged). Nobody knows whether a change
      there is right, but where the base already does well a large one is more likely a new
      error than a fix, so it is capped there.

    Parameters
    ----------
    base_model : keras.Model
    params : WatershedParams
        The base's watershed parameters.
    validation, corrected : list of LabelledPlane
        Held-out corrected data; the whole corrected slices (to see how familiar they are).
    check : list of np.ndarray
        Uncorrected planes at the model's scale.
    views : list of float
        The model's ``view_scales``: every map here is averaged over them, as the segmentation's.
    """

    def __init__(
        self,
        base_model,
        params: WatershedParams,
        validation: list[LabelledPlane],
        corrected: list[LabelledPlane],
        check: list[np.ndarray],
        config: TrainConfig,
        views: list[float] | tuple[float, ...] = (1.0,),
    ):
        self.params, self.validation, self.check, self.config = params, validation, check, config
        self.views = list(views)
        self.base_check = [
            instances_from_probability(self.predict(base_model, c), params) for c in check
        ]
        self.base_v_rand = _v_rand(
            [self.predict(base_model, v.image) for v in validation], validation, params
        )
        self.base_corrected_v_rand = _v_rand(
            [self.predict(base_model, c.image) for c in corrected], corrected, params
        )
        self.familiar = (
            self.base_corrected_v_rand is not None
            and self.base_corrected_v_rand >= config.familiar_v_rand
        )
        self.change_budget = config.change_budget if self.familiar else None

    def predict(self, model, plane: np.ndarray) -> np.ndarray:
        return predict_views(model, plane, self.views)

    def measure(
        self, model, params: WatershedParams | None = None, checks: int | None = None
    ) -> tuple[float | None, float | None, list]:
        """Validation V_rand, largest change on the first ``checks`` check slices (all by
        default), and the validation probabilities (for tuning the watershed)."""
        params = params or self.params
        probabilities = [self.predict(model, v.image) for v in self.validation]
        count = len(self.check) if checks is None else min(checks, len(self.check))
        changes = [
            1.0
            - score_slice(instances_from_probability(self.predict(model, c), params), base).v_rand
            for c, base in zip(self.check[:count], self.base_check[:count], strict=True)
        ]
        return (
            _v_rand(probabilities, self.validation, params),
            max(changes) if changes else None,
            probabilities,
        )

    def candidates(
        self, model, base_weights, tuned_weights, tune: bool
    ) -> tuple[list[Candidate], WatershedParams | None]:
        """Measure the base plus each configured share of the change (and, when ``tune``,
        with the watershed re-tuned on the validation data of the full change)."""
        found, tuned = [], None
        # On new data a change is expected and not capped: two check slices tell its size.
        checks = None if self.familiar else 2
        for blend in self.config.blends:
            model.set_weights(blended(base_weights, tuned_weights, blend))
            v_rand, change, probabilities = self.measure(model, checks=checks)
            found.append(Candidate(blend, v_rand, change))
            if tune and blend == max(self.config.blends) and self.validation:
                params, _ = tune_watershed(
                    probabilities, [v.labels for v in self.validation], self.params
                )
                if params != self.params:
                    tuned = params
            if tuned is not None:
                v_rand, change, _ = self.measure(model, tuned, checks=checks)
                found.append(Candidate(blend, v_rand, change, tuned_watershed=True))
        return found, tuned

    def verdict(self, found: list[Candidate], what: str) -> Verdict:
        return judge(found, self.base_v_rand, self.change_budget, self.config.min_gain, what)


def judge(
    found: Sequence[Candidate],
    before: float | None,
    budget: float | None,
    min_gain: float,
    what: str,
) -> Verdict:
    """Accept the best-validating candidate within the change budget, or keep the base.

    ``before`` is the base's validation V_rand (None: nothing was held out, and only the
    change budget can speak); ``budget`` the largest change allowed on a check slice (None:
    no cap, the data are new to the base).
    """
    within = [c for c in found if budget is None or (c.change or 0.0) <= budget]
    if before is None:
        better = within
    else:
        better = [c for c in within if c.v_rand is not None and c.v_rand > before + min_gain]
    if not better:
        best = max(found, key=lambda c: (c.v_rand or 0.0, -c.blend), default=None)
        return Verdict(
            False, 0.0, before, before, 0.0, _rejection(best, before, budget, what), tuple(found)
        )
    best = max(better, key=lambda c: (c.v_rand if c.v_rand is not None else 0.0, c.blend))
    return Verdict(
        True,
        best.blend,
        before,
        best.v_rand,
        best.change,
        _acceptance(best, before, budget, what),
        tuple(found),
    )


def _acceptance(best: Candidate, before, budget, what: str) -> str:
    score = (
        "no held-out corrected data to validate on"
        if before is None
        else f"validation V_rand {before:.4f} -> {best.v_rand:.4f} on {what}"
    )
    change = (
        ""
        if best.change is None
        else f"; uncorrected check slices changed by at most {best.change:.3f}"
    )
    share = "" if best.blend >= 1 else f"; kept {best.blend:.0%} of the fine-tuned change"
    if budget is not None and best.blend < 1:
        share += f" to stay within {budget:.2f} where the base already does well"
    watershed = "; watershed re-tuned" if best.tuned_watershed else ""
    return f"accepted: {score}{change}{share}{watershed}"


def _rejection(best: Candidate | None, before, budget, what: str) -> str:
    if best is None:
        return "kept the base model: no fine-tuned weights to compare"
    if (
        budget is not None
        and best.change is not None
        and best.change > budget
        and before is not None
        and best.v_rand is not None
        and best.v_rand > before
    ):
        return (
            f"kept the base model: the fine-tuned one validates better on {what} "
            f"({before:.4f} -> {best.v_rand:.4f}) but changes an uncorrected slice by "
            f"{best.change:.3f}, more than {budget:.2f} allowed where the base already "
            "does well"
        )
    after = "-" if best.v_rand is None else f"{best.v_rand:.4f}"
    base = "-" if before is None else f"{before:.4f}"
    return (
        f"kept the base model: the fine-tuned one is not better on {what} "
        f"(validation V_rand {base} -> {after})"
    )


def describe_plan(plan: FineTunePlan) -> str:
    """What a fine-tuning run will do and what its validation measures, in one paragraph
    (for the CLI and the Fine-tune widget)."""
    from ..slices import format_slices

    def named(indices) -> str:
        return format_slices(list(indices)) or "none"

    base = "-" if plan.base_corrected_v_rand is None else f"{plan.base_corrected_v_rand:.4f}"
    if plan.familiar:
        regime = (
            f"the base already does well there (V_rand {base} >= familiar threshold), "
            f"so no uncorrected check slice may change by more than "
            f"{plan.change_budget:.2f}"
        )
    else:
        regime = f"base V_rand on the corrected slices {base}: new data, changes are expected"
    where = named(plan.validation_slices) if plan.validation_slices else named(plan.corrected)
    anchors = (
        f"anchors (the base's own predictions) from slices {named(plan.anchors)}"
        if plan.anchors
        else "no anchors"
    )
    averaged = (
        ""
        if plan.averaged_epochs is None
        else " (the result: the mean of the weights of epochs "
        f"{named(range(plan.averaged_epochs[0], plan.averaged_epochs[1] + 1))})"
    )
    return (
        f"fine-tuning on slices {named(plan.corrected)} for {plan.total_steps} steps"
        f"{averaged} with {anchors}; validation: V_rand on {plan.validation} (slices {where}) "
        f"and the change of uncorrected slices {named(plan.check)} against the base; {regime}"
    )
