"""Scoring one image: per-cell confidences from its maps and masks, RLE-encoded at full size.

:func:`score_image_cells` is the one per-image scoring of the toolkit (CAM inference and the stage-2 validation
both call it); :func:`score_image` is its worker-process form for CAM inference. Kept free of torch so the
spawned scoring processes start in about a second.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from src.scoring.cell_scores import (
    CELL_LOGIT,
    IMAGE_PROB,
    CellScoreConfig,
    cell_logit_scores,
    image_prob_scores,
    score_cells,
)
from src.scoring.fusion import fuse_cell_scores, refine_image_probs
from src.submission.codec import cell_mask_predictions


def init_scorer() -> None:
    """Process-pool initializer: one OpenCV thread per worker process."""
    cv2.setNumThreads(1)


def shrink_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An (H, W) instance mask at ``shape`` (h, w), nearest neighbour, without losing an instance.

    A cell smaller than the shrink factor can fall between the sampled pixels and vanish; each such instance is
    put back as one pixel at its centre (taking that pixel from whatever covered it), so it is still scored,
    from the maps and the protein channel at its centre, and still encoded at full size in the submission.
    """
    h, w = shape
    small = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    if small.shape == mask.shape:
        return small
    lost = np.setdiff1d(np.unique(mask), np.unique(small))
    lost = lost[lost > 0]
    if lost.size:
        rows, cols = np.nonzero(np.isin(mask, lost))
        labels = mask[rows, cols]
        for label in lost:
            where = labels == label
            y = min(h - 1, int((rows[where].mean() + 0.5) * h / mask.shape[0]))
            x = min(w - 1, int((cols[where].mean() + 0.5) * w / mask.shape[1]))
            small[y, x] = label
    return small


def score_image_cells(
    probs: np.ndarray,
    maps: np.ndarray | None,
    nuclei_mask: np.ndarray,
    cell_mask: np.ndarray,
    green: np.ndarray,
    config: CellScoreConfig,
) -> dict[int, dict[int, float]]:
    """Per-cell confidences of one image, scored at the size of ``green``.

    Args:
        probs: (19,) image probabilities.
        maps: (19, h', w') class maps at any size (bilinearly resized to the score size), or None for
            ``conf_how`` 'image_prob'.
        nuclei_mask, cell_mask: (H, W) uint16 instance masks at full size (shrunk by :func:`shrink_mask`, so no
            cell is lost).
        green: (h, w) protein channel at the score size.
        config: scoring settings; ``config.conf_how`` picks the branch.

    Returns:
        cell id -> class -> confidence.
    """
    h, w = green.shape
    cell_small = shrink_mask(cell_mask, (h, w))
    if config.conf_how == IMAGE_PROB:
        return image_prob_scores(probs, cell_small, green, config)
    nuclei_small = shrink_mask(nuclei_mask, (h, w))
    cams = maps.astype(np.float32).transpose(1, 2, 0)  # (h', w', 19): cv2 resizes all maps at once
    cams = cv2.resize(cams, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1).transpose(2, 0, 1)
    if config.conf_how == CELL_LOGIT:
        return cell_logit_scores(probs, cams, cell_small, green, config)
    return score_cells(probs, cams, cell_small, nuclei_small, green, config)


def score_image(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: a submission row of one image from its job (``id``, ``height``, ``width``, ``probs``, ``cams``,
    ``nuclei_mask``, ``cell_mask``, ``green``, ``score_config``; with a cell classifier also ``cell_ids``,
    ``cell_probs`` and ``fusion``, see :mod:`src.scoring.fusion`).

    Raises:
        ValueError: masks of another size than the image.
    """
    if job["cell_mask"].shape != (job["height"], job["width"]):
        raise ValueError(
            f"image {job['id']}: cached masks are {job['cell_mask'].shape}, image is {(job['height'], job['width'])}"
        )
    probs = job["probs"]
    if "cell_probs" in job:  # a cell classifier in ckpt_paths: refine the image probabilities with its cells
        probs = refine_image_probs(probs, job["cell_probs"], job["fusion"])
    scores = score_image_cells(
        probs, job["cams"], job["nuclei_mask"], job["cell_mask"], job["green"], job["score_config"]
    )
    if "cell_probs" in job:  # then fuse each cell's image-level score with its cell probability
        scores = fuse_cell_scores(scores, job["cell_ids"], job["cell_probs"], job["fusion"])
    return {
        "ID": job["id"],
        "ImageWidth": job["width"],
        "ImageHeight": job["height"],
        "PredictionString": cell_mask_predictions(job["cell_mask"], scores),
    }
