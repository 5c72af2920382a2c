"""Linking per-section labels into 3D objects: accuracy against the plain linker, speed, memory.

Everything comes from one run of this script:

1. **Synthetic 3D volumes** with true 3D objects (``make_synthetic_volume``): FIB-SEM-like
   (50 sections of 384 x 384 at 10 nm, isotropic) and ssTEM-like (30 sections of 512 x 512
   at 4 x 4 x 50 nm). Each is segmented section by section by the bundled model through the
   real pipeline (``segment_stack``: tiled inference at the model's 4 nm, watershed), and
   the per-section labels are linked by:

   * **no linking**: per-section ids taken as 3D ids;
   * **plain**: the baseline of issue 9 — a label in section z takes the id of the label in
     z - 1 it overlaps most, when the choice is mutual and the overlap covers half of the
     smaller of the two; otherwise it starts a new object;
   * **ours** (``link_labels`` with the probability map) at several ``bias`` values.

   Scores: 3D V_rand / V_info (``score_volume_3d``). The default bias is the one with the
   best mean 3D V_rand on the *tuning* volumes (seeds 1-3 of each kind); it is reported on
   the *test* volumes (seeds 4-6), which nothing was tuned on.
2. **Speed and memory**: ``em-unet link`` in a subprocess on real per-section labels (the
   bundled model's segmentation of vnc2013, 1024 x 1024, with its probability map), 10 and
   40 sections (the 20 sections mirrored in depth); peak RSS from the kernel (``os.wait4``).
3. **Chunked = local**: the same 40 sections linked with ``--workers 2`` (zarr out), compared
   voxel for voxel with the local result.
4. **vnc2013 sanity** (no 3D ground truth there): per-section V_rand against its membrane
   masks before and after linking (linking may split merged labels), objects found, and how
   many sections they span.

    python benchmarks/linking.py [--biases 0.3,0.4,0.5,0.6,0.7] [--quick] [--json out.json]
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
from _common import VNC, machine, table

MIB = 2**20
KINDS = {
    "FIB-SEM": {"shape": (50, 384, 384), "voxel": (10.0, 10.0, 10.0)},
    "ssTEM": {"shape": (30, 512, 512), "voxel": (50.0, 4.0, 4.0)},
}


# ----------------------------------------------------------------------------- baseline
def link_plain(labels: np.ndarray) -> np.ndarray:
    """The plain mutual-best-overlap linker of issue 9 (the baseline to beat)."""
    from napari_em_unet.segmentation.link_evidence import pair_counts

    out = np.zeros(labels.shape, dtype=np.uint32)
    next_id, previous, previous_ids = 1, None, None
    for z, plane in enumerate(labels):
        plane = np.asarray(plane).astype(np.int64)
        sizes = np.bincount(plane.ravel())
        ids = np.zeros(len(sizes), dtype=np.uint32)
        if previous is not None and plane.any() and previous.any():
            before, here, overlap = pair_counts(previous, plane)
            sizes_before = np.bincount(previous.ravel())
            best_here, best_before = {}, {}  # label -> (overlap, partner)
            for a, b, o in zip(before.tolist(), here.tolist(), overlap.tolist(), strict=True):
                if o > best_here.get(a, (0, 0))[0]:
                    best_here[a] = (o, b)
                if o > best_before.get(b, (0, 0))[0]:
                    best_before[b] = (o, a)
            for b, (o, a) in best_before.items():
                if best_here[a][1] == b and o >= 0.5 * min(sizes_before[a], sizes[b]):
                    ids[b] = previous_ids[a]
        for label in np.flatnonzero(sizes):
            if label and not ids[label]:
                ids[label] = next_id
                next_id += 1
        out[z] = ids[plane]
        previous, previous_ids = plane, ids
    return out


# ----------------------------------------------------------------------------- synthetic
def synthetic_case(kind: str, seed: int, model) -> dict:
    """Generate a volume, segment it through the real pipeline; keep labels and probability."""
    from napari_em_unet.learning.synthetic import (
        FIBSEM_STYLE,
        SSTEM_STYLE,
        VolumeStyle,
        make_synthetic_volume,
    )
    from napari_em_unet.segmentation.pipeline import segment_stack

    spec = KINDS[kind]
    style: VolumeStyle = FIBSEM_STYLE if kind == "FIB-SEM" else SSTEM_STYLE
    image, truth = make_synthetic_volume(spec["shape"], style, seed=seed)
    labels, probability = [], []
    started = time.perf_counter()
    for item in segment_stack(model, image, pixel_size_nm=spec["voxel"][2]):
        labels.append(item.result)
        probability.append(item.probability.astype(np.float32))
    seconds = time.perf_counter() - started
    return {
        "kind": kind,
        "seed": seed,
        "truth": truth,
        "labels": np.stack(labels),
        "probability": np.stack(probability),
        "segment_s": seconds,
    }


def score_case(case: dict, biases: list[float]) -> dict:
    from napari_em_unet.learning.metrics import score_slice, score_volume_3d
    from napari_em_unet.segmentation.linking import LinkParams, link_labels

    truth, labels = case["truth"], case["labels"]
    voxel = KINDS[case["kind"]]["voxel"]

    def scored(linked):
        s = score_volume_3d(linked, truth)
        return {
            "v_rand": s.v_rand,
            "v_info": s.v_info,
            "split": s.v_rand_split,
            "merge": s.v_rand_merge,
        }

    result = {
        "kind": case["kind"],
        "seed": case["seed"],
        "per_slice_v_rand_2d": float(
            np.mean([score_slice(p, t).v_rand for p, t in zip(labels, truth, strict=True)])
        ),
        "no_link": scored(labels),
        "plain": scored(link_plain(labels)),
        "ours": {},
    }
    for bias in biases:
        started = time.perf_counter()
        linked = link_labels(
            labels, case["probability"], voxel_size_nm=voxel, params=LinkParams(bias=bias)
        )
        seconds = time.perf_counter() - started
        result["ours"][bias] = {**scored(linked), "s_per_section": seconds / len(labels)}
    return result


# ----------------------------------------------------------------------------- real data
def segment_vnc(model, folder: Path) -> tuple[Path, Path]:
    """The bundled model's labels and probability of vnc2013, as TIFFs with the voxel size."""
    from napari_em_unet.io.volumes import open_volume
    from napari_em_unet.segmentation.pipeline import segment_stack

    volume = open_volume(VNC / "raw.tif")
    labels, probability = [], []
    for item in segment_stack(model, volume, pixel_size_nm=volume.pixel_size_nm):
        labels.append(item.result)
        probability.append(item.probability.astype(np.float32))
    pixel = volume.pixel_size_nm or 4.6
    meta = {
        "imagej": True,
        "resolution": (1e3 / pixel, 1e3 / pixel),
        "metadata": {"unit": "um", "spacing": 0.05, "axes": "ZYX"},
    }
    paths = folder / "vnc-labels.tif", folder / "vnc-prob.tif"
    labels = np.stack(labels)
    assert labels.max() < 2**16  # ImageJ TIFF (which records the spacing) stops at uint16
    tifffile.imwrite(paths[0], labels.astype(np.uint16), **meta)
    tifffile.imwrite(paths[1], np.stack(probability), **meta)
    return paths


