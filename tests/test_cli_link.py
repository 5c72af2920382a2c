"""``em-unet link``, ``segment --link-3d`` and ``evaluate --3d`` as a user runs them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_em_unet.cli import main
from napari_em_unet.segmentation.linking import link_labels

META = {
    "imagej": True,
    "resolution": (100.0, 100.0),
    "metadata": {"unit": "um", "spacing": 0.01, "axes": "ZYX"},
}  # 10 x 10 x 10 nm


def cells(depth=4):
    """Two cells through ``depth`` sections, numbered differently in every section."""
    stack = np.zeros((depth, 20, 30), dtype=np.uint16)
    for z in range(depth):
        stack[z, 2:18, 2:13] = 1 + 2 * z
        stack[z, 2:18, 16:28] = 2 + 2 * z
    return stack


def test_link_tiff_to_tiff_reads_the_voxel_size(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "labels.tif", cells(), **META)
    assert main(["link", str(tmp_path / "labels.tif"), "-o", str(tmp_path / "out.tif")]) == 0
    out = tifffile.imread(tmp_path / "out.tif")
    assert out.dtype == np.uint32
    np.testing.assert_array_equal(out, link_labels(cells(), voxel_size_nm=(10, 10, 10)))
    assert set(np.unique(out)) == {0, 1, 2}
    err = capsys.readouterr().err
    assert "2 objects" in err and "10 x 10 x 10 nm" in err and "assuming" not in err


def test_link_zarr_with_probability_and_options(tmp_path, capsys):
    import zarr

    stack = cells(3)
    stack[1, 2:18, 2:28] = 9  # section 1 merged the two cells ...
    probability = np.where(cells(3) == 0, 0.95, 0.05).astype(np.float32)
    probability[1, 2:18, 14] = 0.5  # ... over a faint membrane
    labels = zarr.create_array(
        str(tmp_path / "labels.zarr"), shape=stack.shape, chunks=(1, 20, 30), dtype=np.uint16
    )
    labels[:] = stack
    tifffile.imwrite(tmp_path / "prob.tif", probability)
    args = [
        "link",
        str(tmp_path / "labels.zarr"),
        "--probability",
        str(tmp_path / "prob.tif"),
        "-o",
        str(tmp_path / "out.zarr"),
        "--voxel-size",
        "50,4,4",
        "--bias",
        "0.5",
        "--min-sections",
        "2",
    ]
    assert main(args) == 0
    out = zarr.open_array(str(tmp_path / "out.zarr" / "0"), mode="r")[:]
    assert set(np.unique(out)) == {0, 1, 2}
    assert out[1, 5, 5] == out[0, 5, 5] and out[1, 5, 25] == out[0, 5, 25]  # split, joined


def test_a_file_without_section_spacing_says_what_was_assumed(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "labels.tif", cells())
    assert main(["link", str(tmp_path / "labels.tif"), "-o", str(tmp_path / "out.tif")]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "assuming 50 nm sections" in err[0]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda p: tifffile.imwrite(p / "labels.tif", cells().astype(np.float32) / 2),
            "fractional",
        ),
        (
            lambda p: (
                tifffile.imwrite(p / "labels.tif", cells()),
                tifffile.imwrite(p / "prob.tif", np.zeros((2, 20, 30), np.float32)),
            ),
            "probability map has shape",
        ),
    ],
)
def test_bad_inputs_are_one_error_line_and_no_output(tmp_path, capsys, make, message):
    make(tmp_path)
    args = ["link", str(tmp_path / "labels.tif"), "-o", str(tmp_path / "out.tif")]
    if (tmp_path / "prob.tif").exists():
        args += ["--probability", str(tmp_path / "prob.tif")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not (tmp_path / "out.tif").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


@pytest.mark.parametrize(
    "args", [["--bias", "1.5"], ["--bias", "x"], ["--min-sections", "0"], ["--voxel-size", "1,2"]]
)
def test_bad_options_are_refused(tmp_path, args):
    tifffile.imwrite(tmp_path / "labels.tif", cells())
    with pytest.raises(SystemExit) as stop:
        main(["link", str(tmp_path / "labels.tif"), "-o", str(tmp_path / "o.tif"), *args])
    assert stop.value.code == 2


def test_evaluate_3d_json(tmp_path, capsys):
    truth = np.zeros((2, 4, 6), dtype=np.uint16)
    truth[:, :, :5] = 1
    pred = truth.astype(np.uint32)
    pred[1] *= 2  # one true object cut in two between the sections
    tifffile.imwrite(tmp_path / "t.tif", truth)
    tifffile.imwrite(tmp_path / "p.tif", pred)
    assert (
        main(["evaluate", "--3d", str(tmp_path / "p.tif"), str(tmp_path / "t.tif"), "--json"]) == 0
    )
    scores = json.loads(capsys.readouterr().out)
    assert scores["v_rand"] == pytest.approx(2 / 3) and scores["v_rand_split"] == 0.5
    assert main(["evaluate", "--3d", str(tmp_path / "p.tif"), str(tmp_path / "t.tif")]) == 0
    assert "V_rand   0.6667   0.5000   1.0000" in capsys.readouterr().out


def test_segment_link_3d(tmp_path, tiny_model_path, capsys):
    from napari_em_unet.learning.synthetic import FIBSEM_STYLE, make_synthetic_volume

    image, _ = make_synthetic_volume((3, 48, 48), FIBSEM_STYLE, seed=2)
    tifffile.imwrite(tmp_path / "img.tif", image, **META)
    out = tmp_path / "linked.tif"
    assert (
        main(
            [
                "segment",
                str(tmp_path / "img.tif"),
                "-o",
                str(out),
                "--link-3d",
                "--model",
                str(tiny_model_path),
                "--bias",
                "0.5",
            ]
        )
        == 0
    )
    linked = tifffile.imread(out)
    assert linked.shape == (3, 48, 48) and linked.dtype == np.uint32
    assert "3D objects" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.tif", "linked.tif"]
    assert (
        main(
            [
                "segment",
                str(tmp_path / "img.tif"),
                "-o",
                str(tmp_path / "m.tif"),
                "--link-3d",
                "--output-kind",
                "membranes",
            ]
        )
        == 2
    )
    assert "--link-3d writes instance labels" in capsys.readouterr().err


def test_link_never_writes_over_an_input_or_an_existing_file(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "labels.tif", cells())
    tifffile.imwrite(tmp_path / "old.tif", cells())
    labels = str(tmp_path / "labels.tif")
    assert main(["link", labels, "-o", labels, "--overwrite"]) == 2
    assert "is the input" in capsys.readouterr().err
    assert main(["link", labels, "-o", str(tmp_path / "old.tif")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["link", labels, "-o", str(tmp_path / "old.tif"), "--overwrite"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "labels.tif"), cells())
