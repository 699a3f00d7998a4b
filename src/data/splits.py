"""Which images a stage reads: the IDs of a split (or of one training fold) and a check that their files exist."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from src.data.classes import CHANNELS
from src.data.folds import N_FOLDS, load_or_make_folds
from src.data.io import channel_path, read_labels

METADATA = "metadata.csv"  # ID, split, cell_line, batch of a benchmark with domains (make_synthetic_data.py)


def split_image_ids(data_dir: str | os.PathLike, split: str, fold: int = -1, n_splits: int = N_FOLDS) -> list[str]:
    """IDs of a split: ``sample_submission.csv`` for 'test', ``train.csv`` for 'train'; with ``fold`` >= 0
    only that fold of the ``n_splits`` training folds (the validation fold ``--val_fold`` of training)."""
    data_dir = Path(data_dir)
    if split == "test":
        csv = data_dir / "sample_submission.csv"
        if not csv.is_file():
            raise FileNotFoundError(f"split 'test' needs {csv}")
        return pd.read_csv(csv, dtype={"ID": str})["ID"].tolist()
    if split == "train":
        frame = read_labels(data_dir / "train.csv")
        if fold < 0:
            return frame["ID"].tolist()
        if fold >= n_splits:
            raise ValueError(f"fold must lie in 0..{n_splits - 1}, got {fold}")
        frame = load_or_make_folds(frame, data_dir, n_splits)
        return frame.loc[frame["fold"] == fold, "ID"].tolist()
    raise ValueError(f"split must be 'train' or 'test', got {split!r}")


def check_images_exist(data_dir: str | os.PathLike, split: str, ids: list[str], ext: str) -> None:
    """Raise FileNotFoundError listing the first missing channel files, before any heavy work."""
    paths = (channel_path(data_dir, image_id, color, split, ext) for image_id in ids for color in CHANNELS)
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} channel file(s) of the {split} split are missing, e.g. {missing[:3]}")


def read_metadata(data_dir: str | os.PathLike, needed_by: str) -> pd.DataFrame:
    """``metadata.csv`` of ``data_dir`` (ID, split, cell_line, batch; all strings).

    Raises:
        FileNotFoundError: no such file; the message names ``needed_by`` (the option that asked for it).
        ValueError: a column is missing.
    """
    path = Path(data_dir) / METADATA
    if not path.is_file():
        raise FileNotFoundError(f"{needed_by} needs {path} (make_synthetic_data.py --cell_lines/--batches writes it)")
    frame = pd.read_csv(path, dtype=str)
    missing = sorted({"ID", "split", "cell_line", "batch"} - set(frame.columns))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    return frame
