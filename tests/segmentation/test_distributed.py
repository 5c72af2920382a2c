"""dask.distributed runs: identical to local, model loaded once per worker, clean failures.

The cluster is a LocalCluster of two in-process workers listening on 127.0.0.1 only,
started once for the module and always closed; every run has a time limit.
"""

from __future__ import annotations

import socket

import numpy as np
import pytest
import tifffile

from napari_em_unet.cli import main
from napari_em_unet.errors import InputError
from napari_em_unet.generators import drain
from napari_em_unet.io.volumes import open_volume
from napari_em_unet.segmentation.pipeline import segment_stack
from napari_em_unet.segmentation.streaming import segment_to
from napari_em_unet.segmentation.watershed import WatershedParams

distributed = pytest.importorskip("distributed")
TIMEOUT = 60


@pytest.fixture(scope="module")
def model(tiny_model_path):
    from napari_em_unet.model.files import load_model

    return load_model(tiny_model_path)


@pytest.fixture(scope="module")
def stack():
    from napari_em_unet.learning.synthetic import make_synthetic_stack

    return make_synthetic_stack((6, 80, 80), seed=3, cell_size=20)[0]


@pytest.fixture(scope="module")
def params(model, stack):
    """Thresholds around the untrained model's output, so that instances are non-trivial."""
    prob = next(segment_stack(model, stack, output="probabilities")).result
    low, high = np.percentile(prob, [30, 60])
    return WatershedParams(
        threshold=float(high), seed_threshold=float(low), min_seed_size=4, min_size=4
    )


@pytest.fixture()
def stack_tif(tmp_path, stack):
    path = tmp_path / "in.tif"
    tifffile.imwrite(
        path, stack, imagej=True, resolution=(250.0, 250.0), metadata={"unit": "um", "axes": "ZYX"}
    )
    return path


def local_result(model, stack, params, output="instances"):
    return np.stack([s.result for s in segment_stack(model, stack, output=output, params=params)])


@pytest.mark.parametrize(("suffix", "per_task"), [(".zarr", 1), (".tif", 4)])
def test_distributed_output_is_identical_and_the_model_loads_once_per_worker(
    client,
    model,
    tiny_model_path,
    stack,
    stack_tif,
    params,
    tmp_path,
    monkeypatch,
    suffix,
    per_task,
):
    from napari_em_unet.model import files as model_files

    loads = []
    real = model_files.load_model
    monkeypatch.setattr(model_files, "load_model", lambda path: loads.append(path) or real(path))
    expected = local_result(model, stack, params)
    assert expected.max() > 3

    out = tmp_path / f"out{suffix}"
    records = []
    written = drain(
        segment_distributed_(
            tiny_model_path, stack_tif, out, client, params, slices_per_task=per_task
        ),
        records.append,
    )
    assert written == out and sorted(r.index for r in records) == list(range(6))
    assert [r.done for r in records] == list(range(1, 7))
    result = open_volume(out)
    assert result.pixel_size_nm == pytest.approx(4.0)
    np.testing.assert_array_equal(np.asarray(result), expected)
    # Two workers, six slices: each worker loaded the model once, not once per task.
    assert len(loads) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["in.tif", out.name])


def segment_distributed_(model_path, volume, out, client, params, **kwargs):
    from napari_em_unet.segmentation.distributed import segment_distributed

    return segment_distributed(
        model_path, volume, out, client=client, params=params, timeout=TIMEOUT, **kwargs
    )


def test_in_memory_input_and_a_subset_of_slices(
    client, model, tiny_model_path, stack, params, tmp_path
):
    """numpy data cannot be read by workers from a path: the client sends slab by slab."""
    out = tmp_path / "sub.tif"
    drain(
        segment_distributed_(
            tiny_model_path, stack, out, client, params, slices=[5, 1, 2], slices_per_task=2
        )
    )
    result = np.asarray(open_volume(out))
    expected = local_result(model, stack, params)
    for z in range(6):
        if z in (1, 2, 5):
            np.testing.assert_array_equal(result[z], expected[z])
        else:
            assert not result[z].any()


def test_same_as_the_streaming_local_run(
    client, model, tiny_model_path, stack_tif, params, tmp_path
):
    local = drain(segment_to(model, stack_tif, tmp_path / "local.zarr", output="probabilities"))
    remote = drain(
        segment_distributed_(
            tiny_model_path,
            stack_tif,
            tmp_path / "dist.zarr",
            client,
            params,
            output="probabilities",
        )
    )
    np.testing.assert_array_equal(np.asarray(open_volume(remote)), np.asarray(open_volume(local)))


def test_a_failing_task_fails_the_run_and_leaves_no_output(
    client, tiny_model_path, stack_tif, params, tmp_path
):
    volume = open_volume(stack_tif)
    with open(stack_tif, "r+b") as fh:  # the file is cut short after it was opened
        fh.truncate(stack_tif.stat().st_size - 3 * 80 * 80)
    for suffix in (".zarr", ".tif"):
        with pytest.raises(InputError, match="truncated"):
            drain(
                segment_distributed_(
                    tiny_model_path, volume, tmp_path / f"o{suffix}", client, params
                )
            )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_cli_scheduler_address(cluster, model, tiny_model_path, stack, stack_tif, tmp_path, capsys):
    out = tmp_path / "cli.zarr"
    assert (
        main(
            [
                "segment",
                str(stack_tif),
                "-o",
                str(out),
                "--model",
                str(tiny_model_path),
                "--scheduler",
                cluster.scheduler_address,
                "--output-kind",
                "probabilities",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(
        np.asarray(open_volume(out)), local_result(model, stack, None, "probabilities")
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"on {cluster.scheduler_address}" in err[0]


def test_cli_unreachable_scheduler_is_one_error_line(
    tiny_model_path, stack_tif, tmp_path, capsys, monkeypatch
):
    from napari_em_unet.segmentation import distributed as dist

    with socket.socket() as sock:  # a free loopback port with nothing listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    real_connect = dist.connect
    monkeypatch.setattr(dist, "connect", lambda c, s, n, timeout: real_connect(c, s, n, timeout=2))
    out = tmp_path / "x.zarr"
    assert (
        main(
            [
                "segment",
                str(stack_tif),
                "-o",
                str(out),
                "--model",
                str(tiny_model_path),
                "--scheduler",
                f"tcp://127.0.0.1:{port}",
            ]
        )
        != 0
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot reach the dask scheduler")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.tif"]


def test_workers_and_scheduler_are_exclusive(stack_tif, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(
            [
                "segment",
                str(stack_tif),
                "-o",
                str(tmp_path / "o.tif"),
                "--workers",
                "2",
                "--scheduler",
                "tcp://127.0.0.1:1",
            ]
        )
    assert "not allowed with" in capsys.readouterr().err
