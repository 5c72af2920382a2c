"""A small in-process dask cluster for the tests that run segmentation and linking on one."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=False,
        protocol="tcp",
        host="127.0.0.1",
        dashboard_address=None,
        silence_logs=logging.ERROR,
    ) as local:
        yield local


@pytest.fixture()
def client(cluster):
    import distributed

    with distributed.Client(cluster, timeout=60) as connected:
        yield connected
