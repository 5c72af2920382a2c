"""``em-unet``: the same engine as the napari plugin, from a terminal, a script or a cluster.

Every failure the user can cause (missing or damaged file, wrong shapes, bad model) ends in
one ``error: ...`` line on stderr and a non-zero exit, with no traceback and no partial
output file (outputs are written to a temporary name and renamed when complete).
Set ``EM_UNET_DEBUG=1`` to see tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np

from . import __version__
from .errors import EmUnetError, InputError

EXIT_ERROR = 2
EXIT_INTERRUPTED = 130


def _slices(text: str | None) -> list[int] | None:
    """``--slices 0,5,9`` or ``0-3,7`` (the rule of :mod:`napari_em_unet.slices`)."""
    from .slices import parse_slices

    if text is None:
        return None
    try:
        return parse_slices(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _progress(total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                disable=None if not os.environ.get("EM_UNET_PROGRESS") else False)


# ----------------------------------------------------------------------------- segment
def cmd_segment(args) -> int:
    import time

    from .io.volumes import open_volume
    from .segmentation.pipeline import Output
    from .segmentation.streaming import output_shape, segment_to

    # Lazy input and streaming output: memory depends on one slice, not on the stack.
    volume = open_volume(args.input, pixel_size_nm=args.pixel_size)
    output = Output(args.output_kind)
    predict = {"tile_size": args.tile_size, "batch_size": args.batch_size}
    started = time.perf_counter()
    if args.scheduler or args.workers:
        from .segmentation.distributed import segment_distributed

        progress = segment_distributed(args.model, volume, args.output, output=output,
                                       scheduler=args.scheduler, n_workers=args.workers,
                                       slices_per_task=args.slices_per_task, **predict)
    else:
        from .model.files import load_model

        progress = segment_to(load_model(args.model), volume, args.output, output=output,
                              **predict)
    where = f"on {args.scheduler}" if args.scheduler else (
        f"on {args.workers} local workers" if args.workers else "locally")
    last = None
    with _progress(volume.shape[0], "segment", "slice") as bar:
        for record in progress:
            bar.update(1)
            last = record
    rate = "" if last is None else (
        f"; {last.done} slices in {last.elapsed_s:.1f} s, {last.slices_per_second:.3f} slices/s")
    print(f"wrote {args.output} ({output.value}, shape {output_shape(volume)}, {where}{rate}; "
          f"{time.perf_counter() - started:.1f} s in all)", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- training
class _TrainingReport:
    """Training progress on stderr: a bar per epoch, one line per finished epoch, and for
    fine-tuning what the validation measures before it starts."""

    def __init__(self):
        self.bar = None

    def __call__(self, record) -> None:
        from .learning.finetuning import describe_plan
        from .learning.records import EpochProgress, FineTunePlan, StepProgress

        if isinstance(record, FineTunePlan):
            print(describe_plan(record), file=sys.stderr, flush=True)
        elif isinstance(record, StepProgress):
            if self.bar is None:
                self.bar = _progress(record.steps, f"epoch {record.epoch}/{record.epochs}",
                                     "step")
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record.loss:.4f}", refresh=False)
        elif isinstance(record, EpochProgress):
            self.close()
            score = "-" if record.val_v_rand is None else f"{record.val_v_rand:.4f}"
            loss = "-" if record.loss != record.loss else f"{record.loss:.4f}"
            vloss = "-" if record.val_loss is None else f"{record.val_loss:.4f}"
            change = "" if record.val_change is None else \
                f"  change of uncorrected slices {record.val_change:.3f}"
            print(f"epoch {record.epoch}/{record.epochs}: loss {loss}  val_loss {vloss}  "
                  f"val V_rand {score}{change}  best epoch {record.best_epoch}  "
                  f"({record.seconds:.0f} s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def verdict_text(verdict, output) -> str:
    """The last line of ``em-unet finetune``: what was saved and why."""
    if verdict.accepted:
        return f"saved the fine-tuned model to {output}: {verdict.reason}"
    return f"{verdict.reason}; wrote the base model's weights to {output}"


def _train_config(args, defaults):
    """The TrainConfig the command line asks for (unset options keep ``defaults``)."""
    return defaults.replace(
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        patch_size=args.patch_size, learning_rate=args.learning_rate,
        augment=not args.no_augment, elastic=args.elastic, seed=args.seed,
        border_width_px=args.border_width, border_weight=args.border_weight,
        architecture=getattr(args, "architecture", defaults.architecture),
        **({"anchor_share": args.anchor_share, "change_budget": args.change_budget}
           if hasattr(args, "anchor_share") else {}),
    )


def _train_common(args, base, defaults) -> int:
    from .generators import drain
    from .io.tiff import read_tiff
    from .learning.training import train
    from .model.files import save_model

    image = read_tiff(args.image)
    labels = read_tiff(args.labels)
    output = Path(args.output)
    if output.suffix != ".keras":
        raise InputError(f"the model file name must end in .keras: {output}")
    stop = threading.Event()
    previous = _install_stop_handler(stop)
    report = _TrainingReport()
    try:
        result = drain(train(
            np.asarray(image.data), np.asarray(labels.data),
            base=base, slices=args.slices, validation_slices=args.validation_slices,
            pixel_size_nm=args.pixel_size or image.pixel_size_nm or labels.pixel_size_nm,
            config=_train_config(args, defaults), name=output.stem,
            source=str(Path(args.image).name), stop=stop,
        ), report)
    finally:
        report.close()
        signal.signal(signal.SIGINT, previous)
    save_model(result.model.keras_model, result.model.info, output)
    how = "stopped early; " if result.stopped else ""
    if result.verdict is not None:
        print(how + verdict_text(result.verdict, output), file=sys.stderr)
        return 0
    score = "" if result.best_v_rand is None else f", validation V_rand {result.best_v_rand:.4f}"
    print(f"{how}saved the best weights (epoch {result.best_epoch}{score}) to {output}",
          file=sys.stderr)
    return 0


def _install_stop_handler(stop: threading.Event):
    """First Ctrl-C: finish the step and save the best weights. Second: abort, write nothing."""

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print("\nstopping after this step and keeping the best weights so far "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    return signal.signal(signal.SIGINT, handler)


def cmd_train(args) -> int:
    from .learning.config import TrainConfig
    from .model.unet import UNetConfig

    args.architecture = UNetConfig(base_filters=args.base_filters, depth=args.depth)
    return _train_common(args, None, TrainConfig.from_scratch())


def cmd_finetune(args) -> int:
    from .learning.config import TrainConfig
    from .model.files import load_model

    return _train_common(args, load_model(args.model), TrainConfig())


# ----------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    from .io.tiff import read_tiff
    from .learning.metrics import score_stack

    prediction = np.asarray(read_tiff(args.prediction).data)
    truth = np.asarray(read_tiff(args.ground_truth).data)
    scores = score_stack(prediction, truth)
    if args.json:
        print(json.dumps(scores.to_dict()))
        return 0
    print(f"{'slice':>5}  {'V_rand':>7}  {'V_info':>7}  {'pixel error':>11}")
    for i, s in enumerate(scores.per_slice):
        print(f"{i:>5}  {s.v_rand:7.4f}  {s.v_info:7.4f}  {s.pixel_error:11.4f}")
    print(f"{'mean':>5}  {scores.v_rand:7.4f}  {scores.v_info:7.4f}  {scores.pixel_error:11.4f}")
    return 0


# ----------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from .model.export_bioimageio import export_bioimageio
    from .model.export_onnx import export_onnx
    from .model.files import load_model

    suffix = {"bioimageio": ".zip", "onnx": ".onnx"}[args.format]
    if Path(args.output).suffix.lower() != suffix:
        raise InputError(f"--format {args.format} writes a {suffix} file; got {args.output}")
    model = load_model(args.model)
    if args.format == "onnx":
        result = export_onnx(model, args.output)
        print(f"wrote {result.path} (ONNX; max |ONNX - Keras| = {result.onnx_max_abs_diff:.1e} "
              "on the test tensor)", file=sys.stderr)
        return 0
    result = export_bioimageio(model, args.output, authors=tuple(args.author or ()) or
                               ("napari-em-unet user",), license=args.license)
    diff = "" if result.onnx_max_abs_diff is None else \
        f"; max |ONNX - Keras| = {result.onnx_max_abs_diff:.1e}"
    print(f"wrote {result.path} (bioimage.io model {result.format_version}, validated; weights: "
          f"{', '.join(result.formats)}{diff})", file=sys.stderr)
    return 0


# ----------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from ._widgets.demo import display_problem, run_demo

    problem = display_problem()
    if problem:
        raise InputError(problem)
    return run_demo(args.screenshot, segment=args.segment, model=args.model)


# ----------------------------------------------------------------------------- parser
def _add_training_args(p: argparse.ArgumentParser, defaults) -> None:
    """The training options, their defaults read from ``defaults`` (a TrainConfig)."""
    d = defaults
    p.add_argument("--image", required=True, help="TIFF image stack (ZYX) or 2D image")
    p.add_argument("--labels", required=True,
                   help="TIFF labels of the same shape: 0 = membrane, other values = cells "
                        "(ISBI 0/255 masks or napari instance labels)")
    p.add_argument("-o", "--output", required=True, help="model file to write (.keras)")
    p.add_argument("--slices", type=_slices, default=None,
                   help="training slices, e.g. 0,5,9 or 0-15 (default: every slice whose "
                        "labels are not all 0)")
    p.add_argument("--validation-slices", type=_slices, default=None,
                   help="slices held out for validation (default: the bottom 20%% of each "
                        "training slice)")
    p.add_argument("--pixel-size", type=_positive_float, default=None,
                   help="pixel size in nm (default: read from the TIFF, if recorded)")
    p.add_argument("--epochs", type=_positive_int, default=d.epochs,
                   help=f"default {d.epochs}")
    p.add_argument("--steps-per-epoch", type=_positive_int, default=d.steps_per_epoch,
                   help=f"default {d.steps_per_epoch}")
    p.add_argument("--batch-size", type=_positive_int, default=d.batch_size,
                   help=f"default {d.batch_size}")
    p.add_argument("--patch-size", type=_positive_int, default=d.patch_size,
                   help=f"default {d.patch_size}")
    p.add_argument("--learning-rate", type=_positive_float, default=d.learning_rate,
                   help=f"default {d.learning_rate:g}")
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations/intensity jitter")
    p.add_argument("--elastic", action="store_true", help="add elastic deformation (slower)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument("--border-width", type=_positive_float, default=d.border_width_px,
                   help="width in pixels (at the model's scale) that borders between touching "
                        "labels are widened to (default: the model's membrane width)")
    p.add_argument("--border-weight", type=float, default=d.border_weight,
                   help="extra loss weight around borders between touching labels "
                        f"(default {d.border_weight:g})")


def _add_finetune_parser(sub) -> None:
    from .learning.config import TrainConfig

    p = sub.add_parser("finetune", help="fine-tune a model on corrected slices",
                       description="Fine-tune a model (default: the bundled one) on the "
                                   "labelled slices of a stack; saves a new model file. "
                                   "Slices you did not correct keep the base's behaviour "
                                   "(anchors), and the new model is accepted only when it "
                                   "validates better than the base on held-out corrected "
                                   "data; otherwise the base's weights are written.")
    p.add_argument("--model", default=None, help="base model (default: the bundled model)")
    defaults = TrainConfig()
    _add_training_args(p, defaults)
    p.add_argument("--anchor-share", type=float, default=defaults.anchor_share,
                   help="share of every batch taken from uncorrected slices with the base "
                        "model's own predictions as targets, so that it keeps its behaviour "
                        f"where nobody corrected (0: none; default {defaults.anchor_share:g})")
    p.add_argument("--change-budget", type=float, default=defaults.change_budget,
                   help="when the base already does well on the corrected slices, the "
                        "largest change (1 - V_rand against the base's segmentation) an "
                        "uncorrected slice may undergo before the base is kept "
                        f"(default {defaults.change_budget:g})")
    p.set_defaults(func=cmd_finetune)


def build_parser() -> argparse.ArgumentParser:
    from .learning.config import TrainConfig

    parser = argparse.ArgumentParser(
        prog="em-unet",
        description="Segment electron-microscopy stacks with a U-Net and fine-tune it on "
                    "corrected slices.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("segment", help="segment a TIFF or zarr image or stack",
                       description="Segment a 2D image or ZYX stack slice by slice, reading "
                                   "one slice at a time and writing each result as it is "
                                   "done, so stacks larger than memory work. With "
                                   "--scheduler or --workers the slices are spread over a "
                                   "dask cluster; the result is identical.")
    p.add_argument("input", help="input TIFF, zarr array, or OME-Zarr image (2D image or ZYX "
                                 "stack; grey or RGB)")
    p.add_argument("-o", "--output", required=True,
                   help="output: a TIFF (BigTIFF past 4 GB), or an OME-Zarr folder when the "
                        "name ends in .zarr")
    p.add_argument("--model", default=None,
                   help="model file (default: the bundled ISBI 2012 model)")
    p.add_argument("--output-kind", "--output-type", dest="output_kind",
                   choices=["instances", "membranes", "probabilities"], default="instances",
                   help="instances: uint32 cells, 0 = membrane (default); membranes: uint8 "
                        "0 = membrane, 255 = interior; probabilities: float32 membrane "
                        "probability")
    p.add_argument("--pixel-size", type=_positive_float, default=None,
                   help="pixel size in nm (default: read from the TIFF, if recorded)")
    p.add_argument("--tile-size", type=_positive_int, default=1024,
                   help="largest tile fed to the network, in pixels (default 1024)")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="tiles per batch")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--scheduler", default=None, metavar="ADDRESS",
                       help="run on an existing dask.distributed cluster, e.g. "
                            "tcp://10.0.0.5:8786 (input and .zarr output on a file system "
                            "the workers share)")
    where.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="run on N dask worker processes on this machine")
    p.add_argument("--slices-per-task", type=_positive_int, default=1, metavar="K",
                   help="with --scheduler/--workers: slices per task (default 1)")
    p.set_defaults(func=cmd_segment)

    _add_finetune_parser(sub)

    p = sub.add_parser("train", help="train a new model from scratch",
                       description="Train a new U-Net from scratch.")
    _add_training_args(p, TrainConfig.from_scratch())
    unet = TrainConfig.from_scratch().architecture
    p.add_argument("--base-filters", type=_positive_int, default=unet.base_filters,
                   help=f"default {unet.base_filters}")
    p.add_argument("--depth", type=_positive_int, default=unet.depth, help=f"default {unet.depth}")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="score a segmentation against ground truth",
                       description="ISBI 2012 scores (V_rand, V_info, pixel error) per slice.")
    p.add_argument("prediction", help="predicted TIFF: instance labels, 0/255 membranes or "
                                      "float probabilities")
    p.add_argument("ground_truth", help="ground-truth TIFF: 0 = membrane")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="export a model for other tools (bioimage.io, ONNX)",
                       description="Write a model as a bioimage.io model package (.zip: Keras, "
                                   "HDF5, TensorFlow SavedModel and ONNX weights, test tensors, "
                                   "preprocessing; validated) for deepImageJ, ilastik and the "
                                   "bioimage.io model zoo, or as a single ONNX file. Needs the "
                                   "[export] extra.")
    p.add_argument("--model", default=None, help="model to export (.keras or a package; "
                                                 "default: the bundled model)")
    p.add_argument("--format", required=True, choices=["bioimageio", "onnx"],
                   help="bioimageio: model package (.zip); onnx: network only (.onnx)")
    p.add_argument("-o", "--output", required=True, help="file to write (.zip or .onnx)")
    p.add_argument("--author", action="append", default=None, metavar="NAME",
                   help="author named in the package (repeat for several)")
    p.add_argument("--license", default="CC-BY-4.0",
                   help="SPDX license of the weights in the package (default CC-BY-4.0)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("demo", help="open napari with the sample stack and the widgets",
                       description="Open napari with the synthetic sample stack, its ground "
                                   "truth, and the Segment and Fine-tune widgets docked.")
    p.add_argument("--model", default=None, help="model file to add and select (default: the "
                                                 "newest available, e.g. the bundled model)")
    p.add_argument("--segment", action="store_true", help="segment the sample at once")
    p.add_argument("--screenshot", metavar="PATH", default=None,
                   help="save the window to PATH (PNG) and quit (with --segment: when done)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except EmUnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print("error: out of memory; try a smaller --tile-size or --batch-size", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:  # the promise is one line, never a traceback
        if os.environ.get("EM_UNET_DEBUG"):
            raise
        text = str(exc).strip().splitlines()
        print(f"error: {type(exc).__name__}: {text[0] if text else ''}"[:300], file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
