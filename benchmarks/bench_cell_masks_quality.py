"""Quality of the classical segmentation backend on real and synthetic images.

    python benchmarks/bench_cell_masks_quality.py                       # real data only
    python benchmarks/bench_cell_masks_quality.py --synthetic_dir /tmp/synth_cells

Nuclei: DSB2018 fluorescence images with hand-made truth (F1 at IoU >= 0.5, mean matched IoU).
Cells: the three real HPA samples against the hpacellseg DPN-UNet masks (F1 at IoU >= 0.6),
and a synthetic benchmark against its truth (F1 at IoU >= 0.6). F1 is pooled over all
objects of a set (micro); the per-image mean (macro) is printed beside it. A naive
Otsu + distance-transform watershed is printed as a baseline for the nuclei.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.cell_masks.classical import ClassicalParams, segment_classical, segment_nuclei  # noqa: E402
from src.cell_masks.quality import f1_score, match_instances  # noqa: E402
from src.data.io import read_labels, read_rgby  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsb_dir", type=Path, default=Path("../shared/data/dsb2018_nuclei"))
    parser.add_argument("--hpa_dir", type=Path, default=Path("../shared/data/hpa_kaggle_samples"))
    parser.add_argument("--synthetic_dir", type=Path, default=None, help="output of make_synthetic_data.py (optional)")
    return parser.parse_args()


def naive_nuclei(gray: np.ndarray) -> np.ndarray:
    """Baseline: Otsu threshold, distance-transform peaks (min distance 5 px), watershed."""
    smoothed = cv2.GaussianBlur(gray.astype(np.float32), (0, 0), 1.0)
    foreground = smoothed > threshold_otsu(smoothed)
    distance = ndi.distance_transform_edt(foreground)
    peaks = peak_local_max(distance, min_distance=5, labels=foreground.astype(int), exclude_border=False)
    markers = np.zeros(gray.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground)


def read_dsb(dsb_dir: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, (H, W) uint8 image, (H, W) int32 truth labels) of every DSB2018 sample."""
    samples = []
    for folder in sorted(p for p in dsb_dir.iterdir() if p.is_dir()):
        image = cv2.imread(str(folder / "images" / f"{folder.name}.png"), cv2.IMREAD_UNCHANGED)
        gray = image[..., :3].max(axis=-1) if image.ndim == 3 else image
        truth = np.zeros(gray.shape, dtype=np.int32)
        for k, mask_file in enumerate(sorted((folder / "masks").glob("*.png")), start=1):
            truth[cv2.imread(str(mask_file), cv2.IMREAD_GRAYSCALE) > 0] = k
        samples.append((folder.name, gray, truth))
    return samples


class Tally:
    """Pooled and per-image instance-matching counts."""

    def __init__(self) -> None:
        self.tp = self.fp = self.fn = 0
        self.iou_sum = 0.0
        self.per_image: list[float] = []

    def add(self, pred: np.ndarray, truth: np.ndarray, threshold: float) -> None:
        tp, fp, fn, mean_iou = match_instances(pred, truth, threshold)
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        self.iou_sum += mean_iou * tp if tp else 0.0
        self.per_image.append(f1_score(tp, fp, fn))

    def row(self, name: str, seconds: float) -> str:
        mean_iou = self.iou_sum / self.tp if self.tp else float("nan")
        return (
            f"| {name} | {len(self.per_image)} | {self.tp + self.fn} | {f1_score(self.tp, self.fp, self.fn):.3f} | "
            f"{np.mean(self.per_image):.3f} | {mean_iou:.3f} | {seconds:.1f} |"
        )


def main(args: argparse.Namespace) -> None:
    params = ClassicalParams()
    print("| set | images | true objects | F1 pooled | F1 per-image mean | mean matched IoU | seconds |")
    print("|---|---|---|---|---|---|---|")
    if args.dsb_dir.is_dir():
        samples = read_dsb(args.dsb_dir)
        for name, method in (("DSB2018 nuclei, naive Otsu+DT watershed (IoU>=0.5)", naive_nuclei),
                             ("DSB2018 nuclei, classical (IoU>=0.5)", lambda g: segment_nuclei(g, params))):  # fmt: skip
            tally, start = Tally(), time.perf_counter()
            for _, gray, truth in samples:
                tally.add(method(gray), truth, 0.5)
            print(tally.row(name, time.perf_counter() - start))
    else:
        print(f"| DSB2018 nuclei | skipped: {args.dsb_dir} not found | | | | | |")
    reference_dir = args.hpa_dir / "masks_hpacellseg"
    if reference_dir.is_dir():
        tally, start = Tally(), time.perf_counter()
        for image_id in read_labels(args.hpa_dir / "train.csv")["ID"]:
            rgby = read_rgby(args.hpa_dir, image_id, split="")
            reference = cv2.imread(str(reference_dir / f"{image_id}_predictedmask.png"), cv2.IMREAD_UNCHANGED)
            tally.add(segment_classical(rgby, params)[1], reference, 0.6)
        print(tally.row("HPA cells vs hpacellseg, classical (IoU>=0.6)", time.perf_counter() - start))
    else:
        print(f"| HPA cells | skipped: {reference_dir} not found | | | | | |")
    if args.synthetic_dir is not None:
        truth_dir = args.synthetic_dir / "truth" / "cell_masks"
        tally, start = Tally(), time.perf_counter()
        for truth_file in sorted(truth_dir.glob("*.png")):
            image_id = truth_file.stem
            split = "test" if (args.synthetic_dir / "test" / f"{image_id}_blue.png").is_file() else "train"
            rgby = read_rgby(args.synthetic_dir, image_id, split=split)
            tally.add(segment_classical(rgby, params)[1], cv2.imread(str(truth_file), cv2.IMREAD_UNCHANGED), 0.6)
        print(
            tally.row(
                f"synthetic cells vs truth, classical (IoU>=0.6) [{args.synthetic_dir}]", time.perf_counter() - start
            )
        )


if __name__ == "__main__":
    main(parse_args())
