"""Segmentation, counting and detection of positive cells from maps, scored against per-cell truth.

Per image and class: the true region is the union of the cells carrying the class; pixel IoU accumulates
intersections and unions over images (per class, then the mean over classes that occur); the count error is
|predicted components - true positive cells| over the (image, class) pairs where the class is true or predicted;
a predicted centre is a true detection when it lies in a positive
cell not already matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class CountingScores:
    """Running totals over images for K classes."""

    num_classes: int
    intersection: np.ndarray = field(init=False)
    union: np.ndarray = field(init=False)
    count_errors: list[int] = field(default_factory=list)
    true_positives: int = 0
    predicted: int = 0
    actual: int = 0

    def __post_init__(self) -> None:
        self.intersection = np.zeros(self.num_classes)
        self.union = np.zeros(self.num_classes)

    def add_image(
        self,
        regions: np.ndarray,
        centres: list[np.ndarray],
        cell_mask: np.ndarray,
        cell_labels: dict[int, tuple[int, ...]],
    ) -> None:
        """Score one image.

        Args:
            regions: (K, H, W) bool predicted regions.
            centres: K arrays of (n_k, 2) (row, column) centres.
            cell_mask: (H, W) instance mask, 0 = background.
            cell_labels: cell id -> its classes.
        """
        for k in range(self.num_classes):
            positive_ids = [cell for cell, labels in cell_labels.items() if k in labels]
            truth = np.isin(cell_mask, positive_ids) if positive_ids else np.zeros(cell_mask.shape, dtype=bool)
            self.intersection[k] += (truth & regions[k]).sum()
            self.union[k] += (truth | regions[k]).sum()
            if positive_ids or len(centres[k]):  # a class absent and not predicted is trivially right: not counted
                self.count_errors.append(abs(len(centres[k]) - len(positive_ids)))
            matched: set[int] = set()
            for row, col in centres[k]:
                r = min(max(int(round(row)), 0), cell_mask.shape[0] - 1)
                c = min(max(int(round(col)), 0), cell_mask.shape[1] - 1)
                cell = int(cell_mask[r, c])
                if cell in positive_ids and cell not in matched:
                    matched.add(cell)
            self.true_positives += len(matched)
            self.predicted += len(centres[k])
            self.actual += len(positive_ids)

    def summary(self) -> dict[str, float]:
        """Mean pixel IoU over classes with a true or predicted region, count MAE and exact-count fraction over the
        (image, class) pairs with a true or predicted cell, and detection precision, recall and F1."""
        present = self.union > 0
        iou = float((self.intersection[present] / self.union[present]).mean()) if present.any() else 0.0
        errors = np.asarray(self.count_errors)
        precision = self.true_positives / self.predicted if self.predicted else 0.0
        recall = self.true_positives / self.actual if self.actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {
            "pixel_iou": round(iou, 4),
            "count_mae": round(float(errors.mean()), 4) if len(errors) else 0.0,
            "exact_count": round(float((errors == 0).mean()), 4) if len(errors) else 0.0,
            "det_precision": round(precision, 4),
            "det_recall": round(recall, 4),
            "det_f1": round(f1, 4),
        }
