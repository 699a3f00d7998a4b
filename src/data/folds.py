"""Deterministic multilabel stratified K folds, cached to a CSV beside the data.

When the data folder holds a ``duplicate_groups.csv`` (written by ``find_duplicates.py``), near-duplicate images
are folded together: the stratification runs over groups (labels: the union of the members') and every member
takes its group's fold; the cache is then ``folds_k{n}_seed{seed}_grouped.csv``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd
from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

from src.data.atomic import write_csv_atomic
from src.data.duplicates import DUPLICATE_GROUPS_CSV, read_duplicate_groups
from src.data.io import labels_to_multihot

logger = logging.getLogger(__name__)

N_FOLDS = 5  # the training folds: run_classification.py --n_splits default
FOLD_SEED = 0  # folds never depend on the training seed, so every stage sees the same validation fold


def make_folds(
    frame: pd.DataFrame, n_splits: int = N_FOLDS, seed: int = FOLD_SEED, groups: np.ndarray | None = None
) -> np.ndarray:
    """Fold index (0..n_splits-1) of every row of a frame from ``read_labels``.

    Args:
        frame: rows with ``labels``.
        n_splits: folds.
        seed: stratification seed.
        groups: optional (N,) group id per row; rows of one group land in one fold.
    """
    if groups is not None:
        return _make_group_folds(frame, n_splits, seed, np.asarray(groups))
    if len(frame) < n_splits:
        raise ValueError(f"{len(frame)} images cannot be split into {n_splits} folds")
    multihot = labels_to_multihot(frame["labels"].tolist())
    folds = np.full(len(frame), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (_, val_index) in enumerate(splitter.split(np.zeros(len(frame)), multihot)):
        folds[val_index] = fold
    return folds


def _make_group_folds(frame: pd.DataFrame, n_splits: int, seed: int, groups: np.ndarray) -> np.ndarray:
    if len(groups) != len(frame):
        raise ValueError(f"{len(groups)} group ids for {len(frame)} images")
    unique, inverse = np.unique(groups, return_inverse=True)
    union: list[set[int]] = [set() for _ in unique]
    for index, labels in zip(inverse, frame["labels"]):
        union[index].update(labels)
    group_frame = pd.DataFrame({"labels": [sorted(u) for u in union]})
    return make_folds(group_frame, n_splits, seed)[inverse]


def load_or_make_folds(
    frame: pd.DataFrame, cache_dir: str | os.PathLike, n_splits: int = N_FOLDS, seed: int = FOLD_SEED
) -> pd.DataFrame:
    """``frame`` with a ``fold`` column, read from ``{cache_dir}/folds_k{n}_seed{seed}.csv`` when it
    matches the frame's IDs, else computed and cached atomically; near duplicates listed in
    ``{cache_dir}/duplicate_groups.csv`` share a fold (cache ``..._grouped.csv``)."""
    groups_csv = Path(cache_dir) / DUPLICATE_GROUPS_CSV
    groups = None
    suffix = ""
    if groups_csv.is_file():
        group_of = read_duplicate_groups(groups_csv)
        offset = max(group_of.values(), default=-1) + 1  # an image the scan skipped is its own group
        groups = np.array([group_of.get(i, offset + n) for n, i in enumerate(frame["ID"])], dtype=np.int64)
        suffix = "_grouped"
        logger.info("folding near duplicates together (%s)", groups_csv)
    cache = Path(cache_dir) / f"folds_k{n_splits}_seed{seed}{suffix}.csv"
    frame = frame.copy()
    if cache.is_file():
        cached = pd.read_csv(cache, dtype={"ID": str})
        if set(cached["ID"]) == set(frame["ID"]) and len(cached) == len(frame):
            frame["fold"] = frame["ID"].map(dict(zip(cached["ID"], cached["fold"]))).astype(np.int64)
            return frame
    frame["fold"] = make_folds(frame, n_splits, seed, groups)
    try:
        write_csv_atomic(cache, frame[["ID", "fold"]])
    except OSError as error:  # a read-only data folder: folds are deterministic, recomputing is safe
        logger.warning("could not cache folds to %s (%s); they will be recomputed next time", cache, error)
    return frame
