"""Interrupting ``em-unet finetune``: Ctrl-C and kill -9 at random moments, and during the save.

Each run fine-tunes a base model on a small synthetic stack, writing to the same output
file, which already holds a good model from a first, uninterrupted run. The run is
interrupted with SIGINT (what Ctrl-C sends) or SIGKILL (kill -9): after a random delay
(start-up, training, validation or saving alike), right after the first epoch line (in
training), or the moment the model save begins (when its temporary entry appears in the
output folder). After every run:

* every ``*.keras`` file in the output folder (hidden ones included) must load with
  ``napari_em_unet.model.files.load_model``: no damaged or half-written model;
* the base model's sha256 must be unchanged: fine-tuning never writes to its base.

Defaults: 8 runs (4 SIGINT, 4 SIGKILL; 3 during the save, 2 in training, 3 at random), the
bundled model when it is present, else a tiny U-Net made here.

    python benchmarks/interruptions.py [--runs 8] [--seed 0] [--model PATH | --tiny]
                                       [--json results.json]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

SIGNALS = {"SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}


@dataclass
class Run:
    index: int
    signal: str
    moment: str
    """'random' (a random delay), 'epoch' (after the first epoch line) or 'save' (when the
    save's temporary entry appeared)."""
    sent_at_s: float | None
    interrupted: bool
    """False when the command had already finished."""
    exit_code: int
    last_line: str
    output_changed: bool
    keras_files: int
    damaged: list
    leftovers: list
    """Entries other than model files left in the output folder (hidden temporaries)."""
    base_identical: bool


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_inputs(folder: Path, tiny: bool, model: str | None) -> tuple[Path, Path, Path]:
    """The base model and a small synthetic image/labels pair."""
    import tifffile

    from napari_em_unet.learning.synthetic import make_synthetic_stack
    from napari_em_unet.model.files import bundled_model_path

    image, labels = make_synthetic_stack((3, 96, 96), seed=11, cell_size=24)
    tifffile.imwrite(folder / "image.tif", image)
    tifffile.imwrite(folder / "labels.tif", labels)
    if model:
        base = Path(model)
    elif not tiny and bundled_model_path().is_file():
        base = bundled_model_path()
    else:
        from napari_em_unet.model.files import save_model
        from napari_em_unet.model.info import ModelInfo
        from napari_em_unet.model.unet import UNetConfig, build_unet

        config = UNetConfig(base_filters=4, depth=2)
        base = save_model(
            build_unet(config, seed=0),
            ModelInfo(name="tiny-base", architecture=config.to_dict()),
            folder / "base.keras",
        )
    return base, folder / "image.tif", folder / "labels.tif"


def command(base: Path, image: Path, labels: Path, output: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "napari_em_unet.cli",
        "finetune",
        "--model",
        str(base),
        "--image",
        str(image),
        "--labels",
        str(labels),
        "-o",
        str(output),
        "--epochs",
        "2",
        "--steps-per-epoch",
        "3",
        "--batch-size",
        "2",
        "--patch-size",
        "64",
    ]


def check_folder(folder: Path) -> tuple[int, list, list]:
    """Load every model file in ``folder``; list the damaged ones and any other entries."""
    from napari_em_unet.errors import ModelFileError
    from napari_em_unet.model.files import load_model

    models = sorted(p for p in folder.iterdir() if p.name.endswith(".keras") and p.is_file())
    damaged = []
    for path in models:
        try:
            load_model(path)
        except ModelFileError as exc:
            damaged.append(f"{path.name}: {exc}")
    leftovers = sorted(p.name for p in folder.iterdir() if p not in models)
    return len(models), damaged, leftovers


def interrupt(
    cmd: list[str], output: Path, sig: str, moment: str, delay: float, env: dict
) -> tuple[bool, int, str, float | None]:
    """Run ``cmd`` and send ``sig`` at ``moment``.

    ``moment`` is 'random' (after ``delay`` seconds), 'save' (as soon as the save's
    temporary entry appears beside ``output``) or 'epoch' (after the first epoch line).
    Returns whether the signal was sent, the exit code, the last stderr line and when.
    """
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    started = time.perf_counter()
    sent_at = None
    folder = output.parent
    before = set(os.listdir(folder))
    while proc.poll() is None:
        elapsed = time.perf_counter() - started
        if moment == "random":
            due = elapsed >= delay
        elif moment == "save":
            due = any(
                name.startswith(f".{output.stem}.") or name.startswith(f".{output.name}.")
                for name in set(os.listdir(folder)) - before
            )
        else:
            due = any(line.startswith("epoch ") for line in list(lines))
        if due:
            proc.send_signal(SIGNALS[sig])
            sent_at = elapsed
            break
        time.sleep(0.002)
    proc.wait(timeout=900)
    reader.join(timeout=10)
    text = [line.strip() for line in lines if line.strip()]
    return sent_at is not None, proc.returncode, (text[-1] if text else ""), sent_at


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--saves",
        type=int,
        default=None,
        help="how many runs are interrupted during the save (default 3/8)",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--model", default=None, help="base model (default: bundled)")
    group.add_argument("--tiny", action="store_true", help="use a tiny U-Net made here")
    parser.add_argument("--json", default=None, help="write the runs as JSON here")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("EM_UNET_PROGRESS", None)
    with tempfile.TemporaryDirectory(prefix="em-unet-interrupt-") as tmp:
        tmp = Path(tmp)
        base, image, labels = make_inputs(tmp, args.tiny, args.model)
        base_hash = sha256(base)
        out_dir = tmp / "out"
        out_dir.mkdir()
        output = out_dir / "tuned.keras"
        cmd = command(base, image, labels, output)

        t0 = time.perf_counter()
        first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
        duration = time.perf_counter() - t0
        if first.returncode != 0:
            print(first.stderr, file=sys.stderr)
            return 1
        print(
            f"base model: {base.name} ({base_hash[:12]}); uninterrupted fine-tuning "
            f"takes {duration:.1f} s",
            flush=True,
        )

        signals = ["SIGINT", "SIGKILL"] * (args.runs // 2) + ["SIGKILL"] * (args.runs % 2)
        saves = args.saves if args.saves is not None else round(args.runs * 3 / 8)
        epochs = min(args.runs - saves, round(args.runs * 2 / 8))
        moments = ["save"] * saves + ["epoch"] * epochs + ["random"] * (args.runs - saves - epochs)
        rng.shuffle(signals)
        rng.shuffle(moments)
        runs: list[Run] = []
        for i, (sig, moment) in enumerate(zip(signals, moments, strict=True), start=1):
            before = sha256(output) if output.exists() else None
            # Random moments cover start-up, training, validation and saving alike.
            delay = rng.uniform(0.5, duration)
            sent, code, last, sent_at = interrupt(cmd, output, sig, moment, delay, env)
            count, damaged, leftovers = check_folder(out_dir)
            after = sha256(output) if output.exists() else None
            run = Run(
                i,
                sig,
                moment,
                None if sent_at is None else round(sent_at, 2),
                sent,
                code,
                last[:160],
                before != after,
                count,
                damaged,
                leftovers,
                sha256(base) == base_hash,
            )
            runs.append(run)
            when = "never (it had finished)" if not sent else f"at {sent_at:.2f} s"
            print(
                f"run {i}: {sig:7} {moment:6} sent {when}; exit {code}; output "
                f"{'replaced' if run.output_changed else 'kept'}; {count} model file(s), "
                f"{len(damaged)} damaged; leftovers {leftovers or 'none'}; "
                f"base {'identical' if run.base_identical else 'CHANGED'}",
                flush=True,
            )

    interrupted = [r for r in runs if r.interrupted]
    damaged = len({d for r in runs for d in r.damaged})
    identical = all(r.base_identical for r in runs)
    during_save = sum(1 for r in interrupted if r.moment == "save")
    kinds = {s: sum(1 for r in interrupted if r.signal == s) for s in SIGNALS}
    in_training = sum(1 for r in interrupted if r.moment == "epoch")
    print(
        f"interruptions: {len(interrupted)}/{len(runs)} delivered "
        f"({kinds['SIGINT']} SIGINT, {kinds['SIGKILL']} SIGKILL; {during_save} during the "
        f"model save, {in_training} in training); damaged or half-written models: "
        f"{damaged}; base model {'byte-identical' if identical else 'CHANGED'}"
    )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"base": base.name, "base_sha256": base_hash, "runs": [asdict(r) for r in runs]},
                indent=1,
            )
        )
    return 0 if damaged == 0 and identical else 1


if __name__ == "__main__":
    sys.exit(main())