def mirrored(path: Path, depth: int, out: Path) -> Path:
    """``depth`` sections from a stack, mirrored back and forth in z (0..19, 19..0, ...)."""
    with tifffile.TiffFile(path) as tif:
        data, meta = tif.asarray(), tif.imagej_metadata
        pixel = tif.pages.first.tags["XResolution"].value
    order = np.concatenate([np.arange(len(data)), np.arange(len(data))[::-1]] * depth)[:depth]
    tifffile.imwrite(
        out,
        data[order],
        imagej=True,
        resolution=(pixel[0] / pixel[1],) * 2,
        metadata={"unit": meta.get("unit", "um"), "spacing": meta.get("spacing"), "axes": "ZYX"},
    )
    return out


SUMMARY = re.compile(r"(\d+) objects; (\d+) sections linked in ([\d.]+) s .*; ([\d.]+) s in all\)")
# The command runs inside a fresh interpreter that reports its own peak memory (VmHWM) at
# the end: the kernel's ru_maxrss of a child would also count the pages it shared with this
# process (which holds TensorFlow) before it exec'd.
_MEASURED = (
    "import sys; from napari_em_unet.cli import main; code = main(sys.argv[1:]); "
    "peak = [l for l in open('/proc/self/status') if l.startswith('VmHWM')]; "
    "sys.stderr.write('PEAK ' + peak[0]); sys.exit(code)"
)
PEAK = re.compile(r"PEAK VmHWM:\s+(\d+) kB")


