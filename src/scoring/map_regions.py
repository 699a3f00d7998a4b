"""Regions, counts and centres of positive cells read from class maps alone, without cell masks.

A class map (H, W) in 0..1 is split by Otsu's threshold (or a fixed one) into a foreground region; its connected
components of at least ``min_area`` pixels are the detected cells, each with its centroid. A class the image is not
predicted to have (image probability below a threshold) has an empty region and no cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu


def segment_map(class_map: np.ndarray, threshold: float | None = None) -> np.ndarray:
    """(H, W) bool foreground of one class map: above ``threshold``, or above Otsu's threshold when None."""
    if threshold is None:
        if class_map.max() <= class_map.min():
            return np.zeros(class_map.shape, dtype=bool)
        threshold = float(threshold_otsu(class_map))
    return class_map > threshold


def detect_components(region: np.ndarray, min_area: int = 1) -> np.ndarray:
    """(K, 2) float (row, column) centroids of the connected components (8-connected) of at least ``min_area``
    pixels of an (H, W) bool region."""
    labels, count = ndimage.label(region, structure=np.ones((3, 3), dtype=bool))
    if count == 0:
        return np.zeros((0, 2))
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = np.flatnonzero(areas >= min_area) + 1
    if len(keep) == 0:
        return np.zeros((0, 2))
    return np.asarray(ndimage.center_of_mass(region, labels, keep), dtype=np.float64).reshape(-1, 2)


def regions_and_centres(
    maps: np.ndarray, image_probs: np.ndarray, prob_threshold: float = 0.5, min_area: int = 1
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Per-class regions and cell centres of one image.

    Args:
        maps: (K, H, W) class maps.
        image_probs: (K,) image probabilities; classes below ``prob_threshold`` get nothing.
        prob_threshold: image-level gate.
        min_area: smallest component in pixels counted as a cell.

    Returns:
        ((K, H, W) bool regions, K arrays of (n_k, 2) centres).
    """
    regions = np.zeros(maps.shape, dtype=bool)
    centres = []
    for k in range(maps.shape[0]):
        if image_probs[k] >= prob_threshold:
            regions[k] = segment_map(maps[k])
        centres.append(detect_components(regions[k], min_area))
    return regions, centres
