"""Fine-tuning that harms nowhere: anchors, frozen batch norm, the check slices, the verdict."""

import numpy as np
import pytest

from napari_em_unet.generators import drain
from napari_em_unet.learning import averaging
from napari_em_unet.learning.averaging import WeightAverage, averaged_from
from napari_em_unet.learning.config import TrainConfig
from napari_em_unet.learning.finetuning import (
    anchor_patch_count,
    blended,
    describe_plan,
    judge,
    spread,
    uncorrected_roles,
)
from napari_em_unet.learning.records import (
    Candidate,
    EpochProgress,
    FineTunePlan,
    StepProgress,
)
from napari_em_unet.learning.training import train
from napari_em_unet.segmentation.watershed import WatershedParams

QUICK = TrainConfig(
    epochs=2,
    steps_per_epoch=8,
    batch_size=4,
    patch_size=64,
    learning_rate=3e-3,
    anchor_slices=4,
    check_slices=2,
)
FAMILIAR = QUICK.replace(familiar_v_rand=0.0)
"""The untrained tiny network scores low everywhere: call that familiar, to test anchors."""
NEW = QUICK.replace(familiar_v_rand=1.01)


# ----------------------------------------------------------------------------- plain parts
def test_anchor_and_check_slices_are_spread_over_the_uncorrected_ones():
    anchors, checks = uncorrected_roles(20, [4, 5], anchors=8, checks=4)
    assert len(anchors) == 8 and len(checks) == 4
    assert not set(anchors) & set(checks)
    assert not ({4, 5} & (set(anchors) | set(checks)))
    assert min(anchors + checks) == 0 and max(anchors + checks) == 19  # the whole stack
    # Too few slices for both roles: the checks are taken among the anchors.
    anchors, checks = uncorrected_roles(5, [2], anchors=8, checks=2)
    assert anchors == [0, 1, 3, 4] and checks == [0, 4]
    assert uncorrected_roles(1, [0], 8, 4) == ([], [])
    assert spread(range(10), 3) == [0, 4, 9] and spread([3], 5) == [3]


def test_a_stack_like_isbis_is_checked_whole_and_huge_slices_less():
    defaults = TrainConfig()
    _, checks = uncorrected_roles(20, [16, 17], defaults.anchor_slices, defaults.check_slices)
    assert checks == [s for s in range(20) if s not in (16, 17)]  # slice 18 among them
    _, checks = uncorrected_roles(200, [5], 8, defaults.check_slices, plane_pixels=2048**2)
    assert len(checks) == 8  # 16 Mpx of 2048 x 2048 slices: 4, but never fewer than 8
    _, checks = uncorrected_roles(200, [5], 8, defaults.check_slices, plane_pixels=512**2)
    assert len(checks) == 24


def test_every_batch_keeps_a_corrected_patch():
    assert anchor_patch_count(4, 0.5, True) == 2
    assert anchor_patch_count(4, 0.9, True) == 3
    assert anchor_patch_count(4, 0.5, False) == 0
    assert anchor_patch_count(1, 0.5, True) == 0
    assert anchor_patch_count(8, 0.0, True) == 0


def test_blending_moves_part_of_the_way_from_the_base():
    base, tuned = [np.zeros(3), np.ones((2, 2))], [np.full(3, 4.0), np.full((2, 2), 3.0)]
    half = blended(base, tuned, 0.5)
    np.testing.assert_allclose(half[0], 2.0)
    np.testing.assert_allclose(half[1], 2.0)
    np.testing.assert_allclose(blended(base, tuned, 0.0)[1], 1.0)


def test_the_weight_average_is_the_mean_of_the_snapshots_in_their_dtype():
    average = WeightAverage()
    last = [np.full(2, 3.0, np.float32)]
    assert average.mean(last) is last  # nothing averaged yet: the last weights
    for value in (1.0, 2.0, 6.0):
        average.add([np.full(2, value, np.float32)])
    mean = average.mean(last)
    assert mean[0].dtype == np.float32
    np.testing.assert_allclose(mean[0], 3.0)
    # The last half of 10 epochs is epochs 6-10; 0 averages none; one epoch is its own.
    assert averaged_from(10, 0.5) == 6 and averaged_from(10, 0.0) == 11
    assert averaged_from(1, 0.5) == 1 and averaged_from(4, 1.0) == 1


