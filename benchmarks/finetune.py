"""Fine-tuning in both regimes, with this code and with the old fine-tuning, in one run.

* **familiar**: ISBI 2012, the data the bundled model was trained on. Two slices are
  "corrected" to their ground truth (a labels file with only those two slices labelled) and
  ``em-unet finetune`` runs with its defaults; the 18 other slices are scored before and
  after. Several pairs and seeds: "no harm" must hold for every run.
* **new**: a FIB-SEM-like proxy (``_common.fibsem_like``: vnc2013 at 10 nm pixels, recorded
  in the file, FIB-SEM-like contrast, noise and curtaining, instance labels in which some
  cells touch), fine-tuned from a model that never saw vnc2013: the previous bundled model
  (``--new-base-commit``, ISBI 2012 alone) or ``--new-base`` (the shipped recipe without
  vnc2013); neither the tissue nor the look is known to it. (The shipped model was trained
  on vnc2013.) Slices 0-4 are corrected, slices 10-19 scored.

The old fine-tuning is the package as it was at ``--old-commit`` (extracted with
``git archive`` and run the same way). Each run's wall time includes TensorFlow's start and
the model save; the CPU time is the fine-tuning process's own (the machine is shared).

    python benchmarks/finetune.py [--regimes familiar,new] [--pairs 4-5,16-17] [--seeds 0,1]
                                  [--old-commit 5b8bd3e] [--new-seeds 0,1] [--new-base M.keras]
                                  [--results runs.jsonl] [--finetune-args "--epochs 1"]

Each finished run is appended to ``--results`` (JSON lines); runs already there are not
repeated, so an interrupted benchmark resumes, and the tables are printed from that file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ISBI, ROOT, VNC, fibsem_like, machine, old_code, require_data, table

from napari_em_unet.io.tiff import read_tiff, write_tiff
from napari_em_unet.learning.metrics import SliceScore, score_slice
from napari_em_unet.model.files import bundled_model_path, load_model
from napari_em_unet.segmentation.pipeline import segment_stack

OFFICIAL = "v_rand_grown" in {f.name for f in dataclasses.fields(SliceScore)}
SCORE_NAME = (
    "official ISBI V_rand (thinned, Fiji's definition)"
    if OFFICIAL
    else "grown-membrane V_rand (the official thinned score is not on this branch yet)"
)


@dataclasses.dataclass(frozen=True)
class Case:
    regime: str
    code: str  # "new" or "old"
    corrected: tuple[int, ...]
    scored: tuple[int, ...]
    seed: int


@dataclasses.dataclass
class Outcome:
    case: Case
    before: dict[int, float]
    after: dict[int, float]
    wall_s: float
    cpu_s: float
    last_line: str

    @property
    def change(self) -> dict[int, float]:
        return {s: self.after[s] - self.before[s] for s in self.before}

    def worst(self) -> tuple[int, float]:
        return min(self.change.items(), key=lambda kv: kv[1])

    def mean(self, which: dict[int, float]) -> float:
        return float(np.mean(list(which.values())))


def span(text: str) -> tuple[int, ...]:
    lo, _, hi = text.partition("-")
    return tuple(range(int(lo), int(hi or lo) + 1))


def finetune(
    image: Path,
    labels: Path,
    out: Path,
    seed: int,
    source: Path | None,
    extra: list[str],
    base: Path | None,
) -> tuple[float, float, str]:
    """Run ``em-unet finetune`` with its defaults; wall and CPU seconds, its last line."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    command = [
        sys.executable,
        "-m",
        "napari_em_unet.cli",
        "finetune",
        "--image",
        str(image),
        "--labels",
        str(labels),
        "-o",
        str(out),
        "--seed",
        str(seed),
        *extra,
    ]
    if base is not None:
        command += ["--model", str(base)]
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"em-unet finetune failed:\n{proc.stderr[-3000:]}")
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    cpu_s = (after.ru_utime - cpu.ru_utime) + (after.ru_stime - cpu.ru_stime)
    return wall, cpu_s, lines[-1] if lines else ""


def scores(model, image: np.ndarray, truth: np.ndarray, slices, pixel_size) -> dict[int, float]:
    """V_rand per slice of the model's instance segmentation (the package's score)."""
    slices = list(slices)
    results = segment_stack(model, image, slices=slices, pixel_size_nm=pixel_size)
    return {s: score_slice(r.result, truth[s]).v_rand for s, r in zip(slices, results, strict=True)}