def run_link(labels: Path, probability: Path, out: Path, *extra: str) -> dict:
    """``em-unet link`` in a fresh interpreter: its peak memory, wall time, its summary."""
    env = {k: v for k, v in os.environ.items() if k != "EM_UNET_PROGRESS"}
    env["PYTHONWARNINGS"] = "ignore"
    args = [
        "link",
        str(labels),
        "--probability",
        str(probability),
        "-o",
        str(out),
        "--overwrite",
        *extra,
    ]
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"em-unet link failed:\n{proc.stderr}")
    summary, peak = SUMMARY.search(proc.stderr), PEAK.search(proc.stderr)
    return {
        "command": " ".join(["em-unet", *args]),
        "wall_s": wall,
        "objects": int(summary.group(1)),
        "sections": int(summary.group(2)),
        "link_s": float(summary.group(3)),
        "command_s": float(summary.group(4)),
        "peak_rss_mib": int(peak.group(1)) / 1024,
    }


def vnc_sanity(labels_path: Path, linked_path: Path) -> dict:
    """Per-section V_rand against the membrane masks before and after linking."""
    from napari_em_unet.learning.metrics import score_slice

    truth = tifffile.imread(VNC / "membranes.tif")
    labels, linked = tifffile.imread(labels_path), tifffile.imread(linked_path)
    before = [score_slice(p, t).v_rand for p, t in zip(labels, truth, strict=True)]
    after = [score_slice(p, t).v_rand for p, t in zip(linked, truth, strict=True)]
    ids, counts = np.unique(np.concatenate([np.unique(s) for s in linked]), return_counts=True)
    sections = dict(zip(ids.tolist(), counts.tolist(), strict=True))
    voxels = np.bincount(linked.ravel())
    long = [i for i, n in sections.items() if i and n >= 10]
    counts = counts[ids != 0]
    return {
        "v_rand_2d_before": float(np.mean(before)),
        "v_rand_2d_after": float(np.mean(after)),
        "labels_2d": int(sum(len(np.unique(s)) - 1 for s in labels)),
        "objects_3d": int(len(counts)),
        "median_sections": float(np.median(counts)),
        "objects_in_all_sections": int((counts == len(linked)).sum()),
        "voxel_share_in_objects_of_10_or_more_sections": float(
            voxels[long].sum() / voxels[1:].sum()
        ),
    }


# ----------------------------------------------------------------------------- report
def choose_bias(results: list[dict], biases: list[float]) -> float:
    """The bias with the best mean 3D V_rand over the tuning volumes (both kinds)."""
    means = {b: np.mean([r["ours"][b]["v_rand"] for r in results]) for b in biases}
    return max(biases, key=lambda b: (round(means[b], 6), -abs(b - 0.5)))


def accuracy_table(results: list[dict], biases: list[float], default: float) -> str:
    rows = []
    for r in results:
        ours = r["ours"][default]
        rows.append(
            (
                f"{r['kind']} seed {r['seed']}",
                f"{r['per_slice_v_rand_2d']:.3f}",
                f"{r['no_link']['v_rand']:.4f}",
                f"{r['plain']['v_rand']:.4f}",
                f"{ours['v_rand']:.4f}",
                f"{ours['v_rand'] - r['plain']['v_rand']:+.4f}",
                f"{r['no_link']['v_info']:.3f} / {r['plain']['v_info']:.3f} / {ours['v_info']:.3f}",
                f"{ours['split']:.3f} / {ours['merge']:.3f}",
                "  ".join(f"{r['ours'][b]['v_rand']:.3f}" for b in biases),
                f"{1e3 * ours['s_per_section']:.0f}",
            )
        )
    for kind in KINDS:
        mine = [r for r in results if r["kind"] == kind]
        if mine:
            plain = np.mean([r["plain"]["v_rand"] for r in mine])
            ours = np.mean([r["ours"][default]["v_rand"] for r in mine])
            none = np.mean([r["no_link"]["v_rand"] for r in mine])
            rows.append(
                (
                    f"{kind} mean",
                    "",
                    f"{none:.4f}",
                    f"{plain:.4f}",
                    f"{ours:.4f}",
                    f"{ours - plain:+.4f}",
                    "",
                    "",
                    "  ".join(
                        f"{np.mean([r['ours'][b]['v_rand'] for r in mine]):.3f}" for b in biases
                    ),
                    "",
                )
            )
    header = (
        "volume",
        "2D V_rand",
        "3D V_rand no link",
        "plain",
        f"ours (bias {default})",
        "ours - plain",
        "3D V_info no/plain/ours",
        "ours split/merge",
        "ours at bias " + " ".join(map(str, biases)),
        "ms/section",
    )
    return table(rows, header)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--biases", default="0.3,0.4,0.5,0.6,0.7")
    parser.add_argument("--quick", action="store_true", help="one volume per kind and set")
    parser.add_argument("--json", default=None, help="also write every figure here")
    parser.add_argument(
        "--real-only",
        action="store_true",
        help="only the vnc2013 part (speed, memory, chunked = local)",
    )
    args = parser.parse_args()
    biases = [float(b) for b in args.biases.split(",")]
    from napari_em_unet.model.files import load_model

    model = load_model()
    seeds = {"tuning": [1] if args.quick else [1, 2, 3], "test": [4] if args.quick else [4, 5, 6]}
    print(f"# Linking benchmark, {machine()}", flush=True)
    report: dict = {"machine": machine(), "biases": biases}
    if args.real_only:
        seeds = {}
    for name, chosen in seeds.items():
        results = []
        for kind in KINDS:
            for seed in chosen:
                case = synthetic_case(kind, seed, model)
                results.append(score_case(case, biases))
                r = results[-1]
                print(
                    f"  {name}: {kind} seed {seed}: segmented in {case['segment_s']:.0f} s; "
                    f"plain {r['plain']['v_rand']:.4f}, ours "
                    + ", ".join(f"{b}: {r['ours'][b]['v_rand']:.4f}" for b in biases),
                    flush=True,
                )
        report[name] = results
    default = choose_bias(report["tuning"], biases) if seeds else None
    report["chosen_bias"] = default
    for name in seeds:
        print(
            f"\n## {name} volumes (3D scores; the bias is chosen on the tuning volumes: "
            f"{default})\n"
        )
        print(accuracy_table(report[name], biases, default))
    if (VNC / "raw.tif").exists():
        report["real"] = real_data(model)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=_plain))
    return 0


