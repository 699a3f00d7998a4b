"""Per-cell class confidences from image probabilities and class activation maps.

The scoring follows the 15th-place solution: a class is kept for a cell when enough of
the cell (or of its nucleus) is activated, and the confidence combines the image
probability with the activation inside the cell (``conf_how``). A cell with no kept
class is Negative with a confidence that grows as its activation vanishes.

``conf_how='cell_logit'`` reads the signed, unnormalised class maps instead (the 1x1 head
applied to the feature map, before ReLU): their mean inside a cell is the classifier's logit
for that cell alone, and a cell keeps its image probability unless its logit lies well below
the image's typical cell (:func:`cell_logit_scores`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src.data.classes import NEGATIVE, NUM_CLASSES

CONF_HOWS = ("max", "mean", "cam_rate", "cam_rate_mean")
IMAGE_PROB = "image_prob"  # conf_how of the floor: every cell gets the image probabilities, no CAM
CELL_LOGIT = "cell_logit"  # conf_how on signed logit maps: p x sigmoid(slope (z - median z + margin))
NEGATIVE_HOWS = ("inactive", "dark")
CONF_HOW_CHOICES = (*CONF_HOWS, CELL_LOGIT, IMAGE_PROB)


def _option(default: Any, meaning: str) -> Any:
    """A config field with its default and its meaning (shown by ``run_cam_infer.py --help``)."""
    return field(default=default, metadata={"help": meaning})


@dataclass(frozen=True)
class CellScoreConfig:
    """Thresholds of the per-cell scoring (defaults are the 15th-place solution's)."""

    conf_how: str = _option(
        "cam_rate_mean",
        "cell_logit | max | mean | cam_rate | cam_rate_mean (15th place) | image_prob (no map: the floor)",
    )
    min_image_prob: float = _option(0.01, "classes under this image probability are not considered")
    cam_rate_thresh: float = _option(0.1, "keep a class when this fraction of the cell (or nucleus) has CAM > 0")
    cam_high_value: float = _option(0.75, "the CAM value that counts as high activation")
    cam_high_rate_thresh: float = _option(0.04, "... or keep it when this fraction has CAM >= cam_high_value")
    min_green_mean: float = _option(1.0, "cells darker than this protein-channel mean are Negative")
    min_cell_fraction: float = _option(0.0, "skip cells smaller than (score side x fraction)^2 (15th place: 0.01)")
    negative_scale: float = _option(0.75, "inactive Negative: confidence scale of a cell with no kept class")
    # Negative (18): 'inactive' (15th place) only for cells with no kept class, from how little of the cell is
    # activated; 'dark' for every cell, from how dark its protein channel is: 1 - high(cell) / reference, where
    # high is the cell's dark_percentile of the protein channel (99.9: sparse dots such as centrosomes count)
    # and the reference the median high of the image's cells, but at least dark_reference_min (0..255 scale)
    negative_how: str = _option("inactive", "Negative (18): dark = every cell, from its protein darkness; inactive")
    dark_percentile: float = _option(99.9, "a cell's brightness: this percentile of its protein channel")
    dark_reference_min: float = _option(20.0, "darkness = 1 - brightness / max(median cell brightness, this)")
    negative_from_prob: bool = _option(False, "multiply the Negative confidence by p(18)")
    # Also emit the classes a cell does not keep, at p x (score + inactive_floor): AP counts every
    # true cell that is never predicted as lost recall, so a low-ranked guess beats no guess.
    keep_inactive: bool = _option(False, "also emit unkept classes at p x (score + inactive_floor)")
    inactive_floor: float = _option(1e-3, "added to the score of unkept classes (keep_inactive)")
    # confidence = p x ((1 - cam_weight) + cam_weight x activation); 1 is the 15th place's p x activation
    cam_weight: float = _option(1.0, "confidence = p x ((1 - cam_weight) + cam_weight x activation)")
    # cell_logit: confidence = p x sigmoid(logit_slope x (z - median z of the image's cells + logit_margin)),
    # z the mean of the class's logit map inside the cell (log-odds units)
    logit_slope: float = _option(1.0, "cell_logit: confidence = p x sigmoid(slope x (z - median z + margin))")
    logit_margin: float = _option(4.0, "cell_logit: the margin above (log-odds units)")

    def __post_init__(self) -> None:
        if self.conf_how not in CONF_HOW_CHOICES:
            raise ValueError(f"conf_how must be one of {CONF_HOW_CHOICES}, got {self.conf_how!r}")
        if self.logit_slope <= 0:
            raise ValueError(f"logit_slope must be > 0, got {self.logit_slope}")
        if not 0.0 <= self.cam_weight <= 1.0:
            raise ValueError(f"cam_weight must lie in [0, 1], got {self.cam_weight}")
        if not 0.0 <= self.dark_percentile <= 100.0:
            raise ValueError(f"dark_percentile must lie in [0, 100], got {self.dark_percentile}")
        if self.negative_how not in NEGATIVE_HOWS:
            raise ValueError(f"negative_how must be one of {NEGATIVE_HOWS}, got {self.negative_how!r}")


@dataclass
class CellStats:
    """Per-cell, per-class activation statistics.

    Attributes:
        cell_ids: (K,) ids of the scored cells.
        cam_max: (K, C) max CAM inside each cell.
        cam_mean_pos: (K, C) mean of the positive CAM values inside each cell (0 when none).
        cam_rate: (K, C) fraction of cell pixels with CAM > 0 (max of cell and nucleus).
        cam_high_rate: (K, C) fraction with CAM >= cam_high_value (max of cell and nucleus).
        green_mean: (K,) mean protein-channel intensity of each cell.
        green_high: (K,) high percentile (``dark_percentile``) of the protein channel inside each cell.
        area: (K,) cell area in pixels.
    """

    cell_ids: np.ndarray
    cam_max: np.ndarray
    cam_mean_pos: np.ndarray
    cam_rate: np.ndarray
    cam_high_rate: np.ndarray
    green_mean: np.ndarray
    green_high: np.ndarray
    area: np.ndarray


def segment_percentile(labels: np.ndarray, values: np.ndarray, num_ids: int, q: float) -> np.ndarray:
    """(num_ids,) the q-th percentile (nearest rank below) of ``values`` within each label; 0 for empty labels.

    Args:
        labels: (P,) int labels in 0..num_ids-1.
        values: (P,) numbers.
        q: percentile in [0, 100].
    """
    order = np.lexsort((values, labels))
    counts = np.bincount(labels, minlength=num_ids)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picks = starts + np.floor((counts - 1).clip(min=0) * q / 100.0).astype(np.int64)
    result = values[order][np.minimum(picks, len(values) - 1)].astype(np.float64) if len(values) else np.zeros(num_ids)
    return np.where(counts > 0, result, 0.0)


def _green_stats(cells: np.ndarray, green: np.ndarray, num_ids: int, q: float) -> tuple[np.ndarray, np.ndarray]:
    """(num_ids,) sum and q-th percentile of the protein channel within each label of ``cells`` (flat int labels)."""
    green_flat = green.ravel().astype(np.float64)
    return np.bincount(cells, weights=green_flat, minlength=num_ids), segment_percentile(cells, green_flat, num_ids, q)


def dark_negative(
    image_probs: np.ndarray, green_mean: np.ndarray, green_high: np.ndarray, config: CellScoreConfig
) -> np.ndarray:
    """(K,) Negative confidences of ``negative_how='dark'`` for the K cells of one image.

    darkness = 1 - green_high / reference, reference = max(median green_high of the cells, dark_reference_min);
    a cell darker than ``min_green_mean`` on average has darkness 1. Multiplied by p(18) with ``negative_from_prob``.
    """
    if not len(green_high):
        return np.zeros(0)
    reference = max(float(np.median(green_high)), config.dark_reference_min)
    darkness = np.where(green_mean >= config.min_green_mean, 1.0 - np.clip(green_high / reference, 0.0, 1.0), 1.0)
    return darkness * _negative_prob(image_probs, config)


def _negative_prob(image_probs: np.ndarray, config: CellScoreConfig) -> float:
    """The factor of every Negative confidence: p(18) with ``negative_from_prob``, else 1."""
    return float(image_probs[NEGATIVE]) if config.negative_from_prob else 1.0


@dataclass
class _Cells:
    """The scored cells of one image: flat labels, their ids, areas and protein-channel statistics."""

    labels: np.ndarray  # (P,) int64 cell label of each pixel
    num_ids: int
    ids: np.ndarray  # (K,) scored cell ids
    area: np.ndarray  # (K,) pixels
    green_mean: np.ndarray  # (K,)
    green_high: np.ndarray  # (K,)


def _scored_cells(cell_mask: np.ndarray, green: np.ndarray, config: CellScoreConfig) -> _Cells:
    """Cells at least ``min_cell_fraction`` in size, with their protein-channel mean and high percentile."""
    if green.shape != cell_mask.shape:
        raise ValueError(f"shape mismatch: cell_mask {cell_mask.shape}, green {green.shape}")
    labels = cell_mask.ravel().astype(np.int64)
    num_ids = int(labels.max(initial=0)) + 1
    area = np.bincount(labels, minlength=num_ids)
    min_area = (max(cell_mask.shape) * config.min_cell_fraction) ** 2
    ids = np.flatnonzero(area >= max(min_area, 1))
    ids = ids[ids > 0]
    green_sum, green_high = _green_stats(labels, green, num_ids, config.dark_percentile)
    a = area[ids].astype(np.float64)
    return _Cells(labels, num_ids, ids, a, green_sum[ids] / np.maximum(a, 1), green_high[ids])


def image_prob_scores(
    image_probs: np.ndarray, cell_mask: np.ndarray, green: np.ndarray, config: CellScoreConfig
) -> dict[int, dict[int, float]]:
    """The floor without CAMs: every cell gets the 19 image probabilities; with ``negative_how='dark'`` its
    Negative confidence is :func:`dark_negative`, as :func:`score_cells` gives it (protein darkness, not CAM)."""
    cells = _scored_cells(cell_mask, green, config)
    scores = {int(c): {k: float(image_probs[k]) for k in range(NUM_CLASSES)} for c in cells.ids}
    if config.negative_how == "dark":
        for cell_id, negative in zip(cells.ids, dark_negative(image_probs, cells.green_mean, cells.green_high, config)):
            scores[int(cell_id)][NEGATIVE] = float(negative)
    return scores


def cell_logits(logit_maps: np.ndarray, labels: np.ndarray, num_ids: int, ids: np.ndarray) -> np.ndarray:
    """(K, C) mean of each class's logit map inside each cell: the classifier's logit for the cell alone
    (the head is linear, so the mean of its map over a cell is the head applied to the cell's mean feature).

    Args:
        logit_maps: (C, H, W) signed maps at mask size.
        labels: (H*W,) int cell label of each pixel; num_ids: labels lie in 0..num_ids-1; ids: (K,) cells.
    """
    if not len(logit_maps):  # no class considered (e.g. a Negative-only image): no logits to average
        return np.zeros((len(ids), 0))
    area = np.maximum(np.bincount(labels, minlength=num_ids)[ids], 1)
    flat = logit_maps.reshape(logit_maps.shape[0], -1).astype(np.float64)
    sums = np.stack([np.bincount(labels, weights=row, minlength=num_ids)[ids] for row in flat], axis=1)
    return sums / area[:, None]


def cell_logit_scores(
    image_probs: np.ndarray,
    logit_maps: np.ndarray,
    cell_mask: np.ndarray,
    green: np.ndarray,
    config: CellScoreConfig = CellScoreConfig(conf_how=CELL_LOGIT),
) -> dict[int, dict[int, float]]:
    """Confidences ``{cell_id: {class_id: confidence}}`` from signed logit maps (``conf_how='cell_logit'``).

    For each class considered (image probability >= ``min_image_prob``), cell i gets
    ``p x sigmoid(logit_slope x (z_i - median_j z_j + logit_margin))``, z the cell's mean logit
    (:func:`cell_logits`) and the median over the image's cells: a cell keeps about p unless its
    evidence lies ``logit_margin`` log-odds or more below that of the image's typical cell. The image
    probability orders cells across images; the logit maps only demote cells within their image.

    Negative: ``dark`` from protein darkness (:func:`dark_negative`); ``inactive`` from how far below
    the others the cell's best class lies, ``negative_scale x (1 - max_k factor_k)``. Cells darker than
    ``min_green_mean`` get Negative only.

    Args:
        image_probs: (19,) image probabilities (true 0/1 labels for pseudo labels).
        logit_maps: (19, H, W) signed class maps at mask size (not ReLU'd, not normalised).
        cell_mask: (H, W) cell labels; green: (H, W) protein channel at the same size.
    """
    if image_probs.shape != (NUM_CLASSES,) or logit_maps.shape[0] != NUM_CLASSES:
        raise ValueError(
            f"expected ({NUM_CLASSES},) probabilities and {NUM_CLASSES} maps, got {image_probs.shape}, {logit_maps.shape}"
        )
    if logit_maps.shape[1:] != cell_mask.shape:
        raise ValueError(f"shape mismatch: logit maps {logit_maps.shape}, cell_mask {cell_mask.shape}")
    cells = _scored_cells(cell_mask, green, config)
    considered = np.flatnonzero(image_probs >= config.min_image_prob)
    considered = considered[considered != NEGATIVE]
    z = cell_logits(logit_maps[considered], cells.labels, cells.num_ids, cells.ids)
    if len(cells.ids):
        z = z - np.median(z, axis=0, keepdims=True)
    factor = 1.0 / (1.0 + np.exp(-config.logit_slope * (z + config.logit_margin)))
    confidence = image_probs[considered][None, :] * factor
    bright = cells.green_mean >= config.min_green_mean
    if config.negative_how == "dark":
        negative = dark_negative(image_probs, cells.green_mean, cells.green_high, config)
    else:
        best = factor.max(axis=1) if len(considered) else np.zeros(len(cells.ids))
        negative = np.where(bright, config.negative_scale * (1.0 - best), 1.0) * _negative_prob(image_probs, config)
    scores: dict[int, dict[int, float]] = {}
    for row, cell_id in enumerate(cells.ids):
        cell = {int(k): float(confidence[row, j]) for j, k in enumerate(considered)} if bright[row] else {}
        cell[NEGATIVE] = float(negative[row])
        scores[int(cell_id)] = cell
    return scores


def _segment_stats(labels: np.ndarray, cam: np.ndarray, cam_high_value: float, num_ids: int):
    """Per-label sums over pixels: counts, positive counts, high counts, positive sums, max.

    Pixels are sorted by label once; every statistic is then one ``reduceat`` over all classes.

    Args:
        labels: (P,) int label of each pixel (0 = background).
        cam: (C, P) activations of each pixel.
        num_ids: labels lie in 0..num_ids-1.

    Returns:
        area (num_ids,), pos (C, num_ids), high (C, num_ids), pos_sum (C, num_ids), max (C, num_ids).
    """
    counts = np.bincount(labels, minlength=num_ids)
    num_classes = cam.shape[0]
    present = np.flatnonzero(counts)
    stats = [np.zeros((num_classes, num_ids)) for _ in range(4)]
    if len(present):
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])[present]
        sorted_cam = cam[:, np.argsort(labels, kind="stable")]
        positive = sorted_cam > 0
        for out, values, reduce in (
            (stats[0], positive, np.add),
            (stats[1], sorted_cam >= cam_high_value, np.add),
            (stats[2], np.where(positive, sorted_cam, 0.0), np.add),
            (stats[3], sorted_cam, np.maximum),
        ):
            out[:, present] = reduce.reduceat(values, starts, axis=1)
    pos, high, pos_sum, cam_max = stats
    return counts.astype(np.float64), pos, high, pos_sum, cam_max