def datasets(tmp: Path) -> dict[str, tuple[Path, np.ndarray, np.ndarray, float | None]]:
    """name: (image file, image, truth, pixel size)."""
    isbi = read_tiff(ISBI / "train-volume.tif")
    raw = read_tiff(VNC / "raw.tif")
    image, labels = fibsem_like(
        np.asarray(raw.data), np.asarray(read_tiff(VNC / "membranes.tif").data), raw.pixel_size_nm
    )
    write_tiff(tmp / "fibsem-like.tif", image, 10.0)
    return {
        "familiar": (
            ISBI / "train-volume.tif",
            np.asarray(isbi.data),
            np.asarray(read_tiff(ISBI / "train-labels.tif").data),
            isbi.pixel_size_nm,
        ),
        "new": (tmp / "fibsem-like.tif", image, labels, 10.0),
    }


def run_case(case: Case, data, bases, base_scores, tmp: Path, old_source, extra) -> Outcome:
    image_path, image, truth, pixel_size = data[case.regime]
    corrections = np.zeros(truth.shape, dtype=np.uint32)
    corrections[list(case.corrected)] = truth[list(case.corrected)]
    tag = f"{case.regime}-{case.code}-{'_'.join(map(str, case.corrected))}-{case.seed}"
    labels_path = tmp / f"corrections-{tag}.tif"
    write_tiff(labels_path, corrections, pixel_size)
    out = tmp / f"{tag}.keras"
    wall, cpu, last = finetune(
        image_path,
        labels_path,
        out,
        case.seed,
        old_source if case.code == "old" else None,
        extra,
        bases[case.regime],
    )
    after = scores(load_model(out), image, truth, case.scored, pixel_size)
    before = {s: base_scores[case.regime][s] for s in case.scored}
    return Outcome(case, before, after, wall, cpu, last)


def previous_model(commit: str, into: Path) -> Path:
    """The bundled model at ``commit`` (trained on ISBI 2012 only: vnc2013 is new to it)."""
    blob = subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{commit}:src/napari_em_unet/models/isbi2012_unet.keras"],
        capture_output=True,
        check=True,
    ).stdout
    path = into / f"bundled-{commit}.keras"
    path.write_bytes(blob)
    return path


def save_outcome(path: Path, outcome: Outcome) -> None:
    record = dataclasses.asdict(outcome)
    with open(path, "a") as fh:
        fh.write(json.dumps(record) + "\n")


def load_outcomes(path: Path) -> list[Outcome]:
    if not path.is_file():
        return []
    outcomes = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        case = Case(
            **{
                **record["case"],
                "corrected": tuple(record["case"]["corrected"]),
                "scored": tuple(record["case"]["scored"]),
            }
        )
        outcomes.append(
            Outcome(
                case,
                {int(k): v for k, v in record["before"].items()},
                {int(k): v for k, v in record["after"].items()},
                record["wall_s"],
                record["cpu_s"],
                record["last_line"],
            )
        )
    return outcomes


def report(outcomes: list[Outcome]) -> str:
    rows = []
    for o in outcomes:
        slice_, worst = o.worst()
        c = o.case
        rows.append(
            (
                c.regime,
                c.code,
                ",".join(map(str, c.corrected)),
                c.seed,
                f"{o.mean(o.before):.4f}",
                f"{o.mean(o.after):.4f}",
                f"{o.mean(o.after) - o.mean(o.before):+.4f}",
                f"{worst:+.4f} (z={slice_})",
                f"{o.wall_s / 60:.1f}",
                f"{o.cpu_s / 60:.1f}",
            )
        )
    lines = [
        table(
            rows,
            (
                "regime",
                "code",
                "corrected",
                "seed",
                "mean before",
                "mean after",
                "change",
                "worst slice",
                "wall min",
                "CPU min",
            ),
        )
    ]
    for o in outcomes:
        per = "  ".join(f"{s}:{o.before[s]:.3f}->{o.after[s]:.3f}" for s in o.before)
        lines += [
            f"\n[{o.case.regime} {o.case.code} {o.case.corrected} seed {o.case.seed}] "
            f"{o.last_line}",
            f"  {per}",
        ]
    return "\n".join(lines)