def real_data(model) -> dict:
    """Speed, memory 10 vs 40 sections, chunked = local, per-section sanity on vnc2013."""
    import zarr

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        labels, probability = segment_vnc(model, folder)
        for depth in (10, 40):
            runs = [
                run_link(
                    mirrored(labels, depth, folder / f"l{depth}.tif"),
                    mirrored(probability, depth, folder / f"p{depth}.tif"),
                    folder / f"o{depth}.tif",
                )
                for _ in range(2)
            ]
            best = min(runs, key=lambda r: r["link_s"])
            best["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
            out[depth] = best
        out["workers"] = run_link(
            folder / "l40.tif",
            folder / "p40.tif",
            folder / "o40.zarr",
            "--workers",
            "2",
            "--sections-per-task",
            "8",
        )
        local = tifffile.imread(folder / "o40.tif")
        chunked = zarr.open_array(str(folder / "o40.zarr" / "0"), mode="r")[:]
        out["chunked_equals_local"] = bool(np.array_equal(local, chunked))
        linked20 = folder / "o20.tif"
        run_link(labels, probability, linked20)
        out["sanity"] = vnc_sanity(labels, linked20)
    rows = [
        (
            f"{d} sections",
            f"{out[d]['link_s'] / d:.3f}",
            f"{out[d]['command_s']:.1f}",
            f"{out[d]['peak_rss_mib']:.0f}",
            out[d]["objects"],
        )
        for d in (10, 40)
    ]
    w = out["workers"]
    rows.append(
        (
            "40 sections, --workers 2",
            f"{w['link_s'] / 40:.3f}",
            f"{w['command_s']:.1f}",
            f"{w['peak_rss_mib']:.0f} (client)",
            w["objects"],
        )
    )
    print("\n## em-unet link on vnc2013 (1024 x 1024, bundled model's labels and probability)\n")
    print(
        table(
            rows,
            ("run", "s per section (both passes)", "whole command s", "peak RSS MiB", "objects"),
        )
    )
    print(
        f"\npeak RSS 40 - 10 sections: {out[40]['peak_rss_mib'] - out[10]['peak_rss_mib']:+.0f}"
        f" MiB; chunked (--workers 2) equals local: {out['chunked_equals_local']}"
    )
    s = out["sanity"]
    print(
        f"vnc2013 per-section V_rand vs membranes: {s['v_rand_2d_before']:.4f} before linking, "
        f"{s['v_rand_2d_after']:.4f} after; {s['labels_2d']} 2D labels -> {s['objects_3d']} "
        f"objects, median {s['median_sections']:.0f} sections, "
        f"{s['objects_in_all_sections']} through all 20; "
        f"{100 * s['voxel_share_in_objects_of_10_or_more_sections']:.0f} % of the labelled "
        "voxels in objects through 10 sections or more"
    )
    return out


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
