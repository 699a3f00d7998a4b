"""Per-class thresholds saved as JSON beside the checkpoint they were fitted for, and refused for any other.

The file records the checkpoint's SHA-256, the class count, the TTA mode and the fold they were fitted on.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from src.data.atomic import write_text_atomic
from src.data.classes import NUM_CLASSES
from src.data.io import file_sha256


def checkpoints_sha256(checkpoint_paths: str | os.PathLike | Sequence[str | os.PathLike]) -> str:
    """SHA-256 of one checkpoint, or of the list of an ensemble's checkpoints' hashes (order matters)."""
    if isinstance(checkpoint_paths, (str, os.PathLike)):
        return file_sha256(checkpoint_paths)
    return hashlib.sha256(":".join(file_sha256(p) for p in checkpoint_paths).encode()).hexdigest()


def default_thresholds_path(checkpoint_path: str | os.PathLike, tta: str) -> Path:
    """``{checkpoint}.thresholds_{tta}.json`` beside the checkpoint."""
    return Path(f"{checkpoint_path}.thresholds_{tta}.json")


def save_thresholds(
    path: str | os.PathLike,
    thresholds: np.ndarray,
    checkpoint_path: str | os.PathLike | Sequence[str | os.PathLike],
    **fitted_on: Any,
) -> None:
    """Write (C,) thresholds with the checkpoint's (or ensemble's) hash and how they were fitted (``fitted_on``)."""
    record = {
        "num_classes": int(len(thresholds)),
        "checkpoint": str(checkpoint_path)
        if isinstance(checkpoint_path, (str, os.PathLike))
        else [str(p) for p in checkpoint_path],
        "checkpoint_sha256": checkpoints_sha256(checkpoint_path),
        "thresholds": [round(float(t), 4) for t in thresholds],
        **fitted_on,
    }
    write_text_atomic(path, json.dumps(record, indent=1) + "\n")


def load_thresholds(
    path: str | os.PathLike,
    checkpoint_path: str | os.PathLike | Sequence[str | os.PathLike],
    num_classes: int = NUM_CLASSES,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(C,) thresholds and their record; refused (ValueError naming the file) when fitted for another class
    count or another checkpoint."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"thresholds file not found: {path}")
    try:
        record = json.loads(path.read_text())
        thresholds = np.asarray(record["thresholds"], dtype=np.float64)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path}: not a thresholds file ({error})") from None
    if thresholds.shape != (num_classes,) or record.get("num_classes") != num_classes:
        raise ValueError(f"{path}: thresholds for {len(thresholds)} classes, this model has {num_classes}")
    sha = checkpoints_sha256(checkpoint_path)
    if record.get("checkpoint_sha256") != sha:
        raise ValueError(
            f"{path}: thresholds were fitted for checkpoint {record.get('checkpoint')!r}, "
            f"not for {checkpoint_path} (SHA-256 differs)"
        )
    return thresholds, record
