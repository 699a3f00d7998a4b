"""Time the single-cell mAP evaluator on N images x C cells, built here with numpy.

    python benchmarks/bench_evaluate.py --num_images 500 --cells 20 --size 512

Target (issue 2): 500 images x 20 cells of 512x512 in at most 30 s. Each image gets a
Voronoi-like cell mask with 1-3 classes per cell; each cell is predicted for its classes
plus 1-2 wrong ones (several classes share one RLE, as in real submissions), with a mask
shifted by a few pixels so that IoUs straddle 0.6, plus a few spurious masks. The timed
part is what ``evaluate.py`` does: read the submission CSV, load the truth, score.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.atomic import write_csv_atomic, write_png_atomic  # noqa: E402
from src.data.classes import NUM_CLASSES  # noqa: E402
from src.metrics import evaluate_submission, load_truth  # noqa: E402
from src.submission.codec import (  # noqa: E402
    CellPrediction,
    encode_binary_mask,
    format_prediction_string,
    read_submission,
    write_submission,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num_images", type=int, default=500)
    parser.add_argument("--cells", type=int, default=20, help="cells per image")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget_s", type=float, default=30.0)
    return parser.parse_args()


def cell_mask(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """(size, size) uint16 Voronoi cells of radius <= size / sqrt(cells), 0 = background."""
    seeds = np.zeros((size, size), np.uint8) + 1
    seeds[rng.integers(0, size, cells), rng.integers(0, size, cells)] = 0
    distance, nearest = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    return np.where(distance < size / np.sqrt(cells), nearest, 0).astype(np.uint16)


def build(root: Path, args: argparse.Namespace) -> tuple[Path, Path]:
    """Write truth (cell_masks/, cell_labels.csv) and a submission CSV under ``root``."""
    rng = np.random.default_rng(args.seed)
    truth_dir = root / "truth"
    label_rows, submission_rows = [], []
    for index in range(args.num_images):
        image_id = f"bench-{index:05d}"
        mask = cell_mask(rng, args.size, args.cells)
        write_png_atomic(truth_dir / "cell_masks" / f"{image_id}.png", mask)
        predictions = []
        for cell_id in np.unique(mask[mask > 0]):
            classes = rng.choice(NUM_CLASSES, size=rng.integers(1, 4), replace=False)
            label_rows.append((image_id, int(cell_id), "|".join(map(str, sorted(classes)))))
            shift = rng.integers(-6, 7, 2)
            predicted = np.roll(mask == cell_id, tuple(shift), axis=(0, 1))
            rle = encode_binary_mask(predicted)
            wrong = rng.choice(NUM_CLASSES, size=rng.integers(1, 3), replace=False)
            predictions += [CellPrediction(int(c), float(rng.random()), rle) for c in (*classes, *wrong)]
        for _ in range(2):  # spurious square masks
            y, x = rng.integers(0, args.size - 40, 2)
            square = np.zeros_like(mask, dtype=bool)
            square[y : y + 40, x : x + 40] = True
            predictions.append(
                CellPrediction(int(rng.integers(NUM_CLASSES)), float(rng.random()), encode_binary_mask(square))
            )
        submission_rows.append(
            {
                "ID": image_id,
                "ImageWidth": args.size,
                "ImageHeight": args.size,
                "PredictionString": format_prediction_string(predictions),
            }
        )
    write_csv_atomic(truth_dir / "cell_labels.csv", pd.DataFrame(label_rows, columns=["ID", "cell_id", "Label"]))
    submission_path = root / "submission.csv"
    write_submission(submission_path, submission_rows)
    return truth_dir, submission_path


def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        truth_dir, submission_path = build(Path(tmp), args)
        print(
            f"built {args.num_images} images x {args.cells} cells of {args.size} px in {time.perf_counter() - start:.1f} s"
        )
        for workers in args.workers:
            start = time.perf_counter()
            submission = read_submission(submission_path)
            truth = load_truth(truth_dir, submission["ID"].tolist())
            result = evaluate_submission(submission, truth, workers=workers)
            elapsed = time.perf_counter() - start
            verdict = "OK" if elapsed <= args.budget_s else "OVER BUDGET"
            predictions = sum(result.per_class_num_pred.values())
            print(
                f"evaluate (workers={workers}): {args.num_images} images, {predictions} predictions, "
                f"mAP {result.mAP:.4f} in {elapsed:.1f} s; target <= {args.budget_s:.0f} s: {verdict}"
            )


if __name__ == "__main__":
    main(parse_args())
