"""Pseudo segmentation targets: per-image cell masks with per-cell class confidences, and the 20-channel target.

``create_segm_labels.py`` turns a pseudo-label submission (one triplet ``class confidence rle`` per
(cell, class)) into one compressed file per image, ``{label_dir}/{ID}.npz``, holding

- ``cell_mask``: (H, W) uint16, cell k (1..K) in the order of its first triplet, 0 = background;
- ``confidences``: (K, 19) float32, the pseudo-label confidence of every class for every cell (0 = absent).

The class threshold is applied only at training time (:func:`segmentation_target`), so one label
folder serves every ``--segm_thresh``. Rows that could not be decoded are listed, with the reason,
in ``{label_dir}/segm_label_errors.csv``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from src.data.atomic import atomic_path
from src.data.classes import BACKGROUND, NEGATIVE, NUM_CLASSES, NUM_SEGM_CHANNELS
from src.data.io import longer_side_at_most
from src.submission.codec import decode_binary_mask, parse_prediction_string

logger = logging.getLogger(__name__)

TARGET_SUFFIX = ".npz"
ERROR_FILE = "segm_label_errors.csv"
ERROR_COLUMNS = ["ID", "error"]


@dataclass
class CellPseudoLabels:
    """Pseudo labels of one image.

    Attributes:
        cell_mask: (H, W) uint16 cell ids 1..K, 0 = background.
        confidences: (K, 19) float32; row k - 1 belongs to cell k.
    """

    cell_mask: np.ndarray
    confidences: np.ndarray

    @property
    def num_cells(self) -> int:
        return int(self.confidences.shape[0])


def check_segm_thresh(thresh: float) -> None:
    """Raise ValueError unless 0 < thresh < 1 (the confidence a cell needs to join a class)."""
    if not 0.0 < float(thresh) < 1.0:
        raise ValueError(f"--segm_thresh must lie in (0, 1), got {thresh}")


def pseudo_labels_from_prediction_string(
    prediction_string: object, height: int, width: int, where: str, max_side: int = 0
) -> CellPseudoLabels:
    """Decode the cells of one pseudo-label row.

    Triplets with the same RLE belong to one cell; a class seen twice for a cell keeps its
    highest confidence.

    Args:
        prediction_string: space-joined ``class confidence rle`` triplets.
        height, width: the image size the RLEs encode.
        where: names the row in errors (file, line, ID).
        max_side: store the cell mask with its longer side at most this (nearest neighbour); 0 keeps it.

    Raises:
        ValueError: empty PredictionString, malformed triplets or RLEs, or a size that does not fit.
    """
    predictions = parse_prediction_string(prediction_string, where)
    if not predictions:
        raise ValueError(f"{where}: empty PredictionString (no cell)")
    if height <= 0 or width <= 0:
        raise ValueError(f"{where}: image size {width}x{height} (WxH) is not positive")
    cell_index: dict[str, int] = {}
    for prediction in predictions:
        cell_index.setdefault(prediction.rle, len(cell_index) + 1)
    if len(cell_index) > np.iinfo(np.uint16).max:
        raise ValueError(f"{where}: {len(cell_index)} cells do not fit a uint16 mask")
    cell_mask = np.zeros((height, width), dtype=np.uint16)
    for rle, cell_id in cell_index.items():
        try:
            mask = decode_binary_mask(rle, height, width)
        except ValueError as error:
            raise ValueError(f"{where}: cell {cell_id}: {error}") from None
        cell_mask[mask] = cell_id
    confidences = np.zeros((len(cell_index), NUM_CLASSES), dtype=np.float32)
    rows = np.array([cell_index[p.rle] - 1 for p in predictions])
    classes = np.array([p.class_id for p in predictions])
    np.maximum.at(confidences, (rows, classes), np.array([p.confidence for p in predictions], dtype=np.float32))
    h, w = longer_side_at_most(height, width, max_side)
    if (h, w) != (height, width):
        cell_mask = cv2.resize(cell_mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return CellPseudoLabels(cell_mask, confidences)


def target_path(label_dir: str | os.PathLike, image_id: str) -> Path:
    """``{label_dir}/{ID}.npz``."""
    return Path(label_dir) / f"{image_id}{TARGET_SUFFIX}"


def write_pseudo_labels(path: str | os.PathLike, labels: CellPseudoLabels) -> None:
    """Store one image's pseudo labels as a compressed npz, atomically."""
    with atomic_path(path) as tmp:
        np.savez_compressed(tmp, cell_mask=labels.cell_mask, confidences=labels.confidences)


