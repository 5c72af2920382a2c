"""``em-unet train`` and ``em-unet finetune``: options, progress and the verdict."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..outputs import check_output
from .common import progress_bar


class _TrainingReport:
    """Training progress on stderr: a bar per epoch, one line per finished epoch, and for
    fine-tuning what the validation measures before it starts."""

    def __init__(self):
        self.bar = None

    def __call__(self, record) -> None:
        from ..learning.finetuning import describe_plan
        from ..learning.records import EpochProgress, FineTunePlan, StepProgress

        if isinstance(record, FineTunePlan):
            print(describe_plan(record), file=sys.stderr, flush=True)
        elif isinstance(record, StepProgress):
            if self.bar is None:
                self.bar = progress_bar(
                    record.steps, f"epoch {record.epoch}/{record.epochs}", "step"
                )
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
    from ..generators import drain
    from ..io.tiff import read_tiff
    from ..learning.training import train
    from ..model.files import bundled_model_path, load_model, save_model

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
    print(_saved_text(result, output), file=sys.stderr)
    return 0


def _saved_text(result, output: Path) -> str:
    how = "stopped early; " if result.stopped else ""
    if result.verdict is not None:
        return how + verdict_text(result.verdict, output)
    score = "" if result.best_v_rand is None else f", validation V_rand {result.best_v_rand:.4f}"
    return f"{how}saved the best weights (epoch {result.best_epoch}{score}) to {output}"


def _load_tensorflow() -> None:
    """Import TensorFlow while Ctrl-C still ends the command at once (it takes seconds)."""
    from ..model.backend import keras_module

    keras_module()


def cmd_train(args) -> int:
    from ..learning.config import TrainConfig
    from ..model.unet import UNetConfig

    args.architecture = UNetConfig(base_filters=args.base_filters, depth=args.depth)
    return _train_common(args, TrainConfig.from_scratch())


def cmd_finetune(args) -> int:
    from ..learning.config import TrainConfig

    return _train_common(args, TrainConfig(), base_path=args.model, finetune=True)
