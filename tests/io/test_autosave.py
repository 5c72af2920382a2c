"""The autosave store of corrected labels: round trips, identity of images, and no torn files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from napari_em_unet.errors import InputError
from napari_em_unet.io import autosave, paths
from napari_em_unet.io.autosave import (
    find_autosave,
    list_autosaves,
    save_corrections,
)
from napari_em_unet.io.paths import ENV_HOME


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    folder = tmp_path / "home"
    monkeypatch.setenv(ENV_HOME, str(folder))
    return folder


@pytest.fixture()
def image(tmp_path):
    path = tmp_path / "stack.tif"
    path.write_bytes(b"pretend TIFF")
    return path


def _labels(shape=(4, 32, 40), seed=0):
    return np.random.default_rng(seed).integers(0, 50, shape).astype(np.uint32)


def test_round_trip_keeps_labels_path_and_corrected_slices(image, home):
    labels = _labels()
    file = save_corrections(labels, image, [2, 0, 2])
    assert file.is_relative_to(home) and file.suffix == ".npz"
    found = find_autosave(image)
    assert found.file == file and found.corrected_slices == (0, 2)
    assert found.image_path == str(image.resolve()) and not found.image_changed
    assert found.shape == (4, 32, 40) and found.dtype == "uint32"
    restored = found.load_labels()
    assert restored.dtype == labels.dtype
    np.testing.assert_array_equal(restored, labels)


def test_only_corrected_slices_can_be_stored(image):
    labels = _labels()
    save_corrections(labels, image, [1, 3], all_slices=False)
    restored = find_autosave(image).load_labels()
    np.testing.assert_array_equal(restored[[1, 3]], labels[[1, 3]])
    assert not restored[[0, 2]].any() and restored.shape == labels.shape


def test_2d_labels_and_images_without_a_file():
    labels = _labels((20, 30)).astype(np.int32)
    save_corrections(labels, "sample:synthetic-sstem", [0])
    np.testing.assert_array_equal(find_autosave("sample:synthetic-sstem").load_labels(), labels)
    assert find_autosave("sample:other") is None


def test_the_same_image_by_another_spelling_finds_its_autosave(image, tmp_path, monkeypatch):
    save_corrections(_labels(), image, [1])
    monkeypatch.chdir(tmp_path)
    assert find_autosave("stack.tif") is not None
    link = tmp_path / "link.tif"
    link.symlink_to(image)
    assert find_autosave(link) is not None
    other = tmp_path / "other.tif"
    other.write_bytes(b"x")
    assert find_autosave(other) is None


def test_a_changed_image_is_flagged(image):
    save_corrections(_labels(), image, [0])
    image.write_bytes(b"a different, longer pretend TIFF")
    assert find_autosave(image).image_changed


def test_newest_first_and_only_a_few_kept(image):
    files = [save_corrections(_labels(seed=i), image, [i % 4]) for i in range(5)]
    found = list_autosaves(image)
    assert [f.file for f in found] == files[::-1][: autosave.KEEP]
    np.testing.assert_array_equal(found[0].load_labels(), _labels(seed=4))


def test_a_damaged_newest_autosave_falls_back_to_the_previous(image):
    good = save_corrections(_labels(seed=1), image, [1])
    bad = save_corrections(_labels(seed=2), image, [2])
    bad.write_bytes(bad.read_bytes()[:100])  # as if the disk lost its end
    found = find_autosave(image)
    assert found.file == good and found.corrected_slices == (1,)


def test_an_interrupted_save_leaves_the_previous_one_and_no_temporary(image, monkeypatch):
    first = save_corrections(_labels(seed=1), image, [1])

    def interrupted(fh, **arrays):
        fh.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing

    monkeypatch.setattr(np, "savez_compressed", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_corrections(_labels(seed=2), image, [2])
    assert [p.name for p in first.parent.iterdir()] == [first.name]
    assert find_autosave(image).file == first


def test_kill_9_during_saves_never_leaves_a_torn_autosave(image, home):
    """Kill a process that autosaves in a loop at random moments; every file must load."""
    script = textwrap.dedent(f"""
        import numpy as np, sys
        from napari_em_unet.io.autosave import save_corrections
        labels = np.random.default_rng(0).integers(0, 9, (8, 256, 256)).astype(np.uint32)
        for i in range(10_000):
            save_corrections(labels, {str(image)!r}, [i % 8])
            print("saved", flush=True)
    """)
    rng = np.random.default_rng(7)
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            env={**os.environ, ENV_HOME: str(home)},
        )
        assert proc.stdout.readline().strip() == b"saved"
        time.sleep(float(rng.uniform(0.0, 0.5)))  # then kill it somewhere in a later save
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    folder = autosave.autosave_folder(image)
    files = sorted(folder.glob("labels-*.npz"))
    assert files
    for file in files:
        with np.load(file) as data:
            assert data["labels"].shape == (8, 256, 256)
    assert len(list_autosaves(image)) == len(files)


@pytest.mark.parametrize(
    ("labels", "slices", "match"),
    [
        (np.zeros((2, 3, 4, 5), np.uint8), [0], "2D image or a ZYX stack"),
        (np.zeros((0, 4), np.uint8), [0], "2D image or a ZYX stack"),
        (np.zeros((2, 4, 4), np.float32), [0], "integers"),
        (np.zeros((2, 4, 4), np.uint8), [2], "outside the stack"),
    ],
)
def test_bad_labels_are_refused_and_nothing_is_written(image, home, labels, slices, match):
    with pytest.raises(InputError, match=match):
        save_corrections(labels, image, slices)
    assert not home.exists() or not any(home.rglob("*.npz"))


def test_default_folder_is_the_user_data_folder(monkeypatch):
    monkeypatch.delenv(ENV_HOME)
    from platformdirs import user_data_dir

    assert paths.data_home() == Path(user_data_dir("napari-em-unet", appauthor=False))


def test_importing_the_store_pulls_in_no_gui_and_no_tensorflow():
    code = (
        "import sys, napari_em_unet.io.autosave; "
        "print([m for m in ('tensorflow', 'napari', 'qtpy', 'PyQt6') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_a_lazy_array_is_read_only_where_stored(image):
    """Big zarr-backed labels: only the corrected slices are read and stored."""
    zarr = pytest.importorskip("zarr")
    labels = _labels((6, 32, 40))
    store = zarr.create_array(store={}, shape=labels.shape, chunks=(1, 32, 40), dtype=labels.dtype)
    store[...] = labels
    reads: list = []

    class Spy:
        shape, dtype, ndim = store.shape, store.dtype, store.ndim

        def __getitem__(self, key):
            reads.append(key)
            return store[key]

    save_corrections(Spy(), image, [1, 4], all_slices=False)
    assert sorted(reads) == [1, 4]
    restored = find_autosave(image).load_labels()
    np.testing.assert_array_equal(restored[[1, 4]], labels[[1, 4]])
    assert not restored[[0, 2, 3, 5]].any()
