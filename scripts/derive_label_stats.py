"""Derive the label constants of src/synthetic/label_stats.py from the real competition train.csv.

Reads the full Kaggle train.csv once (21,806 rows) and prints Python source to paste into
``src/synthetic/label_stats.py``: the per-class image frequency, the label-count
distribution, and sampling weights calibrated so that drawing ``k`` labels from the
count distribution and then ``k`` distinct classes by weighted sampling without
replacement reproduces the per-class frequencies.

    python scripts/derive_label_stats.py --labels ../shared/data/hpa_train_labels_full.csv
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.classes import NEGATIVE, NUM_CLASSES  # noqa: E402
from src.data.io import read_labels  # noqa: E402
from src.synthetic.labels import sample_label_sets  # noqa: E402

DEFAULT_LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "hpa_train_labels_full.csv"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--labels", type=Path, default=DEFAULT_LABELS, help="real train.csv (ID,Label)")
    parser.add_argument("--iterations", type=int, default=60, help="calibration iterations")
    parser.add_argument("--samples", type=int, default=400_000, help="Monte Carlo draws per iteration")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def count_stats(label_lists: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image counts per class (19,), per label count (max_k,) and the number of images, from deduplicated labels."""
    sets = [sorted(set(labels)) for labels in label_lists]
    class_counts = np.zeros(NUM_CLASSES, dtype=np.int64)
    for labels in sets:
        class_counts[labels] += 1
    sizes = np.array([len(labels) for labels in sets])
    size_counts = np.bincount(sizes)[1:]
    return class_counts, size_counts, np.int64(len(sets))


def calibrate_weights(
    class_freq: np.ndarray, count_probs: np.ndarray, iterations: int, samples: int, seed: int
) -> np.ndarray:
    """Multiplicative fixed-point iteration of the sampling weights towards the target class frequencies."""
    weights = class_freq / class_freq.sum()
    for _ in range(iterations):
        rng = np.random.default_rng(seed)
        drawn = sample_label_sets(rng, samples, weights, count_probs)
        observed = drawn.mean(axis=0)
        weights = weights * (class_freq / np.maximum(observed, 1e-9)) ** 0.8
        weights /= weights.sum()
    return weights


def main(args: argparse.Namespace) -> None:
    frame = read_labels(args.labels)
    class_counts, size_counts, num_images = count_stats(list(frame["labels"]))
    class_freq = class_counts / num_images
    count_probs = size_counts / size_counts.sum()
    negative_with_others = sum(1 for labels in frame["labels"] if NEGATIVE in labels and len(set(labels)) > 1)
    print(f"# {num_images} images from {args.labels.name}; Negative with other labels: {negative_with_others}")
    weights = calibrate_weights(class_freq, count_probs, args.iterations, args.samples, args.seed)
    check = sample_label_sets(np.random.default_rng(args.seed + 1), args.samples, weights, count_probs).mean(axis=0)
    print(f"# calibration: max |sampled - real| class frequency = {np.abs(check - class_freq).max():.4f}")
    print(f"NUM_REAL_IMAGES = {int(num_images)}")
    print(f"CLASS_IMAGE_COUNTS = ({', '.join(str(int(c)) for c in class_counts)})")
    print(f"LABEL_COUNT_IMAGES = ({', '.join(str(int(c)) for c in size_counts)})")
    print(f"SAMPLING_WEIGHTS = ({', '.join(f'{w:.6f}' for w in weights)})")


if __name__ == "__main__":
    main(parse_args())
