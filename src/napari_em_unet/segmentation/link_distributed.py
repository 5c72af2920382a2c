"""Link on a dask.distributed cluster: each task builds the graph of a chunk of sections.

Pass 1 sends one task per chunk of ``sections_per_task`` sections. A task reads its
sections plus the few around them that its decisions look at (the split window and the
longest edge), and returns the same records a local run makes for those sections
(:func:`~.link_graph.section_graph` on the same window). The client joins the chunks by
putting all records in section order and solves the one graph (:func:`~.link_graph.solve`),
so the objects, their ids and their numbering are exactly those of a local run. Pass 2
sends one task per chunk again, with that chunk's part of the solution; workers write a
``.zarr`` output themselves, or return the sections for the client to write a TIFF.

File-backed inputs (TIFF, zarr) are read by the workers under the same path (a shared file
system, as for ``em-unet segment --workers``); in-memory arrays are sent chunk by chunk.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from ..io.writers import ZarrSliceWriter, open_writer
from .link_graph import Objects, SectionRecord, SectionWindow, section_graph, solve
from .linking import LinkClock, LinkParams, LinkProgress, resolve_voxel_size

_PORTABLE_KINDS = ("tiff", "zarr", "ome-zarr", "dask")


@dataclass
class _Slab:
    """Sections ``offset .. offset + len(data) - 1`` of an in-memory stack, sent to a worker."""

    data: np.ndarray
    offset: int

    def __getitem__(self, z: int) -> np.ndarray:
        if not self.offset <= z < self.offset + len(self.data):
            raise IndexError(f"section {z} was not sent with this chunk")
        return self.data[z - self.offset]


def _graph_task(
    labels, probability, start: int, stop: int, depth: int, params: LinkParams, geometry
) -> list[SectionRecord]:
    """Runs on a worker: the pass-1 records of sections ``start .. stop - 1``."""
    window = SectionWindow(labels, probability, depth, params, geometry)
    return list(section_graph(window, start, stop))


def _write_task(labels, objects: Objects, start: int, stop: int, zarr_array: str | None):
    """Runs on a worker: pass 2 for its sections; writes into zarr or returns the planes."""
    from .linking import write_sections

    target = None
    if zarr_array is not None:
        import zarr

        target = zarr.open_array(zarr_array, mode="r+")
    out = []
    for z, plane in write_sections(labels, objects, start, stop):
        if target is None:
            out.append((z, plane))
        else:
            target[z] = plane
            out.append((z, None))
    return out


def _part(objects: Objects, start: int, stop: int) -> Objects:
    """The solution restricted to sections ``start .. stop - 1`` (what a write task needs)."""
    lo, hi = objects.starts[start], objects.starts[stop]
    starts = np.zeros(len(objects.starts), dtype=np.int64)
    starts[start : stop + 1] = objects.starts[start : stop + 1] - lo
    starts[stop + 1 :] = hi - lo
    patches = {z: p for z, p in objects.patches.items() if start <= z < stop}
    return Objects(
        objects.node_z[lo:hi], objects.node_label[lo:hi], objects.node_id[lo:hi], starts, patches
    )


def link_distributed(
    labels,
    path,
    *,
    probability=None,
    voxel_size_nm=None,
    params: LinkParams | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    sections_per_task: int = 16,
    timeout: float | None = None,
) -> Iterator[LinkProgress]:
    """Link ``labels`` into the file ``path`` (TIFF, or zarr for ``.zarr``) on a dask cluster.

    Parameters are those of :func:`~.linking.link_into` plus where to run (an existing
    ``distributed.Client``, a scheduler address, or a number of local worker processes) and
    how many sections each task handles. ``labels`` and ``probability`` are Volumes (from
    :func:`~napari_em_unet.io.volumes.open_volume`) or other array-likes. The result equals
    the local one exactly. Yields progress per section and pass; returns the written path.
    """
    from .distributed import connect

    params = params or LinkParams()
    _check_inputs(labels, probability, sections_per_task)
    depth = int(labels.shape[0])
    voxel = resolve_voxel_size(voxel_size_nm, getattr(labels, "pixel_size_nm", None))
    geometry = params.geometry(voxel)
    chunks = [(z, min(depth, z + sections_per_task)) for z in range(0, depth, sections_per_task)]
    writer = open_writer(
        path, tuple(labels.shape), np.uint32, pixel_size_nm=getattr(labels, "pixel_size_nm", None)
    )
    try:
        with connect(client, scheduler, n_workers, timeout=min(timeout or 30, 30)) as dask:
            clock = LinkClock(depth)
            # A chunk's records need the sections its split window and longest edge reach.
            reach = geometry.gap + 2 * geometry.split_window
            labels_at, probability_at = _Source(dask, labels), _Source(dask, probability)
            records: list[SectionRecord] = []
            for result in _each(
                dask,
                chunks,
                timeout,
                lambda lo, hi: (
                    _graph_task,
                    labels_at(lo, hi, reach),
                    probability_at(lo, hi, reach),
                    lo,
                    hi,
                    depth,
                    params,
                    geometry,
                ),
            ):
                records.extend(result)
                for record in result:
                    yield clock.tick(record.z, 1)
            objects = solve(records, depth, params.min_sections)
            del records
            yield from _write_pass(dask, chunks, timeout, labels_at, objects, writer, clock)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def _check_inputs(labels, probability, sections_per_task: int) -> None:
    if sections_per_task < 1:
        raise InputError("sections per task must be at least 1")
    if len(labels.shape) != 3:
        raise InputError(f"linking on a cluster needs a ZYX stack; got shape {labels.shape}")
    if probability is not None and tuple(probability.shape) != tuple(labels.shape):
        raise InputError(
            f"probability shape {tuple(probability.shape)} differs from the "
            f"labels {tuple(labels.shape)}"
        )


def _write_pass(dask, chunks, timeout, labels_at, objects, writer, clock):
    """Second pass: each chunk's sections relabelled with the objects' ids, then written."""
    zarr_array = str(writer.array_path.absolute()) if isinstance(writer, ZarrSliceWriter) else None
    for result in _each(
        dask,
        chunks,
        timeout,
        lambda lo, hi: (
            _write_task,
            labels_at(lo, hi, 0),
            _part(objects, lo, hi),
            lo,
            hi,
            zarr_array,
        ),
    ):
        for z, plane in result:
            if plane is not None:
                writer.write(z, plane)
            yield clock.tick(z, 2, objects.count)


class _Source:
    """What tasks read an input from: the volume itself when the workers can open it (sent
    to the cluster once), else the sections a chunk needs as an in-memory slab."""

    def __init__(self, client, array):
        self.array = array
        portable = array is not None and getattr(array, "kind", None) in _PORTABLE_KINDS
        self.shared = client.scatter([array], hash=False)[0] if portable else None

    def __call__(self, start: int, stop: int, reach: int):
        if self.array is None or self.shared is not None:
            return self.shared
        lo, hi = max(0, start - reach), min(int(self.array.shape[0]), stop + reach)
        return _Slab(np.stack([np.asarray(self.array[z]) for z in range(lo, hi)]), lo)


def _each(client, chunks, timeout, task_of) -> Iterator:
    """Submit one task per chunk (a few at a time) and yield results in completion order."""
    from distributed import as_completed

    threads = sum(client.nthreads().values()) or 1
    queue = list(reversed(chunks))
    running = as_completed(timeout=timeout)
    futures = set()

    def submit():
        lo, hi = queue.pop()
        function, *args = task_of(lo, hi)
        future = client.submit(function, *args, pure=False)
        futures.add(future)
        running.add(future)

    try:
        for _ in range(min(2 * threads, len(queue))):
            submit()
        for future in running:
            result = future.result()
            futures.discard(future)
            future.release()
            if queue:
                submit()
            yield result
    finally:
        if futures:
            with contextlib.suppress(Exception):
                client.cancel(list(futures))