def cell_cam_stats(
    cams: np.ndarray,
    cell_mask: np.ndarray,
    nuclei_mask: np.ndarray,
    green: np.ndarray,
    config: CellScoreConfig = CellScoreConfig(),
) -> CellStats:
    """Activation statistics of every cell large enough to score.

    Args:
        cams: (C, H, W) float class activation maps in [0, 1], same size as the masks.
        cell_mask: (H, W) uint16 cell instance labels.
        nuclei_mask: (H, W) uint16 nucleus labels (nucleus of cell k has id k).
        green: (H, W) protein channel at the same size (any numeric type, 0..255 scale).
        config: thresholds.
    """
    if cams.shape[1:] != cell_mask.shape or cell_mask.shape != nuclei_mask.shape or green.shape != cell_mask.shape:
        raise ValueError(
            f"shape mismatch: cams {cams.shape}, cell_mask {cell_mask.shape}, "
            f"nuclei_mask {nuclei_mask.shape}, green {green.shape}"
        )
    scored = _scored_cells(cell_mask, green, config)
    num_ids = max(scored.num_ids, int(nuclei_mask.max()) + 1)
    flat_cams = cams.reshape(cams.shape[0], -1)
    _, pos, high, pos_sum, cam_max = _segment_stats(scored.labels, flat_cams, config.cam_high_value, num_ids)
    nuclei = nuclei_mask.ravel().astype(np.int64)
    nuc_area, nuc_pos, nuc_high, _, _ = _segment_stats(nuclei, flat_cams, config.cam_high_value, num_ids)

    cell_ids, a = scored.ids, scored.area
    na = np.maximum(nuc_area[cell_ids], 1)
    has_nucleus = nuc_area[cell_ids] > 0
    rate = np.maximum(pos[:, cell_ids] / a, np.where(has_nucleus, nuc_pos[:, cell_ids] / na, 0))
    high_rate = np.maximum(high[:, cell_ids] / a, np.where(has_nucleus, nuc_high[:, cell_ids] / na, 0))
    mean_pos = pos_sum[:, cell_ids] / np.maximum(pos[:, cell_ids], 1)
    return CellStats(
        cell_ids=cell_ids,
        cam_max=cam_max[:, cell_ids].T,
        cam_mean_pos=mean_pos.T,
        cam_rate=rate.T,
        cam_high_rate=high_rate.T,
        green_mean=scored.green_mean,
        green_high=scored.green_high,
        area=a,
    )


