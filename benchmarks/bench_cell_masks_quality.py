"""Quality of the classical and learned segmentation backends on real and synthetic images.

    python benchmarks/bench_cell_masks_quality.py                       # real data only
    python benchmarks/bench_cell_masks_quality.py --synthetic_dir /tmp/synth_cells
    python benchmarks/bench_cell_masks_quality.py --weights other.pt --backends learned
    python benchmarks/bench_cell_masks_quality.py --backends learned --learned_params "{seed_h: 0}"  # or a YAML file

The learned rows use --weights (default: outputs/cell_segmenter/weights.pt, where
train_cell_segmenter.py writes); without that file they are skipped with the reason. "learned"
rows grow cells on the network's cell maps, "learned nuclei + classical cells" with the classical
cell watershed seeded by the learned nuclei.

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
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import yaml
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.segmentation import watershed

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.cell_masks.classical import ClassicalParams, segment_classical, segment_nuclei  # noqa: E402
from src.cell_masks.learned import LearnedSegmenter  # noqa: E402
from src.cell_masks.learned_net import DEFAULT_WEIGHTS  # noqa: E402
from src.cell_masks.quality import f1_score, match_instances  # noqa: E402
from src.data.io import read_labels, read_rgby  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsb_dir", type=Path, default=Path("../shared/data/dsb2018_nuclei"))
    parser.add_argument("--hpa_dir", type=Path, default=Path("../shared/data/hpa_kaggle_samples"))
    parser.add_argument("--synthetic_dir", type=Path, default=None, help="output of make_synthetic_data.py (optional)")
    parser.add_argument("--weights", type=Path, default=ROOT / DEFAULT_WEIGHTS, help="learned backend weight file")
    parser.add_argument(
        "--learned_params",
        default="{}",
        help="LearnedParams overrides: YAML mapping or YAML file (tune_learned_masks.py)",
    )
    parser.add_argument("--backends", default="classical,learned", help="comma-separated: classical, learned")
    parser.add_argument("--per_image", action="store_true", help="also print the F1 of every DSB2018 image")
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


def read_dsb_labelled(folder: Path, paths: list[Path] | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(id, (H, W) image, (H, W) int32 truth labels) of a ``dsb2018_stage1_train_fluo``-style folder
    (``images/{id}.png`` + ``label_masks/{id}.png``): every image, or those of ``paths``.

    Raises:
        FileNotFoundError: an image or its label file is missing or unreadable (the file is named).
    """
    samples = []
    for path in sorted((folder / "images").glob("*.png")) if paths is None else paths:
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        labels = cv2.imread(str(folder / "label_masks" / path.name), cv2.IMREAD_UNCHANGED)
        if image is None or labels is None:
            raise FileNotFoundError(f"{path}: image or its label_masks file missing or unreadable")
        gray = image[..., :3].max(axis=-1) if image.ndim == 3 else image
        samples.append((path.stem, gray, labels.astype(np.int32)))
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


def learned_overrides(text: str) -> dict:
    """``LearnedParams`` overrides from ``--learned_params``: a YAML mapping, or a YAML file holding one."""
    return yaml.safe_load(Path(text).read_text() if Path(text).is_file() else text) or {}


def methods(args: argparse.Namespace) -> list[tuple[str, Callable, Callable]]:
    """(row name, nuclei function (H, W) -> labels, cells function RGBY -> cell labels) per backend variant."""
    params = ClassicalParams()
    chosen = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = sorted(set(chosen) - {"classical", "learned"})
    if unknown:
        raise SystemExit(f"--backends: unknown {unknown}; valid: classical, learned")
    rows: list[tuple[str, Callable, Callable]] = []
    if "classical" in chosen:
        rows.append(("classical", lambda g: segment_nuclei(g, params), lambda rgby: segment_classical(rgby, params)[1]))
    if "learned" in chosen:
        if not args.weights.is_file():
            print(f"| learned | skipped: no weights at {args.weights} (train_cell_segmenter.py) | | | | | |")
        else:
            overrides = learned_overrides(args.learned_params)
            learned = LearnedSegmenter(args.weights, **overrides)
            mixed = LearnedSegmenter(args.weights, **{**overrides, "cells": "classical"})
            rows.append(("learned", learned.nuclei, lambda rgby: learned(rgby)[1]))
            rows.append(("learned nuclei + classical cells", None, lambda rgby: mixed(rgby)[1]))
    return rows


def main(args: argparse.Namespace) -> None:
    print("| set | images | true objects | F1 pooled | F1 per-image mean | mean matched IoU | seconds |")
    print("|---|---|---|---|---|---|---|")
    variants = methods(args)
    if args.dsb_dir.is_dir():
        samples = read_dsb(args.dsb_dir)
        nuclei_methods = [("naive Otsu+DT watershed", naive_nuclei)] if "classical" in args.backends else []
        nuclei_methods += [(name, nuclei) for name, nuclei, _ in variants if nuclei is not None]
        for name, method in nuclei_methods:
            tally, start = Tally(), time.perf_counter()
            for _, gray, truth in samples:
                tally.add(method(gray), truth, 0.5)
            print(tally.row(f"DSB2018 nuclei, {name} (IoU>=0.5)", time.perf_counter() - start))
            if args.per_image:
                print(f"| per image, {name} | " + " ".join(f"{f1:.2f}" for f1 in tally.per_image) + " | | | | | |")
    else:
        print(f"| DSB2018 nuclei | skipped: {args.dsb_dir} not found | | | | | |")
    reference_dir = args.hpa_dir / "masks_hpacellseg"
    if reference_dir.is_dir():
        for name, _, cells in variants:
            tally, start = Tally(), time.perf_counter()
            for image_id in read_labels(args.hpa_dir / "train.csv")["ID"]:
                rgby = read_rgby(args.hpa_dir, image_id, split="")
                reference = cv2.imread(str(reference_dir / f"{image_id}_predictedmask.png"), cv2.IMREAD_UNCHANGED)
                tally.add(cells(rgby), reference, 0.6)
            print(tally.row(f"HPA cells vs hpacellseg, {name} (IoU>=0.6)", time.perf_counter() - start))
    else:
        print(f"| HPA cells | skipped: {reference_dir} not found | | | | | |")
    if args.synthetic_dir is not None:
        truth_dir = args.synthetic_dir / "truth" / "cell_masks"
        for name, _, cells in variants:
            tally, start = Tally(), time.perf_counter()
            for truth_file in sorted(truth_dir.glob("*.png")):
                image_id = truth_file.stem
                split = "test" if (args.synthetic_dir / "test" / f"{image_id}_blue.png").is_file() else "train"
                rgby = read_rgby(args.synthetic_dir, image_id, split=split)
                tally.add(cells(rgby), cv2.imread(str(truth_file), cv2.IMREAD_UNCHANGED), 0.6)
            print(
                tally.row(
                    f"synthetic cells vs truth, {name} (IoU>=0.6) [{args.synthetic_dir}]", time.perf_counter() - start
                )
            )


if __name__ == "__main__":
    main(parse_args())