def read_pseudo_labels(path: str | os.PathLike) -> CellPseudoLabels:
    """Inverse of :func:`write_pseudo_labels`, checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: a file that is not a pseudo-label npz (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"segmentation pseudo label not found: {path}")
    try:
        with np.load(path) as data:
            cell_mask, confidences = data["cell_mask"], data["confidences"]
    except (KeyError, ValueError, OSError) as error:
        raise ValueError(
            f"{path}: not a segmentation pseudo-label file ({error}); re-run create_segm_labels.py"
        ) from None
    if cell_mask.ndim != 2 or confidences.ndim != 2 or confidences.shape[1] != NUM_CLASSES:
        raise ValueError(f"{path}: cell_mask {cell_mask.shape} / confidences {confidences.shape} have wrong shapes")
    if cell_mask.size and int(cell_mask.max()) > confidences.shape[0]:
        raise ValueError(f"{path}: cell id {int(cell_mask.max())} has no confidence row ({confidences.shape[0]} rows)")
    return CellPseudoLabels(cell_mask.astype(np.uint16, copy=False), confidences.astype(np.float32, copy=False))


def target_lookup(labels: CellPseudoLabels, thresh: float) -> np.ndarray:
    """(K + 1, 20) uint8 table: row k holds the target channels of cell k, row 0 those of the background.

    Channel c < 19: the cell's class-c confidence is >= ``thresh``; a cell that reaches ``thresh`` in no class is
    Negative (channel 18); channel 19: background (no cell).
    """
    check_segm_thresh(thresh)
    member = labels.confidences >= thresh  # (K, 19)
    member[:, NEGATIVE] |= ~member.any(axis=1)
    lookup = np.zeros((labels.num_cells + 1, NUM_SEGM_CHANNELS), dtype=np.uint8)
    lookup[1:, :NUM_CLASSES] = member
    lookup[0, BACKGROUND] = 1
    return lookup


def resized_cell_mask(labels: CellPseudoLabels, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) uint16 cell ids at ``shape`` (nearest neighbour, so every pixel keeps a real id)."""
    cell_mask = labels.cell_mask
    if cell_mask.shape != tuple(shape):
        cell_mask = cv2.resize(cell_mask, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
    return cell_mask


def segmentation_target(labels: CellPseudoLabels, thresh: float, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W, 20) uint8 training target of one image: :func:`target_lookup` of every pixel's cell.

    Args:
        labels: the image's pseudo labels.
        thresh: confidence a cell needs to join a class, in (0, 1).
        shape: (H, W) of the target (the cell mask is resized with nearest neighbour).
    """
    return target_lookup(labels, thresh)[resized_cell_mask(labels, shape)]


def read_error_file(label_dir: str | os.PathLike) -> dict[str, str]:
    """``{ID: reason}`` of ``{label_dir}/segm_label_errors.csv`` (empty when the file is absent)."""
    path = Path(label_dir) / ERROR_FILE
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    return dict(zip(frame["ID"], frame["error"]))


class SegmTargetReader:
    """The data module's ``mask_reader``: ``reader(ID, (H, W)) -> (cell ids, lookup)``, the (H, W) uint16 cell ids
    and the (K + 1, 20) uint8 :func:`target_lookup`. The data set augments the one-channel ids with the image and
    expands them afterwards, ``lookup[ids]`` = the (H, W, 20) :func:`segmentation_target` (nearest-neighbour
    geometry commutes with the lookup), so 20 times fewer bytes go through the augmentation.

    Args:
        label_dir: the ``--save_folder`` of ``create_segm_labels.py``.
        thresh: ``--segm_thresh``, in (0, 1).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: ``thresh`` outside (0, 1).
    """

    def __init__(self, label_dir: str | os.PathLike, thresh: float):
        check_segm_thresh(thresh)
        self.label_dir = Path(label_dir)
        if not self.label_dir.is_dir():
            raise FileNotFoundError(
                f"--segm_label_dir {self.label_dir} does not exist (the --save_folder of create_segm_labels.py)"
            )
        self.thresh = float(thresh)

    def check_ids(self, image_ids: Iterable[str]) -> None:
        """Raise ValueError naming the images without a pseudo-label file (and why, when the error file knows)."""
        image_ids = list(image_ids)
        missing = [i for i in image_ids if not target_path(self.label_dir, i).is_file()]
        if not missing:
            return
        errors = read_error_file(self.label_dir)
        failed = [f"{i} ({errors[i]})" for i in missing if i in errors][:3]
        detail = (
            f"; failed in create_segm_labels.py ({self.label_dir / ERROR_FILE}): {', '.join(failed)}" if failed else ""
        )
        raise ValueError(
            f"--segm_label_dir {self.label_dir} lacks pseudo labels for {len(missing)} of {len(image_ids)} "
            f"training images, e.g. {', '.join(missing[:3])}{detail}; was it made from another image set? "
            "Run run_cam_infer.py (gen_pseudo) and create_segm_labels.py on this --data_dir"
        )

    def __call__(self, image_id: str, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        labels = read_pseudo_labels(target_path(self.label_dir, image_id))
        return resized_cell_mask(labels, shape), target_lookup(labels, self.thresh)
