"""Cell profiles: 1-NN (NSC/NSCB) on constructed sets, bag scores, truth matching, features, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import evaluate_profiles
from src.crops.dataset import UnlabelledCropDataset
from src.crops.store import CropSpec, extract_split, read_index, read_mask_dir
from src.data.io import read_labels
from src.profiles.cell_truth import truth_cell_labels
from src.profiles.embeddings import handcrafted_features
from src.profiles.evaluation import (
    bag_scores,
    image_profiles,
    label_bags,
    nearest_neighbour_accuracy,
    probe_shift_drops,
)
from src.viz.embeddings import plot_embeddings

# two batches (the first axis is a batch effect) of one 'x' and one 'y' image each
PROFILES = np.array([[1.0, 0.5, 0.0], [1.0, 0.0, 0.5], [0.0, 0.5, 0.0], [0.0, 0.0, 0.5]])
LABELS = ["x", "y", "x", "y"]
BATCHES = ["b1", "b1", "b2", "b2"]


def test_nsc_neighbours_of_one_batch_look_alike_and_miss_the_label():
    # images 0 and 1 are nearest each other (cosine 0.8, same batch, other label); 2 and 3 find 0 and 1
    assert nearest_neighbour_accuracy(PROFILES, LABELS) == pytest.approx(0.5)


def test_nscb_looks_outside_the_batch_and_finds_the_label():
    assert nearest_neighbour_accuracy(PROFILES, LABELS, BATCHES) == pytest.approx(1.0)
    assert np.isnan(nearest_neighbour_accuracy(PROFILES, LABELS, ["b"] * 4))  # nobody has an allowed neighbour


def test_image_profiles_average_each_images_cells():
    keys, profiles = image_profiles(np.array(["a", "b", "a"]), np.array([[1.0, 2.0], [5.0, 5.0], [3.0, 4.0]]))
    assert keys == ["a", "b"]
    np.testing.assert_allclose(profiles, [[2.0, 3.0], [5.0, 5.0]])


def test_bag_scores_by_hand():
    label_sets = ["0", "0", "1", "1"]
    targets = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32)
    bags = label_bags(label_sets, bag_size=2)
    assert sorted(sorted(b.tolist()) for b in bags) == [[0, 1], [2, 3]]
    probs = np.array([[0.9, 0.1], [0.7, 0.6], [0.2, 0.3], [0.4, 0.5]])  # bag means (0.8, 0.35), (0.3, 0.4)
    scores = bag_scores(probs, targets, bags)
    # class 0: bag A right, bag B right (0.3 < 0.5); class 1: bag B missed (0.4 < 0.5) -> F1 0 for class 1
    assert scores["bag_macro_f1"] == pytest.approx(0.5)
    assert scores["bag_micro_f1"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))  # tp 1, fp 0, fn 1
    assert scores["bag_auc"] == pytest.approx(1.0)  # each class ranks its bag first


def _two_domain_cells(domain_specific: bool):
    """40 images of 5 cells, domain A (images 0-19) and B; each cell of class 0 or 1; test: images 30-39 and 10-19
    (A and B) are scored, the rest train. The class lies in feature 0 for A and, when ``domain_specific``, in
    feature 1 for B (else feature 0 too)."""
    rng = np.random.default_rng(0)
    image_ids = np.repeat(np.arange(40), 5)
    domains = np.where(image_ids < 20, "A", "B")
    classes = rng.integers(0, 2, len(image_ids))
    features = rng.normal(0.0, 0.3, (len(image_ids), 2))
    signal_column = np.where((domains == "B") & domain_specific, 1, 0)
    features[np.arange(len(image_ids)), signal_column] += 2.0 * classes - 1.0
    targets = np.stack([classes == 0, classes == 1], axis=1).astype(np.float32)
    test = ((image_ids >= 10) & (image_ids < 20)) | (image_ids >= 30)
    return features, targets, image_ids, domains, ~test, test


def test_a_probe_loses_only_on_a_domain_whose_features_differ_when_it_is_unseen():
    drops = probe_shift_drops(*_two_domain_cells(domain_specific=True))
    assert set(drops) == {"A", "B"} and min(drops.values()) > 0.3  # unseen: the class lies in an unused feature
    drops = probe_shift_drops(*_two_domain_cells(domain_specific=False))
    assert max(abs(v) for v in drops.values()) < 0.02  # the same feature in both: nothing to lose


@pytest.fixture(scope="module")
def store(tiny_synthetic, tmp_path_factory):
    root = tmp_path_factory.mktemp("profiles")
    params = {"cell_dir": str(tiny_synthetic / "truth" / "cell_masks")}
    spec = CropSpec(crop_size=16, mask_backend="precomputed", mask_params=params)
    train_ids = read_labels(tiny_synthetic / "train.csv")["ID"].tolist()
    test_ids = pd.read_csv(tiny_synthetic / "sample_submission.csv")["ID"].tolist()
    for split, ids in (("train", train_ids), ("test", test_ids)):
        extract_split(tiny_synthetic, split, ids, root / f"masks_{split}", root / "crops", spec, workers=1)
    return root / "crops"


def test_store_cells_take_their_truth_cells_labels(store, tiny_synthetic):
    index = read_index(store, "train")
    found = truth_cell_labels(index, {"train": read_mask_dir(store, "train")}, tiny_synthetic / "truth")
    truth = pd.read_csv(tiny_synthetic / "truth" / "cell_labels.csv", dtype={"ID": str, "Label": str})
    expected = {(i, c): sorted(int(v) for v in label.split("|")) for i, c, label in truth.itertuples(index=False)}
    assert sum(labels is not None for labels in found) >= 0.9 * len(index)
    for row, labels in zip(index.itertuples(index=False), found, strict=True):
        if labels is not None:  # the store was cut from the truth masks: same cells, same ids
            assert sorted(labels) == expected[(row.ID, row.cell_id)]


def test_handcrafted_intensity_follows_the_green_stain(store):
    index = read_index(store, "train").iloc[:40].reset_index(drop=True)
    features = handcrafted_features(store, index)
    dataset = UnlabelledCropDataset(store, index)
    green = [dataset[i]["image"][1].float() for i in range(len(index))]
    inside_means = [g[dataset[i]["image"][:4].amax(dim=0) > 0].mean().item() for i, g in enumerate(green)]
    np.testing.assert_allclose(features[:, 1], inside_means, rtol=1e-4)  # feature 1: green mean inside the cell


def test_cli_scores_each_model_and_reuses_saved_embeddings(store, tiny_synthetic, tmp_path, capsys):
    argv = ["--data_dir", str(tiny_synthetic), "--crop_dir", str(store), "--out_dir", str(tmp_path),
            "--model", "hand=handcrafted", "--model", 'random=random:cell_cnn:{"widths": [8, 16]}', "--bag_size", "2"]  # fmt: skip
    evaluate_profiles.main(evaluate_profiles.parse_args(argv))
    results = json.loads((tmp_path / "profiles.json").read_text())
    assert set(results) == {"hand", "random"}
    for row in results.values():
        assert set(evaluate_profiles.COLUMNS) <= set(row) and 0.0 <= row["probe_mAP"] <= 1.0
    assert "| hand |" in capsys.readouterr().out
    saved = (tmp_path / "hand.npz").stat().st_mtime_ns
    evaluate_profiles.main(evaluate_profiles.parse_args(argv))
    assert (tmp_path / "hand.npz").stat().st_mtime_ns == saved
    assert json.loads((tmp_path / "profiles.json").read_text()) == results
    with pytest.raises(FileNotFoundError, match="--shift_column needs .*metadata.csv"):
        evaluate_profiles.main(evaluate_profiles.parse_args([*argv, "--shift_column", "cell_line"]))


def test_picture_is_written(tmp_path):
    rng = np.random.default_rng(0)
    index = pd.DataFrame({"ID": [f"i{k // 4}" for k in range(48)], "split": "test"})
    truth = [[k % 3] for k in range(48)]
    table = pd.DataFrame({"ID": [f"i{k}" for k in range(12)], "batch": ["b0", "b1"] * 6})
    plot_embeddings(rng.normal(size=(48, 6)), index, truth, table, tmp_path / "emb.png", title="test")
    assert (tmp_path / "emb.png").stat().st_size > 10_000
