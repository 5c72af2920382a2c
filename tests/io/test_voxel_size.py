"""The section spacing recorded in TIFF and zarr files."""

import numpy as np
import tifffile

from napari_em_unet.io.voxel_size import section_spacing_of
from napari_em_unet.io.writers import create_zarr_output


def test_imagej_spacing_in_micrometres(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(
        path,
        np.zeros((3, 8, 8), np.uint8),
        imagej=True,
        resolution=(250, 250),
        metadata={"unit": "um", "spacing": 0.05, "axes": "ZYX"},
    )
    assert section_spacing_of(path) == 50.0


def test_files_without_it(tmp_path):
    path = tmp_path / "b.tif"
    tifffile.imwrite(path, np.zeros((3, 8, 8), np.uint8))
    assert section_spacing_of(path) is None
    assert section_spacing_of(tmp_path / "missing.tif") is None
    create_zarr_output(tmp_path / "c.zarr", (3, 8, 8), np.uint8, pixel_size_nm=4)
    assert section_spacing_of(tmp_path / "c.zarr") is None  # z scale without a unit


def test_ome_zarr_scale_and_our_attribute(tmp_path):
    import zarr

    group = zarr.open_group(str(tmp_path / "d.zarr"), mode="w", zarr_format=2)
    group.create_array("0", shape=(3, 8, 8), dtype=np.uint8)
    group.attrs["multiscales"] = [
        {
            "axes": [{"name": "z", "unit": "nanometer"}, {"name": "y"}, {"name": "x"}],
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [{"type": "scale", "scale": [10.0, 10.0, 10.0]}],
                }
            ],
        }
    ]
    assert section_spacing_of(tmp_path / "d.zarr") == 10.0
    array = zarr.create_array(str(tmp_path / "e.zarr"), shape=(3, 8, 8), dtype=np.uint8)
    array.attrs["voxel_size_nm"] = [45.0, 4.6, 4.6]
    assert section_spacing_of(tmp_path / "e.zarr") == 45.0
