"""Instance-segmentation agreement: match predicted and true instances by IoU.

Used by the quality benchmark (nuclei against DSB2018 truth, cells against hpacellseg
masks or synthetic truth) and by the tests.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment


def iou_matrix(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """IoU of every predicted instance with every true instance.

    Args:
        pred: (H, W) integer labels, 0 = background.
        truth: (H, W) integer labels of the same shape, 0 = background.

    Returns:
        (P, T) float64 IoU matrix over the non-zero labels present in each image,
        ordered by increasing label value.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"pred shape {pred.shape} differs from truth shape {truth.shape}")
    _, pred_index = np.unique(pred.ravel(), return_inverse=True)
    _, truth_index = np.unique(truth.ravel(), return_inverse=True)
    has_pred_bg = bool((pred == 0).any())
    has_truth_bg = bool((truth == 0).any())
    num_pred = int(pred_index.max()) + 1 if pred_index.size else 0
    num_truth = int(truth_index.max()) + 1 if truth_index.size else 0
    joint = np.bincount(pred_index * num_truth + truth_index, minlength=num_pred * num_truth)
    contingency = joint.reshape(num_pred, num_truth).astype(np.float64)
    # Drop the background row / column (label 0 sorts first when present).
    contingency = contingency[int(has_pred_bg) :, int(has_truth_bg) :]
    pred_area = np.bincount(pred_index, minlength=num_pred)[int(has_pred_bg) :].astype(np.float64)
    truth_area = np.bincount(truth_index, minlength=num_truth)[int(has_truth_bg) :].astype(np.float64)
    union = pred_area[:, None] + truth_area[None, :] - contingency
    return np.divide(contingency, union, out=np.zeros_like(contingency), where=union > 0)


def match_instances(pred: np.ndarray, truth: np.ndarray, iou_threshold: float = 0.5) -> tuple[int, int, int, float]:
    """One-to-one matching of instances that maximises total IoU among pairs at or above the threshold.

    Args:
        pred: (H, W) integer labels, 0 = background.
        truth: (H, W) integer labels, 0 = background.
        iou_threshold: a pair counts as a match when its IoU >= this value.

    Returns:
        (tp, fp, fn, mean_iou): matched pairs, unmatched predictions, unmatched truths, and the
        mean IoU of the matched pairs (nan when there is none).
    """
    ious = iou_matrix(pred, truth)
    num_pred, num_truth = ious.shape
    if num_pred == 0 or num_truth == 0:
        return 0, num_pred, num_truth, float("nan")
    weights = np.where(ious >= iou_threshold, ious, 0.0)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    matched = weights[rows, cols] > 0
    tp = int(matched.sum())
    mean_iou = float(ious[rows[matched], cols[matched]].mean()) if tp else float("nan")
    return tp, num_pred - tp, num_truth - tp, mean_iou


def f1_score(tp: int, fp: int, fn: int) -> float:
    """Instance F1 = 2 TP / (2 TP + FP + FN); 1.0 when there is nothing to find and nothing found."""
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2.0 * tp / denominator
