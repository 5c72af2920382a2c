"""``em-unet evaluate``: the official ISBI scores of labels or a probability map."""

from __future__ import annotations

import json
import sys

import numpy as np

from ..errors import InputError


def cmd_evaluate(args) -> int:
    if args.three_d:
        return _evaluate_3d(args)
    from ..io.tiff import read_tiff
    from ..learning.metrics import score_stack

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


def _evaluate_3d(args) -> int:
    """3D V_rand / V_info over objects (ids through sections), read slice by slice."""
    from ..io.volumes import open_volume
    from ..learning.metrics import score_volume_3d

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
