"""t-SNE pictures of cell embeddings (coloured by true class) and image profiles (coloured by acquisition batch)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib import pyplot as plt
from sklearn.manifold import TSNE

from src.data.atomic import atomic_path
from src.data.classes import CLASS_NAMES
from src.profiles.evaluation import image_profiles, whiten

matplotlib.use("Agg")
MAX_CELLS = 2000


def _tsne(points: np.ndarray, seed: int = 0) -> np.ndarray:
    perplexity = float(min(30, max(2, len(points) // 4)))
    method = "exact" if len(points) < 300 else "barnes_hut"  # Barnes-Hut has a large fixed cost on few points
    return TSNE(perplexity=perplexity, init="pca", random_state=seed, method=method).fit_transform(points)


def plot_embeddings(
    embeddings: np.ndarray,
    index: pd.DataFrame,
    cell_truth: list,
    image_table: pd.DataFrame,
    path: str | os.PathLike,
    title: str = "",
) -> None:
    """Left: t-SNE of up to 2000 cells with a single true class, coloured by it. Right: t-SNE of the image profiles,
    coloured by batch. Written atomically to ``path`` (PNG)."""
    features = whiten(embeddings)
    single = np.flatnonzero([labels is not None and len(labels) == 1 for labels in cell_truth])
    chosen = np.random.default_rng(0).permutation(single)[:MAX_CELLS]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 6))
    if len(chosen) > 5:
        xy = _tsne(features[chosen])
        classes = np.array([cell_truth[i][0] for i in chosen])
        palette = plt.get_cmap("tab20")
        for c in np.unique(classes):
            left.scatter(*xy[classes == c].T, s=6, color=palette(int(c)), label=CLASS_NAMES[c])
        left.legend(fontsize=6, markerscale=2, ncol=2)
    left.set_title(f"{title}: cells by true class")
    keys, profiles = image_profiles(index["split"].to_numpy() + "/" + index["ID"].to_numpy(), features)
    batch_of = dict(zip(image_table["ID"], image_table["batch"]))
    batches = np.array([batch_of.get(key.split("/", 1)[1], "default") for key in keys])
    if len(profiles) > 5:
        xy = _tsne(profiles)
        for batch in np.unique(batches):
            right.scatter(*xy[batches == batch].T, s=12, label=batch)
        right.legend(fontsize=7)
    right.set_title(f"{title}: image profiles by acquisition batch")
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=110, format="png")
    plt.close(figure)
