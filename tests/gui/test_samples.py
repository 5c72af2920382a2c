"""Sample data and the reader through a real viewer (open_sample, viewer.open)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from functools import partial

import numpy as np
import pytest
import tifffile

from napari_em_unet import _sample_data
from napari_em_unet.errors import EmUnetError


def test_synthetic_sample(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-em-unet", "synthetic_sstem")
    image, truth = viewer.layers
    assert image.name == "synthetic ssTEM" and image.data.shape == (8, 512, 512)
    assert image.data.dtype == np.uint8 and image.metadata["pixel_size_nm"] == 4.0
    assert type(truth).__name__ == "Labels" and truth.data.shape == (8, 512, 512)
    assert truth.visible is False
    assert 0.05 < np.mean(truth.data == 0) < 0.5  # membranes are label 0
    assert len(np.unique(truth.data[0])) > 20


@pytest.fixture
def fake_isbi(tmp_path):
    """A small HDF5 file laid out like the public one, served from localhost."""
    import h5py

    folder = tmp_path / "served"
    folder.mkdir()
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 255, (3, 32, 32), dtype=np.uint8)
    membranes = np.zeros((3, 32, 32), np.uint8)
    membranes[:, ::8, :] = 1  # this copy marks membranes with 1 (the minority class)
    path = folder / "isbi.h5"
    with h5py.File(path, "w") as f:
        f["raw"] = raw
        f["labels/membranes"] = membranes
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/isbi.h5"
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    yield url, sha, raw, membranes, path
    server.shutdown()
    server.server_close()


def test_isbi_sample_downloads_once_and_is_cached(
    make_napari_viewer, fake_isbi, monkeypatch, plugin_home
):
    url, sha, raw, membranes, _ = fake_isbi
    monkeypatch.setenv(_sample_data.ENV_URL, url)
    monkeypatch.setenv(_sample_data.ENV_SHA256, sha)
    viewer = make_napari_viewer()
    viewer.open_sample("napari-em-unet", "isbi2012")
    image, labels = viewer.layers
    np.testing.assert_array_equal(image.data, raw)
    # Converted to the project's convention: 0 = membrane, 255 = interior.
    np.testing.assert_array_equal(labels.data, np.where(membranes == 1, 0, 255))
    cached = plugin_home / "cache" / _sample_data.ISBI_FILE
    assert cached.is_file()
    # Offline now: the cached, verified copy is used.
    monkeypatch.setenv(_sample_data.ENV_URL, "http://127.0.0.1:9/unreachable.h5")
    assert _sample_data.fetch_isbi() == cached
    np.testing.assert_array_equal(_sample_data.make_isbi_sample()[0][0], raw)


def test_isbi_sample_refuses_a_wrong_checksum(fake_isbi, monkeypatch, plugin_home):
    url, sha, *_ = fake_isbi
    monkeypatch.setenv(_sample_data.ENV_URL, url)
    monkeypatch.setenv(_sample_data.ENV_SHA256, "0" * 64)
    with pytest.raises(EmUnetError, match="checksum"):
        _sample_data.make_isbi_sample()
    assert not (plugin_home / "cache" / _sample_data.ISBI_FILE).exists()


def test_isbi_sample_from_a_local_copy(fake_isbi, monkeypatch, plugin_home):
    _, sha, raw, _, path = fake_isbi
    monkeypatch.setenv(_sample_data.ENV_URL, str(path))
    monkeypatch.setenv(_sample_data.ENV_SHA256, sha)
    image = _sample_data.make_isbi_sample()[0][0]
    np.testing.assert_array_equal(image, raw)
    monkeypatch.setenv(_sample_data.ENV_SHA256, "1" * 64)
    (plugin_home / "cache" / _sample_data.ISBI_FILE).unlink()
    with pytest.raises(EmUnetError, match="does not match"):
        _sample_data.make_isbi_sample()


def test_isbi_download_failure_is_one_sentence(monkeypatch, plugin_home):
    monkeypatch.setenv(_sample_data.ENV_URL, "http://127.0.0.1:9/isbi.h5")
    with pytest.raises(EmUnetError, match="could not download ISBI 2012 .* mirror"):
        _sample_data.make_isbi_sample()


def test_open_tiff_files_in_the_viewer(make_napari_viewer, tmp_path):
    stack = np.random.default_rng(1).integers(0, 255, (3, 40, 40), dtype=np.uint8)
    labels = np.zeros((3, 40, 40), np.uint16)
    labels[:, 10:20, 10:20] = 3
    tifffile.imwrite(tmp_path / "em.tif", stack, photometric="minisblack")
    tifffile.imwrite(tmp_path / "em-labels.tif", labels, photometric="minisblack")
    viewer = make_napari_viewer()
    viewer.open(str(tmp_path / "em.tif"), plugin="napari-em-unet")
    viewer.open(str(tmp_path / "em-labels.tif"), plugin="napari-em-unet")
    image, lab = viewer.layers
    assert type(image).__name__ == "Image" and type(lab).__name__ == "Labels"
    np.testing.assert_array_equal(image.data, stack)
    np.testing.assert_array_equal(lab.data, labels)
    # And back to disk through napari's save, with the plugin's writer.
    viewer.layers.selection = {lab}
    written = viewer.layers.save(
        str(tmp_path / "saved-labels.tif"), selected=True, plugin="napari-em-unet"
    )
    assert written == [str(tmp_path / "saved-labels.tif")]
    np.testing.assert_array_equal(tifffile.imread(written[0]), labels)
