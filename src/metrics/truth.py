"""Per-cell truth of a benchmark, and the image-label floor submission built from it.

Truth layout (written by ``make_synthetic_data.py``)::

    {truth_dir}/cell_masks/{ID}.png     (H, W) uint16 cell instance ids, 0 = background
    {truth_dir}/nuclei_masks/{ID}.png   (H, W) uint16, the nucleus of cell k has id k
    {truth_dir}/cell_labels.csv         ID,cell_id,Label (Label: '|'-joined class ids, 18 = negative)
"""

from __future__ import annotations

import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from src.data.io import parse_label
from src.submission.codec import SUBMISSION_COLUMNS, cell_mask_predictions

logger = logging.getLogger(__name__)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class CellTruth:
    """Cell labels of a set of images; the masks are read on demand.

    Attributes:
        truth_dir: folder holding ``cell_masks/`` and ``cell_labels.csv``.
        ids: the image IDs, in order.
        cell_labels: ``{ID: {cell_id: (class ids, ...)}}``; an image without cells maps to ``{}``.
    """

    truth_dir: Path
    ids: tuple[str, ...]
    cell_labels: dict[str, dict[int, tuple[int, ...]]]

    def cell_mask_path(self, image_id: str) -> Path:
        return self.truth_dir / "cell_masks" / f"{image_id}.png"

    def image_size(self, image_id: str) -> tuple[int, int]:
        """(H, W) of the cell mask, read from the PNG header only."""
        return png_size(self.cell_mask_path(image_id))

    def image_labels(self, image_id: str) -> tuple[int, ...]:
        """Sorted union of the labels of the image's cells."""
        return tuple(sorted({c for labels in self.cell_labels[image_id].values() for c in labels}))

    def read_cell_mask(self, image_id: str) -> np.ndarray:
        """The (H, W) uint16 instance mask, checked against ``cell_labels.csv``.

        Raises:
            ValueError: when the mask is not a 2-D 16/8-bit image, or its cell ids differ
                from the labelled ones.
        """
        path = self.cell_mask_path(image_id)
        cell_mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if cell_mask is None:
            raise ValueError(f"unreadable truth cell mask of {image_id}: {path}")
        if cell_mask.ndim != 2 or cell_mask.dtype not in (np.uint8, np.uint16):
            raise ValueError(
                f"truth cell mask of {image_id} must be 2-D uint16, got {cell_mask.shape} {cell_mask.dtype}"
            )
        present = set(np.flatnonzero(np.bincount(cell_mask.ravel())).tolist()) - {0}
        labelled = set(self.cell_labels[image_id])
        if present != labelled:
            raise ValueError(
                f"truth of {image_id}: cells in {path.name} without labels {sorted(present - labelled)[:5]}, "
                f"labelled cells absent from the mask {sorted(labelled - present)[:5]}"
            )
        return cell_mask.astype(np.uint16, copy=False)


def png_size(path: Path) -> tuple[int, int]:
    """(H, W) of a PNG from its IHDR chunk, without decoding the pixels."""
    with open(path, "rb") as handle:
        header = handle.read(24)
    if len(header) < 24 or header[:8] != _PNG_SIGNATURE or header[12:16] != b"IHDR":
        raise ValueError(f"not a PNG file: {path}")
    width, height = struct.unpack(">II", header[16:24])
    return height, width


def read_cell_labels(csv_path: Path) -> dict[str, dict[int, tuple[int, ...]]]:
    """``cell_labels.csv`` as ``{ID: {cell_id: class ids}}``; errors name the row."""
    if not csv_path.is_file():
        raise FileNotFoundError(f"truth cell label file not found: {csv_path}")
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    missing = [c for c in ("ID", "cell_id", "Label") if c not in frame.columns]
    if missing:
        raise ValueError(f"{csv_path}: missing column(s) {missing} (has {list(frame.columns)})")
    cell_labels: dict[str, dict[int, tuple[int, ...]]] = {}
    for row, (image_id, cell_text, label) in enumerate(zip(frame["ID"], frame["cell_id"], frame["Label"])):
        where = f"{csv_path} row {row + 2} (ID {image_id})"
        try:
            cell_id = int(cell_text)
        except ValueError:
            raise ValueError(f"{where}: cell_id {cell_text!r} is not an integer") from None
        if not 1 <= cell_id <= 65535:
            raise ValueError(f"{where}: cell_id {cell_id} outside 1..65535")
        cells = cell_labels.setdefault(image_id, {})
        if cell_id in cells:
            raise ValueError(f"{where}: duplicate cell_id {cell_id}")
        cells[cell_id] = tuple(sorted(set(parse_label(label, where))))
    return cell_labels


def load_truth(truth_dir: str | os.PathLike, ids: list[str] | None = None) -> CellTruth:
    """Read ``cell_labels.csv`` and check that every image has a cell mask.

    Args:
        truth_dir: the benchmark's ``truth/`` folder.
        ids: images to keep; default all masks in ``cell_masks/`` (sorted).

    Raises:
        FileNotFoundError: naming the ID and the missing mask file.
    """
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise FileNotFoundError(f"truth folder not found: {truth_dir}")
    labels = read_cell_labels(truth_dir / "cell_labels.csv")
    if ids is None:
        ids = sorted(p.stem for p in (truth_dir / "cell_masks").glob("*.png"))
    ids = [str(i) for i in ids]
    for image_id in ids:
        path = truth_dir / "cell_masks" / f"{image_id}.png"
        if not path.is_file():
            raise FileNotFoundError(f"no truth for image {image_id}: missing cell mask {path}")
    return CellTruth(truth_dir, tuple(ids), {i: labels.get(i, {}) for i in ids})


def image_label_floor_submission(
    truth_dir: str | os.PathLike | CellTruth, ids: list[str] | None = None
) -> pd.DataFrame:
    """Kaggle submission giving every truth cell all of its image's labels at confidence 1.

    The image's labels are the union of its cells' labels; this is what a method without
    single-cell reasoning scores with perfect cell masks and perfect image labels.

    Returns:
        DataFrame with columns ID, ImageWidth, ImageHeight, PredictionString.
    """
    truth = truth_dir if isinstance(truth_dir, CellTruth) else load_truth(truth_dir, ids)
    ids = list(truth.ids) if ids is None else [str(i) for i in ids]
    unknown = [i for i in ids if i not in truth.cell_labels]
    if unknown:
        raise ValueError(f"no truth loaded for image(s) {unknown[:5]} (truth {truth.truth_dir})")
    rows = []
    for image_id in tqdm(ids, desc="floor submission", unit="image", disable=len(ids) < 50):
        cell_mask = truth.read_cell_mask(image_id)
        image_labels = truth.image_labels(image_id)
        scores = {cell_id: dict.fromkeys(image_labels, 1.0) for cell_id in sorted(truth.cell_labels[image_id])}
        height, width = cell_mask.shape
        rows.append((image_id, width, height, cell_mask_predictions(cell_mask, scores)))
    return pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)