def test_the_verdict_needs_a_better_validation_and_a_small_change_on_familiar_data():
    found = [Candidate(1.0, 0.90, 0.08), Candidate(0.5, 0.88, 0.015), Candidate(0.25, 0.86, 0.004)]
    # Familiar data (budget 0.02): the full change is best on validation but changes an
    # uncorrected slice by 0.08, so half of it is kept.
    verdict = judge(found, 0.85, 0.02, 0.0, "the band")
    assert verdict.accepted and verdict.blend == 0.5 and verdict.v_rand_after == 0.88
    assert "kept 50%" in verdict.reason
    # New data (no budget): the best validation wins.
    assert judge(found, 0.85, None, 0.0, "the band").blend == 1.0
    # Nothing better than the base: the base is kept, with its own score.
    verdict = judge(found, 0.95, None, 0.0, "the band")
    assert not verdict.accepted and verdict.blend == 0.0 and verdict.v_rand_after == 0.95
    assert "not better" in verdict.reason
    # Better only beyond the budget: kept, and the reason says so.
    verdict = judge([Candidate(1.0, 0.9, 0.3)], 0.85, 0.02, 0.0, "the band")
    assert not verdict.accepted and "0.300, more than 0.02" in verdict.reason


def test_the_plan_says_what_validation_measures():
    plan = FineTunePlan(
        corrected=(4, 5),
        validation="the bottom 20% of each corrected slice",
        validation_slices=(),
        anchors=(0, 2, 7),
        check=(1, 9),
        base_corrected_v_rand=0.94,
        familiar=True,
        change_budget=0.02,
        total_steps=400,
        base_val_v_rand=0.7,
        averaged_epochs=(6, 10),
    )
    text = describe_plan(plan)
    assert "slices 4-5" in text and "bottom 20%" in text and "0.02" in text
    assert "0, 2, 7" in text and "1, 9" in text
    assert "mean of the weights of epochs 6-10" in text


# ----------------------------------------------------------------------------- with a network
@pytest.fixture(scope="module")
def dark_is_membrane():
    """A model that is already good on the synthetic stack: dark pixels are membrane."""
    from napari_em_unet.model.backend import keras_module
    from napari_em_unet.model.info import LoadedModel, ModelInfo

    keras = keras_module()
    inputs = keras.Input((None, None, 1))
    outputs = keras.layers.Conv2D(
        1,
        1,
        activation="sigmoid",
        kernel_initializer=keras.initializers.Constant(-14.0),
        bias_initializer=keras.initializers.Constant(5.0),
    )(inputs)
    info = ModelInfo(
        name="dark",
        pixel_size_nm=4.0,
        postprocessing={
            "threshold": 0.5,
            "seed_threshold": 0.2,
            "sigma": 1.0,
            "min_seed_size": 20,
            "min_size": 30,
        },
    )
    return LoadedModel(keras.Model(inputs, outputs), info)


@pytest.fixture(scope="module")
def stack():
    from napari_em_unet.learning.synthetic import make_synthetic_stack

    return make_synthetic_stack((8, 96, 96), seed=3, cell_size=24)


def _held_out_drift(base, image, labels, share: float) -> float:
    """Mean |fine-tuned - base| membrane probability on slice 6, neither trained on nor an
    anchor, after fine-tuning on slices 1 and 2 (the new model accepted whatever it is)."""
    from napari_em_unet.segmentation.preprocessing import normalize
    from napari_em_unet.segmentation.tiling import predict_slice

    config = FAMILIAR.replace(anchor_share=share, min_gain=-1.0, change_budget=1.0, blends=(1.0,))
    result = drain(
        train(
            image,
            labels,
            base=base,
            slices=[1, 2],
            pixel_size_nm=4.0,
            anchor_slices=[0, 3, 4, 5, 7],
            check_slices=[6],
            config=config,
        )
    )
    assert result.verdict.accepted and result.verdict.blend == 1.0
    plane = normalize(image[6], base.info.percentiles)
    before = predict_slice(base.keras_model, plane)
    after = predict_slice(result.model.keras_model, plane)
    return float(np.mean(np.abs(after - before)))


