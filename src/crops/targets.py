"""Per-cell training targets of the cell classifier: the image's labels, CAM pseudo labels, or a mix.

* ``image``: every cell gets its image's labels, except that a cell dark in the protein channel (the darkness
  rule of inference, ``darkness >= dark_thresh``) gets Negative only;
* ``pseudo``: soft targets, the per-cell confidences of a ``gen_pseudo`` CSV of ``run_cam_infer.py`` (its
  Negative already follows the darkness rule);
* ``mixed``: ``(1 - pseudo_weight) x image + pseudo_weight x pseudo``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from src.data.classes import NEGATIVE, NUM_CLASSES
from src.submission.codec import decode_binary_mask, parse_prediction_string, read_submission

logger = logging.getLogger(__name__)

CELL_TARGETS = ("image", "pseudo", "mixed")


def image_cell_targets(
    index: pd.DataFrame, image_labels: Mapping[str, Sequence[int]], dark_thresh: float = 0.5
) -> np.ndarray:
    """(N, 19) float32 targets of the N cells of ``index`` (columns ID, darkness): each image's multi-hot labels,
    Negative only for cells at least ``dark_thresh`` dark."""
    targets = np.zeros((len(index), NUM_CLASSES), dtype=np.float32)
    for row, image_id in enumerate(index["ID"]):
        targets[row, list(image_labels[image_id])] = 1.0
    dark = index["darkness"].to_numpy() >= dark_thresh
    targets[dark] = 0.0
    targets[dark, NEGATIVE] = 1.0
    return targets


def _box_key(mask: np.ndarray) -> tuple[int, int, int, int, int]:
    """(y0, x0, y1, x1, area) of a binary mask: identifies a cell of the same mask cache."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return (0, 0, 0, 0, 0)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1, int(mask.sum()))


def pseudo_cell_targets(index: pd.DataFrame, pseudo_csv: str | os.PathLike) -> np.ndarray:
    """(N, 19) float32 soft targets of the N cells of ``index`` from a ``gen_pseudo`` submission CSV.

    Cells are matched by their exact box and area (the CSV's masks come from the same mask cache as the store).
    A store cell the CSV does not mention (too small to be scored) gets zeros.

    Raises:
        ValueError: the CSV lacks images of the store, or holds a cell no store cell matches; names the CSV.
    """
    submission = read_submission(pseudo_csv).set_index("ID")
    missing = sorted(set(index["ID"]) - set(submission.index))
    if missing:
        raise ValueError(
            f"--pseudo_csv {pseudo_csv} lacks {len(missing)} image(s) of the crop store, e.g. {missing[:3]}: "
            "make the pseudo labels and the crops from the same images and mask cache"
        )
    targets = np.zeros((len(index), NUM_CLASSES), dtype=np.float32)
    keys = list(zip(index["y0"], index["x0"], index["y1"], index["x1"], index["area"], strict=True))
    rows_of: dict[tuple[str, tuple], int] = {
        (i, tuple(map(int, k))): r for r, (i, k) in enumerate(zip(index["ID"], keys))
    }
    unmatched = 0
    for image_id in index["ID"].unique():
        row = submission.loc[image_id]
        height, width = int(row["ImageHeight"]), int(row["ImageWidth"])
        predictions = parse_prediction_string(row["PredictionString"], f"{pseudo_csv} ID {image_id}")
        decoded: dict[str, int] = {}
        for prediction in predictions:
            if prediction.rle not in decoded:
                key = _box_key(decode_binary_mask(prediction.rle, height, width))
                decoded[prediction.rle] = rows_of.get((image_id, key), -1)
            cell_row = decoded[prediction.rle]
            if cell_row < 0:
                raise ValueError(
                    f"--pseudo_csv {pseudo_csv}: image {image_id} has a cell (box and area "
                    f"{_box_key(decode_binary_mask(prediction.rle, height, width))}) that no crop of the store "
                    "matches: the pseudo labels were made with another mask cache"
                )
            targets[cell_row, prediction.class_id] = np.clip(prediction.confidence, 0.0, 1.0)
        unmatched += int(len(index[index["ID"] == image_id])) - len(set(decoded.values()))
    if unmatched:
        logger.info(
            "%d store cell(s) have no pseudo label in %s (too small to score): zero targets", unmatched, pseudo_csv
        )
    return targets


def cell_targets(
    mode: str,
    index: pd.DataFrame,
    image_labels: Mapping[str, Sequence[int]],
    pseudo_csv: str | os.PathLike | None = None,
    pseudo_weight: float = 0.5,
    dark_thresh: float = 0.5,
) -> np.ndarray:
    """(N, 19) float32 targets of ``mode`` ('image', 'pseudo' or 'mixed') for the cells of ``index``."""
    if mode not in CELL_TARGETS:
        raise ValueError(f"--cell_targets must be one of {CELL_TARGETS}, got {mode!r}")
    if mode == "image":
        return image_cell_targets(index, image_labels, dark_thresh)
    if pseudo_csv is None:
        raise ValueError(f"--cell_targets {mode} needs --pseudo_csv (a gen_pseudo CSV of run_cam_infer.py)")
    pseudo = pseudo_cell_targets(index, pseudo_csv)
    if mode == "pseudo":
        return pseudo
    if not 0.0 <= pseudo_weight <= 1.0:
        raise ValueError(f"--pseudo_weight must lie in [0, 1], got {pseudo_weight}")
    return (1.0 - pseudo_weight) * image_cell_targets(index, image_labels, dark_thresh) + pseudo_weight * pseudo
