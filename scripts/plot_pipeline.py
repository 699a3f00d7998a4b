"""The pipeline diagram of the README: every stage script, what it reads and what it writes.

python scripts/plot_pipeline.py --out images/pipeline.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from src.data.atomic import atomic_path  # noqa: E402

# (x, y, script, what it writes, colour); x and y are box centres in axis units
STAGES = [
    (
        1.0,
        3.0,
        "make_synthetic_data.py\nor Kaggle data",
        "train/ test/ train.csv\n(+ truth/ when synthetic)",
        "#dddddd",
    ),
    (3.4, 3.0, "run_classification.py\nround 0", "timm classifier,\nlast.ckpt", "#9ecae1"),
    (5.8, 3.0, "extract_feature.py", "feature/R0_feature.npy", "#9ecae1"),
    (8.2, 3.0, "create_pseudo_label.py", "k-means per class:\nlabel/R1_sub_label.csv", "#9ecae1"),
    (10.6, 3.0, "run_classification.py\nround 1 (SC-CAM)", "19 + 19k heads,\nlast.ckpt", "#9ecae1"),
    (1.0, 1.0, "make_cell_masks.py\n(or on demand)", "masks/{ID}.npz\ncell + nucleus labels", "#c7e9c0"),
    (3.4, 1.0, "run_cam_infer.py\nstage gen_pseudo", "pseudo_label.csv\n(CAM x true labels)", "#fdd0a2"),
    (5.8, 1.0, "create_segm_labels.py", "{ID}.npz: cells +\nper-cell confidences", "#fdd0a2"),
    (8.2, 1.0, "run_classification.py\n--segm_label_dir", "U-Net (smp, timm\nencoder), last.ckpt", "#fdd0a2"),
    (10.6, 1.0, "run_cam_infer.py\nstage test", "submission.csv\n-> evaluate.py (mAP)", "#fcbba1"),
]
ARROWS = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 6), (4, 9), (5, 6), (6, 7), (7, 8), (8, 9), (5, 9), (0, 5)]
WIDTH, HEIGHT = 2.1, 1.25


def main(args: argparse.Namespace) -> None:
    figure, axis = plt.subplots(figsize=(15, 6), dpi=100)
    for x, y, script, output, colour in STAGES:
        axis.add_patch(
            FancyBboxPatch(
                (x - WIDTH / 2, y - HEIGHT / 2), WIDTH, HEIGHT, boxstyle="round,pad=0.04", fc=colour, ec="#444444"
            )
        )
        axis.text(x, y + 0.2, script, ha="center", va="center", fontsize=9.5, weight="bold", family="monospace")
        axis.text(x, y - 0.33, output, ha="center", va="center", fontsize=8.5, color="#333333")
    for start, end in ARROWS:
        (x0, y0), (x1, y1) = STAGES[start][:2], STAGES[end][:2]
        rad = 0.0
        if (start, end) == (5, 9):  # masks also feed the final inference: an arc under the bottom row
            a, b, rad = (x0, y0 - HEIGHT / 2 - 0.05), (x1, y1 - HEIGHT / 2 - 0.05), 0.12
        elif y0 == y1:  # same row: side to side
            a, b = (x0 + WIDTH / 2 + 0.05, y0), (x1 - WIDTH / 2 - 0.05, y1)
        elif x0 == x1:  # same column: top to bottom
            a, b = (x0, y0 - HEIGHT / 2 - 0.05), (x1, y1 + HEIGHT / 2 + 0.05)
        else:  # round 1 (top right) feeds the pseudo labels (bottom left)
            a, b = (x0 - 0.3, y0 - HEIGHT / 2 - 0.05), (x1 + 0.3, y1 + HEIGHT / 2 + 0.05)
        axis.add_patch(
            FancyArrowPatch(
                a, b, arrowstyle="-|>", mutation_scale=14, color="#444444", connectionstyle=f"arc3,rad={rad}"
            )
        )
    axis.text(6.0, 4.0, "stage 1: image-level classifier with SC-CAM rounds", ha="center", fontsize=11, color="#08519c")
    axis.text(6.0, -0.95, "stage 2: CAM pseudo labels -> per-pixel segmentation -> per-cell submission", ha="center",
              fontsize=11, color="#a63603")  # fmt: skip
    axis.set_xlim(-0.2, 11.8)
    axis.set_ylim(-1.1, 4.3)
    axis.axis("off")
    figure.suptitle("scripts/run_pipeline.sh: the chain of stage scripts", fontsize=13)
    figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92)
    with atomic_path(args.out) as tmp:
        figure.savefig(tmp)
    plt.close(figure)
    print(f"wrote {args.out}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("images/pipeline.png"))
    return parser.parse_args()


if __name__ == "__main__":
    main(parse_args())
