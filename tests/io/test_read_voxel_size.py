"""read_voxel_size_nm: Z spacing and XY pixel size as TIFF (ImageJ, OME) and zarr / OME-Zarr
files record them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_em_unet.io.voxel_size import read_voxel_size_nm
from napari_em_unet.io.writers import create_zarr_output

STACK = np.zeros((3, 8, 8), np.uint16)


def test_imagej_spacing_in_the_files_unit(tmp_path):
    path = tmp_path / "a.tif"
    tifffile.imwrite(
        path,
        STACK,
        imagej=True,
        resolution=(250, 250),
        metadata={"unit": "um", "spacing": 0.05, "axes": "ZYX"},
    )
    assert read_voxel_size_nm(path) == pytest.approx((50.0, 4.0, 4.0))


def test_imagej_without_spacing_or_unit(tmp_path):
    tifffile.imwrite(
        tmp_path / "b.tif",
        STACK,
        imagej=True,
        resolution=(250, 250),
        metadata={"unit": "um", "axes": "ZYX"},
    )
    assert read_voxel_size_nm(tmp_path / "b.tif") == pytest.approx((None, 4.0, 4.0))
    tifffile.imwrite(tmp_path / "c.tif", STACK, photometric="minisblack")
    assert read_voxel_size_nm(tmp_path / "c.tif") == (None, None, None)


def test_ome_tiff_physical_sizes(tmp_path):
    path = tmp_path / "d.ome.tif"
    tifffile.imwrite(
        path,
        STACK,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 0.008,
            "PhysicalSizeY": 0.008,
            "PhysicalSizeZ": 30,
            "PhysicalSizeZUnit": "nm",
        },
    )
    assert read_voxel_size_nm(path) == pytest.approx((30.0, 8.0, 8.0))


def test_ome_zarr_scale_and_our_own_stores(tmp_path):
    path = tmp_path / "e.zarr"
    create_zarr_output(path, (3, 8, 8), np.uint32, pixel_size_nm=4.0)
    # Our streaming writer records XY only (Z has no unit there): Z stays unknown.
    assert read_voxel_size_nm(path) == pytest.approx((None, 4.0, 4.0))
    attrs_file = path / ".zattrs"
    attrs = json.loads(attrs_file.read_text())
    attrs["multiscales"][0]["axes"][0]["unit"] = "micrometer"
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"][0] = 0.04
    attrs_file.write_text(json.dumps(attrs))
    assert read_voxel_size_nm(path) == pytest.approx((40.0, 4.0, 4.0))
