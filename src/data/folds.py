"""Deterministic multilabel stratified K folds, cached to a CSV beside the data."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from src.data.atomic import write_csv_atomic
from src.data.io import labels_to_multihot

logger = logging.getLogger(__name__)

N_FOLDS = 5  # the training folds: run_classification.py --n_splits default
FOLD_SEED = 0  # folds never depend on the training seed, so every stage sees the same validation fold


def make_folds(frame: pd.DataFrame, n_splits: int = N_FOLDS, seed: int = FOLD_SEED) -> np.ndarray:
    """Fold index (0..n_splits-1) of every row of a frame from ``read_labels``."""
    if len(frame) < n_splits:
        raise ValueError(f"{len(frame)} images cannot be split into {n_splits} folds")
    multihot = labels_to_multihot(frame["labels"].tolist())
    folds = np.full(len(frame), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (_, val_index) in enumerate(splitter.split(np.zeros(len(frame)), multihot)):
        folds[val_index] = fold
    return folds


def load_or_make_folds(
    frame: pd.DataFrame, cache_dir: str | os.PathLike, n_splits: int = N_FOLDS, seed: int = FOLD_SEED
) -> pd.DataFrame:
    """``frame`` with a ``fold`` column, read from ``{cache_dir}/folds_k{n}_seed{seed}.csv`` when it
    matches the frame's IDs, else computed and cached atomically."""
    cache = Path(cache_dir) / f"folds_k{n_splits}_seed{seed}.csv"
    frame = frame.copy()
    if cache.is_file():
        cached = pd.read_csv(cache, dtype={"ID": str})
        if set(cached["ID"]) == set(frame["ID"]) and len(cached) == len(frame):
            frame["fold"] = frame["ID"].map(dict(zip(cached["ID"], cached["fold"]))).astype(np.int64)
            return frame
    frame["fold"] = make_folds(frame, n_splits, seed)
    try:
        write_csv_atomic(cache, frame[["ID", "fold"]])
    except OSError as error:  # a read-only data folder: folds are deterministic, recomputing is safe
        logger.warning("could not cache folds to %s (%s); they will be recomputed next time", cache, error)
    return frame
