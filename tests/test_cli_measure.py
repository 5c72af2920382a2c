"""``em-unet measure``: rows equal to the labels, voxel size from the file or the option,
and one ``error:`` line for bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_em_unet.analysis.measure import COLUMNS
from napari_em_unet.cli import main


def objects() -> tuple[np.ndarray, np.ndarray]:
    labels = np.zeros((3, 10, 12), dtype=np.uint16)
    labels[0:3, 2:4, 2:5] = 4  # 6 voxels per section, sections 0-2
    labels[2, 8:10, 10:12] = 11  # 4 voxels on section 2
    image = np.full(labels.shape, 100, dtype=np.uint8)
    image[2] = 200
    return labels, image


def write(path, data, spacing=None):
    meta = {"unit": "um", "axes": "ZYX"}
    if spacing is not None:
        meta["spacing"] = spacing
    tifffile.imwrite(path, data, imagej=True, resolution=(200, 200), metadata=meta)
    return path


def read_rows(path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_rows_with_voxel_size_from_the_file(tmp_path, capsys):
    labels, image = objects()
    write(tmp_path / "labels.tif", labels, spacing=0.05)  # 50 nm sections, 5 nm pixels
    write(tmp_path / "image.tif", image)
    out = tmp_path / "table.csv"
    assert (
        main(
            [
                "measure",
                str(tmp_path / "labels.tif"),
                "--image",
                str(tmp_path / "image.tif"),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    rows = read_rows(out)
    assert list(rows[0]) == list(COLUMNS)
    assert [(r["label"], r["voxels"], r["z_first"], r["z_last"]) for r in rows] == [
        ("4", "18", "0", "2"),
        ("11", "4", "2", "2"),
    ]
    assert float(rows[0]["volume_um3"]) == pytest.approx(18 * 50 * 5 * 5 / 1e9)
    assert [float(rows[0][f"centroid_{a}"]) for a in "zyx"] == [1.0, 2.5, 3.0]
    assert float(rows[0]["mean_intensity"]) == pytest.approx((12 * 100 + 6 * 200) / 18)
    assert float(rows[1]["mean_intensity"]) == 200.0
    assert "2 objects; voxel size 50 x 5 x 5 nm from labels.tif" in capsys.readouterr().err


def test_voxel_size_option_wins_and_unknown_leaves_volume_empty(tmp_path, capsys):
    labels, _ = objects()
    write(tmp_path / "labels.tif", labels)  # XY only: Z is not recorded
    out = tmp_path / "t.csv"
    assert main(["measure", str(tmp_path / "labels.tif"), "-o", str(out)]) == 0
    rows = read_rows(out)
    assert "mean_intensity" not in rows[0] and rows[0]["volume_um3"] == ""
    assert "give --voxel-size" in capsys.readouterr().err
    assert (
        main(
            [
                "measure",
                str(tmp_path / "labels.tif"),
                "--voxel-size",
                "40,4,4",
                "-o",
                str(out),
                "--overwrite",
            ]
        )
        == 0
    )
    assert float(read_rows(out)[1]["volume_um3"]) == pytest.approx(4 * 40 * 4 * 4 / 1e9)
    assert (
        main(
            [
                "measure",
                str(tmp_path / "labels.tif"),
                "--voxel-size",
                "10",
                "-o",
                str(out),
                "--overwrite",
            ]
        )
        == 0
    )  # one number: isotropic voxels
    assert float(read_rows(out)[1]["volume_um3"]) == pytest.approx(4 * 10**3 / 1e9)


def test_zarr_labels(tmp_path):
    from napari_em_unet.io.writers import create_zarr_output

    labels, _ = objects()
    store = create_zarr_output(tmp_path / "l.zarr", labels.shape, np.uint32, pixel_size_nm=5.0)
    store[:] = labels
    out = tmp_path / "z.csv"
    assert (
        main(["measure", str(tmp_path / "l.zarr"), "--voxel-size", "50,5,5", "-o", str(out)]) == 0
    )
    assert [r["voxels"] for r in read_rows(out)] == ["18", "4"]


def run_cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(
        [sys.executable, "-m", "napari_em_unet.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_bad_input_is_one_error_line_and_no_output(tmp_path):
    labels, image = objects()
    write(tmp_path / "labels.tif", labels)
    tifffile.imwrite(tmp_path / "float.tif", labels.astype(np.float32))
    write(tmp_path / "small.tif", image[:2])
    (tmp_path / "taken").write_text("a file where a folder is needed")
    out = tmp_path / "t.csv"
    cases = [
        (["missing.tif"], "file not found"),
        ([tmp_path / "float.tif"], "labels must be whole numbers"),
        ([tmp_path / "labels.tif", "--image", tmp_path / "small.tif"], "same shape"),
        ([tmp_path / "labels.tif", "--voxel-size", "50,4"], "three positive numbers"),
    ]
    for args, message in cases:
        result = run_cli("measure", *args, "-o", out)
        assert result.returncode == 2, result.stderr
        errors = [line for line in result.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and message in errors[0], result.stderr
        assert "Traceback" not in result.stderr and not out.exists()
    result = run_cli("measure", tmp_path / "labels.tif", "-o", tmp_path / "taken" / "t.csv")
    assert result.returncode == 2 and result.stderr.startswith("error: cannot write"), result.stderr


@pytest.mark.parametrize(
    ("output", "message"),
    [
        ("labels.tif", "the table must end in .csv"),
        ("table.csv", "already exists; add --overwrite"),
    ],
)
def test_an_input_or_an_existing_table_is_never_replaced(tmp_path, output, message, capsys):
    labels, _ = objects()
    write(tmp_path / "labels.tif", labels)
    (tmp_path / "table.csv").write_text("mine\n")
    before = (tmp_path / "labels.tif").read_bytes()
    assert main(["measure", str(tmp_path / "labels.tif"), "-o", str(tmp_path / output)]) == 2
    assert message in capsys.readouterr().err
    assert (tmp_path / "labels.tif").read_bytes() == before
    assert (tmp_path / "table.csv").read_text() == "mine\n"
