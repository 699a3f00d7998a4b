"""Scoring one image in a worker process: per-cell confidences, RLE-encoded at full size.

Kept free of torch so the spawned scoring processes start in about a second.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from src.cell_masks.cache import mask_path, read_masks
from src.scoring.cell_scores import CELL_LOGIT, IMAGE_PROB, cell_logit_scores, image_prob_scores, score_cells
from src.scoring.fusion import fuse_cell_scores, refine_image_probs
from src.submission.codec import cell_mask_predictions


def init_scorer() -> None:
    """Process-pool initializer: one OpenCV thread per worker process."""
    cv2.setNumThreads(1)


def score_image(job: dict[str, Any]) -> dict[str, Any]:
    """Worker: per-cell scores of one image, RLE-encoded at full size -> a submission row."""
    nuclei_mask, cell_mask = read_masks(mask_path(job["mask_dir"], job["id"]))
    if cell_mask.shape != (job["height"], job["width"]):
        raise ValueError(
            f"image {job['id']}: cached masks are {cell_mask.shape}, image is {(job['height'], job['width'])}"
        )
    green = job["green"]
    h, w = green.shape
    cell_small = cv2.resize(cell_mask, (w, h), interpolation=cv2.INTER_NEAREST)
    nuclei_small = cv2.resize(nuclei_mask, (w, h), interpolation=cv2.INTER_NEAREST)
    probs = job["probs"]
    if "cell_probs" in job:  # a cell classifier in ckpt_paths: refine the image probabilities with its cells
        probs = refine_image_probs(probs, job["cell_probs"], job["fusion"])
    if job["conf_how"] == IMAGE_PROB:
        scores = image_prob_scores(probs, cell_small, green, job["score_config"])
    else:
        cams = job["cams"].astype(np.float32).transpose(1, 2, 0)  # (h, w, 19): cv2 resizes all maps at once
        cams = cv2.resize(cams, (w, h), interpolation=cv2.INTER_LINEAR).reshape(h, w, -1).transpose(2, 0, 1)
        if job["conf_how"] == CELL_LOGIT:
            scores = cell_logit_scores(probs, cams, cell_small, green, job["score_config"])
        else:
            scores = score_cells(probs, cams, cell_small, nuclei_small, green, job["score_config"])
    if "cell_probs" in job:
        scores = fuse_cell_scores(scores, job["cell_ids"], job["cell_probs"], job["fusion"])
    return {
        "ID": job["id"],
        "ImageWidth": job["width"],
        "ImageHeight": job["height"],
        "PredictionString": cell_mask_predictions(cell_mask, scores),
    }
