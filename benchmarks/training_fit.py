"""How well a model fits the ISBI slices it was trained on: the ceiling of its recipe.

Not a held-out figure, on purpose. If the shipped model, with its own watershed, scores
below the held-out target on slices it trained on, a model of the same recipe cannot
reach that target on slices it never saw: what is missing is fit (capacity, targets,
the instance step), not only generalisation. The previous bundled model (trained on ISBI
0-15, its epoch and watershed chosen on 16-19) is scored on the same slices in the same run.

    python benchmarks/training_fit.py [--model M.keras]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from _common import ISBI, machine, require_data, table
from benchmark import PREVIOUS_COMMIT, previous_model_file, unet_probabilities

from napari_em_unet.io.tiff import read_tiff
from napari_em_unet.learning.metrics import score_stack
from napari_em_unet.model.files import bundled_model_path, read_info
from napari_em_unet.segmentation.watershed import WatershedParams, instances_from_probability


def fit(model: Path, image: np.ndarray, truth: np.ndarray) -> tuple:
    maps = unet_probabilities(model, image, list(range(image.shape[0])))
    params = WatershedParams.from_dict(read_info(model).postprocessing or {})
    labels = np.stack([instances_from_probability(maps[z], params) for z in sorted(maps)])
    instances = score_stack(labels, truth)
    probability = score_stack(np.stack([maps[z] for z in sorted(maps)]), truth, grown=False)
    return instances, probability


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="default: the bundled model")
    args = p.parse_args()
    require_data()
    image = np.asarray(read_tiff(ISBI / "train-volume.tif").data)
    truth = np.asarray(read_tiff(ISBI / "train-labels.tif").data)
    model = Path(args.model) if args.model else bundled_model_path()
    print(machine())
    rows, per_slice = [], []
    with tempfile.TemporaryDirectory() as tmp:
        models = [
            (f"previous bundled model ({PREVIOUS_COMMIT})", previous_model_file(Path(tmp))),
            (model.name, model),
        ]
        for name, path in models:
            instances, probability = fit(path, image, truth)
            trained = read_info(path).trained_on
            rows.append(
                (
                    name,
                    f"{instances.v_rand:.4f}",
                    f"{instances.v_info:.4f}",
                    f"{probability.v_rand:.4f}",
                )
            )
            per_slice.append(
                f"{name}: "
                + " ".join(f"{z}:{s.v_rand:.3f}" for z, s in enumerate(instances.per_slice))
            )
            print(f"{name}: trained on {[t.get('slices') for t in trained]}", flush=True)
    print("ISBI 2012 slices 0-19, official V_rand / V_info, each model's own watershed")
    print(table(rows, ("model", "V_rand", "V_info", "probability map V_rand")))
    print("\n".join(per_slice))


if __name__ == "__main__":
    main()
