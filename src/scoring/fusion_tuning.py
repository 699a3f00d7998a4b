"""Choosing the fusion on the validation fold from two submissions, without re-running the models.

The image-level part (e.g. round 1 with ``cell_logit``) and the cell classifier alone (``fusion: {cell_weight:
1.0}``) are each scored once on the validation fold with the same masks; every candidate fusion is then applied per
cell (cells matched by their RLE) with :func:`src.scoring.fusion.fuse_cell_scores`, exactly as inference fuses, and
scored against the per-cell truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from src.data.classes import NUM_CLASSES
from src.metrics import evaluate_submission
from src.metrics.truth import CellTruth
from src.scoring.fusion import FusionConfig, fuse_cell_scores
from src.submission.codec import SUBMISSION_COLUMNS, CellPrediction, format_prediction_string, parse_prediction_string


def cell_scores_by_rle(prediction_string: object, where: str) -> dict[str, dict[int, float]]:
    """``{rle: {class_id: confidence}}`` of one PredictionString."""
    cells: dict[str, dict[int, float]] = {}
    for p in parse_prediction_string(prediction_string, where):
        cells.setdefault(p.rle, {})[p.class_id] = p.confidence
    return cells


def fuse_submissions(image_part: pd.DataFrame, cell_part: pd.DataFrame, config: FusionConfig) -> pd.DataFrame:
    """The submission inference would write with ``config``, from the image-level and the cell-alone submissions.

    Raises:
        ValueError: the two submissions hold other images (names the first).
    """
    cell_rows = cell_part.set_index("ID")
    missing = sorted(set(image_part["ID"]) - set(cell_rows.index))
    if missing:
        raise ValueError(f"the cell-alone submission lacks image(s) {missing[:3]} of the image-level submission")
    rows = []
    for row in image_part.itertuples(index=False):
        image_cells = cell_scores_by_rle(row.PredictionString, f"image part ID {row.ID}")
        alone = cell_scores_by_rle(cell_rows.loc[row.ID, "PredictionString"], f"cell part ID {row.ID}")
        rles = list(dict.fromkeys([*image_cells, *alone]))
        ids = {rle: i for i, rle in enumerate(rles)}
        scored = [r for r in rles if r in alone]
        probs = np.zeros((len(scored), NUM_CLASSES))
        for i, rle in enumerate(scored):
            for k, p in alone[rle].items():
                probs[i, k] = p
        fused = fuse_cell_scores(
            {ids[r]: s for r, s in image_cells.items()}, np.array([ids[r] for r in scored], int), probs, config
        )
        predictions = [CellPrediction(k, c, rles[i]) for i, cell in fused.items() for k, c in cell.items()]
        rows.append((row.ID, row.ImageWidth, row.ImageHeight, format_prediction_string(predictions)))
    return pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)


def tune_fusion(
    image_part: pd.DataFrame, cell_part: pd.DataFrame, truth: CellTruth, candidates: Sequence[FusionConfig]
) -> list[tuple[FusionConfig, float]]:
    """(config, single-cell mAP) of every candidate on the images of ``image_part``, best first."""
    ids = image_part["ID"].astype(str).tolist()
    cache: dict[str, dict[str, np.ndarray]] = {}  # every candidate scores the same masks: match each once
    results = [
        (c, evaluate_submission(fuse_submissions(image_part, cell_part, c), truth, ids, iou_cache=cache).mAP)
        for c in candidates
    ]
    return sorted(results, key=lambda item: -item[1])
