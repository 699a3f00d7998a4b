"""Validation of the cell classifier on the image-level and single-cell scales.

After each validation epoch, from the validation fold's cells:

* ``val/image_mAP``: macro mAP of the image labels from the cells' probabilities pooled per image (max);
* ``val/cell_mAP`` (with per-cell truth): the single-cell mAP of the cell classifier alone, every cell given its
  19 probabilities and Negative from the protein-darkness rule, on the store's cell masks, matched to the truth
  by the competition evaluator.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from src.cell_masks.cache import mask_path, read_masks
from src.data.classes import NEGATIVE
from src.metrics import evaluate_submission, load_truth
from src.submission.codec import SUBMISSION_COLUMNS, cell_mask_predictions
from src.training.lit_model import macro_average_precision

logger = logging.getLogger(__name__)


def cell_alone_scores(
    cell_ids: np.ndarray, cell_probs: np.ndarray, darkness: np.ndarray
) -> dict[int, dict[int, float]]:
    """``{cell_id: {class: p}}`` of the cell classifier alone, Negative from the darkness rule; (K,), (K, 19), (K,)."""
    scores = {}
    for cell_id, probs, dark in zip(cell_ids, cell_probs, darkness, strict=True):
        cell = {k: float(p) for k, p in enumerate(probs) if k != NEGATIVE}
        cell[NEGATIVE] = float(dark)
        scores[int(cell_id)] = cell
    return scores


def pooled_image_probs(ids: np.ndarray, probs: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(image IDs in first-seen order, (M, 19) max of their cells' probabilities)."""
    frame = pd.DataFrame(probs).assign(ID=ids)
    pooled = frame.groupby("ID", sort=False).max()
    return pooled.index.tolist(), pooled.to_numpy()


class CellValidation(pl.Callback):
    """Logs ``val/image_mAP`` and, with ``truth_dir``, ``val/cell_mAP`` (see the module docstring).

    Args:
        val_index: the validation cells (columns ID, cell_id, darkness), in validation loader order.
        image_targets: (M, 19) labels of the validation images, keyed by ``image_ids``.
        image_ids: the M validation image IDs.
        mask_dir: mask cache the crops were cut from.
        truth_dir: per-cell truth (``cell_labels.csv``, ``cell_masks/``) or None.
    """

    def __init__(
        self,
        val_index: pd.DataFrame,
        image_ids: list[str],
        image_targets: np.ndarray,
        mask_dir: str | os.PathLike,
        truth_dir: str | os.PathLike | None = None,
    ):
        self.val_index = val_index.reset_index(drop=True)
        self.image_targets = dict(zip(image_ids, image_targets))
        self.mask_dir = mask_dir
        self.truth = load_truth(truth_dir, sorted(set(image_ids))) if truth_dir else None
        self._probs: list[torch.Tensor] = []

    def on_validation_batch_end(
        self, trainer, pl_module, outputs: Any, batch: dict, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        with torch.no_grad():
            self._probs.append(torch.sigmoid(pl_module(batch["image"])["logits"].float()).cpu())

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not self._probs:
            return
        probs = torch.cat(self._probs).numpy()
        self._probs.clear()
        if trainer.sanity_checking or len(probs) != len(self.val_index):
            return  # the sanity check (or --limit_val_batches) sees only part of the cells
        ids = self.val_index["ID"].to_numpy()
        image_ids, pooled = pooled_image_probs(ids, probs)
        targets = np.stack([self.image_targets[i] for i in image_ids])
        pl_module.log("val/image_mAP", macro_average_precision(pooled, targets))
        if self.truth is not None:
            pl_module.log("val/cell_mAP", self.cell_map(probs))

    def cell_map(self, probs: np.ndarray) -> float:
        """Single-cell mAP of the validation images from (N, 19) cell probabilities."""
        rows = []
        for image_id, cells in self.val_index.groupby("ID", sort=False):
            _, cell_mask = read_masks(mask_path(self.mask_dir, image_id))
            scores = cell_alone_scores(cells["cell_id"].to_numpy(), probs[cells.index], cells["darkness"].to_numpy())
            height, width = cell_mask.shape
            rows.append((image_id, width, height, cell_mask_predictions(cell_mask, scores)))
        submission = pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)
        return evaluate_submission(submission, self.truth, sorted(self.truth.ids)).mAP
