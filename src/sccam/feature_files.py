"""Files of the SC-CAM features (numpy only, so k-means never imports torch).

``{save_folder}/feature/R{round}_feature.npy`` (N, C) float32, ``R{round}_ids.csv`` (ID, Label in
the same row order) and ``R{round}_feature.yaml`` (checkpoint, data and input size used).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from src.data.atomic import atomic_path, write_csv_atomic, write_text_atomic


def feature_files(save_folder: str | os.PathLike, round_nb: int) -> tuple[Path, Path, Path]:
    """(features .npy, IDs .csv, metadata .yaml) of the features taken from a round-``round_nb`` model."""
    folder = Path(save_folder) / "feature"
    return folder / f"R{round_nb}_feature.npy", folder / f"R{round_nb}_ids.csv", folder / f"R{round_nb}_feature.yaml"


def save_features(
    save_folder: str | os.PathLike, round_nb: int, ids: list[str], labels: list[str], features: np.ndarray, **meta: Any
) -> Path:
    """Write the (N, C) features, their ID/Label table and ``meta`` (how they were made) atomically; returns the .npy path."""
    if len(ids) != len(features) or len(labels) != len(ids):
        raise ValueError(f"{len(ids)} IDs, {len(labels)} labels and {len(features)} feature rows differ")
    npy_path, ids_path, meta_path = feature_files(save_folder, round_nb)
    with atomic_path(npy_path) as tmp:
        np.save(tmp, features.astype(np.float32))
    write_csv_atomic(ids_path, pd.DataFrame({"ID": ids, "Label": labels}))
    meta = {"round_nb": round_nb, "num_images": len(ids), "feature_dim": int(features.shape[1]), **meta}
    write_text_atomic(meta_path, yaml.safe_dump(meta))
    return npy_path


def load_features(save_folder: str | os.PathLike, round_nb: int) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """(ID/Label table, (N, C) features, metadata) written by :func:`save_features`; missing or mismatched files raise."""
    npy_path, ids_path, meta_path = feature_files(save_folder, round_nb)
    for path in (npy_path, ids_path, meta_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: run extract_feature.py with a round-{round_nb} checkpoint first"
            )
    table = pd.read_csv(ids_path, dtype={"ID": str, "Label": str}, keep_default_na=False)
    features = np.load(npy_path)
    if features.ndim != 2 or len(features) != len(table):
        raise ValueError(f"{npy_path} has shape {features.shape} but {ids_path} lists {len(table)} images")
    with open(meta_path) as handle:
        meta = yaml.safe_load(handle) or {}
    return table, features, meta
