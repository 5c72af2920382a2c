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
import sys
from pathlib import Path

import numpy as np

from . import __version__
from .errors import EmUnetError, InputError
from .interrupt import EXIT_INTERRUPTED, Interrupt
from .outputs import check_output

EXIT_ERROR = 2


def _slices(text: str | None) -> list[int] | None:
    """``--slices 0,5,9`` or ``0-3,7`` (the rule of :mod:`napari_em_unet.slices`)."""
    from .slices import parse_slices

    if text is None:
        return None
    try:
        return parse_slices(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _float_where(accept, requirement: str):
    """An argparse type: a number for which ``accept`` holds, else '<requirement>: text'."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not accept(value):  # NaN fails every comparison: refused too
            raise argparse.ArgumentTypeError(f"{requirement}: {text!r}")
        return value

    return parse


_positive_float = _float_where(lambda v: v > 0, "must be positive")
_non_negative_float = _float_where(lambda v: v >= 0, "must be 0 or more")
_share = _float_where(lambda v: 0 <= v <= 1, "must be between 0 and 1")
_unit_float = _float_where(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def _voxel_size(text: str) -> tuple[float, float, float]:
    """'50,4,4' (z, y, x in nm) or '10' (isotropic)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"voxel size must look like 50,4,4 (z,y,x in nm) or 10; got {text!r}"
        ) from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3 or not all(v > 0 for v in values):
        raise argparse.ArgumentTypeError(
            f"voxel size must be one or three positive numbers (z,y,x in nm); got {text!r}"
        )
    return tuple(values)


def _progress(total: int, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        dynamic_ncols=True,
        disable=None if not os.environ.get("EM_UNET_PROGRESS") else False,
    )


# ----------------------------------------------------------------------------- segment
def cmd_segment(args) -> int:
    import time

    from .io.volumes import open_volume
    from .segmentation.huge import Bands
    from .segmentation.pipeline import Output
    from .segmentation.streaming import output_shape

    check_output(args.output, [args.input, args.model], overwrite=args.overwrite)
    # Lazy input and streaming output: memory depends on one slice, not on the stack, and
    # for slices over --bands-above megapixels on a band of rows, not on the slice.
    volume = open_volume(args.input, pixel_size_nm=args.pixel_size)
    output = Output(args.output_kind)
    given = {"tile_size": args.tile_size, "batch_size": args.batch_size}
    predict = {name: value for name, value in given.items() if value is not None}
    if args.flips:
        predict["flips"] = True
    bands = Bands(above_pixels=round(args.bands_above * 2**20))
    started = time.perf_counter()
    if args.link_3d:
        return _segment_and_link(args, volume, output, predict, started)
    last = _follow_segmentation(args, volume, _segmentation(args, volume, output, bands, predict))
    rate = (
        ""
        if last is None
        else (
            f"; {last.done} slices in {last.elapsed_s:.2f} s, {last.slices_per_second:.3f} slices/s"
        )
    )
    print(
        f"wrote {args.output} ({output.value}, shape {output_shape(volume)}, {_where(args)}"
        f"{rate}; {time.perf_counter() - started:.1f} s in all)",
        file=sys.stderr,
    )
    return 0


def _segmentation(args, volume, output, bands, predict):
    """The progress generator of ``segment``: in this process or on a dask scheduler."""
    if args.scheduler or args.workers:
        from .segmentation.distributed import segment_distributed

        return segment_distributed(
            args.model,
            volume,
            args.output,
            output=output,
            scheduler=args.scheduler,
            n_workers=args.workers,
            slices_per_task=args.slices_per_task,
            **predict,
        )
    from .model.files import load_model
    from .segmentation.streaming import segment_to

    if args.own_process:
        _predict_only(volume, bands, predict)
    model = load_model(args.model)
    return segment_to(model, volume, args.output, output=output, bands=bands, **predict)


def _follow_segmentation(args, volume, progress):
    """Run ``progress`` with a progress bar; warn about empty slices; the last slice record."""
    from .segmentation.huge import BandProgress

    last, silent = None, []
    args.interrupt.working()
    with _progress(volume.shape[0], "segment", "slice") as bar:
        for record in progress:
            if isinstance(record, BandProgress):
                # A slice in bands moves the bar by fractions of a slice, tile by tile.
                bar.set_description(
                    f"segment slice {record.index}: {record.tiles_done}/"
                    f"{record.tiles} tiles, band {record.bands_done}/"
                    f"{record.bands}",
                    refresh=False,
                )
                bar.n = round((last.done if last else 0) + record.fraction, 3)
            else:
                bar.n, last = record.done, record
                if record.no_signal:
                    silent.append(record.index)
            bar.refresh()
            args.interrupt.check()
    _warn_no_signal(silent)
    return last


