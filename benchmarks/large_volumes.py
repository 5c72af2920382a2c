"""Large volumes: peak memory of streaming ``em-unet segment``, and local versus dask throughput.

Every figure comes from running ``em-unet segment`` as a user would, in a subprocess, in one
run of this script:

1. **Peak RSS, 4 versus 20 slices** of 2048 x 2048 (TIFF in, TIFF out). The peak resident
   memory of the process is read from the kernel when it exits (``os.wait4``), so nothing
   is missed between samples. Streaming means the growth from 4 to 20 slices stays small
   (target: at most 150 MiB).
2. **Throughput, local versus 2 dask workers** on the same 20 slices (zarr in, zarr out, as
   in ``em-unet segment IN.zarr -o OUT.zarr --workers 2``): slices per second from the
   command's own summary, timed from the first slice (after the model is loaded, here and
   on every worker) to the last. Target: distributed within 10 % of local.
3. **Identical output**: the distributed result is compared with the local one, exactly.

The slices are real ssTEM (the ISBI 2012 test volume, 512 x 512) mirrored into 2048 x 2048
tiles when ``../shared/data`` is there, synthetic otherwise. The model is ``--model``, else
the bundled one; when neither exists an untrained network of the default architecture is
used (same computation per pixel) with its watershed thresholds set around its own output,
so that post-processing produces real cells and the identity check compares real labels.

    python benchmarks/large_volumes.py [--model M.keras] [--slices 20] [--small 4] [--size 2048]
        [--baseline-batch 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from _common import ISBI, machine, table

MIB = 2**20
SUMMARY = re.compile(r"(\d+) slices in ([\d.]+) s, ([\d.]+) slices/s; ([\d.]+) s in all")


def make_input(folder: Path, depth: int, size: int) -> Path:
    """A ``depth`` x ``size`` x ``size`` uint8 stack at 4 nm, written slice by slice."""
    path = folder / f"stack{depth}.tif"
    if (ISBI / "test-volume.tif").exists():
        source = tifffile.imread(ISBI / "test-volume.tif")
        source_name = "ISBI 2012 test volume, mirrored tiles"
    else:
        from napari_em_unet.learning.synthetic import make_synthetic_stack

        source = make_synthetic_stack((min(depth, 8), 512, 512), seed=0)[0]
        source_name = "synthetic ssTEM, mirrored tiles"

    def tiled(plane: np.ndarray) -> np.ndarray:
        # Mirror neighbouring tiles so that the big slice has no seams for the network.
        row = np.concatenate([plane, plane[:, ::-1]] * (size // (2 * plane.shape[1]) + 1), 1)
        full = np.concatenate([row, row[::-1]] * (size // (2 * plane.shape[0]) + 1), 0)
        return np.ascontiguousarray(full[:size, :size])

    from napari_em_unet.io.writers import TiffSliceWriter

    with TiffSliceWriter(path, (depth, size, size), np.uint8, pixel_size_nm=4.0) as writer:
        for z in range(depth):
            writer.write(z, tiled(source[z % len(source)]))
    make_input.source = source_name
    return path


def to_zarr(tif: Path) -> Path:
    """The same stack as a zarr array (one chunk per slice), copied slice by slice."""
    import zarr

    from napari_em_unet.io.volumes import open_volume

    volume = open_volume(tif)
    path = tif.with_suffix(".zarr")
    array = zarr.create_array(
        str(path),
        shape=volume.shape,
        chunks=(1, *volume.shape[1:]),
        dtype=volume.dtype,
        zarr_format=2,
        overwrite=True,
    )
    array.attrs["pixel_size_nm"] = volume.pixel_size_nm
    for z in range(volume.shape[0]):
        array[z] = volume[z]
    return path


def choose_model(folder: Path, requested: str | None, calibrate_on: Path) -> tuple[Path, str]:
    from napari_em_unet.model.files import bundled_model_path

    if requested:
        return Path(requested), Path(requested).name
    if bundled_model_path().exists():
        return bundled_model_path(), "bundled ISBI 2012 model"
    from napari_em_unet.io.volumes import open_volume
    from napari_em_unet.model.files import save_model
    from napari_em_unet.model.info import LoadedModel, ModelInfo
    from napari_em_unet.model.unet import UNetConfig, build_unet
    from napari_em_unet.segmentation.pipeline import segment_stack

    config = UNetConfig()
    network = build_unet(config, seed=0)
    info = ModelInfo(name="untrained-default", architecture=config.to_dict(), pixel_size_nm=4.0)
    probe = next(
        segment_stack(
            LoadedModel(network, info),
            open_volume(calibrate_on),
            output="probabilities",
            slices=[0],
        )
    ).result
    low, high = np.percentile(probe, [35, 60])
    info.postprocessing = {"threshold": float(high), "seed_threshold": float(low)}
    path = save_model(network, info, folder / "untrained-default.keras")
    return path, (
        f"untrained default architecture ({config.base_filters} filters, depth "
        f"{config.depth}), watershed thresholds {low:.3f}/{high:.3f} set on its output"
    )


def segment(inp: Path, out: Path, model: Path, *extra: str) -> dict:
    """Run ``em-unet segment`` in a subprocess; its peak RSS comes from the kernel (wait4)."""
    env = {k: v for k, v in os.environ.items() if k != "EM_UNET_PROGRESS"}
    env["PYTHONWARNINGS"] = "ignore"
    command = [
        sys.executable,
        "-m",
        "napari_em_unet.cli",
        "segment",
        str(inp),
        "-o",
        str(out),
        "--model",
        str(model),
        "--overwrite",
        *extra,
    ]
    started = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        sys.exit(f"em-unet segment failed ({proc.returncode}):\n{stderr}")
    match = SUMMARY.search(stderr)
    if not match:
        sys.exit(f"no summary line in:\n{stderr}")
    return {
        "command": " ".join(["em-unet", *command[3:]]),
        "slices": int(match.group(1)),
        "seconds": float(match.group(2)),
        "slices_per_s": float(match.group(3)),
        "wall_s": wall,
        # ru_maxrss is in KiB on Linux.
        "peak_rss_mib": usage.ru_maxrss * 1024 / MIB,
    }


def compare(a: Path, b: Path) -> tuple[bool, int]:
    """Exact equality slice by slice (never both volumes in memory); and the labels seen."""
    from napari_em_unet.io.volumes import open_volume

    left, right = open_volume(a), open_volume(b)
    if left.shape != right.shape or left.dtype != right.dtype:
        return False, 0
    same, labels = True, 0
    for z in range(left.shape[0]):
        x, y = left[z], right[z]
        same &= bool(np.array_equal(x, y))
        labels = max(labels, int(x.max()))
    return same, labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model file (default: bundled/untrained)")
    parser.add_argument("--slices", type=int, default=20, help="large stack depth (20)")
    parser.add_argument("--small", type=int, default=4, help="small stack depth (4)")
    parser.add_argument("--size", type=int, default=2048, help="slice edge in pixels (2048)")
    parser.add_argument("--workers", type=int, default=2, help="dask workers (2)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--keep", default=None, help="work in this folder and keep it")
    parser.add_argument(
        "--baseline-batch",
        type=int,
        default=None,
        help="also measure peak RSS with this --batch-size (4 was the default until 2026-12-05)",
    )
    args = parser.parse_args()

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="em-unet-large-"))
    work.mkdir(parents=True, exist_ok=True)
    big = make_input(work, args.slices, args.size)
    small = work / f"stack{args.small}.tif"
    from napari_em_unet.io.volumes import open_volume
    from napari_em_unet.io.writers import TiffSliceWriter

    source = open_volume(big)
    with TiffSliceWriter(small, (args.small, *source.shape[1:]), np.uint8, 4.0) as writer:
        for z in range(args.small):
            writer.write(z, source[z])
    big_zarr = to_zarr(big)
    model, model_name = choose_model(work, args.model, small)
    print(
        f"{machine()}\ninput: {make_input.source}, {args.size} x {args.size} uint8\n"
        f"model: {model_name}",
        flush=True,
    )

    runs = {}
    runs["local_small_tif"] = segment(small, work / "small-out.tif", model)
    print("done: local", args.small, "slices", flush=True)
    runs["local_big_tif"] = segment(big, work / "big-out.tif", model)
    print("done: local", args.slices, "slices", flush=True)
    if args.baseline_batch:
        batch = ("--batch-size", str(args.baseline_batch))
        runs["batch_small_tif"] = segment(small, work / "small-out-b.tif", model, *batch)
        runs["batch_big_tif"] = segment(big, work / "big-out-b.tif", model, *batch)
        print("done: baseline batch", args.baseline_batch, flush=True)
    runs["local_big_zarr"] = segment(big_zarr, work / "local-out.zarr", model)
    print("done: local zarr", flush=True)
    runs["dask_big_zarr"] = segment(
        big_zarr, work / "dask-out.zarr", model, "--workers", str(args.workers)
    )
    print("done: dask zarr", flush=True)
    identical, labels = compare(work / "local-out.zarr", work / "dask-out.zarr")
    identical_tif, _ = compare(work / "big-out.tif", work / "local-out.zarr")

    rows = [
        (
            name,
            r["slices"],
            f"{r['peak_rss_mib']:.0f}",
            f"{r['slices_per_s']:.3f}",
            f"{r['seconds']:.1f}",
            f"{r['wall_s']:.1f}",
        )
        for name, r in runs.items()
    ]
    print()
    print(table(rows, ("run", "slices", "peak RSS MiB", "slices/s", "segment s", "wall s")))
    growth = runs["local_big_tif"]["peak_rss_mib"] - runs["local_small_tif"]["peak_rss_mib"]
    ratio = runs["dask_big_zarr"]["slices_per_s"] / runs["local_big_zarr"]["slices_per_s"]
    wall_ratio = runs["local_big_zarr"]["wall_s"] / runs["dask_big_zarr"]["wall_s"]
    verdict = {
        "peak_rss_growth_mib": round(growth, 1),
        "peak_rss_growth_ok": growth <= 150,
        "dask_over_local_throughput": round(ratio, 3),
        "dask_within_10_percent": ratio >= 0.9,
        "dask_over_local_wall_clock": round(wall_ratio, 3),
        "dask_identical_to_local": identical,
        "tif_identical_to_zarr_local": identical_tif,
        "max_label": labels,
    }
    print()
    print(
        f"peak RSS {args.small} -> {args.slices} slices: "
        f"{runs['local_small_tif']['peak_rss_mib']:.0f} -> "
        f"{runs['local_big_tif']['peak_rss_mib']:.0f} MiB (growth {growth:+.0f} MiB; "
        f"limit 150): {'OK' if verdict['peak_rss_growth_ok'] else 'OVER'}"
    )
    if args.baseline_batch:
        before = runs["batch_small_tif"]["peak_rss_mib"], runs["batch_big_tif"]["peak_rss_mib"]
        print(
            f"the same with --batch-size {args.baseline_batch}: {before[0]:.0f} -> "
            f"{before[1]:.0f} MiB (growth {before[1] - before[0]:+.0f} MiB)"
        )
    print(
        f"throughput: local {runs['local_big_zarr']['slices_per_s']:.3f} slices/s, "
        f"{args.workers} dask workers {runs['dask_big_zarr']['slices_per_s']:.3f} slices/s "
        f"(ratio {ratio:.2f}; whole command incl. cluster start {wall_ratio:.2f}): "
        f"{'OK' if verdict['dask_within_10_percent'] else 'SLOWER than 10 %'}"
    )
    print(
        f"dask output identical to local: {'yes' if identical else 'NO'} "
        f"(labels up to {labels}); TIFF and zarr local outputs identical: "
        f"{'yes' if identical_tif else 'NO'}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": machine(),
                    "model": model_name,
                    "input": make_input.source,
                    "runs": runs,
                    **verdict,
                },
                indent=1,
            )
        )
    if not args.keep:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
