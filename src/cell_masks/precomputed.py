"""Masks a user already has: one file per image ID in a folder.

Cell masks are read from ``{cell_dir}/{ID}.npz`` (key ``arr_0``, as the public Kaggle mask
data sets store them, or ``cell_mask``), else ``{ID}_predictedmask.png`` or ``{ID}.png``
(uint8 or uint16 label images). Nucleus masks come from ``nuclei_dir`` in the same layout
when given; otherwise each cell's nucleus is the part of the cell covered by the classical
blue-channel nucleus foreground. Cells are renumbered 1..K; a cell without nucleus is dropped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from src.cell_masks.classical import ClassicalParams, relabel_consistent, segment_nuclei

logger = logging.getLogger(__name__)

MASK_NAMES = ("{id}.npz", "{id}_predictedmask.png", "{id}.png")


def find_mask_file(folder: str | os.PathLike, image_id: str) -> Path:
    """The first existing mask file of ``image_id`` in ``folder`` (see ``MASK_NAMES``)."""
    candidates = [Path(folder) / name.format(id=image_id) for name in MASK_NAMES]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"image {image_id}: no mask file in {folder} (looked for {', '.join(p.name for p in candidates)})"
    )


def read_label_file(path: str | os.PathLike) -> np.ndarray:
    """(H, W) int64 labels from an ``.npz`` (arr_0 or cell_mask) or a uint8/uint16 PNG."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path) as archive:
            key = next((k for k in ("arr_0", "cell_mask") if k in archive.files), None)
            if key is None:
                raise ValueError(f"{path}: no 'arr_0' or 'cell_mask' array (has {archive.files})")
            labels = archive[key]
    else:
        labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if labels is None:
            raise ValueError(f"unreadable mask image: {path}")
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: expected a 2-D integer label image, got {labels.dtype} {labels.shape}")
    return labels.astype(np.int64)


class PrecomputedSegmenter:
    """Reads cell (and optionally nucleus) labels from folders instead of computing them."""

    name = "precomputed"

    def __init__(self, cell_dir: str | os.PathLike, nuclei_dir: str | os.PathLike | None = None) -> None:
        for flag, folder in (("--precomputed_dir", cell_dir), ("--precomputed_nuclei_dir", nuclei_dir)):
            if folder is not None and not Path(folder).is_dir():
                raise FileNotFoundError(f"backend 'precomputed': {flag} folder not found: {folder}")
        self.cell_dir = Path(cell_dir)
        self.nuclei_dir = None if nuclei_dir is None else Path(nuclei_dir)
        self.params = {
            "cell_dir": str(self.cell_dir.resolve()),
            "nuclei_dir": None if self.nuclei_dir is None else str(self.nuclei_dir.resolve()),
        }

    def __call__(self, rgby: np.ndarray, image_id: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Masks of ``image_id`` at the size of the (H, W, 4) image; returns (nuclei_mask, cell_mask) uint16."""
        if image_id is None:
            raise ValueError("backend 'precomputed' needs the image ID")
        height, width = rgby.shape[:2]
        cells = self._read(self.cell_dir, image_id, (height, width))
        if self.nuclei_dir is not None:
            nucleus_area = self._read(self.nuclei_dir, image_id, (height, width)) > 0
        else:
            nucleus_area = segment_nuclei(rgby[..., 2], ClassicalParams()) > 0
        return relabel_consistent(np.where(nucleus_area, cells, 0), cells)

    @staticmethod
    def _read(folder: Path, image_id: str, shape: tuple[int, int]) -> np.ndarray:
        labels = read_label_file(find_mask_file(folder, image_id))
        if labels.shape != shape:
            logger.debug("image %s: mask %s resized to %s", image_id, labels.shape, shape)
            labels = cv2.resize(labels.astype(np.float32), shape[::-1], interpolation=cv2.INTER_NEAREST).astype(
                np.int64
            )
        return labels