SIDE_BY_SIDE_MAX_PIXELS = 4 * 2**20
"""Slices up to 2048 x 2048 are predicted side by side; larger ones one at a time, each with
every core, so that memory holds the network's working arrays of one slice only."""


def _predict_only(volume, bands, predict: dict) -> None:
    """The command's own process only predicts: slices side by side, one thread per
    TensorFlow op (``model.backend.predict_only``), for slices of up to
    ``SIDE_BY_SIDE_MAX_PIXELS`` that are not cut into bands (the tiles of a slice in bands
    come one after another)."""
    from .model.backend import predict_only

    pixels = volume.shape[-2] * volume.shape[-1]
    if pixels <= SIDE_BY_SIDE_MAX_PIXELS and not bands.applies(volume.shape):
        workers = predict_only()
        if workers:
            predict["workers"] = workers


def _where(args) -> str:
    return (
        f"on {args.scheduler}"
        if args.scheduler
        else (f"on {args.workers} local workers" if args.workers else "locally")
    )


def _segment_and_link(args, volume, output, predict, started) -> int:
    """``segment --link-3d``: per-slice segmentation into a temporary store, then linking."""
    import time

    from .segmentation.huge import Bands
    from .segmentation.linking import LinkProgress
    from .segmentation.segment_link import segment_and_link
    from .segmentation.streaming import output_shape

    if output.value != "instances":
        raise InputError(
            "--link-3d writes instance labels; it cannot be combined with "
            f"--output-kind {output.value}"
        )
    voxel, voxel_text = _link_voxel_size(args, volume)
    if args.own_process and not (args.scheduler or args.workers):
        _predict_only(volume, Bands(above_pixels=None), predict)
    progress = segment_and_link(
        args.model,
        volume,
        args.output,
        params=_link_params(args),
        voxel_size_nm=voxel,
        scheduler=args.scheduler,
        n_workers=args.workers,
        slices_per_task=args.slices_per_task,
        sections_per_task=args.sections_per_task,
        **predict,
    )
    result = _drive_link(
        progress,
        volume.shape[0],
        args.interrupt,
        first=("segment", "slice"),
        first_kind=lambda r: not isinstance(r, LinkProgress),
    )
    print(
        f"wrote {args.output} (3D objects, shape {output_shape(volume)}, {_where(args)}; "
        f"{result}; voxel {voxel_text}; {time.perf_counter() - started:.1f} s in all)",
        file=sys.stderr,
    )
    return 0


def _link_params(args):
    from .segmentation.linking import LinkParams

    return LinkParams(bias=args.bias, min_sections=args.min_sections)


def _link_voxel_size(args, volume) -> tuple[tuple[float, float, float], str]:
    """--voxel-size, else what the file records; and how the summary line should say it."""
    from .io.voxel_size import section_spacing_of
    from .segmentation.linking import resolve_voxel_size

    if args.voxel_size:
        voxel = resolve_voxel_size(args.voxel_size)
        return voxel, _voxel_text(voxel)
    spacing = section_spacing_of(volume)
    voxel = resolve_voxel_size(None, volume.pixel_size_nm, spacing)
    if spacing is None:  # said in the summary, not before: a failed run prints one line
        return voxel, (
            f"{_voxel_text(voxel)}, assuming {voxel[0]:g} nm sections as the file "
            "does not record them (give --voxel-size Z,Y,X)"
        )
    return voxel, _voxel_text(voxel)


def _voxel_text(voxel) -> str:
    return " x ".join(f"{v:g}" for v in voxel) + " nm (z, y, x)"


