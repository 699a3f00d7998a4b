"""Multilabel stratified folds: deterministic, stratified, cached and recomputed when IDs change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src.data.folds import load_or_make_folds, make_folds
from src.data.io import labels_to_multihot


def label_frame(num_images: int = 40) -> pd.DataFrame:
    """Images whose classes occur 10, 20 and 40 times (multiples of 5 folds)."""
    labels = [[0] if i % 4 == 0 else [1, 2] if i % 4 == 1 else [2] if i % 4 == 2 else [2, 3] for i in range(num_images)]
    return pd.DataFrame({"ID": [f"img{i:03d}" for i in range(num_images)], "labels": labels})


def test_folds_are_deterministic_and_seeded() -> None:
    frame = label_frame()
    first = make_folds(frame, n_splits=5, seed=0)
    assert np.array_equal(first, make_folds(frame, n_splits=5, seed=0))
    assert not np.array_equal(first, make_folds(frame, n_splits=5, seed=1))


def test_folds_are_balanced_and_stratified() -> None:
    frame = label_frame()
    folds = make_folds(frame, n_splits=5, seed=0)
    assert sorted(np.bincount(folds).tolist()) == [8] * 5
    multihot = labels_to_multihot(frame["labels"].tolist())
    for fold in range(5):
        per_class = multihot[folds == fold].sum(axis=0)
        assert per_class[[0, 1, 3]].tolist() == [2, 2, 2]  # each class 10 times: 2 per fold
        assert per_class[2] == 6  # class 2 is in 30 images


def test_too_few_images_for_the_folds() -> None:
    with pytest.raises(ValueError, match="3 images cannot be split into 5 folds"):
        make_folds(label_frame(3), n_splits=5)


def test_fold_cache_is_written_and_reused(tmp_path: Path) -> None:
    frame = label_frame()
    folded = load_or_make_folds(frame, tmp_path, n_splits=5, seed=0)
    cache = tmp_path / "folds_k5_seed0.csv"
    assert cache.is_file()
    assert np.array_equal(folded["fold"].to_numpy(), make_folds(frame, 5, 0))
    assert "fold" not in frame.columns  # the input frame is not modified
    # Overwrite the cache with a recognisable assignment: a reuse returns it, in the frame's order.
    cached = pd.DataFrame({"ID": frame["ID"][::-1], "fold": np.arange(40)[::-1] % 5})
    cached.to_csv(cache, index=False)
    reused = load_or_make_folds(frame, tmp_path, n_splits=5, seed=0)
    assert reused["fold"].tolist() == (np.arange(40) % 5).tolist()


def test_fold_cache_is_recomputed_when_ids_change(tmp_path: Path) -> None:
    frame = label_frame()
    load_or_make_folds(frame, tmp_path, n_splits=5, seed=0)
    cache = tmp_path / "folds_k5_seed0.csv"
    smaller = frame.iloc[:35].reset_index(drop=True)
    refolded = load_or_make_folds(smaller, tmp_path, n_splits=5, seed=0)
    assert np.array_equal(refolded["fold"].to_numpy(), make_folds(smaller, 5, 0))
    assert pd.read_csv(cache)["ID"].tolist() == smaller["ID"].tolist()
    renamed = smaller.assign(ID=[f"other{i}" for i in range(35)])
    assert load_or_make_folds(renamed, tmp_path, n_splits=5, seed=0)["ID"].tolist() == renamed["ID"].tolist()
    assert pd.read_csv(cache)["ID"].tolist() == renamed["ID"].tolist()
    assert (tmp_path / "folds_k4_seed0.csv").exists() is False
    load_or_make_folds(frame, tmp_path, n_splits=4, seed=0)
    assert (tmp_path / "folds_k4_seed0.csv").is_file()  # another K is another cache file
