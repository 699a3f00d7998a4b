"""The within-image ceiling of a submission: what perfect localisation inside each image would score.

Per-cell scoring from class maps can only re-rank the cells of one image: it cannot repair an image
probability that is wrong for the whole image. The ceiling keeps a submission's confidences, but a
predicted cell that matches a truth cell (IoU >= 0.5, so at most one) and lacks one of its image's true
classes gets that class at ``confidence x demote``: every cell of an image is put in the right order,
while the errors across images stay. ``ceiling mAP - submission mAP`` is what better maps could add.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.metrics.cell_ap import mask_truth_ious
from src.metrics.truth import CellTruth
from src.submission.codec import CellPrediction, format_prediction_string, parse_prediction_string

MATCH_IOU = 0.5  # above 0.5 a predicted mask overlaps at most one truth cell this much


def within_image_ceiling(
    submission: pd.DataFrame, truth: CellTruth, ids: list[str], demote: float = 1e-3
) -> pd.DataFrame:
    """A copy of ``submission`` (rows of ``ids`` only) with the within-image errors removed.

    Args:
        submission: columns ID, ImageWidth, ImageHeight, PredictionString.
        truth: the per-cell truth of ``ids``.
        ids: the scored image IDs.
        demote: factor of a class's confidence in a cell of its image that does not carry it.
    """
    if not 0.0 <= demote < 1.0:
        raise ValueError(f"demote must lie in [0, 1), got {demote}")
    scored = set(ids)
    rows = []
    for row in submission.itertuples(index=False):
        image_id = str(row.ID)
        if image_id not in scored:
            continue
        predictions = parse_prediction_string(row.PredictionString, f"submission ID {image_id}")
        if predictions:
            predictions = _demote_image(predictions, truth, image_id, demote)
        rows.append(
            {
                "ID": image_id,
                "ImageWidth": row.ImageWidth,
                "ImageHeight": row.ImageHeight,
                "PredictionString": format_prediction_string(predictions),
            }
        )
    return pd.DataFrame(rows, columns=["ID", "ImageWidth", "ImageHeight", "PredictionString"])


def _demote_image(
    predictions: list[CellPrediction], truth: CellTruth, image_id: str, demote: float
) -> list[CellPrediction]:
    cell_mask = truth.read_cell_mask(image_id)
    fortran = cell_mask.ravel(order="F")
    areas = np.bincount(fortran)
    labels = truth.cell_labels[image_id]
    image_classes = set(truth.image_labels(image_id))
    matched: dict[str, tuple[int, ...] | None] = {}
    for prediction in predictions:
        if prediction.rle not in matched:
            ious = mask_truth_ious(prediction.rle, fortran, areas)
            ious[0] = 0.0
            best = int(np.argmax(ious))
            matched[prediction.rle] = labels.get(best) if ious[best] >= MATCH_IOU else None
    result = []
    for p in predictions:
        cell_classes = matched[p.rle]
        wrong = cell_classes is not None and p.class_id in image_classes and p.class_id not in cell_classes
        result.append(CellPrediction(p.class_id, p.confidence * demote, p.rle) if wrong else p)
    return result
