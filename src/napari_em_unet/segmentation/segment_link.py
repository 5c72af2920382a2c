"""``em-unet segment --link-3d``: segment into a temporary store, then link into the output.

Linking reads every section twice and needs the membrane probability, so the per-section
labels and the probability map go to a temporary zarr store beside the output (on disk,
compressed, never whole in memory), which is deleted at the end whatever happens. On a
dask cluster the workers write only the probability, and the labels are recomputed from it
by the model's own watershed when the linking tasks read them: the same function on the
same probability, so a cluster run links exactly the labels a local run links.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..io.volumes import Volume, open_volume
from ..io.voxel_size import section_spacing_of
from ..io.writers import create_zarr_output, open_writer
from .linking import LinkParams, link_into, resolve_voxel_size
from .streaming import Progress, _Clock, output_shape
from .watershed import WatershedParams, instances_from_probability, params_for_data


class LabelsFromProbability:
    """Instance labels of each section, computed from its probability when read."""

    def __init__(self, probability: Volume, params: WatershedParams):
        self.probability, self.params = probability, params
        self.shape, self.kind = probability.shape, probability.kind
        self.pixel_size_nm = probability.pixel_size_nm

    def __getitem__(self, z: int) -> np.ndarray:
        return instances_from_probability(self.probability[z], self.params)


def segment_and_link(
    model,
    volume,
    path,
    *,
    params: LinkParams | None = None,
    voxel_size_nm=None,
    pixel_size_nm: float | None = None,
    client=None,
    scheduler: str | None = None,
    n_workers: int | None = None,
    slices_per_task: int = 1,
    sections_per_task: int = 16,
    **predict_kwargs,
) -> Iterator[Progress]:
    """Segment ``volume`` and write its linked 3D labels to ``path`` (TIFF or ``.zarr``).

    Yields the segmentation's :class:`~.streaming.Progress` per slice, then the linking's
    :class:`~.linking.LinkProgress` per section and pass; returns the written path.
    ``model`` is a model file (None: the bundled model) or a loaded model; ``client``,
    ``scheduler`` or ``n_workers`` run both steps on a dask cluster.
    """
    params = params or LinkParams()
    volume = open_volume(volume, pixel_size_nm=pixel_size_nm)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".link-3d", dir=path.parent))
    voxel_size_nm = resolve_voxel_size(
        voxel_size_nm, volume.pixel_size_nm, section_spacing_of(volume)
    )
    link = {"voxel_size_nm": voxel_size_nm, "params": params}
    try:
        if client is not None or scheduler or n_workers:
            cluster = {"client": client, "scheduler": scheduler, "n_workers": n_workers}
            return (
                yield from _on_cluster(
                    model,
                    volume,
                    path,
                    scratch,
                    cluster,
                    segment={"slices_per_task": slices_per_task, **predict_kwargs},
                    link={"sections_per_task": sections_per_task, **link},
                )
            )
        return (yield from _here(model, volume, path, scratch, link, predict_kwargs))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _on_cluster(model, volume: Volume, path: Path, scratch: Path, cluster: dict, segment, link):
    """Probabilities computed on the cluster into ``scratch``, then linked there."""
    from ..model.files import LoadedModel, bundled_model_path, read_info
    from .distributed import segment_distributed
    from .link_distributed import link_distributed

    model_path = model.path if isinstance(model, LoadedModel) else model
    model_path = bundled_model_path() if model_path is None else model_path
    yield from segment_distributed(
        model_path,
        volume,
        scratch / "probability.zarr",
        output="probabilities",
        **cluster,
        **segment,
    )
    probability = open_volume(scratch / "probability.zarr")
    info = model.info if isinstance(model, LoadedModel) else read_info(model_path)
    labels = LabelsFromProbability(
        probability,
        params_for_data(info.postprocessing, info.pixel_size_nm, volume.pixel_size_nm),
    )
    return (yield from link_distributed(labels, path, probability=probability, **cluster, **link))


def _here(model, volume: Volume, path: Path, scratch: Path, link: dict, predict_kwargs: dict):
    """Segmented and linked in this process, through zarr arrays under ``scratch``."""
    from ..model.files import LoadedModel, load_model

    model = model if isinstance(model, LoadedModel) else load_model(model)
    labels, probability = yield from _segment_locally(model, volume, scratch, predict_kwargs)
    writer = open_writer(path, output_shape(volume), np.uint32, pixel_size_nm=volume.pixel_size_nm)
    try:
        yield from link_into(labels, writer, probability=probability, **link)
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def _segment_locally(model, volume: Volume, scratch: Path, predict_kwargs: dict):
    """Per-section labels and probability into zarr arrays under ``scratch``."""
    from .pipeline import segment_stack

    labels = create_zarr_output(scratch / "labels.zarr", volume.shape, np.uint32)
    probability = create_zarr_output(scratch / "probability.zarr", volume.shape, np.float32)
    clock = _Clock(volume.shape[0])
    for item in segment_stack(model, volume, pixel_size_nm=volume.pixel_size_nm, **predict_kwargs):
        labels[item.index] = item.result
        probability[item.index] = item.probability
        yield clock.tick(item.index, item.done, item.no_signal)
    return labels, probability