def test_anchors_keep_the_base_where_nobody_corrected(tiny_model, stack):
    image, labels = stack
    # The tiny network is untrained: what two corrected slices teach it changes its output
    # everywhere; with the base's own predictions mixed in, far less so on other slices.
    free = _held_out_drift(tiny_model, image, labels, share=0.0)
    anchored = _held_out_drift(tiny_model, image, labels, share=0.5)
    assert anchored < 0.85 * free, (anchored, free)  # measured: 0.088 vs 0.126


def test_a_model_that_validates_worse_is_not_accepted(dark_is_membrane, stack):
    image, labels = stack
    wrong = labels.copy()
    wrong[[1, 2]] = 0  # "corrections" that call everything membrane...
    wrong[1, 40:56, 40:56] = wrong[2, 40:56, 40:56] = 1  # ...but for one square each
    records = []
    result = drain(
        train(
            image,
            wrong,
            base=dark_is_membrane,
            slices=[1, 2],
            validation_slices=[5],
            pixel_size_nm=4.0,
            config=QUICK.replace(learning_rate=0.3),
        ),
        records.append,
    )
    verdict = result.verdict
    assert not verdict.accepted and verdict.blend == 0.0
    assert max(c.v_rand for c in verdict.candidates) < verdict.v_rand_before
    assert "kept the base model" in verdict.reason
    for kept, base in zip(
        result.model.keras_model.get_weights(),
        dark_is_membrane.keras_model.get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(kept, base)
    assert result.model.info.validation["accepted"] is False
    kept = WatershedParams.from_dict(result.model.info.postprocessing)
    assert kept == WatershedParams.from_dict(dark_is_membrane.info.postprocessing)


def test_records_follow_the_plan_over_every_step(tiny_model, stack):
    image, labels = stack
    records = []
    drain(
        train(image, labels, base=tiny_model, slices=[1, 2], pixel_size_nm=4.0, config=FAMILIAR),
        records.append,
    )
    plan = records[0]
    assert isinstance(plan, FineTunePlan)
    assert plan.corrected == (1, 2) and plan.total_steps == 16
    assert len(plan.anchors) == 4 and len(plan.check) == 2
    assert not set(plan.anchors) & {1, 2} and not set(plan.check) & {1, 2}
    steps = [r for r in records if isinstance(r, StepProgress)]
    assert [s.done for s in steps] == list(range(1, 17)) and {s.total for s in steps} == {16}
    assert all(s.anchor_loss is not None for s in steps)
    rounds = [r for r in records if isinstance(r, EpochProgress)]
    assert [r.done for r in rounds] == [0, 8, 16]
    assert rounds[0].val_v_rand == pytest.approx(plan.base_val_v_rand)
    assert rounds[0].val_change == 0.0 and all(r.val_change is not None for r in rounds)
    assert plan.familiar and plan.change_budget == FAMILIAR.change_budget


def _batch_norm_weights(model) -> list[np.ndarray]:
    return [
        w
        for layer in model.layers
        if layer.__class__.__name__ == "BatchNormalization"
        for w in layer.get_weights()
    ]


def _fine_tuned(base, image, labels, config, epochs=2):
    config = config.replace(epochs=epochs, min_gain=-1.0, change_budget=1.0, blends=(1.0,))
    return drain(
        train(image, labels, base=base, slices=[1, 2], pixel_size_nm=4.0, config=config)
    ).model.keras_model


def test_familiar_data_keep_the_base_batch_norm_statistics(tiny_model, stack):
    image, labels = stack
    tuned = _fine_tuned(tiny_model, image, labels, FAMILIAR)
    for mine, theirs in zip(
        _batch_norm_weights(tuned), _batch_norm_weights(tiny_model.keras_model), strict=True
    ):
        np.testing.assert_array_equal(mine, theirs)


def test_new_data_get_new_batch_norm_statistics_once(tiny_model, stack):
    image, labels = stack
    # Re-estimated on the user's slices before training (AdaBN), then fixed: one round or two
    # of training give the same statistics, and they are not the base's.
    one, two = (_fine_tuned(tiny_model, image, labels, NEW, epochs) for epochs in (1, 2))
    base = _batch_norm_weights(tiny_model.keras_model)
    for after_one, after_two, _before in zip(
        _batch_norm_weights(one), _batch_norm_weights(two), base, strict=True
    ):
        np.testing.assert_array_equal(after_one, after_two)
    moving = [
        w for w, b in zip(_batch_norm_weights(one), base, strict=True) if not np.array_equal(w, b)
    ]
    assert moving  # the moving means and variances moved


def _candidates(base, image, labels, config) -> tuple:
    result = drain(
        train(image, labels, base=base, slices=[0, 1, 2, 3], pixel_size_nm=4.0, config=config)
    )
    assert result.plan.validation_slices == (2,)  # the middle corrected slice, held out whole
    return result.verdict.candidates


def test_new_data_retune_the_watershed_on_the_held_out_slice(tiny_model, stack):
    image, labels = stack
    config = NEW.replace(epochs=1)
    assert any(c.tuned_watershed for c in _candidates(tiny_model, image, labels, config))
    off = config.replace(tune_new_data_watershed=False)
    assert not any(c.tuned_watershed for c in _candidates(tiny_model, image, labels, off))
    # Familiar data keep the base's watershed: re-tuned, it cost other slices (design.md).
    assert not any(
        c.tuned_watershed
        for c in _candidates(tiny_model, image, labels, FAMILIAR.replace(epochs=1))
    )


def test_the_fine_tuned_weights_are_the_mean_of_the_last_epochs(tiny_model, stack, monkeypatch):
    image, labels = stack
    snapshots = []
    add = WeightAverage.add

    def recorded(self, weights):
        snapshots.append([np.array(w) for w in weights])
        add(self, weights)

    monkeypatch.setattr(averaging.WeightAverage, "add", recorded)
    tuned = _fine_tuned(tiny_model, image, labels, FAMILIAR.replace(average_last=0.5), epochs=4)
    assert len(snapshots) == 2  # epochs 3 and 4
    assert not np.allclose(snapshots[0][0], snapshots[1][0])
    # The result is their mean, not the last epoch's weights.
    for mine, first, second in zip(tuned.get_weights(), *snapshots, strict=True):
        np.testing.assert_allclose(mine, (first + second) / 2, rtol=1e-6, atol=1e-7)


def test_validation_and_checks_see_the_maps_segmentation_makes(
    dark_is_membrane, stack, monkeypatch
):
    """A model averaging two views is validated on averaged maps, not on its first view."""
    from dataclasses import replace

    from napari_em_unet.learning import finetuning

    image, labels = stack
    base = replace(dark_is_membrane, info=replace(dark_is_membrane.info, view_scales=[1.0, 0.5]))
    seen = []

    def recorded(model, plane, factors, **options):
        seen.append(list(factors))
        return real(model, plane, factors, **options)

    real = finetuning.predict_views
    monkeypatch.setattr(finetuning, "predict_views", recorded)
    result = drain(
        train(
            image,
            labels,
            base=base,
            slices=[1, 2],
            validation_slices=[5],
            check_slices=[6],
            pixel_size_nm=4.0,
            config=QUICK.replace(epochs=1),
        )
    )
    assert seen and all(factors == [1.0, 0.5] for factors in seen)
    assert result.model.info.view_scales == [1.0, 0.5]  # kept by the fine-tuned model
