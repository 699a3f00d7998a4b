"""Picture of the learned backend's nuclei on a held-out DSB2018 test image: truth, one scale, the default inference.

python scripts/plot_learned_nuclei.py --weights outputs/gpu_run2/cell_segmenter.pt --out images/learned_nuclei_dsb.png

Predicted outlines are green where the nucleus matches a true one (IoU >= 0.5, the DSB2018 measure) and red where it
does not; true nuclei that no prediction matches are filled red in the truth panel. The default image is the
densest of the 18 (the one with the most nuclei), where most of the errors are.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import find_boundaries

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from bench_cell_masks_quality import read_dsb  # noqa: E402

from src.cell_masks.learned import LearnedSegmenter  # noqa: E402
from src.cell_masks.learned_net import DEFAULT_WEIGHTS  # noqa: E402
from src.cell_masks.quality import f1_score, iou_matrix, match_instances  # noqa: E402
from src.viz.panels import save_panels  # noqa: E402

MATCH_IOU = 0.5
GREEN, RED, YELLOW = (0, 220, 0), (255, 40, 40), (255, 220, 0)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dsb_dir", type=Path, default=Path("../shared/data/dsb2018_nuclei"))
    parser.add_argument("--image_id", default=None, help="default: the image with the most nuclei")
    parser.add_argument("--weights", type=Path, default=ROOT / DEFAULT_WEIGHTS, help="learned backend weight file")
    parser.add_argument("--crop", type=int, default=256, help="side of the shown top-left crop, original pixels")
    parser.add_argument("--out", type=Path, default=Path("images/learned_nuclei_dsb.png"))
    return parser.parse_args()


def matched(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Boolean per predicted and per true label (index 0 = background, False): has a partner at IoU >= 0.5.

    A pair above 0.5 is each other's only such partner, so this is the one-to-one matching of the benchmark.
    """
    ious = iou_matrix(pred, truth)
    pred_ok, truth_ok = np.zeros(int(pred.max()) + 1, bool), np.zeros(int(truth.max()) + 1, bool)
    pred_ids, truth_ids = np.unique(pred[pred > 0]), np.unique(truth[truth > 0])
    if ious.size:
        pred_ok[pred_ids] = ious.max(axis=1) >= MATCH_IOU
        truth_ok[truth_ids] = ious.max(axis=0) >= MATCH_IOU
    return pred_ok, truth_ok


def outlined(gray: np.ndarray, labels: np.ndarray, good: np.ndarray, fill_bad: bool, scale: int) -> np.ndarray:
    """(h * scale, w * scale, 3) uint8: the image with each label's outline green (good) or red (not good)."""
    shown = cv2.resize(cv2.normalize(gray, None, 0, 255, cv2.NORM_MINMAX), None, fx=scale, fy=scale)
    shown = np.repeat(shown[..., None], 3, axis=2).astype(np.uint8)
    big = cv2.resize(labels.astype(np.int32), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    edges = find_boundaries(big, mode="inner")
    bad = ~good[big] & (big > 0)
    if fill_bad:
        shown[bad] = (0.6 * shown[bad] + 0.4 * np.array(RED)).astype(np.uint8)
    shown[edges & ~bad] = GREEN if not fill_bad else YELLOW
    shown[edges & bad] = RED
    return shown


def main(args: argparse.Namespace) -> None:
    if not args.dsb_dir.is_dir():
        raise SystemExit(f"--dsb_dir {args.dsb_dir}: not found (../shared/data/dsb2018_nuclei)")
    if not args.weights.is_file():
        raise SystemExit(f"--weights {args.weights}: no such file (train_cell_segmenter.py writes it)")
    samples = {name: (gray, truth) for name, gray, truth in read_dsb(args.dsb_dir)}
    image_id = args.image_id or max(samples, key=lambda name: int(samples[name][1].max()))
    if image_id not in samples:
        raise SystemExit(f"--image_id {image_id}: not in {args.dsb_dir}")
    gray, truth = samples[image_id]
    rows = [("one scale", {"tta_scales": [1.0]}), ("default: scales 0.7, 1, 1.4", {})]
    crop = (slice(0, args.crop), slice(0, args.crop))
    scale = max(1, 512 // args.crop)
    panels, missed = [], np.zeros(int(truth.max()) + 1, bool)
    for title, overrides in rows:
        pred = LearnedSegmenter(args.weights, **overrides).nuclei(gray).astype(np.int32)
        tp, fp, fn, _ = match_instances(pred, truth, MATCH_IOU)
        pred_ok, truth_ok = matched(pred, truth)
        missed |= ~truth_ok
        panels.append(
            (outlined(gray[crop], pred[crop], pred_ok, False, scale), f"{title}: F1 {f1_score(tp, fp, fn):.2f}")
        )
    truth_panel = outlined(gray[crop], truth[crop], ~missed, True, scale)
    panels.insert(0, (truth_panel, f"truth: {int(truth.max())} nuclei (red: missed by either)"))
    title = f"DSB2018 test image {image_id[:12]}, top-left {args.crop} px: green matched (IoU >= 0.5), red not"
    save_panels(panels, title, args.out, figsize=(15, 5.6), top=0.88)
    print(f"wrote {args.out} ({image_id})")


if __name__ == "__main__":
    main(parse_args())
