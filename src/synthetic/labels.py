"""Image labels drawn like the real competition labels, and per-cell labels with heterogeneity.

An image's labels are drawn in two steps: the number of labels ``k`` from the real
label-count distribution, then ``k`` distinct classes by weighted sampling without
replacement (Gumbel top-k), with weights calibrated so the per-class image frequencies
match the real ones (see ``scripts/derive_label_stats.py``). Negative (18) only occurs
alone, as in the real labels.

Each cell then gets a subset of its image's labels: a cell is Negative with probability
``negative_cell_rate``, otherwise each label is dropped with probability ``cell_dropout``
(at least one kept). Mitotic spindle (11) is carried only by mitotic cells, and mitotic
cells carry no nuclear class (0-5): their nuclear envelope has broken down.
"""

from __future__ import annotations

import numpy as np

from src.data.classes import NEGATIVE, NUM_CLASSES

MITOTIC_SPINDLE = 11
NUCLEAR_CLASSES = frozenset(range(6))


def sample_label_sets(rng: np.random.Generator, num: int, weights: np.ndarray, count_probs: np.ndarray) -> np.ndarray:
    """Draw ``num`` label sets.

    Args:
        rng: random generator.
        num: number of label sets.
        weights: (19,) non-negative class sampling weights.
        count_probs: (K,) probability of an image having 1..K labels.

    Returns:
        (num, 19) bool multi-hot; Negative only in single-label sets.
    """
    weights = np.asarray(weights, dtype=np.float64)
    count_probs = np.asarray(count_probs, dtype=np.float64)
    sizes = rng.choice(np.arange(1, len(count_probs) + 1), size=num, p=count_probs / count_probs.sum())
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    keys = log_w[None, :] + rng.gumbel(size=(num, NUM_CLASSES))
    keys[sizes > 1, NEGATIVE] = -np.inf
    order = np.argsort(-keys, axis=1)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(NUM_CLASSES)[None, :].repeat(num, axis=0), axis=1)
    return ranks < sizes[:, None]


def assign_cell_labels(
    rng: np.random.Generator,
    image_labels: list[int],
    mitotic: np.ndarray,
    cell_dropout: float,
    negative_cell_rate: float,
) -> list[list[int]]:
    """Per-cell labels, each a subset of ``image_labels`` (or [18]).

    Every drawn label other than 11 is given to at least one eligible cell when one exists,
    so that the image's union of cell labels keeps the drawn labels (plus 18 when a cell is
    negative).

    Args:
        rng: random generator.
        image_labels: the image's drawn class ids.
        mitotic: (n_cells,) bool, which cells are mitotic.
        cell_dropout: probability that a cell lacks each of the image's labels.
        negative_cell_rate: probability that a cell is Negative.

    Returns:
        One sorted list of class ids per cell.
    """
    n_cells = len(mitotic)
    labels = sorted(set(image_labels))
    if labels == [NEGATIVE]:
        return [[NEGATIVE] for _ in range(n_cells)]
    keep = rng.random((n_cells, len(labels))) >= cell_dropout
    eligible = np.ones((n_cells, len(labels)), dtype=bool)
    for j, label in enumerate(labels):
        if label == MITOTIC_SPINDLE:
            eligible[:, j] = mitotic
        elif label in NUCLEAR_CLASSES:
            eligible[:, j] = ~mitotic
    negative = rng.random(n_cells) < negative_cell_rate
    keep &= eligible & ~negative[:, None]
    # A non-negative cell whose draws all dropped keeps one random eligible label.
    empty = ~keep.any(axis=1) & ~negative & eligible.any(axis=1)
    for cell in np.flatnonzero(empty):
        keep[cell, rng.choice(np.flatnonzero(eligible[cell]))] = True
    if MITOTIC_SPINDLE in labels:
        keep[mitotic & ~negative, labels.index(MITOTIC_SPINDLE)] = True
    # Every drawn label shows in at least one cell that can carry it.
    for j, label in enumerate(labels):
        if label != MITOTIC_SPINDLE and not keep[:, j].any() and eligible[:, j].any():
            candidates = eligible[:, j] & ~negative if (eligible[:, j] & ~negative).any() else eligible[:, j]
            keep[rng.choice(np.flatnonzero(candidates)), j] = True
    cell_labels = []
    for cell in range(n_cells):
        ids = [labels[j] for j in np.flatnonzero(keep[cell])]
        cell_labels.append(ids if ids else [NEGATIVE])
    return cell_labels


def union_label(cell_labels: list[list[int]]) -> list[int]:
    """The image label: sorted union of its cells' labels."""
    return sorted({label for labels in cell_labels for label in labels})


def format_label(labels: list[int]) -> str:
    """``|``-joined class ids, as in train.csv."""
    return "|".join(str(label) for label in labels)
