"""The pretrained model that ships with the package."""

import numpy as np

from napari_em_unet.model.files import bundled_model_path, load_model, read_info


def test_bundled_model_is_small_and_documented():
    path = bundled_model_path()
    assert path.exists() and path.stat().st_size < 20e6
    info = read_info(path)
    assert info.pixel_size_nm == 4.0
    assert {"threshold", "seed_threshold", "sigma"} <= set(info.postprocessing)
    assert info.validation["v_rand"] > 0.96
    assert info.trained_on[0]["slices"] == list(range(16))


def test_bundled_model_segments_a_held_out_isbi_slice(shared_data):
    from napari_em_unet.io.tiff import read_tiff
    from napari_em_unet.learning.metrics import score_stack
    from napari_em_unet.segmentation.pipeline import segment_stack

    image = read_tiff(shared_data / "isbi2012" / "train-volume.tif")
    truth = np.asarray(read_tiff(shared_data / "isbi2012" / "train-labels.tif").data)[19]
    [result] = segment_stack(load_model(), image.data, slices=[19],
                             pixel_size_nm=image.pixel_size_nm)
    scores = score_stack(result.result, truth)
    assert scores.v_rand > 0.93
    assert scores.pixel_error < 0.15


def test_bundled_model_on_the_packaged_sample():
    """The sample must look like EM to the model: most true cells are found."""
    from importlib import resources

    import tifffile

    from napari_em_unet.learning.metrics import score_stack
    from napari_em_unet.segmentation.pipeline import segment_stack

    folder = resources.files("napari_em_unet.sample_data")
    image = tifffile.imread(folder / "synthetic-sstem.tif")[:1]
    truth = tifffile.imread(folder / "synthetic-sstem-labels.tif")[:1]
    [result] = segment_stack(load_model(), image)
    assert score_stack(result.result, truth[0]).v_rand > 0.8
