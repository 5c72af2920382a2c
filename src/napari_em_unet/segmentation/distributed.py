"""Segment a volume on a dask.distributed cluster: one task per slice (or slab of slices).

The cluster is an existing one (``scheduler="tcp://host:8786"``, e.g. started with
dask-jobqueue on a batch system or dask-kubernetes) or a :class:`~distributed.LocalCluster`
of ``n_workers`` processes on this machine. Each worker loads the model once: the model file
travels to every worker inside a worker plugin (so workers need no access to the client's
files for it) and is loaded on the worker's first task, then reused by every later task.

Each task runs the same :func:`~napari_em_unet.segmentation.pipeline.segment_stack` as a local run
on its own slices, which are independent, so the result is identical to the local one.
Workers read their slices themselves (file-backed volumes pickle as a path) and, for a
``.zarr`` output, write them straight into the output store; for a TIFF output the slices
come back to the client, which writes each one at its offset as it arrives. So input and
zarr output must be reachable from the workers under the same path (a shared file system);
in-memory numpy inputs are sent to the workers slab by slab instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError, first_line
from ..io.volumes import Volume, open_volume
from ..io.writers import ZarrSliceWriter, open_writer
from .streaming import Progress, _Clock, output_shape

PLUGIN_PREFIX = "napari-em-unet-model"
_PORTABLE_KINDS = ("tiff", "zarr", "ome-zarr", "dask")


# ----------------------------------------------------------------------------- the model
try:  # distributed is a dependency, but keep importing this module cheap and safe
    from distributed.diagnostics.plugin import WorkerPlugin as _WorkerPluginBase
except ImportError:  # pragma: no cover
    _WorkerPluginBase = object


class ModelPlugin(_WorkerPluginBase):
    """Ships a model file to every worker and loads it there once, on first use.

    The bytes are written to the worker's local directory and loaded by the first task
    that needs them (not in ``setup``, which runs on the worker's event loop and would block
    its heartbeats for the seconds TensorFlow takes to start). ``loads`` counts the loads
    per worker, so tests and logs can check the model is not reloaded per task.
    """

    def __init__(self, model_bytes: bytes, file_name: str):
        self.model_bytes = model_bytes
        self.file_name = file_name
        self.digest = hashlib.sha256(model_bytes).hexdigest()[:16]
        self.name = f"{PLUGIN_PREFIX}-{self.digest}"
        self._state: dict = {}

    def __getstate__(self):
        return {"model_bytes": self.model_bytes, "file_name": self.file_name}

    def __setstate__(self, state):
        self.__init__(state["model_bytes"], state["file_name"])

    def setup(self, worker) -> None:
        # In-process workers may share one plugin object: keep one model per worker.
        self._state[worker.id] = {
            "lock": threading.Lock(),
            "model": None,
            "loads": 0,
            "dir": worker.local_directory,
        }

    def teardown(self, worker) -> None:
        state = self._state.pop(worker.id, None)
        if state and state.get("file"):
            with contextlib.suppress(OSError):
                os.unlink(state["file"])

    def model(self, worker):
        """This worker's :class:`~napari_em_unet.model.info.LoadedModel`, loaded once."""
        from ..model.files import load_model

        state = self._state.get(worker.id)
        if state is None:  # registered before this worker joined and setup not yet run
            self.setup(worker)
            state = self._state[worker.id]
        with state["lock"]:
            if state["model"] is None:
                folder = Path(state["dir"] or tempfile.gettempdir())
                folder.mkdir(parents=True, exist_ok=True)
                path = folder / f"{self.digest}-{self.file_name}"
                path.write_bytes(self.model_bytes)
                state["file"] = str(path)
                state["model"] = load_model(path)
                state["loads"] += 1
            return state["model"]

    def loads(self, worker) -> int:
        state = self._state.get(worker.id)
        return 0 if state is None else state["loads"]


@dataclass(frozen=True)
class _Job:
    """What every task of one run needs: the same for all of them, sent with each."""

    plugin_name: str
    """The worker plugin holding the model."""
    output: str
    pixel_size_nm: float | None
    params: object
    """Watershed parameters (None: the model's)."""
    predict_kwargs: dict
    zarr_array: str | None
    """The output array the workers write into, or None to send slices back."""


