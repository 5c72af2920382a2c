"""Tiled inference and segmentation outputs: seams, shapes, dtypes, sizes."""

import numpy as np
import pytest

from napari_em_unet.segmentation import tiling
from napari_em_unet.segmentation.pipeline import Output, segment_stack, uncertainty
from napari_em_unet.segmentation.preprocessing import normalize
from napari_em_unet.segmentation.tiling import predict_slice, predict_stack


def test_tiled_prediction_equals_untiled(tiny_model, small_stack):
    image = normalize(np.tile(small_stack[0][0], (3, 3)))  # 288 x 288
    whole = predict_slice(tiny_model.keras_model, image, tile_size=512)
    tiled = predict_slice(tiny_model.keras_model, image, tile_size=96, overlap=32)
    assert whole.shape == tiled.shape == image.shape
    diff = np.abs(whole - tiled)
    # A depth-2 network sees ~20 px; with 32 px of blended overlap the seams vanish.
    assert diff.mean() < 2e-3
    assert diff.max() < 0.05


def test_tiles_go_through_the_network_one_at_a_time_by_default(tiny_model, monkeypatch):
    # TensorFlow keeps the activations of its largest call; with slices side by side,
    # batches of tiles multiplied the peak memory of big slices for no speed on a CPU.
    calls = []
    traced = tiling._forward

    def spy(keras_model):
        forward = traced(keras_model)
        return lambda batch: calls.append(batch.shape) or forward(batch)

    monkeypatch.setattr(tiling, "_forward", spy)
    image = np.random.default_rng(3).random((288, 288)).astype(np.float32)
    predict_slice(tiny_model.keras_model, image, tile_size=96, overlap=32)
    assert len(calls) == 16  # 4 x 4 tiles of 96 px over 288 px with 32 px of overlap
    assert {shape[0] for shape in calls} == {1}
    calls.clear()
    predict_slice(tiny_model.keras_model, image, tile_size=96, overlap=32, batch_size=4)
    assert [shape[0] for shape in calls] == [4, 4, 4, 4]


def test_flip_averaging_is_the_mean_of_the_mirror_images(tiny_model, small_stack):
    image = normalize(small_stack[0][0][:64, :80])
    net = tiny_model.keras_model
    views = [predict_slice(net, image[::sy, ::sx])[::sy, ::sx] for sy in (1, -1) for sx in (1, -1)]
    averaged = predict_slice(net, image, flips=True)
    assert np.allclose(averaged, np.mean(views, axis=0), atol=1e-5)
    # So the result no longer depends on how the slice is mirrored.
    mirrored = predict_slice(net, image[:, ::-1].copy(), flips=True)[:, ::-1]
    assert np.allclose(averaged, mirrored, atol=1e-5)
    assert not np.allclose(views[0], views[1], atol=1e-3)  # a real network is not


@pytest.mark.parametrize("shape", [(9, 13), (1, 1), (64, 64), (1001, 777)])
def test_any_slice_size(tiny_model, shape):
    image = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    [item] = list(predict_stack(tiny_model, image))
    assert item.probability.shape == shape
    assert item.probability.dtype == np.float32
    assert item.no_signal == (shape == (1, 1))  # one pixel shows nothing: no prediction
    if not item.no_signal:
        assert item.probability.min() >= 0 and item.probability.max() <= 1


def test_stack_progress_records_and_slice_subset(tiny_model, small_stack):
    image = small_stack[0]
    records = list(predict_stack(tiny_model, image, slices=[2, 0]))
    assert [(r.index, r.done, r.total) for r in records] == [(2, 1, 2), (0, 2, 2)]


@pytest.mark.parametrize(
    ("output", "dtype"),
    [("instances", np.uint32), ("membranes", np.uint8), ("probabilities", np.float32)],
)
def test_segment_outputs(tiny_model, small_stack, output, dtype):
    image = small_stack[0]
    results = list(segment_stack(tiny_model, image, output=output))
    assert len(results) == image.shape[0]
    for r in results:
        assert r.result.shape == image.shape[1:] and r.result.dtype == dtype
    if output == "membranes":
        assert set(np.unique(results[0].result)) <= {0, 255}
    assert Output(output).dtype == dtype


