"""Choosing the fusion on the validation fold from two submissions, without re-running the models.

The image-level part (e.g. round 1 with ``cell_logit``) and the cell classifier alone (``fusion: {cell_weight:
1.0}``) are each scored once on the validation fold with the same masks; every candidate fusion is then applied per
cell (cells matched by their RLE) with :func:`src.scoring.fusion.fuse_cell_scores`, exactly as inference fuses, and
scored against the per-cell truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from src.data.classes import NUM_CLASSES
from src.metrics import evaluate_predictions, submission_predictions
from src.metrics.truth import CellTruth
from src.scoring.fusion import FusionConfig, fuse_cell_scores
from src.submission.codec import (
    SUBMISSION_COLUMNS,
    CellPrediction,
    format_confidence,
    format_prediction_string,
    parse_prediction_string,
)


def cell_scores_by_rle(prediction_string: object, where: str) -> dict[str, dict[int, float]]:
    """``{rle: {class_id: confidence}}`` of one PredictionString."""
    cells: dict[str, dict[int, float]] = {}
    for p in parse_prediction_string(prediction_string, where):
        cells.setdefault(p.rle, {})[p.class_id] = p.confidence
    return cells


@dataclass(frozen=True)
class ImageParts:
    """One image's two parts, parsed: its masks (RLEs), the image-level scores per mask index, the cell part."""

    image_id: str
    width: object
    height: object
    rles: list[str]
    image_cells: dict[int, dict[int, float]]
    scored: np.ndarray  # (K,) mask indices the cell classifier scored
    probs: np.ndarray  # (K, 19) their probabilities


def parse_parts(image_part: pd.DataFrame, cell_part: pd.DataFrame) -> list[ImageParts]:
    """Both submissions parsed once, in the order of ``image_part``, cells matched by their RLE.

    Raises:
        ValueError: the two submissions hold other images (names the first).
    """
    cell_rows = cell_part.set_index("ID")
    missing = sorted(set(image_part["ID"]) - set(cell_rows.index))
    if missing:
        raise ValueError(f"the cell-alone submission lacks image(s) {missing[:3]} of the image-level submission")
    parts = []
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
        parts.append(
            ImageParts(
                str(row.ID), row.ImageWidth, row.ImageHeight, rles,
                {ids[r]: s for r, s in image_cells.items()}, np.array([ids[r] for r in scored], int), probs,
            )
        )  # fmt: skip
    return parts


def fuse_image(parts: ImageParts, config: FusionConfig) -> list[CellPrediction]:
    """The image's predictions as inference writes them with ``config`` (confidences as written)."""
    fused = fuse_cell_scores(parts.image_cells, parts.scored, parts.probs, config)
    return [
        CellPrediction(k, float(format_confidence(c)), parts.rles[i])
        for i, cell in fused.items()
        for k, c in cell.items()
    ]


def fuse_submissions(image_part: pd.DataFrame, cell_part: pd.DataFrame, config: FusionConfig) -> pd.DataFrame:
    """The submission inference would write with ``config``, from the image-level and the cell-alone submissions.

    Raises:
        ValueError: the two submissions hold other images (names the first).
    """
    rows = [
        (parts.image_id, parts.width, parts.height, format_prediction_string(fuse_image(parts, config)))
        for parts in parse_parts(image_part, cell_part)
    ]
    return pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)


def tune_fusion(
    image_part: pd.DataFrame, cell_part: pd.DataFrame, truth: CellTruth, candidates: Sequence[FusionConfig]
) -> list[tuple[FusionConfig, float]]:
    """(config, single-cell mAP) of every candidate on the images of ``image_part``, best first.

    Each candidate scores what :func:`fuse_submissions` would write, without writing it: the two parts are
    parsed and checked against the truth once, and each mask is matched to the truth cells once.
    """
    ids = image_part["ID"].astype(str).tolist()
    for part in (image_part, cell_part):  # sizes checked once, as evaluate_submission would
        submission_predictions(part[part["ID"].astype(str).isin(ids)], truth, ids)
    parts = parse_parts(image_part, cell_part)
    cache: dict[str, dict[str, np.ndarray]] = {}
    results = []
    for config in candidates:
        predictions = {p.image_id: fuse_image(p, config) for p in parts}
        results.append((config, evaluate_predictions(predictions, truth, ids, iou_cache=cache).mAP))
    return sorted(results, key=lambda item: -item[1])
