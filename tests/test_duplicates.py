"""Near-duplicate search: pHash groups, planted re-noised copies, folds that keep a group together."""

import shutil

import numpy as np
import pandas as pd
import pytest

from src.data.duplicates import group_near_duplicates, hash_images
from src.data.folds import load_or_make_folds, make_folds
from src.data.io import read_labels
from src.synthetic.duplicates import plant_near_duplicates
from tests.conftest import run_script


def test_hashes_within_the_distance_share_a_group_transitively():
    hashes = np.zeros((4, 64), dtype=bool)
    hashes[1, :4] = True  # 4 bits from 0
    hashes[2, :8] = True  # 4 bits from 1, 8 from 0: same group through 1
    hashes[3, 20:40] = True  # far from all
    assert group_near_duplicates(hashes, max_distance=4).tolist() == [0, 0, 0, 1]
    assert group_near_duplicates(hashes, max_distance=3).tolist() == [0, 1, 2, 3]


def test_group_folds_keep_each_group_in_one_fold():
    frame = pd.DataFrame({"ID": [f"i{n}" for n in range(40)], "labels": [[n % 5] for n in range(40)]})
    groups = np.arange(40) // 4
    folds = make_folds(frame, n_splits=5, seed=0, groups=groups)
    for group in range(10):
        assert len(set(folds[groups == group])) == 1


@pytest.fixture
def planted(tiny_synthetic, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_synthetic, data, ignore=shutil.ignore_patterns("truth", "folds_*", "cache_*"))
    return data, plant_near_duplicates(data, 4, seed=1)


def test_planted_duplicates_are_found_and_folded_with_their_originals(planted):
    data, copies = planted
    run_script("find_duplicates.py", "--data_dir", str(data), "--splits", "train")
    groups = pd.read_csv(data / "duplicate_groups.csv", dtype={"ID": str})
    group_of = dict(zip(groups["ID"], groups["group"]))
    for copy in copies:
        assert group_of[copy] == group_of[copy.removesuffix("-dup")]
    assert (groups["size"] > 1).sum() == 2 * len(copies)  # only the planted pairs
    folds = load_or_make_folds(read_labels(data / "train.csv"), data)
    fold_of = dict(zip(folds["ID"], folds["fold"]))
    assert all(fold_of[c] == fold_of[c.removesuffix("-dup")] for c in copies)
    assert (data / "folds_k5_seed0_grouped.csv").is_file()


def test_unreadable_image_is_named_and_the_rest_hashed(planted):
    data, _ = planted
    ids = read_labels(data / "train.csv")["ID"].tolist()[:3]
    (data / "train" / f"{ids[1]}_green.png").write_bytes(b"not a png")
    kept, hashes, errors = hash_images(data, [("train", i) for i in ids])
    assert [i for _, i in kept] == [ids[0], ids[2]] and hashes.shape == (2, 64)
    assert len(errors) == 1 and ids[1] in errors[0]
