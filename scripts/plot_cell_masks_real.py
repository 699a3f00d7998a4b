"""Picture of the classical cell masks next to the hpacellseg reference on a real HPA image.

python scripts/plot_cell_masks_real.py --out images/cell_masks_real.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from skimage.segmentation import find_boundaries

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.cell_masks.classical import segment_classical  # noqa: E402
from src.cell_masks.quality import f1_score, match_instances  # noqa: E402
from src.data.io import read_rgby  # noqa: E402
from src.viz.panels import save_panels  # noqa: E402
from src.viz.render import rgby_to_display  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hpa_dir", type=Path, default=Path("../shared/data/hpa_kaggle_samples"))
    parser.add_argument("--image_id", default="000a6c98-bb9b-11e8-b2b9-ac1f6b6435d0")
    parser.add_argument("--side", type=int, default=1024, help="display side in px")
    parser.add_argument("--out", type=Path, default=Path("images/cell_masks_real.png"))
    return parser.parse_args()


def overlay(rgb: np.ndarray, cell_mask: np.ndarray, nuclei_mask: np.ndarray | None, side: int) -> np.ndarray:
    """(side, side, 3) uint8: the image with white cell outlines and magenta nucleus outlines."""
    shown = rgb.copy()
    for mask, colour in ((nuclei_mask, (255, 0, 255)), (cell_mask, (255, 255, 255))):
        if mask is not None:
            small = cv2.resize(mask, (side, side), interpolation=cv2.INTER_NEAREST)
            outline = cv2.dilate(find_boundaries(small, mode="inner").astype(np.uint8), np.ones((2, 2), np.uint8))
            shown[outline > 0] = colour
    return shown


def main(args: argparse.Namespace) -> None:
    reference_file = args.hpa_dir / "masks_hpacellseg" / f"{args.image_id}_predictedmask.png"
    if not reference_file.is_file():
        raise SystemExit(f"reference mask not found: {reference_file}")
    rgby = read_rgby(args.hpa_dir, args.image_id, split="")
    nuclei_mask, cell_mask = segment_classical(rgby)
    reference = cv2.imread(str(reference_file), cv2.IMREAD_UNCHANGED)
    tp, fp, fn, mean_iou = match_instances(cell_mask, reference, 0.6)
    small = cv2.resize(rgby, (args.side, args.side), interpolation=cv2.INTER_AREA)
    rgb = rgby_to_display(small)
    panels = (
        (overlay(rgb, cell_mask, nuclei_mask, args.side),
         f"classical (no weights): {int(cell_mask.max())} cells\nF1@IoU0.6 vs hpacellseg {f1_score(tp, fp, fn):.2f}, "
         f"mean IoU {mean_iou:.2f}"),
        (overlay(rgb, reference, None, args.side), f"hpacellseg DPN-UNets (reference): {len(np.unique(reference)) - 1} cells\nmodel output, not hand-drawn truth"),
    )  # fmt: skip
    title = f"HPA image {args.image_id}: cell (white) and nucleus (magenta) outlines"
    save_panels(panels, title, args.out, figsize=(14, 7.4))
    print(f"wrote {args.out}: F1 {f1_score(tp, fp, fn):.3f} (tp {tp}, fp {fp}, fn {fn}), mean IoU {mean_iou:.3f}")


if __name__ == "__main__":
    main(parse_args())