@pytest.mark.parametrize("dtype", [np.uint16, np.float32, np.float64])
def test_dtypes_and_nans(tiny_model, dtype):
    image = (np.random.default_rng(1).random((40, 50)) * 1000).astype(dtype)
    if np.issubdtype(dtype, np.floating):
        image[:5, :5] = np.nan
    [r] = list(segment_stack(tiny_model, image))
    assert r.result.shape == (40, 50)
    assert np.isfinite(r.probability[5:]).all() and np.isfinite(r.probability[:, 5:]).all()


def test_resampling_to_the_model_pixel_size_returns_the_input_shape(tiny_model):
    image = np.random.default_rng(2).random((50, 70)).astype(np.float32)
    [r] = list(predict_stack(tiny_model, image, pixel_size_nm=8.0))  # model: 4 nm
    assert r.probability.shape == (50, 70)


def test_uncertainty_is_highest_at_one_half():
    assert uncertainty(np.full((4, 4), 0.5)) == pytest.approx(1.0)
    assert uncertainty(np.zeros((4, 4))) < 1e-3
    assert uncertainty(np.full((4, 4), 0.9)) < uncertainty(np.full((4, 4), 0.7))


def test_no_cells_are_invented_where_there_is_no_data(tiny_model):
    image = np.random.default_rng(3).random((2, 48, 64)).astype(np.float32)
    image[0] = np.nan  # a lost section
    image[1, :, :20] = np.nan  # part of a slice outside the imaged area
    results = list(segment_stack(tiny_model, image, output="instances"))
    assert np.isnan(results[0].probability).all() and not results[0].result.any()
    assert np.isnan(results[1].probability[:, :20]).all()
    assert not results[1].result[:, :20].any()
    assert np.isfinite(results[1].probability[:, 20:]).all()
    assert uncertainty(results[0].probability) == 0.0


def test_a_black_section_gets_no_cells(tiny_model, small_stack):
    """A missing section (black, or black with a little noise) says nothing: no probability,
    no cell, and it is flagged so that the CLI and napari can warn."""
    from napari_em_unet.segmentation.pipeline import segment_stack

    image = small_stack[0]
    stack = np.stack([image[0], np.zeros_like(image[0]), image[1] % 3, image[2]])
    results = list(segment_stack(tiny_model, stack))
    assert [r.no_signal for r in results] == [False, True, True, False]
    for r in results[1:3]:
        assert not r.result.any() and np.isnan(r.probability).all()
    assert all(np.isfinite(r.probability).all() for r in (results[0], results[3]))


def test_a_second_wider_view_is_averaged_in(tiny_model, small_stack):
    from dataclasses import replace

    from napari_em_unet.segmentation.preprocessing import scaled_shape, zoom_to
    from napari_em_unet.segmentation.tiling import SlicePredictor

    raw = small_stack[0][0]
    plane = normalize(raw)
    net = tiny_model.keras_model
    small = zoom_to(plane, scaled_shape(plane.shape, 0.5), order=1)
    wide = zoom_to(predict_slice(net, small), plane.shape, order=1)
    expected = (predict_slice(net, plane) + wide) / 2
    model = replace(tiny_model, info=replace(tiny_model.info, view_scales=[1.0, 0.5]))
    prob, _ = SlicePredictor(model)(raw)
    assert np.allclose(prob, expected, atol=1e-6)
    plain, _ = SlicePredictor(tiny_model)(raw)
    assert np.abs(prob - plain).max() > 1e-3  # the wider view does change the map
    alone = replace(tiny_model, info=replace(tiny_model.info, view_scales=[0.5]))
    assert np.allclose(SlicePredictor(alone)(raw)[0], wide, atol=1e-6)
