"""Kaggle HPA submission codec.

A submission has the header ``ID,ImageWidth,ImageHeight,PredictionString``;
PredictionString is space-joined triplets ``class confidence rle``, one per
(cell, class). ``rle`` is base64 of zlib (level 9) of the pycocotools RLE counts of
the Fortran-ordered uint8 cell mask.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from pycocotools import mask as coco_mask

from src.data.atomic import write_csv_atomic
from src.data.classes import NUM_CLASSES

SUBMISSION_COLUMNS = ["ID", "ImageWidth", "ImageHeight", "PredictionString"]


def encode_binary_mask(mask: np.ndarray) -> str:
    """(H, W) bool mask to the competition's ascii RLE string."""
    if mask.ndim != 2:
        raise ValueError(f"expected an (H, W) mask, got shape {mask.shape}")
    rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8))[..., None])[0]
    return base64.b64encode(zlib.compress(rle["counts"], zlib.Z_BEST_COMPRESSION)).decode("ascii")


def _coco_counts_string(encoded: str) -> bytes:
    """The pycocotools compressed counts string inside an ascii RLE; ValueError when it is not one."""
    try:
        return zlib.decompress(base64.b64decode(encoded, validate=True))
    except (binascii.Error, zlib.error, ValueError) as error:
        raise ValueError(f"invalid RLE string {encoded[:40]!r}: {error}") from None


def decode_rle_counts(encoded: str) -> np.ndarray:
    """Run lengths of an ascii RLE: background, foreground, background, ... in Fortran order.

    Vectorised reading of the pycocotools compressed counts string (6-bit characters
    from '0', 5 data bits with a continuation bit, sign bit in the last character,
    counts from the third on stored as the difference to the count two before).

    Returns:
        (K,) int64 run lengths; they sum to H * W of the encoded mask.
    """
    chars = np.frombuffer(_coco_counts_string(encoded), dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64)
    if chars.min() < 0 or chars.max() > 63 or chars[-1] & 0x20:
        raise ValueError(f"invalid RLE string {encoded[:40]!r}: malformed counts")
    ends = np.flatnonzero((chars & 0x20) == 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > 12:
        raise ValueError(f"invalid RLE string {encoded[:40]!r}: count too large")
    position = np.arange(chars.size) - np.repeat(starts, lengths)
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    negative = (chars[ends] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * lengths[negative])
    counts = values.copy()
    counts[1::2] = np.cumsum(values[1::2])
    counts[2::2] = np.cumsum(values[2::2])
    if counts.min() < 0:
        raise ValueError(f"invalid RLE string {encoded[:40]!r}: negative run length")
    return counts


def decode_binary_mask(encoded: str, height: int, width: int) -> np.ndarray:
    """Inverse of ``encode_binary_mask``: an (H, W) bool mask.

    Raises ValueError when the string is not an RLE or encodes a mask of another size
    (pycocotools alone silently fills a too-short RLE with foreground).
    """
    total = int(decode_rle_counts(encoded).sum())
    if total != height * width:
        raise ValueError(f"RLE encodes {total} pixels, not {height}x{width} = {height * width}")
    counts = _coco_counts_string(encoded)
    return coco_mask.decode({"size": [height, width], "counts": counts}).astype(bool)


@dataclass(frozen=True)
class CellPrediction:
    """One (cell, class) triplet of a PredictionString."""

    class_id: int
    confidence: float
    rle: str


def format_prediction_string(predictions: list[CellPrediction]) -> str:
    return " ".join(f"{p.class_id} {p.confidence:.6g} {p.rle}" for p in predictions)


def parse_prediction_string(text: object, where: str = "PredictionString") -> list[CellPrediction]:
    """Split a PredictionString into triplets; ``where`` names the row in errors."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        return []
    tokens = str(text).split()
    if len(tokens) % 3:
        raise ValueError(f"{where}: {len(tokens)} tokens, not a multiple of 3 (class confidence rle)")
    predictions = []
    for index in range(0, len(tokens), 3):
        class_tok, conf_tok, rle = tokens[index : index + 3]
        try:
            class_id, confidence = int(class_tok), float(conf_tok)
        except ValueError:
            raise ValueError(
                f"{where}: triplet {index // 3} has class {class_tok!r} and confidence {conf_tok!r}"
            ) from None
        if not math.isfinite(confidence):
            raise ValueError(f"{where}: triplet {index // 3} has non-finite confidence {conf_tok!r}")
        if not 0 <= class_id < NUM_CLASSES:
            raise ValueError(f"{where}: triplet {index // 3} has class {class_id} outside 0..{NUM_CLASSES - 1}")
        predictions.append(CellPrediction(class_id, confidence, rle))
    return predictions


def cell_mask_predictions(cell_mask: np.ndarray, cell_scores: dict[int, dict[int, float]]) -> str:
    """PredictionString for an (H, W) instance mask and ``{cell_id: {class_id: confidence}}``."""
    predictions = []
    for cell_id, scores in cell_scores.items():
        rle = encode_binary_mask(cell_mask == cell_id)
        predictions.extend(CellPrediction(int(c), float(s), rle) for c, s in scores.items())
    return format_prediction_string(predictions)


def write_submission(path: str | os.PathLike, rows: list[dict]) -> None:
    """Write rows (dicts with the four submission columns) atomically."""
    frame = pd.DataFrame(rows, columns=SUBMISSION_COLUMNS)
    frame["PredictionString"] = frame["PredictionString"].fillna("")
    write_csv_atomic(path, frame)


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check a submission CSV; empty PredictionStrings become ''."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"submission not found: {path}")
    frame = pd.read_csv(path, dtype={"ID": str, "PredictionString": str}, keep_default_na=False)
    missing = [c for c in SUBMISSION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} (has {list(frame.columns)})")
    duplicated = frame["ID"][frame["ID"].duplicated()].unique()
    if len(duplicated):
        raise ValueError(f"{path}: duplicate ID(s): {', '.join(duplicated[:5])}")
    return frame