def _segment_task(source, indices: list[int], volume_indices: list[int] | None, job: _Job):
    """Runs on a worker: segment ``indices`` of ``source``; write to zarr or return slices.

    ``volume_indices`` maps the slices of a slab sent by the client (numbered from 0) back
    to the volume's; None when ``source`` is the volume itself.
    """
    from distributed import get_worker

    from .pipeline import segment_stack

    worker = get_worker()
    model = worker.plugins[job.plugin_name].model(worker)
    zarr_array = job.zarr_array
    target = None
    if zarr_array is not None:
        import zarr

        target = zarr.open_array(zarr_array, mode="r+")
    results = []
    for item in segment_stack(
        model,
        source,
        output=job.output,
        slices=indices,
        pixel_size_nm=job.pixel_size_nm,
        params=job.params,
        **job.predict_kwargs,
    ):
        index = item.index if volume_indices is None else volume_indices[item.index]
        if target is None:
            results.append((index, item.result, item.no_signal))
        else:
            if not os.path.exists(os.path.join(zarr_array, ".zarray")):
                # The run failed elsewhere and the client removed the store: writing
                # would create it again.
                return results
            if target.ndim == 2:
                target[...] = item.result
            else:
                target[index] = item.result
            results.append((index, None, item.no_signal))
    return results


def _load_on_worker(plugin_name: str) -> int:
    """Load the model on this worker (if not yet) and return how often it was loaded."""
    from distributed import get_worker

    worker = get_worker()
    plugin = worker.plugins[plugin_name]
    plugin.model(worker)
    return plugin.loads(worker)


def warm_up(client, plugin_name: str) -> dict[str, int]:
    """Load the model on every current worker at once; return loads per worker address.

    Done before the clock starts, like loading the model before a local run, so that the
    workers' TensorFlow start-up is neither counted per slice nor paid one task at a time.
    """
    workers = list(client.scheduler_info(n_workers=-1)["workers"])
    futures = [
        client.submit(
            _load_on_worker, plugin_name, workers=[address], allow_other_workers=False, pure=False
        )
        for address in workers
    ]
    counts = client.gather(futures) if futures else []
    return dict(zip(workers, counts, strict=True))


# ----------------------------------------------------------------------------- the cluster
@contextlib.contextmanager
def connect(
    client=None, scheduler: str | None = None, n_workers: int | None = None, *, timeout: float = 60
):
    """Yield a dask.distributed ``Client``: the one given, one for ``scheduler``, or a local
    cluster of ``n_workers`` single-threaded processes (closed on exit)."""
    from distributed import Client, LocalCluster

    if client is not None:
        yield client
        return
    if scheduler:
        try:
            client = Client(scheduler, timeout=timeout)
        except OSError as exc:
            raise InputError(
                f"cannot reach the dask scheduler at {scheduler} ({first_line(exc)})"
            ) from None
        with client:
            yield client
        return
    if not n_workers:
        raise InputError("give a scheduler address or a number of workers")
    # Worker processes, not threads: watershed and normalisation hold the GIL. Logs are
    # silenced below errors so that the CLI's stderr keeps its one-line promise.
    with (
        LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            env=_worker_threads(n_workers),
        ) as cluster,
        Client(cluster, timeout=timeout) as client,
    ):
        yield client


