import numpy as np
import pytest

from src.sccam.feature_files import load_features, save_features
from src.sccam.sub_labels import cluster_sub_labels, read_sub_label_table, write_sub_label_table


def _features_with_two_groups_per_class(rng: np.random.Generator):
    """Images of classes 3 and 11; within each class two well separated feature groups."""
    labels, features = [], []
    for index in range(40):
        labels.append([3] if index < 20 else ([11] if index < 30 else [3, 11]))
        centre = 10.0 if index % 2 else -10.0
        features.append(rng.normal(centre, 0.5, size=8))
    return np.array(features), labels


def test_sub_labels_are_consistent_with_parent_labels():
    features, labels = _features_with_two_groups_per_class(np.random.default_rng(0))
    k = 4
    sub_labels = cluster_sub_labels(features, labels, k_cluster=k, scale_feature=True)
    for parents, subs in zip(labels, sub_labels, strict=True):
        assert sorted(s // k for s in subs) == sorted(parents)


def test_kmeans_separates_feature_groups_within_a_class():
    features, labels = _features_with_two_groups_per_class(np.random.default_rng(1))
    sub_labels = cluster_sub_labels(features, labels, k_cluster=2)
    class3 = [i for i, ids in enumerate(labels) if 3 in ids]
    cluster_of = {i: next(s for s in sub_labels[i] if s // 2 == 3) for i in class3}
    for i in class3:
        for j in class3:
            assert (cluster_of[i] == cluster_of[j]) == (i % 2 == j % 2)


def test_class_with_fewer_images_than_k_gets_fewer_clusters():
    features = np.random.default_rng(2).normal(size=(5, 4))
    labels = [[0], [0], [0], [5], [0]]
    sub_labels = cluster_sub_labels(features, labels, k_cluster=10)
    assert sub_labels[3] == [50]
    assert {s[0] for i, s in enumerate(sub_labels) if i != 3} == {0, 1, 2, 3}


def test_same_seed_same_sub_labels():
    features, labels = _features_with_two_groups_per_class(np.random.default_rng(3))
    assert cluster_sub_labels(features, labels, 3, seed=0) == cluster_sub_labels(features, labels, 3, seed=0)


def test_sub_label_table_round_trip(tmp_path):
    write_sub_label_table(tmp_path, 1, ["a", "b"], [[3, 25], [180]], k_cluster=10)
    sub_labels, k = read_sub_label_table(tmp_path, 1)
    assert k == 10 and sub_labels == {"a": [3, 25], "b": [180]}


def test_sub_label_out_of_range_names_the_row(tmp_path):
    write_sub_label_table(tmp_path, 1, ["a", "b"], [[3], [190]], k_cluster=10)
    with pytest.raises(ValueError, match="row 3 \\(ID b\\)"):
        read_sub_label_table(tmp_path, 1)


def test_features_round_trip_and_missing_round_is_named(tmp_path):
    features = np.arange(6, dtype=np.float32).reshape(3, 2)
    save_features(tmp_path, 0, ["x", "y", "z"], ["0", "1|2", "18"], features, checkpoint="c.ckpt")
    table, loaded, meta = load_features(tmp_path, 0)
    np.testing.assert_array_equal(loaded, features)
    assert table["ID"].tolist() == ["x", "y", "z"] and meta["checkpoint"] == "c.ckpt"
    with pytest.raises(FileNotFoundError, match="R1_feature.npy"):
        load_features(tmp_path, 1)