def _drive_link(progress, depth: int, interrupt, *, first=None, first_kind=None) -> str:
    """Run a linking generator with progress bars (Ctrl-C stops it at the next section, with
    nothing written); warn about slices without signal; say what was linked, how fast."""
    bar, stage, objects, silent, seconds = None, None, 0, [], 0.0
    interrupt.working()
    try:
        for record in progress:
            is_first = first_kind is not None and first_kind(record)
            kind = "first" if is_first else f"link (pass {record.pass_number}/2)"
            if kind != stage:
                if bar is not None:
                    bar.close()
                desc, unit = first if is_first else (kind, "section")
                bar, stage = _progress(depth, desc, unit), kind
            bar.update(1)
            if is_first and record.no_signal:
                silent.append(record.index)
            elif not is_first:
                objects, seconds = record.objects or 0, record.elapsed_s
            interrupt.check()
    finally:
        if bar is not None:
            bar.close()
    _warn_no_signal(silent)
    per_section = seconds / depth if depth else 0.0
    return (
        f"{objects} objects; {depth} sections linked in {seconds:.1f} s "
        f"({per_section:.3f} s per section)"
    )


# ----------------------------------------------------------------------------- link
def cmd_link(args) -> int:
    import time

    from .io.volumes import open_volume
    from .io.writers import open_writer
    from .segmentation.linking import link_into

    started = time.perf_counter()
    check_output(args.output, [args.labels, args.probability], overwrite=args.overwrite)
    labels = open_volume(args.labels)  # each section's values are checked as it is read
    probability = None
    if args.probability:
        probability = open_volume(args.probability)
        if probability.shape != labels.shape:
            raise InputError(
                f"the probability map has shape {probability.shape} but the labels {labels.shape}"
            )
    voxel, voxel_text = _link_voxel_size(args, labels)
    params = _link_params(args)
    shape = labels.shape[1:] if labels.was_2d else labels.shape
    if args.scheduler or args.workers:
        from .segmentation.link_distributed import link_distributed

        progress = link_distributed(
            labels,
            args.output,
            probability=probability,
            voxel_size_nm=voxel,
            params=params,
            scheduler=args.scheduler,
            n_workers=args.workers,
            sections_per_task=args.sections_per_task,
        )
    else:
        progress = _link_to_file(
            labels, probability, args.output, shape, voxel, params, open_writer, link_into
        )
    result = _drive_link(progress, labels.shape[0], args.interrupt)
    print(
        f"wrote {args.output} (3D objects, shape {tuple(shape)}, {_where(args)}; {result}; "
        f"voxel {voxel_text}; {time.perf_counter() - started:.1f} s in all)",
        file=sys.stderr,
    )
    return 0


def _link_to_file(labels, probability, path, shape, voxel, params, open_writer, link_into):
    writer = open_writer(path, shape, np.uint32, pixel_size_nm=labels.pixel_size_nm)
    try:
        yield from link_into(
            labels, writer, probability=probability, voxel_size_nm=voxel, params=params
        )
    except BaseException:
        writer.abort()
        raise
    return writer.commit()


def _warn_no_signal(slices: list[int]) -> None:
    if slices:
        from .slices import format_slices

        print(
            f"warning: slice(s) {format_slices(slices)} have no signal (black, constant or "
            "without a finite pixel): no cells there",
            file=sys.stderr,
        )


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
                self.bar = _progress(record.steps, f"epoch {record.epoch}/{record.epochs}", "step")
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{record.loss:.4f}", refresh=False)
        elif isinstance(record, EpochProgress):
            self.close()
            score = "-" if record.val_v_rand is None else f"{record.val_v_rand:.4f}"
            loss = "-" if record.loss != record.loss else f"{record.loss:.4f}"
            vloss = "-" if record.val_loss is None else f"{record.val_loss:.4f}"
            change = (
                ""
                if record.val_change is None
                else f"  change of uncorrected slices {record.val_change:.3f}"
            )
            print(
                f"epoch {record.epoch}/{record.epochs}: loss {loss}  val_loss {vloss}  "
                f"val V_rand {score}{change}  best epoch {record.best_epoch}  "
                f"({record.seconds:.0f} s)",
                file=sys.stderr,
                flush=True,
            )

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
        epochs=args.epochs,
        steps_per_epoch=args.steps_per_epoch,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        learning_rate=args.learning_rate,
        augment=not args.no_augment,
        elastic=args.elastic,
        seed=args.seed,
        border_width_px=args.border_width,
        border_weight=args.border_weight,
        architecture=getattr(args, "architecture", defaults.architecture),
        **(
            {
                "anchor_share": args.anchor_share,
                "change_budget": args.change_budget,
                "average_last": args.average_last,
            }
            if hasattr(args, "anchor_share")
            else {}
        ),
    )


