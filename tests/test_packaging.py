"""The wheel carries what a user needs: the manifest, the bundled model and the sample stack."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    [path] = out.glob("napari_em_unet-*.whl")
    return path


def test_wheel_contains_sample_manifest_and_model(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "napari_em_unet/sample_data/synthetic-sstem.tif" in names
    assert "napari_em_unet/sample_data/synthetic-sstem-labels.tif" in names
    assert "napari_em_unet/napari.yaml" in names
    assert any(n.startswith("napari_em_unet/models/") and n.endswith(".keras") for n in names)
    assert not any("shared" in n or n.startswith("tests/") for n in names)


def test_wheel_carries_every_module_of_the_package(wheel):
    """pyproject lists the packages by name: a new subpackage must not be left out."""
    names = set(zipfile.ZipFile(wheel).namelist())
    source = ROOT / "src"
    modules = sorted(p.relative_to(source).as_posix() for p in source.rglob("*.py"))
    assert modules and [m for m in modules if m not in names] == []


def test_sample_loads_from_the_installed_wheel(wheel, tmp_path):
    zipfile.ZipFile(wheel).extractall(tmp_path)
    code = (
        "import napari_em_unet, tifffile\n"
        "from importlib import resources\n"
        f"assert napari_em_unet.__file__.startswith({str(tmp_path)!r}), napari_em_unet.__file__\n"
        "p = resources.files('napari_em_unet.sample_data') / 'synthetic-sstem.tif'\n"
        "print(tifffile.imread(p).shape)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "(8, 512, 512)"
