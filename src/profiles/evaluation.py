"""How good a cell representation is, measured the way the profiling field measures it.

- Image profiles: the mean of an image's cell embeddings (optionally after whitening on all cells).
- NSC-style 1-NN accuracy: an image profile's nearest other image (cosine) has the same label set; NSCB-style: the
  neighbour may not come from the same acquisition batch either (batch effects cannot help).
- Linear probe: a logistic regression per class on the cell embeddings of the training split, scored by macro
  average precision on the test split's cells against their true labels (evaluation only).
- SIFLoc's bag-level scores: test images of one label set grouped into bags; a bag's probabilities are the mean
  of its images' probe probabilities (image profiles); macro and micro F1 at 0.5 and macro AUC over the bags.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler


def whiten(embeddings: np.ndarray) -> np.ndarray:
    """Each feature centred and scaled to unit variance over all cells (constant features stay 0)."""
    return StandardScaler().fit_transform(embeddings).astype(np.float32)


def image_profiles(keys: np.ndarray, embeddings: np.ndarray) -> tuple[list[str], np.ndarray]:
    """(image keys in first-seen order, (M, F) mean embedding of each image's cells)."""
    codes, uniques = pd.factorize(pd.Series(keys))
    sums = np.zeros((len(uniques), embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, codes, embeddings)
    counts = np.bincount(codes, minlength=len(uniques))[:, None]
    return list(uniques), (sums / counts).astype(np.float32)


def nearest_neighbour_accuracy(profiles: np.ndarray, label_sets: list[str], batches: list[str] | None = None) -> float:
    """Share of images whose cosine nearest neighbour (never itself; with ``batches``, never one of its batch) has
    the same label set; images without any allowed neighbour are left out. NaN when none is left."""
    unit = profiles / np.maximum(np.linalg.norm(profiles, axis=1, keepdims=True), 1e-12)
    similarity = unit @ unit.T
    np.fill_diagonal(similarity, -np.inf)
    if batches is not None:
        batch = np.asarray(batches)
        similarity[batch[:, None] == batch[None, :]] = -np.inf
    allowed = np.isfinite(similarity).any(axis=1)
    if not allowed.any():
        return float("nan")
    nearest = similarity.argmax(axis=1)
    labels = np.asarray(label_sets)
    return float(np.mean(labels[allowed] == labels[nearest[allowed]]))


def fit_probe(features: np.ndarray, targets: np.ndarray) -> list[LogisticRegression | float]:
    """One logistic regression per class (a constant probability for a class with one value only)."""
    models: list[LogisticRegression | float] = []
    for c in range(targets.shape[1]):
        column = targets[:, c] > 0.5
        if column.all() or not column.any():
            models.append(float(column.mean()))
        else:
            models.append(LogisticRegression(max_iter=1000, C=1.0).fit(features, column))
    return models


def predict_probe(models: list[LogisticRegression | float], features: np.ndarray) -> np.ndarray:
    """(N, C) probabilities of :func:`fit_probe`'s models."""
    return np.stack(
        [np.full(len(features), m) if isinstance(m, float) else m.predict_proba(features)[:, 1] for m in models],
        axis=1,
    )


def macro_ap(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean average precision over the classes with at least one positive."""
    present = np.flatnonzero(targets.sum(axis=0) > 0)
    return float(np.mean([average_precision_score(targets[:, c], probs[:, c]) for c in present]))


def label_bags(label_sets: list[str], bag_size: int, seed: int = 0) -> list[np.ndarray]:
    """Indices of images grouped by label set into bags of at most ``bag_size`` (SIFLoc: 20 images of a protein)."""
    rng = np.random.default_rng(seed)
    bags = []
    for _, members in pd.Series(label_sets).groupby(pd.Series(label_sets)).indices.items():
        members = rng.permutation(members)
        bags.extend(members[start : start + bag_size] for start in range(0, len(members), bag_size))
    return bags


def bag_scores(probs: np.ndarray, targets: np.ndarray, bags: list[np.ndarray]) -> dict[str, float]:
    """Macro and micro F1 at 0.5 and macro AUC of bag probabilities (the mean of the bag's image probabilities)."""
    bag_probs = np.stack([probs[b].mean(axis=0) for b in bags])
    bag_targets = np.stack([targets[b[0]] for b in bags]) > 0.5
    used = bag_targets.any(axis=0) | (bag_probs >= 0.5).any(axis=0)
    predicted = bag_probs >= 0.5
    both = [c for c in range(bag_targets.shape[1]) if 0 < bag_targets[:, c].sum() < len(bags)]
    return {
        "bag_macro_f1": float(f1_score(bag_targets[:, used], predicted[:, used], average="macro", zero_division=0)),
        "bag_micro_f1": float(f1_score(bag_targets, predicted, average="micro", zero_division=0)),
        "bag_auc": float(np.mean([roc_auc_score(bag_targets[:, c], bag_probs[:, c]) for c in both]))
        if both
        else float("nan"),
    }


def probe_shift_drops(
    features: np.ndarray,
    targets: np.ndarray,
    image_ids: np.ndarray,
    domains: np.ndarray,
    train_cells: np.ndarray,
    test_cells: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """How much a linear probe loses on a domain (cell line or batch) it never saw, for every domain ``v``.

    Each probe is scored by :func:`macro_ap` on the test cells of ``v``; seen: trained on the cells of a seeded
    random share of the training images, as many images as lie outside ``v``; unseen: trained on the cells of the
    training images outside ``v``. So both probes see the same number of images and only ``v``'s presence
    differs.

    Args:
        features: (N, F) cell features.
        targets: (N, C) cell targets.
        image_ids: (N,) image of each cell.
        domains: (N,) domain of each cell (its image's).
        train_cells, test_cells: (N,) masks of the cells to train and to score on.
        seed: the draw of the seen probe's images.

    Returns:
        {domain: seen AP - unseen AP} for every domain with training and test cells.
    """
    rng = np.random.default_rng(seed)
    train_images = np.unique(image_ids[train_cells])
    drops = {}
    for domain in sorted(set(domains[train_cells]) & set(domains[test_cells])):
        scored = test_cells & (domains == domain)
        unseen = train_cells & (domains != domain)
        count = len(np.unique(image_ids[unseen]))
        seen = train_cells & np.isin(image_ids, rng.choice(train_images, size=count, replace=False))
        aps = [
            macro_ap(predict_probe(fit_probe(features[rows], targets[rows]), features[scored]), targets[scored])
            for rows in (seen, unseen)
        ]
        drops[str(domain)] = aps[0] - aps[1]
    return drops