def _train_common(args, defaults, base_path=None, finetune: bool = False) -> int:
    from .generators import drain
    from .io.tiff import read_tiff
    from .learning.training import train
    from .model.files import bundled_model_path, load_model, save_model

    if finetune and base_path is None:
        base_path = bundled_model_path()
    output = check_output(
        args.output,
        [args.image, args.labels, base_path],
        overwrite=args.overwrite,
        suffixes=(".keras",),
        what="the model file",
    )
    image = read_tiff(args.image)
    labels = read_tiff(args.labels)
    base = load_model(base_path) if finetune else _load_tensorflow()
    report = _TrainingReport()
    args.interrupt.working()
    args.interrupt.graceful = True
    try:
        result = drain(
            train(
                np.asarray(image.data),
                np.asarray(labels.data),
                base=base,
                slices=args.slices,
                validation_slices=args.validation_slices,
                pixel_size_nm=args.pixel_size or image.pixel_size_nm or labels.pixel_size_nm,
                config=_train_config(args, defaults),
                name=output.stem,
                source=str(Path(args.image).name),
                stop=args.interrupt.requested,
            ),
            report,
        )
    finally:
        report.close()
    args.interrupt.graceful = False
    if result.stopped and not any(h.get("loss") is not None for h in result.history):
        raise KeyboardInterrupt  # stopped before a single training step: nothing to save
    save_model(result.model.keras_model, result.model.info, output)
    how = "stopped early; " if result.stopped else ""
    if result.verdict is not None:
        print(how + verdict_text(result.verdict, output), file=sys.stderr)
        return 0
    score = "" if result.best_v_rand is None else f", validation V_rand {result.best_v_rand:.4f}"
    print(
        f"{how}saved the best weights (epoch {result.best_epoch}{score}) to {output}",
        file=sys.stderr,
    )
    return 0


def _load_tensorflow() -> None:
    """Import TensorFlow while Ctrl-C still ends the command at once (it takes seconds)."""
    from .model.backend import keras_module

    keras_module()


def cmd_train(args) -> int:
    from .learning.config import TrainConfig
    from .model.unet import UNetConfig

    args.architecture = UNetConfig(base_filters=args.base_filters, depth=args.depth)
    return _train_common(args, TrainConfig.from_scratch())


def cmd_finetune(args) -> int:
    from .learning.config import TrainConfig

    return _train_common(args, TrainConfig(), base_path=args.model, finetune=True)


# ----------------------------------------------------------------------------- evaluate
def cmd_evaluate(args) -> int:
    if args.three_d:
        return _evaluate_3d(args)
    from .io.tiff import read_tiff
    from .learning.metrics import score_stack

    prediction = np.asarray(read_tiff(args.prediction).data)
    truth = np.asarray(read_tiff(args.ground_truth).data)
    _check_order(prediction, truth)
    scores = score_stack(prediction, truth)
    if args.json:
        print(json.dumps(scores.to_dict()))
        return 0
    print(f"{'slice':>5}  {'V_rand':>7}  {'V_info':>7}  {'pixel error':>11}  {'V_rand grown':>12}")
    for i, s in enumerate(scores.per_slice):
        print(
            f"{i:>5}  {s.v_rand:7.4f}  {s.v_info:7.4f}  {s.pixel_error:11.4f}  "
            f"{s.v_rand_grown:12.4f}"
        )
    print(
        f"{'mean':>5}  {scores.v_rand:7.4f}  {scores.v_info:7.4f}  {scores.pixel_error:11.4f}  "
        f"{scores.v_rand_grown:12.4f}"
    )
    if scores.v_rand_threshold is not None:
        print(
            f"best proposal threshold (1 - probability > t): V_rand t = "
            f"{scores.v_rand_threshold:.1f}, V_info t = {scores.v_info_threshold:.1f}"
        )
    return 0


# ----------------------------------------------------------------------------- measure
def cmd_measure(args) -> int:
    from .analysis.measure import measure_objects, write_csv
    from .generators import drain
    from .io.volumes import open_volume

    check_output(
        args.output,
        [args.labels, args.image],
        overwrite=args.overwrite,
        suffixes=(".csv",),
        what="the table",
    )
    labels = open_volume(args.labels)
    image = open_volume(args.image) if args.image else None
    voxel_size, where = args.voxel_size, "--voxel-size"
    if voxel_size is None:
        voxel_size, where = _recorded_voxel_size(args.labels, args.image)
    with _progress(labels.shape[0], "measure", "slice") as bar:
        table = drain(
            measure_objects(labels, image, voxel_size_nm=voxel_size), lambda _record: bar.update(1)
        )
    try:
        write_csv(table, args.output)
    except OSError as exc:
        raise InputError(f"cannot write {args.output} ({exc.strerror or exc})") from None
    size = (
        "volume_um3 left empty: the voxel size is not recorded in the file; give "
        "--voxel-size Z,Y,X (nm)"
        if voxel_size is None
        else f"voxel size {' x '.join(f'{v:g}' for v in voxel_size)} nm from {where}"
    )
    print(f"wrote {args.output} ({len(table)} objects; {size})", file=sys.stderr)
    return 0