def verdicts(outcomes: list[Outcome]) -> list[str]:
    """The issue's targets, run by run (new code only)."""
    lines = []
    for o in outcomes:
        if o.case.code != "new":
            continue
        gain = o.mean(o.after) - o.mean(o.before)
        if o.case.regime == "familiar":
            ok = gain >= -0.002 and o.worst()[1] >= -0.02
            lines.append(
                f"familiar {o.case.corrected} seed {o.case.seed}: mean {gain:+.4f} "
                f"(>= -0.002), worst {o.worst()[1]:+.4f} (>= -0.02): "
                f"{'met' if ok else 'MISSED'}"
            )
        else:
            ok = o.mean(o.after) >= 0.88 and o.wall_s <= 600
            lines.append(
                f"new modality seed {o.case.seed}: far slices {o.mean(o.after):.4f} "
                f"(>= 0.88) in {o.wall_s / 60:.1f} min (<= 10): "
                f"{'met' if ok else 'MISSED'}"
            )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--regimes", default="familiar,new")
    parser.add_argument("--pairs", default="4-5,16-17,0-1", help="familiar: corrected pairs")
    parser.add_argument("--seeds", default="0,1", help="familiar: seeds of each pair")
    parser.add_argument("--new-seeds", default="0,1", help="new modality: seeds")
    parser.add_argument(
        "--old-commit", default="5b8bd3e", help="the old fine-tuning's commit ('' to leave it out)"
    )
    parser.add_argument(
        "--new-base-commit",
        default="5b8bd3e",
        help="commit whose bundled model (ISBI 2012 only) is the new-modality base",
    )
    parser.add_argument(
        "--new-base",
        default=None,
        help="model file for the new-modality base instead (one that never saw vnc2013, e.g. "
        "scripts/train_bundled_model.py --no-vnc: the shipped recipe without it)",
    )
    parser.add_argument("--old-seeds", default="0", help="seeds of the old fine-tuning")
    parser.add_argument(
        "--results",
        default="finetune-runs.jsonl",
        help="JSON lines of finished runs (appended; runs there are skipped)",
    )
    parser.add_argument(
        "--finetune-args",
        default="",
        help="extra arguments for every em-unet finetune (a quick check: "
        "'--epochs 1 --steps-per-epoch 2'); the figures use none",
    )
    args = parser.parse_args()
    require_data()
    tmp = Path(tempfile.mkdtemp(prefix="em-unet-finetune-"))
    old_source = old_code(args.old_commit, tmp) if args.old_commit else None
    data = datasets(tmp)
    # The shipped model was trained on vnc2013: the new-modality base is the previous
    # bundled model, trained on ISBI 2012 alone, to which vnc2013's tissue is new too.
    new_base = Path(args.new_base) if args.new_base else previous_model(args.new_base_commit, tmp)
    # Passed explicitly to both codes: without --model the old code would fine-tune its own
    # bundled model, not the one "before" is measured with.
    shipped = tmp / "shipped.keras"
    shutil.copyfile(bundled_model_path(), shipped)
    bases = {"familiar": shipped, "new": new_base}
    regimes = args.regimes.split(",")
    scored = {"familiar": tuple(range(20)), "new": tuple(range(10, 20))}
    base_scores = {
        r: scores(load_model(bases[r]), data[r][1], data[r][2], scored[r], data[r][3])
        for r in regimes
    }
    cases = []
    seeds = [int(s) for s in args.seeds.split(",")]
    old_seeds = [int(s) for s in args.old_seeds.split(",")] if old_source else []
    new_seeds = [int(s) for s in args.new_seeds.split(",")]
    for regime in regimes:
        familiar = regime == "familiar"
        groups = [span(p) for p in args.pairs.split(",")] if familiar else [span("0-4")]
        regime_seeds = seeds if familiar else new_seeds
        for corrected in groups:
            rest = tuple(s for s in scored[regime] if s not in corrected)
            cases += [Case(regime, "new", corrected, rest, s) for s in regime_seeds]
            cases += [Case(regime, "old", corrected, rest, s) for s in old_seeds]
    results = Path(args.results)
    done = {o.case: o for o in load_outcomes(results)}
    outcomes = []
    for case in cases:
        if case not in done:
            done[case] = run_case(
                case, data, bases, base_scores, tmp, old_source, args.finetune_args.split()
            )
            save_outcome(results, done[case])
            print(f"done: {case} ({done[case].wall_s / 60:.1f} min)", file=sys.stderr, flush=True)
        outcomes.append(done[case])
    load = os.getloadavg()
    print(f"fine-tuning benchmark ({machine()}; load average {load[0]:.1f} at the end)")
    print(
        f"score: {SCORE_NAME}; familiar = ISBI 2012 slices not corrected, new = FIB-SEM-like "
        "proxy slices 10-19; old = the package at " + (args.old_commit or "-")
    )
    print(report(outcomes))
    print("\n" + "\n".join(verdicts(outcomes)))


if __name__ == "__main__":
    main()
