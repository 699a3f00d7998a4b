"""Single-cell mAP evaluation against per-cell truth (the Kaggle HPA competition metric)."""

from src.metrics.ceiling import within_image_ceiling
from src.metrics.cell_ap import (
    IOU_THRESHOLD,
    CellAPResult,
    average_precision,
    evaluate_predictions,
    evaluate_submission,
    format_ap_table,
    mask_truth_ious,
    match_image,
    submission_predictions,
)
from src.metrics.truth import CellTruth, image_label_floor_submission, load_truth

__all__ = [
    "IOU_THRESHOLD",
    "CellAPResult",
    "CellTruth",
    "average_precision",
    "evaluate_predictions",
    "evaluate_submission",
    "format_ap_table",
    "image_label_floor_submission",
    "load_truth",
    "mask_truth_ious",
    "match_image",
    "submission_predictions",
    "within_image_ceiling",
]
