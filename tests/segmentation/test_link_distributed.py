"""Linking chunk by chunk on a dask cluster gives exactly the local result.

The stack is a small synthetic FIB-SEM-like volume whose true 3D labels are renumbered per
section (as a 2D segmentation numbers them), with a few pairs of cells merged in single
sections (so that labels are split) and a probability map made from the membranes. The
cluster is in-process (two workers, 127.0.0.1 only) and closed after the module.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from napari_em_unet.generators import drain as run
from napari_em_unet.io.volumes import open_volume
from napari_em_unet.segmentation.link_distributed import link_distributed
from napari_em_unet.segmentation.linking import LinkParams, link_labels

distributed = pytest.importorskip("distributed")
VOXEL = (10.0, 10.0, 10.0)


@pytest.fixture(scope="module")
def stack():
    """(per-section labels, probability) of 9 sections of 64 x 64."""
    from napari_em_unet.learning.synthetic import FIBSEM_STYLE, make_synthetic_volume
    from napari_em_unet.segmentation.watershed import relabel_sequential

    _, truth = make_synthetic_volume((9, 64, 64), FIBSEM_STYLE, seed=4)
    rng = np.random.default_rng(0)
    labels = np.zeros(truth.shape, dtype=np.uint32)
    for z, plane in enumerate(truth):
        plane = plane.copy()
        if z in (3, 6):  # a 2D merge error: two touching cells get one label
            a, b = rng.choice(np.unique(plane)[1:], 2, replace=False)
            plane[plane == b] = a
        labels[z] = relabel_sequential(plane)
        labels[z][labels[z] > 0] += 3 * z  # different numbers in every section
    probability = np.where(truth == 0, 0.9, 0.05).astype(np.float32)
    return labels, probability


@pytest.mark.parametrize(("per_task", "suffix"), [(1, ".zarr"), (3, ".tif"), (4, ".zarr")])
def test_chunked_equals_local(client, stack, tmp_path, per_task, suffix):
    labels, probability = stack
    local = link_labels(labels, probability, voxel_size_nm=VOXEL)
    assert local.max() > 5
    path = run(
        link_distributed(
            labels,
            tmp_path / f"out{suffix}",
            probability=probability,
            voxel_size_nm=VOXEL,
            client=client,
            sections_per_task=per_task,
            timeout=120,
        )
    )
    result = open_volume(path)[:]
    np.testing.assert_array_equal(result, local)


def test_file_inputs_are_read_by_the_workers_and_min_sections_applies(client, stack, tmp_path):
    labels, probability = stack
    tifffile.imwrite(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "prob.tif", probability)
    params = LinkParams(min_sections=3, bias=0.4)
    local = link_labels(labels, probability, voxel_size_nm=VOXEL, params=params)
    progress = list(
        link_distributed(
            open_volume(tmp_path / "labels.tif"),
            tmp_path / "o.zarr",
            probability=open_volume(tmp_path / "prob.tif"),
            voxel_size_nm=VOXEL,
            params=params,
            client=client,
            sections_per_task=2,
            timeout=120,
        )
    )
    assert len(progress) == 2 * len(labels) and progress[-1].done == progress[-1].total
    np.testing.assert_array_equal(open_volume(tmp_path / "o.zarr")[:], local)


def test_a_bad_input_fails_before_anything_is_written(client, stack, tmp_path):
    from napari_em_unet.errors import InputError

    labels, probability = stack
    with pytest.raises(InputError, match="probability shape"):
        run(
            link_distributed(labels, tmp_path / "x.tif", probability=probability[:2], client=client)
        )
    assert not list(tmp_path.iterdir())


def test_segment_and_link_on_the_cluster_equals_the_local_run(client, tiny_model_path, tmp_path):
    """segment --link-3d: locally the labels come from the segmentation; on a cluster they
    are recomputed from the probability by the same watershed: the same objects."""
    from napari_em_unet.learning.synthetic import FIBSEM_STYLE, make_synthetic_volume
    from napari_em_unet.model.files import load_model
    from napari_em_unet.segmentation.segment_link import segment_and_link

    image, _ = make_synthetic_volume((5, 48, 48), FIBSEM_STYLE, seed=6)
    model = load_model(tiny_model_path)
    local = run(
        segment_and_link(
            model, image, tmp_path / "local.tif", pixel_size_nm=10.0, voxel_size_nm=VOXEL
        )
    )
    remote = run(
        segment_and_link(
            model,
            image,
            tmp_path / "remote.zarr",
            pixel_size_nm=10.0,
            voxel_size_nm=VOXEL,
            client=client,
            sections_per_task=2,
        )
    )
    np.testing.assert_array_equal(open_volume(remote)[:], open_volume(local)[:])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.tif", "remote.zarr"]
