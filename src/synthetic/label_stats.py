"""Label statistics of the real competition train.csv (21,806 images), as constants.

Derived once by ``scripts/derive_label_stats.py`` from
``../shared/data/hpa_train_labels_full.csv`` (labels deduplicated within a row);
the project never needs that file at run time.
"""

from __future__ import annotations

import numpy as np

from src.data.classes import NUM_CLASSES

NUM_REAL_IMAGES = 21806
# Number of real images that carry each class 0..18.
CLASS_IMAGE_COUNTS = (
    8797,
    1095,
    2451,
    1262,
    1425,
    1792,
    775,
    1846,
    964,
    998,
    818,
    78,
    1734,
    3111,
    2013,
    252,
    5685,
    593,
    34,
)
# Number of real images with 1, 2, 3, 4, 5 distinct labels.
LABEL_COUNT_IMAGES = (10508, 8873, 2233, 190, 2)
# Weights for sampling k distinct classes without replacement (Negative only alone) so that
# the per-class image frequencies match CLASS_IMAGE_COUNTS / NUM_REAL_IMAGES (max error 0.002).
SAMPLING_WEIGHTS = (
    0.273569, 0.028599, 0.065589, 0.033012, 0.037495, 0.047437, 0.020093, 0.048506, 0.025193, 0.026252,
    0.021440, 0.002055, 0.045925, 0.084322, 0.053725, 0.006514, 0.161261, 0.015545, 0.003469,
)  # fmt: skip

assert len(CLASS_IMAGE_COUNTS) == len(SAMPLING_WEIGHTS) == NUM_CLASSES
assert sum(LABEL_COUNT_IMAGES) == NUM_REAL_IMAGES


def class_frequencies() -> np.ndarray:
    """(19,) fraction of real images carrying each class."""
    return np.asarray(CLASS_IMAGE_COUNTS, dtype=np.float64) / NUM_REAL_IMAGES


def label_count_probabilities() -> np.ndarray:
    """(5,) probability of an image having 1..5 distinct labels."""
    counts = np.asarray(LABEL_COUNT_IMAGES, dtype=np.float64)
    return counts / counts.sum()


def sampling_weights(power: float = 1.0) -> np.ndarray:
    """(19,) class sampling weights raised to ``power`` (1 = real frequencies, 0 = uniform), summing to 1."""
    weights = np.asarray(SAMPLING_WEIGHTS, dtype=np.float64) ** power
    return weights / weights.sum()
