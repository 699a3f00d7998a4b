"""SC-CAM sub-categories: per class, k-means on the features of the images that carry the class.

Table: ``{save_folder}/label/R{round}_sub_label.csv`` with columns ID and ``sub_labels``
(``|``-joined ids ``class * k + cluster``, one per image label) and ``R{round}_sub_label.yaml``
holding k_cluster and how the table was made.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from sklearn.cluster import KMeans
from sklearn.preprocessing import StandardScaler

from src.data.atomic import write_csv_atomic, write_text_atomic
from src.data.classes import NUM_CLASSES

logger = logging.getLogger(__name__)


def sub_label_files(save_folder: str | os.PathLike, round_nb: int) -> tuple[Path, Path]:
    """(table .csv, metadata .yaml) of the sub-labels used to train round ``round_nb``."""
    folder = Path(save_folder) / "label"
    return folder / f"R{round_nb}_sub_label.csv", folder / f"R{round_nb}_sub_label.yaml"


def cluster_sub_labels(
    features: np.ndarray,
    labels: list[list[int]],
    k_cluster: int = 10,
    scale_feature: bool = False,
    seed: int = 0,
    num_classes: int = NUM_CLASSES,
) -> list[list[int]]:
    """Sub-category ids of every image.

    For each class, the images that carry it are clustered into ``min(k_cluster, count)`` groups
    (KMeans, fixed seed; features standardised first when ``scale_feature``); an image of
    class c in cluster j gets sub-category ``c * k_cluster + j``.

    Args:
        features: (N, F) image features.
        labels: N lists of class ids.

    Returns:
        N sorted lists of sub-category ids, one per class of the image.
    """
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows for {len(labels)} label lists")
    if k_cluster < 1:
        raise ValueError(f"--k_cluster must be >= 1, got {k_cluster}")
    sub_labels: list[list[int]] = [[] for _ in labels]
    for class_id in range(num_classes):
        rows = np.array([i for i, ids in enumerate(labels) if class_id in ids], dtype=np.int64)
        if len(rows) == 0:
            continue
        n_clusters = min(k_cluster, len(rows))
        if n_clusters == 1:
            clusters = np.zeros(len(rows), dtype=np.int64)
        else:
            class_features = features[rows].astype(np.float64)
            if scale_feature:
                class_features = StandardScaler().fit_transform(class_features)
            clusters = KMeans(n_clusters=n_clusters, random_state=seed, n_init=10).fit_predict(class_features)
        if n_clusters < k_cluster:
            logger.info("class %d: %d images, %d clusters instead of %d", class_id, len(rows), n_clusters, k_cluster)
        for row, cluster in zip(rows, clusters, strict=True):
            sub_labels[row].append(class_id * k_cluster + int(cluster))
    return [sorted(ids) for ids in sub_labels]


def write_sub_label_table(
    save_folder: str | os.PathLike,
    round_nb: int,
    ids: list[str],
    sub_labels: list[list[int]],
    k_cluster: int,
    **meta: Any,
) -> Path:
    """Write the table and its metadata atomically; returns the csv path."""
    csv_path, yaml_path = sub_label_files(save_folder, round_nb)
    table = pd.DataFrame({"ID": ids, "sub_labels": ["|".join(map(str, s)) for s in sub_labels]})
    write_csv_atomic(csv_path, table)
    write_text_atomic(
        yaml_path,
        yaml.safe_dump({"k_cluster": int(k_cluster), "num_classes": NUM_CLASSES, "round_nb": round_nb, **meta}),
    )
    return csv_path


def read_sub_label_table(save_folder: str | os.PathLike, round_nb: int) -> tuple[dict[str, list[int]], int]:
    """(ID -> sub-category ids, k_cluster) of the table for round ``round_nb``.

    Raises:
        FileNotFoundError: no table (names the file and the script that writes it).
        ValueError: malformed rows or ids outside 0..19k-1.
    """
    csv_path, yaml_path = sub_label_files(save_folder, round_nb)
    for path in (csv_path, yaml_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"sub-label file {path} not found: run create_pseudo_label.py --for_round_nb {round_nb}"
            )
    with open(yaml_path) as handle:
        meta = yaml.safe_load(handle) or {}
    if "k_cluster" not in meta:
        raise ValueError(f"{yaml_path}: no k_cluster")
    k_cluster = int(meta["k_cluster"])
    table = pd.read_csv(csv_path, dtype={"ID": str, "sub_labels": str}, keep_default_na=False)
    sub_labels: dict[str, list[int]] = {}
    for row, (image_id, text) in enumerate(zip(table["ID"], table["sub_labels"], strict=True)):
        try:
            ids = [int(t) for t in text.split("|")] if text else []
        except ValueError:
            raise ValueError(
                f"{csv_path} row {row + 2} (ID {image_id}): sub_labels {text!r} are not '|'-joined ids"
            ) from None
        if any(not 0 <= i < NUM_CLASSES * k_cluster for i in ids):
            raise ValueError(
                f"{csv_path} row {row + 2} (ID {image_id}): sub-label outside 0..{NUM_CLASSES * k_cluster - 1}"
            )
        sub_labels[image_id] = ids
    return sub_labels, k_cluster
