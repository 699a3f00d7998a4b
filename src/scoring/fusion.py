"""Fusing the cell classifier's probabilities with the image-level per-cell scores.

The image-level part is what ``conf_how`` gives a cell (image probability x ``cell_logit`` factor, or the image
probability alone); the cell part is the cell classifier's probability for the crop. Per cell and class, with
``w = cell_weight``:

* ``prob_mean``: ``(1 - w) a + w b``;
* ``logit_mean``: ``sigmoid((1 - w) logit(a) + w logit(b))``;
* ``geometric``: ``a^(1 - w) b^w``.

``w = 1`` is the cell classifier alone. Negative keeps the protein-darkness rule of the image part
(``negative: dark``), or takes the cell classifier's p(18) (``cell``), or their mean (``mean``).
The cell probabilities can also refine the image probabilities before the image part is scored:
``p' = (1 - r) p + r pool_cells(b)`` with ``pool`` max or mean (``image_refine``, ``image_refine_weight`` r).
Each cell's own probabilities can take their image's context before fusing: ``b' = b^(1 - g) pool_cells(b)^g``
(``cell_pool`` max or mean, ``cell_pool_weight`` g; Negative untouched). The single-cell mAP ranks cells of all
images together, so whether an image holds a class at all weighs most, and the strongest cell of an image is
better evidence for that than each cell's own crop; ``g`` close to 1 keeps the crop's own evidence as the order
within the image.
Kept free of torch: it runs in the scoring worker processes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from src.data.classes import NEGATIVE, NUM_CLASSES

FUSION_RULES = ("prob_mean", "logit_mean", "geometric")
FUSION_NEGATIVES = ("dark", "cell", "mean")
IMAGE_REFINES = ("none", "max", "mean")
CELL_POOLS = IMAGE_REFINES
EPS = 1e-4  # probabilities are clipped to [EPS, 1 - EPS] before logits and powers
MIN_CONFIDENCE = 1e-4  # fused confidences below this are not written


@dataclass(frozen=True)
class FusionConfig:
    """The ``fusion:`` block of a ``run_cam_infer.py`` config (used when ``ckpt_paths`` has a ``cell`` entry)."""

    rule: str = "prob_mean"
    cell_weight: float = 0.5
    negative: str = "dark"
    image_refine: str = "none"
    image_refine_weight: float = 0.0
    cell_pool: str = "none"
    cell_pool_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.rule not in FUSION_RULES:
            raise ValueError(f"fusion rule must be one of {FUSION_RULES}, got {self.rule!r}")
        if self.negative not in FUSION_NEGATIVES:
            raise ValueError(f"fusion negative must be one of {FUSION_NEGATIVES}, got {self.negative!r}")
        if self.image_refine not in IMAGE_REFINES:
            raise ValueError(f"fusion image_refine must be one of {IMAGE_REFINES}, got {self.image_refine!r}")
        if self.cell_pool not in CELL_POOLS:
            raise ValueError(f"fusion cell_pool must be one of {CELL_POOLS}, got {self.cell_pool!r}")
        for name in ("cell_weight", "image_refine_weight", "cell_pool_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"fusion {name} must lie in [0, 1], got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, block: dict[str, Any] | None, source: str = "fusion") -> FusionConfig:
        block = dict(block or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(block) - known)
        if unknown:
            raise ValueError(f"{source}: unknown fusion key(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**block)
        except ValueError as error:
            raise ValueError(f"{source}: {error}") from None


def refine_image_probs(image_probs: np.ndarray, cell_probs: np.ndarray, config: FusionConfig) -> np.ndarray:
    """(19,) image probabilities blended with the max or mean of the (K, 19) cell probabilities (K = 0: unchanged)."""
    if config.image_refine == "none" or config.image_refine_weight == 0.0 or not len(cell_probs):
        return image_probs
    pooled = _pool(cell_probs, config.image_refine)
    r = config.image_refine_weight
    return ((1.0 - r) * image_probs + r * pooled).astype(image_probs.dtype)


def _pool(cell_probs: np.ndarray, how: str) -> np.ndarray:
    return cell_probs.max(axis=0) if how == "max" else cell_probs.mean(axis=0)


def pool_cell_probs(cell_probs: np.ndarray, config: FusionConfig) -> np.ndarray:
    """(K, 19) cell probabilities given their image's context: ``b^(1 - g) pool(b)^g`` per class, Negative kept."""
    g = config.cell_pool_weight
    if config.cell_pool == "none" or g == 0.0 or not len(cell_probs):
        return cell_probs
    b = np.clip(cell_probs.astype(np.float64), EPS, 1.0)
    pooled = b ** (1.0 - g) * _pool(b, config.cell_pool)[None, :] ** g
    pooled[:, NEGATIVE] = cell_probs[:, NEGATIVE]
    return pooled.astype(cell_probs.dtype)