def _worker_threads(n_workers: int) -> dict[str, str]:
    """Share the cores between local workers: TensorFlow's thread pools otherwise each take
    every core, and their spinning threads compete. A user's own setting wins."""
    share = str(max(1, (os.cpu_count() or 1) // n_workers))
    wanted = {"TF_NUM_INTRAOP_THREADS": share, "TF_NUM_INTEROP_THREADS": "1"}
    return {k: os.environ.get(k, v) for k, v in wanted.items()}


def segment_distributed(
    model,
    volume,
    path,
    *,
    output="instances",
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    slices: Iterable[int] | None = None,
    slices_per_task: int = 1,
    pixel_size_nm: float | None = None,
    params=None,
    max_pending: int | None = None,
    timeout: float | None = None,
    **predict_kwargs,
) -> Iterator[Progress]:
    """Segment ``volume`` into ``path`` on a dask cluster, yielding progress per slice.

    Parameters
    ----------
    model : str, os.PathLike, LoadedModel or None
        Model file (None: the bundled model). Its bytes are sent to the workers once.
    volume : Volume or path or array-like
        What :func:`~napari_em_unet.io.volumes.open_volume` accepts. Files must be readable by
        the workers under the same path.
    path : str or os.PathLike
        Output, TIFF or ``.zarr`` (written by the workers themselves, so on a shared file
        system). Written under a temporary name and renamed when complete.
    output : Output or str
        As for :func:`~napari_em_unet.segmentation.pipeline.segment_stack`.
    client, scheduler, n_workers
        Where to run: an existing ``distributed.Client``, a scheduler address, or a
        number of local worker processes.
    slices : iterable of int, optional
        Slices to segment (default all; the others stay 0).
    slices_per_task : int
        Slices per task (a slab). 1 balances best; more amortises the per-task overhead
        for small slices.
    max_pending : int, optional
        Tasks in flight at once (default twice the cluster's threads), which bounds the
        results waiting on the client for a TIFF output.
    timeout : float, optional
        Seconds for the whole run before giving up with ``TimeoutError``.
    **predict_kwargs
        ``tile_size``, ``overlap``, ``batch_size``.

    Yields
    ------
    Progress
        As each slice is written (in completion order, not slice order); the generator
        returns the written output's path.
    """
    from .pipeline import Output

    output = Output(output)
    volume = open_volume(volume)
    pixel_size_nm = pixel_size_nm or volume.pixel_size_nm
    plugin = _model_plugin(model)
    slabs = _slabs(volume.shape[0], slices, slices_per_task)
    predict_kwargs = dict(predict_kwargs)

    writer = open_writer(path, output_shape(volume), output.dtype, pixel_size_nm=pixel_size_nm)
    try:
        with connect(client, scheduler, n_workers, timeout=min(timeout or 30, 30)) as dask_client:
            dask_client.register_plugin(plugin, name=plugin.name)
            try:
                warm_up(dask_client, plugin.name)
                zarr_array = (
                    str(writer.array_path.absolute())
                    if isinstance(writer, ZarrSliceWriter)
                    else None
                )
                job = _Job(
                    plugin.name, output.value, pixel_size_nm, params, predict_kwargs, zarr_array
                )
                yield from _run(
                    dask_client,
                    job,
                    volume,
                    writer,
                    slabs,
                    max_pending=max_pending,
                    timeout=timeout,
                )
            finally:
                with contextlib.suppress(Exception):  # the cluster may be gone already
                    dask_client.unregister_worker_plugin(plugin.name)
    except BaseException:
        writer.abort()
        if isinstance(writer, ZarrSliceWriter):
            # A task that was already writing a slice when the run failed may recreate a
            # chunk after the removal: remove again once it has had time to finish.
            for _ in range(10):
                time.sleep(0.5)
                writer.abort()
        raise
    return writer.commit()


def _model_plugin(model) -> ModelPlugin:
    """The worker plugin carrying the model file's bytes (None: the bundled model)."""
    from ..model.files import bundled_model_path, read_info
    from ..model.info import LoadedModel

    model_path = model.path if isinstance(model, LoadedModel) else model
    model_path = Path(bundled_model_path() if model_path is None else model_path)
    read_info(model_path)  # a missing or damaged file fails here, before any cluster starts
    return ModelPlugin(model_path.read_bytes(), model_path.name)


def _slabs(depth: int, slices, slices_per_task: int) -> list[list[int]]:
    """The slices to segment, ``slices_per_task`` to a task."""
    indices = list(range(depth)) if slices is None else [int(i) for i in slices]
    if slices_per_task < 1:
        raise InputError("slices per task must be at least 1")
    return [indices[i : i + slices_per_task] for i in range(0, len(indices), slices_per_task)]


def _run(
    client,
    job: _Job,
    volume: Volume,
    writer,
    slabs: list[list[int]],
    *,
    max_pending: int | None,
    timeout: float | None,
):
    """Keep ``max_pending`` tasks in flight; write what comes back; yield progress."""
    from distributed import as_completed

    portable = volume.kind in _PORTABLE_KINDS
    # A file-backed volume goes to each worker once, not with every task.
    shared = client.scatter([volume], hash=False)[0] if portable else None
    if max_pending is None:
        threads = sum(client.nthreads().values()) or 1
        max_pending = 2 * threads
    queue = list(reversed(slabs))

    def submit():
        slab = queue.pop()
        if portable:
            source, local, mapping = shared, slab, None
        else:  # in-memory data: send just this slab's slices
            source = np.stack([volume.read_slice(i) for i in slab])
            local, mapping = list(range(len(slab))), slab
        return client.submit(_segment_task, source, local, mapping, job, pure=False)

    clock = _Clock(sum(len(slab) for slab in slabs))
    done = 0
    running = as_completed(timeout=timeout)
    futures = set()
    try:
        for _ in range(min(max_pending, len(queue))):
            future = submit()
            futures.add(future)
            running.add(future)
        for future in running:
            results = future.result()
            futures.discard(future)
            future.release()
            if queue:
                new = submit()
                futures.add(new)
                running.add(new)
            for index, plane, no_signal in results:
                if plane is not None:
                    writer.write(index, plane)
                done += 1
                yield clock.tick(index, done, no_signal)
            del results
    finally:
        if futures:
            with contextlib.suppress(Exception):
                client.cancel(list(futures))
