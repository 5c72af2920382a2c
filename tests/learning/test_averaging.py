"""Weight averaging at the end of training from scratch, and the batch-norm statistics it
re-measures."""

import numpy as np
import pytest

from napari_em_unet.generators import drain
from napari_em_unet.learning import averaging, training
from napari_em_unet.learning.averaging import recompute_batch_norm
from napari_em_unet.learning.config import TrainConfig
from napari_em_unet.learning.training import train
from napari_em_unet.model.unet import UNetConfig

_NETWORK = UNetConfig(base_filters=4, depth=2)
SCRATCH = TrainConfig(
    epochs=3, steps_per_epoch=4, batch_size=2, patch_size=64, architecture=_NETWORK
)
SCRATCH = SCRATCH.replace(
    learning_rate=3e-3, tune_postprocessing=False, validation_fraction=0.0, average_last=0.5
)


def _batch_norm_layers(model):
    return [layer for layer in model.layers if layer.__class__.__name__ == "BatchNormalization"]


def test_batch_norm_statistics_become_the_mean_over_the_batches():
    from napari_em_unet.model.backend import keras_module

    keras = keras_module()
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.BatchNormalization()])
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc, scale, (3, 4, 4, 1)) for loc, scale in ((1, 1), (5, 2), (-3, 3))]
    assert recompute_batch_norm(model, iter(batches)) == 3
    layer = _batch_norm_layers(model)[0]
    # Keras measures each batch's mean and biased variance; the result is their plain mean,
    # whatever the statistics were before (the first batch replaces them entirely).
    np.testing.assert_allclose(
        layer.moving_mean.numpy(), [np.mean([b.mean() for b in batches])], rtol=1e-5
    )
    np.testing.assert_allclose(
        layer.moving_variance.numpy(), [np.mean([b.var() for b in batches])], rtol=1e-4
    )
    assert layer.momentum == pytest.approx(0.99)  # the layer's own momentum is back


def test_training_from_scratch_ends_with_the_mean_of_the_last_epochs(small_stack, monkeypatch):
    image, labels = small_stack
    snapshots = []
    add = averaging.WeightAverage.add

    def recorded(self, weights):
        snapshots.append([np.array(w) for w in weights])
        add(self, weights)

    monkeypatch.setattr(averaging.WeightAverage, "add", recorded)
    result = drain(train(image, labels, slices=[0, 1], pixel_size_nm=4.0, config=SCRATCH))
    assert len(snapshots) == 2  # epochs 2 and 3: the last half of 3, rounded up
    model = result.model.keras_model
    statistics = {
        id(v) for layer in _batch_norm_layers(model) for v in layer.non_trainable_variables
    }
    learned = [v for v in model.weights if id(v) not in statistics]
    assert learned and len(learned) < len(model.weights)
    index = {id(v): i for i, v in enumerate(model.weights)}
    for variable in learned:
        i = index[id(variable)]
        mean = (snapshots[0][i] + snapshots[1][i]) / 2
        np.testing.assert_allclose(variable.numpy(), mean, rtol=1e-5, atol=1e-7)
    # The statistics are re-measured, not the mean of the snapshots' statistics.
    moved = [
        not np.allclose(model.weights[index[id(v)]].numpy(), snapshots[1][index[id(v)]])
        for layer in _batch_norm_layers(model)
        for v in layer.non_trainable_variables
    ]
    assert any(moved)
    run = result.model.info.trained_on[-1]
    assert run["averaged"] == {"epochs": [2, 3], "v_rand": None, "kept": True}


def test_an_average_that_validates_worse_than_the_best_epoch_is_not_kept(small_stack, monkeypatch):
    image, labels = small_stack
    scores = iter([0.5, 0.7, 0.6, 0.65])  # epochs 1-3, then the average

    def scripted(self, start):
        return 0.1, next(scores), start

    kept = {}
    restore = training._Trainer.restore_best

    def remember_best(self):
        kept["weights"] = [np.array(w) for w in self.best_weights]
        restore(self)

    monkeypatch.setattr(training._Trainer, "evaluate", scripted)
    monkeypatch.setattr(training._Trainer, "restore_best", remember_best)
    config = SCRATCH.replace(validation_fraction=0.25)
    result = drain(train(image, labels, slices=[0, 1], pixel_size_nm=4.0, config=config))
    assert result.best_epoch == 2 and result.best_v_rand == pytest.approx(0.7)
    assert result.model.info.trained_on[-1]["averaged"]["kept"] is False
    for mine, best in zip(result.model.keras_model.get_weights(), kept["weights"], strict=True):
        np.testing.assert_array_equal(mine, best)


def test_training_from_scratch_averages_the_last_11_of_30_epochs_by_default():
    # the share docs/design.md reports for em-unet train ("epochs 20-30");
    # fine-tuning averages its last half
    config = TrainConfig.from_scratch()
    assert averaging.averaged_from(config.epochs, config.average_last) == 20
    assert averaging.averaged_from(10, TrainConfig().average_last) == 6