def score_cells(
    image_probs: np.ndarray,
    cams: np.ndarray,
    cell_mask: np.ndarray,
    nuclei_mask: np.ndarray,
    green: np.ndarray,
    config: CellScoreConfig = CellScoreConfig(),
) -> dict[int, dict[int, float]]:
    """Confidences ``{cell_id: {class_id: confidence}}`` for every scored cell.

    Args:
        image_probs: (19,) image-level probabilities (or the true 0/1 labels for pseudo labels).
        cams: (19, H, W) class activation maps, each class divided by its maximum, at mask size.
        cell_mask: (H, W) cell instance labels; nuclei_mask: (H, W) nucleus labels.
        green: (H, W) protein channel at mask size.
        config: thresholds and ``conf_how`` (``image_prob`` is scored by :func:`image_prob_scores`).

    Every cell at least ``min_cell_fraction`` in size gets at least one class; a cell darker
    than ``min_green_mean`` in the protein channel is Negative. With ``negative_how='dark'`` every
    cell also gets Negative, with a confidence from the darkness of its protein channel.
    """
    if image_probs.shape != (NUM_CLASSES,) or cams.shape[0] != NUM_CLASSES:
        raise ValueError(
            f"expected ({NUM_CLASSES},) probabilities and {NUM_CLASSES} CAMs, got {image_probs.shape}, {cams.shape}"
        )
    stats = cell_cam_stats(cams, cell_mask, nuclei_mask, green, config)
    considered = np.flatnonzero(image_probs >= config.min_image_prob)
    considered = considered[considered != NEGATIVE]
    probs = image_probs[considered][None, :]
    rate = stats.cam_rate[:, considered]
    activation = {
        "max": stats.cam_max[:, considered],
        "mean": stats.cam_mean_pos[:, considered],
        "cam_rate": stats.cam_max[:, considered] * rate,
        "cam_rate_mean": stats.cam_mean_pos[:, considered] * rate,
    }[config.conf_how]
    confidence = probs * ((1.0 - config.cam_weight) + config.cam_weight * activation)
    keep = (rate >= config.cam_rate_thresh) | (stats.cam_high_rate[:, considered] >= config.cam_high_rate_thresh)
    bright = stats.green_mean >= config.min_green_mean
    dark = dark_negative(image_probs, stats.green_mean, stats.green_high, config)
    negative_prob = _negative_prob(image_probs, config)

    scores: dict[int, dict[int, float]] = {}
    for row, cell_id in enumerate(stats.cell_ids):
        kept = np.flatnonzero(keep[row]) if bright[row] else []
        cell = {int(considered[k]): float(confidence[row, k]) for k in kept}
        if config.negative_how == "dark":
            cell[NEGATIVE] = float(dark[row])
        elif not len(kept):
            inactive = np.median(1.0 - rate[row]) if rate.shape[1] and bright[row] else 1.0
            weight = max(1e-6, (inactive - 0.9) / 0.1)
            cell[NEGATIVE] = negative_prob * config.negative_scale * weight
        if config.keep_inactive and bright[row]:
            for k in np.flatnonzero(~keep[row]):
                cell[int(considered[k])] = float(confidence[row, k] + probs[0, k] * config.inactive_floor)
        scores[int(cell_id)] = cell
    return scores
