"""True labels of the cells of a crop store: each store cell takes the label of the truth cell covering most of it."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from src.cell_masks.cache import mask_path, read_masks
from src.data.io import parse_label

MIN_OVERLAP = 0.5  # share of the store cell's pixels the truth cell must cover


def truth_cell_labels(index: pd.DataFrame, mask_dirs: dict[str, Path], truth_dir: str | os.PathLike) -> list:
    """For each row of ``index`` (ID, cell_id, split): its truth cell's class ids, or None when no truth cell covers
    at least half of it.

    Args:
        index: store cells.
        mask_dirs: split -> the mask cache its crops were cut from.
        truth_dir: a benchmark's ``truth/`` (``cell_masks/{ID}.png``, ``cell_labels.csv``).
    """
    truth_dir = Path(truth_dir)
    table = pd.read_csv(truth_dir / "cell_labels.csv", dtype={"ID": str, "Label": str})
    labels = {
        (i, int(c)): parse_label(v, f"{truth_dir}/cell_labels.csv ID {i}") for i, c, v in table.itertuples(index=False)
    }
    out: list = [None] * len(index)
    for (split, image_id), rows in index.groupby(["split", "ID"]).groups.items():
        _, cell_mask = read_masks(mask_path(mask_dirs[split], image_id))
        truth = cv2.imread(str(truth_dir / "cell_masks" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        if truth is None or truth.shape != cell_mask.shape:
            continue
        pairs = np.stack([cell_mask.ravel(), truth.ravel()], axis=1)
        pairs = pairs[pairs[:, 0] > 0]
        for row in rows:
            cell_id = int(index.at[row, "cell_id"])
            covered = pairs[pairs[:, 0] == cell_id, 1]
            if not len(covered):
                continue
            best = np.bincount(covered).argmax()
            if best and np.mean(covered == best) >= MIN_OVERLAP and (image_id, int(best)) in labels:
                out[index.index.get_loc(row)] = labels[(image_id, int(best))]
    return out