def _recorded_voxel_size(*paths) -> tuple[tuple[float, float, float] | None, str]:
    """The first complete (Z, Y, X) recorded in one of ``paths`` (labels first)."""
    from .io.voxel_size import read_voxel_size_nm

    for path in paths:
        if path is None:
            continue
        size = read_voxel_size_nm(path)
        if all(v is not None for v in size):
            return size, Path(path).name
    return None, ""


def _evaluate_3d(args) -> int:
    """3D V_rand / V_info over objects (ids through sections), read slice by slice."""
    from .io.volumes import open_volume
    from .learning.metrics import score_volume_3d

    prediction, truth = open_volume(args.prediction), open_volume(args.ground_truth)
    if prediction.was_2d or truth.was_2d:
        raise InputError("--3d scores ZYX stacks; got a single 2D image")
    score = score_volume_3d(prediction, truth)
    if args.json:
        print(json.dumps(score.to_dict()))
        return 0
    print(f"{'':>6}  {'score':>7}  {'split':>7}  {'merge':>7}")
    print(
        f"{'V_rand':>6}  {score.v_rand:7.4f}  {score.v_rand_split:7.4f}  {score.v_rand_merge:7.4f}"
    )
    print(
        f"{'V_info':>6}  {score.v_info:7.4f}  {score.v_info_split:7.4f}  {score.v_info_merge:7.4f}"
    )
    print(f"3D objects; {score.voxels} voxels scored (ground truth not 0)")
    return 0


def _check_order(prediction: np.ndarray, truth: np.ndarray) -> None:
    """Catch ``evaluate TRUTH PREDICTION``: plausible numbers for the wrong question."""
    order = "the order is: em-unet evaluate PREDICTION GROUND_TRUTH"
    if truth.dtype.kind == "f" and not np.array_equal(truth, np.round(truth)):
        raise InputError(
            "the ground truth has fractional values, like a probability map; "
            f"did you swap the two files? ({order})"
        )
    first = (slice(None),) if prediction.ndim == 2 else (0,)
    kinds = len(np.unique(prediction[first])), len(np.unique(truth[first]))
    if kinds[0] <= 2 < kinds[1]:
        print(
            f"warning: the prediction looks like a ground-truth mask ({kinds[0]} values) and "
            f"the ground truth like instance labels ({kinds[1]} values); {order}",
            file=sys.stderr,
        )


