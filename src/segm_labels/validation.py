"""Single-cell mAP of validation images from predicted class maps, for benchmarks with per-cell truth.

Cells are the truth cells (so the score measures class assignment, not cell segmentation) and
the image probabilities are the images' true labels (as for pseudo labels): every truth cell is
scored from the maps with the per-image scoring of CAM inference
(:func:`src.scoring.score_job.score_image_cells`), and the rows are matched by the competition evaluator.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import cv2
import numpy as np
import pandas as pd

from src.data.classes import NUM_CLASSES
from src.data.io import longer_side_at_most
from src.metrics import evaluate_submission, load_truth
from src.scoring.cell_scores import CellScoreConfig
from src.scoring.score_job import score_image_cells
from src.submission.codec import SUBMISSION_COLUMNS, cell_mask_predictions

logger = logging.getLogger(__name__)

# The protein channel is not at hand here; no cell is dark enough to be forced Negative.
VALIDATION_SCORING = CellScoreConfig(conf_how="cam_rate_mean", min_green_mean=0.0)


def truth_cell_map(
    image_ids: Sequence[str],
    maps: np.ndarray,
    truth_dir: str | os.PathLike,
    score_size: int = 128,
    config: CellScoreConfig = VALIDATION_SCORING,
) -> float:
    """Single-cell mAP of per-class maps on truth cells, with the true image labels as image probabilities.

    Args:
        image_ids: N image IDs with truth in ``truth_dir``.
        maps: (N, 19, h, w) per-class maps, each divided by its maximum.
        truth_dir: benchmark truth folder (``cell_masks/``, ``nuclei_masks/``, ``cell_labels.csv``).
        score_size: cells are scored at this side (longer side), then encoded at the truth mask size.
        config: per-cell scoring thresholds.

    Raises:
        FileNotFoundError: an ID without truth (names it).
    """
    if maps.ndim != 4 or maps.shape[:2] != (len(image_ids), NUM_CLASSES):
        raise ValueError(f"expected ({len(image_ids)}, {NUM_CLASSES}, h, w) maps, got {maps.shape}")
    truth = load_truth(truth_dir, list(image_ids))
    rows = []
    for image_id, image_maps in zip(image_ids, maps):
        cell_mask = truth.read_cell_mask(image_id)
        nuclei_path = truth.truth_dir / "nuclei_masks" / f"{image_id}.png"
        nuclei_mask = cv2.imread(str(nuclei_path), cv2.IMREAD_UNCHANGED)
        nuclei_mask = np.zeros_like(cell_mask) if nuclei_mask is None else nuclei_mask.astype(np.uint16)
        height, width = cell_mask.shape
        green = np.zeros(longer_side_at_most(height, width, score_size), dtype=np.uint8)
        image_probs = np.zeros(NUM_CLASSES, dtype=np.float32)
        image_probs[list(truth.image_labels(image_id))] = 1.0
        scores = score_image_cells(image_probs, image_maps, nuclei_mask, cell_mask, green, config)
        rows.append((image_id, width, height, cell_mask_predictions(cell_mask, scores)))
    submission = pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)
    return evaluate_submission(submission, truth, list(image_ids)).mAP
