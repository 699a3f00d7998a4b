"""Image-level multi-label F1: macro F1 over classes and per-class thresholds that maximise each class's F1.

The Atlas 2018 solution fitted one threshold per class on its validation set instead of using 0.5; these are the
numpy pieces of that (no I/O).
"""

from __future__ import annotations

import numpy as np

THRESHOLD_GRID = np.round(np.arange(0.01, 1.0, 0.01), 2)  # candidate thresholds, 0.01..0.99


def class_f1(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Per-class F1 of binary (N, C) arrays; a class with no true and no predicted positive scores 0.

    Returns:
        (C,) float array.
    """
    truth = truth.astype(bool)
    predicted = predicted.astype(bool)
    tp = (truth & predicted).sum(axis=0)
    denominator = truth.sum(axis=0) + predicted.sum(axis=0)
    return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)


def macro_f1(truth: np.ndarray, probs: np.ndarray, thresholds: float | np.ndarray = 0.5) -> float:
    """Mean F1 over the classes with at least one true positive image (absent classes carry no information).

    Args:
        truth: (N, C) 0/1 image labels.
        probs: (N, C) probabilities.
        thresholds: one threshold, or (C,) per class; an image has a class when its probability is >= it.
    """
    if truth.shape != probs.shape:
        raise ValueError(f"truth {truth.shape} and probabilities {probs.shape} differ in shape")
    present = truth.sum(axis=0) > 0
    if not present.any():
        raise ValueError("no class has a positive image: macro F1 is undefined")
    scores = class_f1(truth, probs >= np.asarray(thresholds))
    return float(scores[present].mean())


def fit_class_thresholds(
    truth: np.ndarray, probs: np.ndarray, grid: np.ndarray = THRESHOLD_GRID, default: float = 0.5
) -> np.ndarray:
    """Per-class thresholds that maximise each class's F1 on (validation) images.

    Among thresholds of equal best F1 the middle one is taken (the widest margin on both sides); a class
    without a positive image keeps ``default``.

    Args:
        truth: (N, C) 0/1 image labels.
        probs: (N, C) probabilities.
        grid: (T,) candidate thresholds.
        default: threshold of the classes without positives.

    Returns:
        (C,) float array.
    """
    if truth.shape != probs.shape:
        raise ValueError(f"truth {truth.shape} and probabilities {probs.shape} differ in shape")
    truth = truth.astype(bool)
    predicted = probs[None, :, :] >= grid[:, None, None]  # (T, N, C)
    tp = (predicted & truth[None]).sum(axis=1)
    denominator = predicted.sum(axis=1) + truth.sum(axis=0)[None]
    f1 = np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)  # (T, C)
    thresholds = np.full(truth.shape[1], default, dtype=np.float64)
    for c in np.flatnonzero(truth.sum(axis=0) > 0):
        best = np.flatnonzero(np.isclose(f1[:, c], f1[:, c].max()))
        thresholds[c] = float(grid[best[len(best) // 2]])
    return thresholds