# ----------------------------------------------------------------------------- export
def cmd_export(args) -> int:
    from .model.export_bioimageio import export_bioimageio
    from .model.export_onnx import export_onnx
    from .model.files import load_model

    suffix = {"bioimageio": ".zip", "onnx": ".onnx"}[args.format]
    check_output(
        args.output,
        [args.model],
        overwrite=args.overwrite,
        suffixes=(suffix,),
        what=f"--format {args.format}'s output",
    )
    model = load_model(args.model)
    args.interrupt.working()  # temporary files from here on: Ctrl-C waits for the cleanup
    if args.format == "onnx":
        result = export_onnx(model, args.output)
        print(
            f"wrote {result.path} (ONNX; max |ONNX - Keras| = {result.onnx_max_abs_diff:.1e} "
            "on the test tensor)",
            file=sys.stderr,
        )
        return 0
    result = export_bioimageio(
        model,
        args.output,
        authors=tuple(args.author or ()) or ("napari-em-unet user",),
        license=args.license,
    )
    diff = (
        ""
        if result.onnx_max_abs_diff is None
        else f"; max |ONNX - Keras| = {result.onnx_max_abs_diff:.1e}"
    )
    print(
        f"wrote {result.path} (bioimage.io model {result.format_version}, validated; weights: "
        f"{', '.join(result.formats)}{diff})",
        file=sys.stderr,
    )
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
    p.add_argument(
        "--labels",
        required=True,
        help="TIFF labels of the same shape: 0 = membrane, other values = cells "
        "(ISBI 0/255 masks or napari instance labels)",
    )
    p.add_argument("-o", "--output", required=True, help="model file to write (.keras)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace the output if it exists (never an input)"
    )
    p.add_argument(
        "--slices",
        type=_slices,
        default=None,
        help="training slices, e.g. 0,5,9 or 0-15 (default: every slice whose "
        "labels are not all 0)",
    )
    p.add_argument(
        "--validation-slices",
        type=_slices,
        default=None,
        help="slices held out for validation (default: the bottom 20%% of each training slice)",
    )
    p.add_argument(
        "--pixel-size",
        type=_positive_float,
        default=None,
        help="pixel size in nm (default: read from the TIFF, if recorded)",
    )
    p.add_argument("--epochs", type=_positive_int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument(
        "--steps-per-epoch",
        type=_positive_int,
        default=d.steps_per_epoch,
        help=f"default {d.steps_per_epoch}",
    )
    p.add_argument(
        "--batch-size", type=_positive_int, default=d.batch_size, help=f"default {d.batch_size}"
    )
    p.add_argument(
        "--patch-size", type=_positive_int, default=d.patch_size, help=f"default {d.patch_size}"
    )
    p.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=d.learning_rate,
        help=f"default {d.learning_rate:g}",
    )
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations/intensity jitter")
    p.add_argument("--elastic", action="store_true", help="add elastic deformation (slower)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument(
        "--border-width",
        type=_positive_float,
        default=d.border_width_px,
        help="width in pixels (at the model's scale) that borders between touching "
        "labels are widened to (default: the model's membrane width)",
    )
    p.add_argument(
        "--border-weight",
        type=float,
        default=d.border_weight,
        help="extra loss weight around borders between touching labels "
        f"(default {d.border_weight:g})",
    )


def _add_measure_parser(sub) -> None:
    p = sub.add_parser(
        "measure",
        help="measure every object of a labels volume (CSV)",
        description="One row per object (label): voxels, volume in um^3, "
        "first and last section, centroid (z, y, x in voxels) and, "
        "with --image, the mean intensity. Reads one slice at a "
        "time, so volumes larger than memory work.",
    )
    p.add_argument(
        "labels",
        help="labels TIFF, zarr array or OME-Zarr (0 = background, every "
        "other value one object, e.g. 3D objects from linking)",
    )
    p.add_argument(
        "--image", default=None, help="image of the same shape, for the mean_intensity column"
    )
    p.add_argument(
        "--voxel-size",
        type=_voxel_size,
        default=None,
        metavar="Z,Y,X",
        help="voxel size in nm, e.g. 50,4,4, or 10 for isotropic voxels (default: "
        "as recorded in the labels or image file; without it volume_um3 is "
        "left empty)",
    )
    p.add_argument("-o", "--output", required=True, help="CSV file to write (.csv)")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p.set_defaults(func=cmd_measure)


def _add_finetune_parser(sub) -> None:
    from .learning.config import TrainConfig

    p = sub.add_parser(
        "finetune",
        help="fine-tune a model on corrected slices",
        description="Fine-tune a model (default: the bundled one) on the "
        "labelled slices of a stack; saves a new model file. "
        "Slices you did not correct keep the base's behaviour "
        "(anchors), and the new model is accepted only when it "
        "validates better than the base on held-out corrected "
        "data; otherwise the base's weights are written.",
    )
    p.add_argument("--model", default=None, help="base model (default: the bundled model)")
    defaults = TrainConfig()
    _add_training_args(p, defaults)
    p.add_argument(
        "--anchor-share",
        type=float,
        default=defaults.anchor_share,
        help="share of every batch taken from uncorrected slices with the base "
        "model's own predictions as targets, so that it keeps its behaviour "
        f"where nobody corrected (0: none; default {defaults.anchor_share:g})",
    )
    p.add_argument(
        "--change-budget",
        type=float,
        default=defaults.change_budget,
        help="when the base already does well on the corrected slices, the "
        "largest change (1 - V_rand against the base's segmentation) an "
        "uncorrected slice may undergo before the base is kept "
        f"(default {defaults.change_budget:g})",
    )
    p.add_argument(
        "--average-last",
        type=_share,
        default=defaults.average_last,
        help="average the weights of the epochs in this last share of the run "
        f"(0: keep the last weights; default {defaults.average_last:g})",
    )
    p.set_defaults(func=cmd_finetune)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one ``error:`` line like every other failure."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"error: {message} (see {self.prog} --help)\n")


