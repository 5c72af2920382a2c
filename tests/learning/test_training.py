"""Training and fine-tuning with a tiny real U-Net on a small synthetic stack."""

import threading

import numpy as np
import pytest

from napari_em_unet.errors import InputError
from napari_em_unet.generators import drain
from napari_em_unet.learning.config import TrainConfig
from napari_em_unet.learning.records import EpochProgress, StepProgress
from napari_em_unet.learning.training import train
from napari_em_unet.model.unet import UNetConfig

TINY = TrainConfig(
    epochs=3,
    steps_per_epoch=6,
    batch_size=2,
    patch_size=64,
    learning_rate=3e-3,
    architecture=UNetConfig(base_filters=4, depth=2),
    tune_postprocessing=False,
)
ACCEPT = TINY.replace(min_gain=-1.0)
"""Fine-tuning that keeps whatever the untrained tiny network learned (the verdict is tested
in test_finetuning.py)."""


def test_fine_tuning_lowers_the_loss_and_changes_the_weights(tiny_model, small_stack):
    image, labels = small_stack
    before = [w.copy() for w in tiny_model.keras_model.get_weights()]
    records = []
    result = drain(
        train(
            image,
            labels,
            base=tiny_model,
            config=ACCEPT,
            name="ft",
            validation_slices=[2],
            pixel_size_nm=4.0,
        ),
        records.append,
    )
    steps = [r for r in records if isinstance(r, StepProgress)]
    epochs = [r for r in records if isinstance(r, EpochProgress)]
    assert len(steps) == TINY.epochs * TINY.steps_per_epoch
    assert [e.epoch for e in epochs] == [0, 1, 2, 3]  # epoch 0 = the base model
    assert result.verdict.accepted
    first, last = np.mean([s.loss for s in steps[:4]]), np.mean([s.loss for s in steps[-4:]])
    assert last < first
    after = result.model.keras_model.get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    # the base model object is never modified
    for a, b in zip(before, tiny_model.keras_model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    info = result.model.info
    assert info.base_model == "tiny" and info.trained_on[-1]["slices"] == [0, 1]
    assert info.postprocessing and "v_rand" in info.validation
    assert info.validation["accepted"] is True and info.validation["reason"]


def test_stop_ends_with_a_verdict_on_the_weights_so_far(tiny_model, small_stack):
    image, labels = small_stack
    stop = threading.Event()
    seen = []

    def watch(record):
        seen.append(record)
        if isinstance(record, StepProgress) and record.epoch == 2 and record.step == 2:
            stop.set()

    result = drain(
        train(image, labels, base=tiny_model, config=ACCEPT, validation_slices=[2], stop=stop),
        watch,
    )
    assert result.stopped
    epochs = [r for r in seen if isinstance(r, EpochProgress)]
    assert epochs[-1].epoch == 2 and epochs[-1].done == 8  # the interrupted round is shown
    assert result.verdict is not None and result.verdict.accepted
    assert result.best_v_rand == pytest.approx(result.verdict.v_rand_after)
    assert result.model.info.trained_on[-1]["epochs"] == 2


def test_training_from_scratch_keeps_the_best_epoch(small_stack):
    image, labels = small_stack
    seen = []
    config = TINY.replace(average_last=0.0)  # no weight average (test_averaging.py)
    result = drain(train(image, labels, config=config, validation_slices=[2]), seen.append)
    epochs = [r for r in seen if isinstance(r, EpochProgress)]
    assert [e.epoch for e in epochs] == [1, 2, 3]  # no base, no epoch 0, no verdict
    best = max(epochs, key=lambda e: (e.val_v_rand, -e.epoch))
    assert result.best_epoch == best.epoch and result.verdict is None
    assert result.best_v_rand == pytest.approx(best.val_v_rand)


def test_training_from_scratch_is_seedable(small_stack):
    image, labels = small_stack
    config = TrainConfig(**{**TINY.__dict__, "epochs": 1, "steps_per_epoch": 2})
    a = drain(train(image, labels, config=config))
    b = drain(train(image, labels, config=config))
    pairs = zip(a.model.keras_model.get_weights(), b.model.keras_model.get_weights(), strict=True)
    for wa, wb in pairs:
        np.testing.assert_allclose(wa, wb, atol=1e-5)


def test_bad_training_input_is_refused(tiny_model, small_stack):
    image, labels = small_stack
    with pytest.raises(InputError, match="differ in shape"):
        next(train(image, labels[:, :50], base=tiny_model, config=TINY))
    with pytest.raises(InputError, match="no labelled slice"):
        next(train(image, np.zeros_like(labels), base=tiny_model, config=TINY))
    with pytest.raises(InputError, match="all membrane"):
        next(
            train(
                image,
                labels * np.array([0, 1, 1])[:, None, None],
                slices=[0],
                base=tiny_model,
                config=TINY,
            )
        )
    with pytest.raises(InputError, match="outside the stack"):
        next(train(image, labels, slices=[7], base=tiny_model, config=TINY))
    with pytest.raises(InputError, match="whole numbers"):
        next(train(image, labels + 0.5, base=tiny_model, config=TINY))


def test_extra_volumes_add_training_patches_at_their_own_scale(small_stack):
    from napari_em_unet.learning.training import TrainingSource, _mixed_weights

    image, labels = small_stack
    # The extra volume is the same stack at half the resolution (8 nm): resampled to 4 nm.
    extra = TrainingSource(image[:, ::2, ::2], labels[:, ::2, ::2], 8.0, "half")
    config = TrainConfig(**{**TINY.__dict__, "epochs": 1, "validation_fraction": 0.0})
    result = drain(
        train(image, labels, slices=[0], pixel_size_nm=4.0, config=config, extra=[extra])
    )
    entry = result.model.info.trained_on[-1]
    assert entry["extra"] == [{"source": "half", "pixel_size_nm": 8.0, "slices": [0, 1, 2]}]
    assert result.best_v_rand is None  # nothing held out: no epoch selection
    main, more = [np.zeros((10, 10))] * 2, [np.zeros((20, 20)), np.zeros((10, 10))]

    class S:  # only .image is read
        def __init__(self, a):
            self.image = a

    weights = _mixed_weights([S(a) for a in main], [S(a) for a in more], 0.25)
    assert weights == pytest.approx([0.375, 0.375, 0.2, 0.05])


def test_a_warm_start_trains_from_that_models_weights_and_keeps_its_history(
    tiny_model, small_stack
):
    from napari_em_unet.model.unet import build_unet

    image, labels = small_stack
    # A learning rate this small leaves the weights where they started: the warm start's,
    # not those of a new network with this seed.
    config = TINY.replace(epochs=1, steps_per_epoch=1, learning_rate=1e-12, seed=5)
    result = drain(
        train(
            image,
            labels,
            warm_start=tiny_model,
            pixel_size_nm=4.0,
            config=config,
            validation_slices=[2],
        )
    )
    kernels = [w for w in result.model.keras_model.get_weights() if w.ndim == 4]
    warm = [w for w in tiny_model.keras_model.get_weights() if w.ndim == 4]
    fresh = [w for w in build_unet(config.architecture, seed=5).get_weights() if w.ndim == 4]
    for got, want, other in zip(kernels, warm, fresh, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
        assert not np.allclose(got, other, atol=1e-3)
    info = result.model.info
    assert info.trained_on[:-1] == tiny_model.info.trained_on
    assert info.trained_on[-1]["slices"] == [0, 1] and info.base_model is None
    # Untuned (TINY does not tune), the watershed stays the warm start's, not the default.
    assert info.postprocessing["seed_threshold"] == tiny_model.info.postprocessing["seed_threshold"]
    with pytest.raises(InputError, match="architecture"):
        other = config.replace(architecture=UNetConfig(base_filters=8, depth=2))
        next(train(image, labels, warm_start=tiny_model, pixel_size_nm=4.0, config=other))
    with pytest.raises(InputError, match="nm per pixel"):
        next(train(image, labels, warm_start=tiny_model, pixel_size_nm=8.0, config=config))
    with pytest.raises(InputError, match="exclude each other"):
        next(train(image, labels, base=tiny_model, warm_start=tiny_model, config=config))


def test_a_warm_start_saved_before_the_light_decoder_option_is_accepted(tiny_model, small_stack):
    import dataclasses

    image, labels = small_stack
    old = dict(tiny_model.info.architecture)
    del old["light_decoder"]  # files written before the option existed
    older = dataclasses.replace(tiny_model, info=dataclasses.replace(tiny_model.info))
    older.info.architecture = old
    config = TINY.replace(epochs=1, steps_per_epoch=1, seed=5)
    result = drain(
        train(image, labels, warm_start=older, pixel_size_nm=4.0, config=config, slices=[0, 1])
    )
    assert result.model.info.architecture["light_decoder"] is False
