"""The ``em-unet`` command line: every command's options and help."""

from __future__ import annotations

import argparse

from .. import __version__
from .common import (
    EXIT_ERROR,
    non_negative_float,
    positive_float,
    positive_int,
    share_arg,
    slices_arg,
    unit_float,
    voxel_size_arg,
)
from .evaluate import cmd_evaluate
from .export import cmd_demo, cmd_export
from .link import cmd_link
from .measure import cmd_measure
from .segment import cmd_segment
from .training import cmd_finetune, cmd_train


def _add_training_args(p: argparse.ArgumentParser, defaults) -> None:
    """The training options, their defaults read from ``defaults`` (a TrainConfig)."""
    _add_training_data_args(p)
    _add_schedule_args(p, defaults)


def _add_training_data_args(p: argparse.ArgumentParser) -> None:
    """What to learn from and where the model goes."""
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
        type=slices_arg,
        default=None,
        help="training slices, e.g. 0,5,9 or 0-15 (default: every slice whose "
        "labels are not all 0)",
    )
    p.add_argument(
        "--validation-slices",
        type=slices_arg,
        default=None,
        help="slices held out for validation (default: the bottom 20%% of each training slice)",
    )
    p.add_argument(
        "--pixel-size",
        type=positive_float,
        default=None,
        help="pixel size in nm (default: read from the TIFF, if recorded)",
    )


def _add_schedule_args(p: argparse.ArgumentParser, d) -> None:
    """How long and how to learn: steps, batches, augmentation, loss."""
    p.add_argument("--epochs", type=positive_int, default=d.epochs, help=f"default {d.epochs}")
    p.add_argument(
        "--steps-per-epoch",
        type=positive_int,
        default=d.steps_per_epoch,
        help=f"default {d.steps_per_epoch}",
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=d.batch_size, help=f"default {d.batch_size}"
    )
    p.add_argument(
        "--patch-size", type=positive_int, default=d.patch_size, help=f"default {d.patch_size}"
    )
    p.add_argument(
        "--learning-rate",
        type=positive_float,
        default=d.learning_rate,
        help=f"default {d.learning_rate:g}",
    )
    p.add_argument("--no-augment", action="store_true", help="no flips/rotations/intensity jitter")
    p.add_argument("--elastic", action="store_true", help="add elastic deformation (slower)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"random seed (default {d.seed})")
    p.add_argument(
        "--border-width",
        type=positive_float,
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
        type=voxel_size_arg,
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
    from ..learning.config import TrainConfig

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
        type=share_arg,
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
    from ..segmentation.linking import LinkParams

    if flag:
        p.add_argument(
            "--link-3d",
            action="store_true",
            help="link the cells of neighbouring sections into 3D objects (one id "
            "per object through all its sections; see 'em-unet link')",
        )
    p.add_argument(
        "--bias",
        type=unit_float,
        default=LinkParams().bias,
        help="linking's split/merge control in (0, 1): higher joins more (fewer "
        "split objects, more merged ones), lower splits more (default "
        "%(default)s, chosen by measurement; see docs/linking.md)",
    )
    p.add_argument(
        "--min-sections",
        type=positive_int,
        default=1,
        metavar="N",
        help="drop objects present in fewer than N sections (default 1: keep all)",
    )
    p.add_argument(
        "--voxel-size",
        type=voxel_size_arg,
        default=None,
        metavar="Z,Y,X",
        help="voxel size in nm, e.g. 50,4,4 (ssTEM) or 10 (isotropic FIB-SEM); "
        "default: read from the file, else 50 nm sections",
    )
    p.add_argument(
        "--sections-per-task",
        type=positive_int,
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
        type=positive_int,
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
    _add_prediction_args(p)
    _add_cluster_args(p)
    _add_link_args(p, flag=True)
    p.set_defaults(func=cmd_segment)


def _add_prediction_args(p: argparse.ArgumentParser) -> None:
    """How `segment` feeds the network: scale, tiles, batches, flips, bands."""
    p.add_argument(
        "--pixel-size",
        type=positive_float,
        default=None,
        help="pixel size in nm (default: read from the TIFF, if recorded)",
    )
    p.add_argument(
        "--tile-size",
        type=positive_int,
        default=None,
        help="largest tile fed to the network, in pixels (default 1024; 512 for "
        "slices segmented in bands, where memory matters more)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="tiles per network call (default 1: on a CPU more only costs memory)",
    )
    p.add_argument("--flips", action="store_true", help="average the 4 mirror images (4x slower)")
    p.add_argument(
        "--bands-above",
        type=non_negative_float,
        default=8,
        metavar="MPX",
        help="slices larger than this many megapixels (2^20 pixels) are segmented "
        "in bands of rows, so that memory depends on the tile size and the "
        "width rather than on the slice (default 8, about 2900 x 2900; 0: "
        "every slice)",
    )


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    """Where `segment` runs: this process, local dask workers, or a cluster."""
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
        type=positive_int,
        default=None,
        metavar="N",
        help="run on N dask worker processes on this machine",
    )
    p.add_argument(
        "--slices-per-task",
        type=positive_int,
        default=1,
        metavar="K",
        help="with --scheduler/--workers: slices per task (default 1)",
    )


def build_parser() -> argparse.ArgumentParser:
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
    _add_train_parser(sub)
    _add_evaluate_parser(sub)
    _add_measure_parser(sub)
    _add_export_parser(sub)
    _add_demo_parser(sub)
    return parser


def _add_train_parser(sub) -> None:
    from ..learning.config import TrainConfig

    p = sub.add_parser(
        "train",
        help="train a new model from scratch",
        description="Train a new U-Net from scratch.",
    )
    _add_training_args(p, TrainConfig.from_scratch())
    unet = TrainConfig.from_scratch().architecture
    p.add_argument(
        "--base-filters",
        type=positive_int,
        default=unet.base_filters,
        help=f"default {unet.base_filters}",
    )
    p.add_argument("--depth", type=positive_int, default=unet.depth, help=f"default {unet.depth}")
    p.set_defaults(func=cmd_train)


def _add_export_parser(sub) -> None:
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


def _add_demo_parser(sub) -> None:
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