def _add_link_args(p: argparse.ArgumentParser, flag: bool = False) -> None:
    from .segmentation.linking import LinkParams

    if flag:
        p.add_argument(
            "--link-3d",
            action="store_true",
            help="link the cells of neighbouring sections into 3D objects (one id "
            "per object through all its sections; see 'em-unet link')",
        )
    p.add_argument(
        "--bias",
        type=_unit_float,
        default=LinkParams().bias,
        help="linking's split/merge control in (0, 1): higher joins more (fewer "
        "split objects, more merged ones), lower splits more (default "
        "%(default)s, chosen by measurement; see docs/linking.md)",
    )
    p.add_argument(
        "--min-sections",
        type=_positive_int,
        default=1,
        metavar="N",
        help="drop objects present in fewer than N sections (default 1: keep all)",
    )
    p.add_argument(
        "--voxel-size",
        type=_voxel_size,
        default=None,
        metavar="Z,Y,X",
        help="voxel size in nm, e.g. 50,4,4 (ssTEM) or 10 (isotropic FIB-SEM); "
        "default: read from the file, else 50 nm sections",
    )
    p.add_argument(
        "--sections-per-task",
        type=_positive_int,
        default=16,
        metavar="K",
        help="with --scheduler/--workers: sections per linking task (default 16)",
    )


def _add_link_parser(sub) -> None:
    p = sub.add_parser(
        "link",
        help="link per-section labels into 3D objects",
        description="Link per-section instance labels (e.g. corrected ones) "
        "into 3D objects: one id per object through all its "
        "sections, 0 = membrane. Reads two passes over the stack, "
        "a few sections at a time; TIFF or zarr in and out.",
    )
    p.add_argument("labels", help="per-section labels: TIFF or zarr, ZYX, 0 = membrane")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output: a TIFF, or an OME-Zarr folder when the name ends in .zarr",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the output if it exists (never an input)"
    )
    p.add_argument(
        "--probability",
        default=None,
        metavar="P",
        help="membrane probability of the same sections (em-unet segment "
        "--output-kind probabilities): weighs boundaries and splits labels "
        "that merge two cells",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="link on an existing dask.distributed cluster (inputs and a .zarr "
        "output on a file system the workers share)",
    )
    where.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="link on N dask worker processes on this machine",
    )
    _add_link_args(p)
    p.set_defaults(func=cmd_link)


def _add_evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a segmentation against ground truth",
        description="ISBI 2012 leaderboard scores per slice, as Fiji computes them.",
    )
    p.add_argument(
        "prediction", help="predicted TIFF: instance labels, 0/255 membranes or float probabilities"
    )
    p.add_argument("ground_truth", help="ground-truth TIFF: 0 = membrane")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--3d",
        dest="three_d",
        action="store_true",
        help="score 3D objects (ids through sections) instead of each slice: "
        "V_rand and V_info over ground-truth objects, with their split and "
        "merge parts; TIFF or zarr, read slice by slice",
    )
    p.set_defaults(func=cmd_evaluate)


