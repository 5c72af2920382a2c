"""Write-then-rename: the user's usual permissions, and no temporaries left for long."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from napari_em_unet.io.atomic import atomic_path, remove_stale_temporaries, temporary_beside
from napari_em_unet.io.tiff import write_tiff
from napari_em_unet.io.writers import TiffSliceWriter, ZarrSliceWriter


@pytest.fixture()
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_outputs_get_the_users_permissions(tmp_path, umask_022):
    data = np.arange(2 * 8 * 9, dtype=np.uint32).reshape(2, 8, 9)
    with TiffSliceWriter(tmp_path / "cells.tif", data.shape, data.dtype) as writer:
        for z in range(2):
            writer.write(z, data[z])
    with ZarrSliceWriter(tmp_path / "cells.zarr", data.shape, data.dtype) as writer:
        for z in range(2):
            writer.write(z, data[z])
    write_tiff(tmp_path / "plain.tif", data)
    assert _mode(tmp_path / "cells.tif") == 0o644  # was 0600: mkstemp's private mode
    assert _mode(tmp_path / "plain.tif") == 0o644
    zarr_files = [p for p in (tmp_path / "cells.zarr").rglob("*") if p.is_file()]
    assert zarr_files and {_mode(p) for p in zarr_files} == {0o644}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cells.tif", "cells.zarr", "plain.tif"]


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "result.tif"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_temporaries_of_dead_writers_go_whatever_their_age(tmp_path):
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_pid = int(dead.stdout)
    orphan_file = tmp_path / f".model.keras.{dead_pid}-ab12.part"
    orphan_file.write_bytes(b"half a model")
    orphan_dir = tmp_path / f".model.keras.{dead_pid}-cd34.part"
    orphan_dir.mkdir()
    (orphan_dir / "model.keras").write_bytes(b"half")
    old_style = tmp_path / ".cells.tif.k3j4h5.part"  # before PIDs were in the name
    old_style.write_bytes(b"half")
    alive = temporary_beside(tmp_path / "model.keras")  # this process: still writing
    alive.write_bytes(b"in progress")
    keep = tmp_path / "model.keras"
    keep.write_bytes(b"a model")
    assert remove_stale_temporaries(tmp_path) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([alive.name, keep.name])
