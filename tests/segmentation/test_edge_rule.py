"""The learned edge rule: measurements, trees and decisions worked out by hand."""

from dataclasses import replace

import numpy as np
import pytest
from test_mutex import two_cells_truth, two_cells_with_a_gap

from napari_em_unet.segmentation.edge_rule import (
    N_FEATURES,
    EdgeRule,
    edge_features,
    learned_merges,
)
from napari_em_unet.segmentation.watershed import (
    WatershedParams,
    instances_from_probability,
    tune_watershed,
)

MEAN, LENGTH, SMALL, LARGE, INSIDE_LOW, INSIDE_HIGH = 0, 9, 10, 11, 12, 13


def three_columns():
    """Regions 1 | 2 | 3, 10 x 10 pixels each; border 1 | 2 at 0.5, border 2 | 3 at 0.9."""
    labels = np.repeat(np.repeat(np.array([[1, 2, 3]]), 10, axis=1), 10, axis=0)
    probability = np.full(labels.shape, 0.05, np.float32)
    probability[:, 9:11] = 0.5
    probability[:, 19:21] = 0.9
    return labels, probability


def one_split(feature: int, threshold: float, left: float, right: float, baseline=0.0):
    """A rule of one tree: ``left`` where the measurement is at most ``threshold``."""
    return EdgeRule(
        baseline,
        [[feature, 0, 0]],
        [[threshold, 0, 0]],
        [[1, 0, 0]],
        [[2, 0, 0]],
        [[0, left, right]],
    )


def test_the_measurements_of_a_border():
    labels, probability = three_columns()
    u, v, n, x = edge_features(labels, probability)
    assert (u.tolist(), v.tolist(), n, x.shape) == ([1, 2], [2, 3], 4, (2, N_FEATURES))
    assert x[:, MEAN] == pytest.approx([0.5, 0.9])
    assert x[0, 1:9] == pytest.approx([0] + [0.5] * 7)  # no spread, every quantile 0.5
    assert x[0, LENGTH] == pytest.approx(np.log(10))  # 10 pixel pairs
    assert x[0, SMALL] == x[0, LARGE] == pytest.approx(np.log1p(100))
    # Region 1: 9 columns at 0.05 and one at 0.5; region 2: 0.5, 8 x 0.05, 0.9.
    assert x[0, INSIDE_LOW] == pytest.approx(0.095)
    assert x[0, INSIDE_HIGH] == pytest.approx(0.18)
    # Data with pixels twice the model's: lengths and areas in the model's pixels.
    _, _, _, coarse = edge_features(labels, probability, pixel_factor=2.0)
    assert coarse[0, LENGTH] == pytest.approx(np.log(20))
    assert coarse[0, SMALL] == pytest.approx(np.log1p(400))


def test_trees_are_walked_as_written():
    rule = EdgeRule(
        0.5,
        [[MEAN, 0, 0], [LENGTH, 0, 0]],
        [[0.6, 0, 0], [np.log(5), 0, 0]],
        [[1, 0, 0], [1, 0, 0]],
        [[2, 0, 0], [2, 0, 0]],
        [[0, 2.0, -3.0], [0, 0.25, -0.5]],
    )
    x = np.zeros((3, N_FEATURES))
    x[:, MEAN] = [0.5, 0.9, 0.6]
    x[:, LENGTH] = [np.log(10), np.log(2), np.log(5)]
    assert rule.logit(x) == pytest.approx([0.5 + 2 - 0.5, 0.5 - 3 + 0.25, 0.5 + 2 + 0.25])


def test_a_rule_on_the_border_mean_decides_like_the_border_rule():
    labels, probability = three_columns()
    lut = learned_merges(labels, probability, one_split(MEAN, 0.7, 1.0, -1.0), 0.0, 1.0)
    assert lut[1] == lut[2] != lut[3]
    # The bias shifts every decision: far enough down, nothing is one cell.
    apart = learned_merges(labels, probability, one_split(MEAN, 0.7, 1.0, -1.0), -1.5, 1.0)
    assert len(set(apart[1:].tolist())) == 3


def test_the_instance_step_uses_the_rule_and_the_tuner_moves_its_bias():
    probability = two_cells_with_a_gap()
    base = WatershedParams(threshold=0.9, seed_threshold=0.2, sigma=0, seed_spacing=16, mutex=True)
    always_one = replace(base, edge_rule=one_split(MEAN, 2.0, 1.0, 1.0), edge_bias=2.0)
    assert instances_from_probability(probability, always_one).max() == 1
    tuned, score = tune_watershed([probability], [two_cells_truth()], always_one)
    assert tuned.edge_rule is always_one.edge_rule and tuned.merge_below == base.merge_below
    assert tuned.edge_bias <= -1.0  # the only way to keep the two cells apart
    assert instances_from_probability(probability, tuned).max() == 2
    assert score > 0.99


def test_a_rule_travels_in_the_parameters_and_a_damaged_one_is_refused():
    rule = one_split(MEAN, 0.7, 1.0, -1.0, baseline=0.25)
    params = WatershedParams(mutex=True, edge_rule=rule, edge_bias=0.5)
    again = WatershedParams.from_dict(params.to_dict())
    assert again == params and again.edge_rule == rule
    assert "edge_rule" not in WatershedParams(mutex=True).to_dict()
    assert params.at_scale(2.0).edge_scale == 2.0
    with pytest.raises(ValueError, match="edge rule"):
        WatershedParams.from_dict({"mutex": True, "edge_rule": {"baseline": 0.0}})
    with pytest.raises(ValueError, match="measurement"):
        one_split(N_FEATURES, 0.5, 1.0, -1.0)
    with pytest.raises(ValueError, match="children"):
        EdgeRule(0.0, [[MEAN, 0, 0]], [[0.5, 0, 0]], [[1, 0, 0]], [[3, 0, 0]], [[0, 1.0, -1.0]])
    with pytest.raises(ValueError, match="loop"):  # node 1 leads back to the root
        EdgeRule(0.0, [[MEAN, MEAN, 0]], [[0.5, 0.5, 0]], [[1, 0, 0]], [[2, 2, 0]], [[0, 0, 1.0]])


def test_a_model_with_a_damaged_rule_is_refused_in_one_sentence(tiny_model, tmp_path):
    from napari_em_unet.errors import ModelFileError
    from napari_em_unet.model.files import load_model, save_model

    info = replace(tiny_model.info, postprocessing={"mutex": True, "edge_rule": {"left": []}})
    path = save_model(tiny_model.keras_model, info, tmp_path / "damaged.keras")
    with pytest.raises(ModelFileError, match="damaged instance step"):
        load_model(path)


def test_a_model_with_unusable_view_scales_is_refused(tiny_model, tmp_path):
    from napari_em_unet.errors import ModelFileError
    from napari_em_unet.model.files import load_model, save_model

    for scales in ([], [0.0], ["big"], 0.67):
        info = replace(tiny_model.info, view_scales=scales)
        path = save_model(tiny_model.keras_model, info, tmp_path / "views.keras")
        with pytest.raises(ModelFileError, match="view scales"):
            load_model(path)