def fuse_probs(a: np.ndarray, b: np.ndarray, config: FusionConfig) -> np.ndarray:
    """Fused confidences of image-level part ``a`` and cell part ``b`` (same shapes) with ``config.rule``."""
    w = config.cell_weight
    if w == 1.0:
        return b
    if config.rule == "prob_mean":
        return (1.0 - w) * a + w * b
    a, b = np.clip(a, EPS, 1.0 - EPS), np.clip(b, EPS, 1.0 - EPS)
    if config.rule == "geometric":
        return a ** (1.0 - w) * b**w
    z = (1.0 - w) * np.log(a / (1.0 - a)) + w * np.log(b / (1.0 - b))
    return 1.0 / (1.0 + np.exp(-z))


def fuse_cell_scores(
    image_scores: dict[int, dict[int, float]],
    cell_ids: np.ndarray,
    cell_probs: np.ndarray,
    config: FusionConfig,
) -> dict[int, dict[int, float]]:
    """``{cell_id: {class_id: confidence}}`` fusing the image-level scores with the cell probabilities.

    Args:
        image_scores: the image-level part per cell (a missing class counts as 0).
        cell_ids: (K,) cells the cell classifier scored.
        cell_probs: (K, 19) their probabilities.
        config: rule, weight, Negative source and the cells' image context (:func:`pool_cell_probs`).

    A cell only one side scored keeps that side's scores (the image part's cells are those of the score size).
    """
    if cell_probs.shape != (len(cell_ids), NUM_CLASSES):
        raise ValueError(f"expected ({len(cell_ids)}, {NUM_CLASSES}) cell probabilities, got {cell_probs.shape}")
    rows = {int(c): i for i, c in enumerate(cell_ids)}
    cell_probs = pool_cell_probs(cell_probs, config)
    fused: dict[int, dict[int, float]] = {}
    for cell_id, image_part in image_scores.items():
        row = rows.get(int(cell_id))
        if row is None:
            fused[cell_id] = image_part
            continue
        a = np.array([image_part.get(k, 0.0) for k in range(NUM_CLASSES)])
        b = cell_probs[row].astype(np.float64)
        scores = fuse_probs(a, b, config)
        cell = {k: float(scores[k]) for k in range(NUM_CLASSES) if k != NEGATIVE and scores[k] >= MIN_CONFIDENCE}
        dark = image_part.get(NEGATIVE)
        if config.negative == "cell" or dark is None:
            cell[NEGATIVE] = float(b[NEGATIVE])
        elif config.negative == "mean":
            cell[NEGATIVE] = 0.5 * (float(dark) + float(b[NEGATIVE]))
        else:
            cell[NEGATIVE] = float(dark)
        if image_part and set(image_part) == {NEGATIVE} and config.negative == "dark":
            cell = {NEGATIVE: float(dark)}  # too dark to hold protein: Negative only, as the image part says
        fused[cell_id] = cell
    return fused
