"""Does the cell classifier refine the image probabilities? Image-level mAP before and after blending.

    python scripts/image_refinement.py --image_sub SUB_image_prob.csv --cell_sub SUB_cell_alone.csv \
        --truth_dir data/synthetic/truth [--weights 0,0.25,0.5,0.75,1] [--pools max,mean]

``--image_sub`` is a ``conf_how image_prob`` submission (every cell carries its image's probabilities), ``--cell_sub``
the cell classifier alone (``fusion: {cell_weight: 1.0}``), on the same images. For each pool and weight r the image
probabilities become ``(1 - r) p + r pool_cells(cell probabilities)`` (:func:`src.scoring.fusion.refine_image_probs`)
and are scored against the image labels of the truth: macro AP over the classes 0-17 that occur (Negative is
left out: both submissions carry the darkness rule there, not a probability). Choose r on the validation fold.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.classes import NEGATIVE, NUM_CLASSES  # noqa: E402
from src.metrics import load_truth  # noqa: E402
from src.scoring.fusion import FusionConfig, refine_image_probs  # noqa: E402
from src.scoring.fusion_tuning import cell_scores_by_rle  # noqa: E402
from src.submission.codec import read_submission  # noqa: E402
from src.training.lit_model import macro_average_precision  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image_sub", type=Path, required=True)
    parser.add_argument("--cell_sub", type=Path, required=True)
    parser.add_argument("--truth_dir", type=Path, required=True)
    parser.add_argument("--weights", default="0,0.25,0.5,0.75,1")
    parser.add_argument("--pools", default="max,mean")
    return parser.parse_args(argv)


def probabilities(cells: dict[str, dict[int, float]]) -> np.ndarray:
    """(K, 19) of ``{rle: {class: confidence}}`` (missing classes 0)."""
    out = np.zeros((len(cells), NUM_CLASSES))
    for i, scores in enumerate(cells.values()):
        for k, p in scores.items():
            out[i, k] = p
    return out


def main(args: argparse.Namespace) -> None:
    image_sub = read_submission(args.image_sub).set_index("ID")
    cell_sub = read_submission(args.cell_sub).set_index("ID")
    ids = [str(i) for i in image_sub.index]
    truth = load_truth(args.truth_dir, ids)
    targets = np.zeros((len(ids), NUM_CLASSES))
    image_probs, cell_probs = [], []
    for row, image_id in enumerate(ids):
        targets[row, list(truth.image_labels(image_id))] = 1.0
        cells = probabilities(cell_scores_by_rle(image_sub.loc[image_id, "PredictionString"], image_id))
        image_probs.append(cells[0] if len(cells) else np.zeros(NUM_CLASSES))
        cell_probs.append(probabilities(cell_scores_by_rle(cell_sub.loc[image_id, "PredictionString"], image_id)))
    keep = [k for k in range(NUM_CLASSES) if k != NEGATIVE]
    print(f"| pool | weight r | image-level mAP ({len(ids)} images, classes 0-17) |\n|---|---|---|")
    for pool in args.pools.split(","):
        for r in map(float, args.weights.split(",")):
            config = FusionConfig(image_refine=pool, image_refine_weight=r)
            refined = np.stack([refine_image_probs(p, c, config) for p, c in zip(image_probs, cell_probs)])
            print(f"| {pool} | {r} | {macro_average_precision(refined[:, keep], targets[:, keep]):.3f} |")


if __name__ == "__main__":
    main(parse_args())