def _add_segment_parser(sub) -> None:
    p = sub.add_parser(
        "segment",
        help="segment a TIFF or zarr image or stack",
        description="Segment a 2D image or ZYX stack slice by slice, reading "
        "one slice at a time and writing each result as it is "
        "done, so stacks larger than memory work. With "
        "--scheduler or --workers the slices are spread over a "
        "dask cluster; the result is identical.",
    )
    p.add_argument(
        "input",
        help="input TIFF, zarr array, or OME-Zarr image (2D image or ZYX stack; grey or RGB)",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output: a TIFF (BigTIFF past 4 GB), or an OME-Zarr folder when the "
        "name ends in .zarr",
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace the output if it exists (never the input)"
    )
    p.add_argument(
        "--model", default=None, help="model file (default: the bundled ISBI 2012 model)"
    )
    p.add_argument(
        "--output-kind",
        "--output-type",
        dest="output_kind",
        choices=["instances", "membranes", "probabilities"],
        default="instances",
        help="instances: uint32 cells, 0 = membrane (default); membranes: uint8 "
        "0 = membrane, 255 = interior; probabilities: float32 membrane "
        "probability",
    )
    p.add_argument(
        "--pixel-size",
        type=_positive_float,
        default=None,
        help="pixel size in nm (default: read from the TIFF, if recorded)",
    )
    p.add_argument(
        "--tile-size",
        type=_positive_int,
        default=None,
        help="largest tile fed to the network, in pixels (default 1024; 512 for "
        "slices segmented in bands, where memory matters more)",
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="tiles per batch (default 4; 1 for slices segmented in bands)",
    )
    p.add_argument("--flips", action="store_true", help="average the 4 mirror images (4x slower)")
    p.add_argument(
        "--bands-above",
        type=_non_negative_float,
        default=8,
        metavar="MPX",
        help="slices larger than this many megapixels (2^20 pixels) are segmented "
        "in bands of rows, so that memory depends on the tile size and the "
        "width rather than on the slice (default 8, about 2900 x 2900; 0: "
        "every slice)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="run on an existing dask.distributed cluster, e.g. "
        "tcp://10.0.0.5:8786 (input and .zarr output on a file system "
        "the workers share)",
    )
    where.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="run on N dask worker processes on this machine",
    )
    p.add_argument(
        "--slices-per-task",
        type=_positive_int,
        default=1,
        metavar="K",
        help="with --scheduler/--workers: slices per task (default 1)",
    )
    _add_link_args(p, flag=True)
    p.set_defaults(func=cmd_segment)


def build_parser() -> argparse.ArgumentParser:
    from .learning.config import TrainConfig

    parser = _Parser(
        prog="em-unet",
        description="Segment electron-microscopy stacks with a U-Net and fine-tune it on "
        "corrected slices.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _add_segment_parser(sub)

    _add_link_parser(sub)

    _add_finetune_parser(sub)

    p = sub.add_parser(
        "train",
        help="train a new model from scratch",
        description="Train a new U-Net from scratch.",
    )
    _add_training_args(p, TrainConfig.from_scratch())
    unet = TrainConfig.from_scratch().architecture
    p.add_argument(
        "--base-filters",
        type=_positive_int,
        default=unet.base_filters,
        help=f"default {unet.base_filters}",
    )
    p.add_argument("--depth", type=_positive_int, default=unet.depth, help=f"default {unet.depth}")
    p.set_defaults(func=cmd_train)

    _add_evaluate_parser(sub)
    _add_measure_parser(sub)  # their own functions: this one stays within a screen

    p = sub.add_parser(
        "export",
        help="export a model for other tools (bioimage.io, ONNX)",
        description="Write a model as a bioimage.io model package (.zip: Keras, "
        "HDF5, TensorFlow SavedModel and ONNX weights, test tensors, "
        "preprocessing; validated) for deepImageJ, ilastik and the "
        "bioimage.io model zoo, or as a single ONNX file. Needs the "
        "[export] extra.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model to export (.keras or a package; default: the bundled model)",
    )
    p.add_argument(
        "--format",
        required=True,
        choices=["bioimageio", "onnx"],
        help="bioimageio: model package (.zip); onnx: network only (.onnx)",
    )
    p.add_argument("-o", "--output", required=True, help="file to write (.zip or .onnx)")
    p.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    p.add_argument(
        "--author",
        action="append",
        default=None,
        metavar="NAME",
        help="author named in the package (repeat for several)",
    )
    p.add_argument(
        "--license",
        default="CC-BY-4.0",
        help="SPDX license of the weights in the package (default CC-BY-4.0)",
    )
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "demo",
        help="open napari with the sample stack and the widgets",
        description="Open napari with the synthetic sample stack, its ground "
        "truth, and the Segment and Fine-tune widgets docked.",
    )
    p.add_argument(
        "--model",
        default=None,
        help="model file to add and select (default: the newest available, e.g. the bundled model)",
    )
    p.add_argument("--segment", action="store_true", help="segment the sample at once")
    p.add_argument(
        "--screenshot",
        metavar="PATH",
        default=None,
        help="save the window to PATH (PNG) and quit (with --segment: when done)",
    )
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The command line owns its process (no argv: ``em-unet ...``, ``python -m``); main()
    # called from Python with arguments must not change the caller's TensorFlow set-up.
    args.own_process = argv is None
    if args.command == "demo":  # napari's window: closing it is how one stops
        args.interrupt = Interrupt()
        return _run(args)
    with Interrupt() as interrupt:  # before TensorFlow: Ctrl-C works from the first second
        args.interrupt = interrupt
        return _run(args)


def _run(args) -> int:
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
