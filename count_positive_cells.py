"""Per image and class: the region and number of positive cells, and their centres, from class maps alone
(no cell masks), MICRA-Net style; scored against the per-cell truth when it is there.

    python count_positive_cells.py --data_dir data/synthetic --ckpt outputs/.../last.ckpt \\
        --cam_method multigradcam --out_dir outputs/counting/multigradcam

Each map (``--map_size`` px) of a class the image is predicted to have (probability >= ``--prob_threshold``) is
split at Otsu's threshold; connected components of at least ``--min_area`` map pixels are the cells. Writes
``{out_dir}/cell_counts.csv`` (ID, class, count, centres as "row:col" in image pixels) and, with truth,
``metrics.json`` (pixel IoU, count MAE, exact-count fraction, detection precision/recall/F1).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from src.cam.classifier_source import CAM_METHODS
from src.cam.map_source import CheckpointSpec
from src.cam.sources import load_sources, predict_joined
from src.data.atomic import write_csv_atomic, write_text_atomic
from src.data.classes import NUM_CLASSES
from src.data.io import read_rgby
from src.data.splits import split_image_ids
from src.metrics.map_counting import CountingScores
from src.metrics.truth import load_truth
from src.scoring.map_regions import regions_and_centres


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="Kaggle-layout folder")
    parser.add_argument("--split", default="test", choices=("train", "test"))
    parser.add_argument("--truth_dir", default="", help="per-cell truth (default {data_dir}/truth when it exists)")
    parser.add_argument("--ckpt", required=True, help="classification (or, with --prob_ckpt, stage-2 U-Net) checkpoint")
    parser.add_argument("--prob_ckpt", default="", help="classifier whose image probabilities gate the classes, "
                        "--ckpt then gives the maps alone (a stage-2 U-Net needs one)")  # fmt: skip
    parser.add_argument("--cam_method", default="multigradcam", choices=CAM_METHODS)
    parser.add_argument("--gradcam_layer", default="", help="Grad-CAM layer(s), comma-separated ('' = default)")
    parser.add_argument("--gradcam_min_prob", type=float, default=-1.0,
                        help="Grad-CAM only for classes at or above this probability in an image of the batch "
                        "(-1: half of --prob_threshold; 0: every class)")  # fmt: skip
    parser.add_argument("--num_images", type=int, default=0, help="first N images of the split (0 = all)")
    parser.add_argument("--map_size", type=int, default=128, help="side of the maps and of the scored masks")
    parser.add_argument("--prob_threshold", type=float, default=0.5, help="image-level gate of a class")
    parser.add_argument("--min_area", type=int, default=4, help="smallest component (map pixels) that is a cell")
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--out_dir", required=True)
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    specs = [CheckpointSpec("cam", 1.0, args.ckpt), CheckpointSpec("pred", 1.0, args.prob_ckpt)]
    sources = load_sources(
        specs if args.prob_ckpt else [CheckpointSpec("both", 1.0, args.ckpt)],
        torch.device("cpu"), args.cam_method, args.gradcam_layer,
        args.prob_threshold / 2 if args.gradcam_min_prob < 0 else args.gradcam_min_prob,
    )  # fmt: skip
    ids = split_image_ids(args.data_dir, args.split)
    ids = ids[: args.num_images] if args.num_images > 0 else ids
    truth_dir = Path(args.truth_dir or Path(args.data_dir) / "truth")
    truth = load_truth(truth_dir, ids) if truth_dir.is_dir() and args.split == "test" else None
    scores = CountingScores(NUM_CLASSES)
    rows = []
    size = (args.map_size, args.map_size)
    for start in range(0, len(ids), args.batch_size):
        batch_ids = ids[start : start + args.batch_size]
        full = [read_rgby(args.data_dir, i, args.split) for i in batch_ids]
        inputs = {  # one resize per input size the sources need
            side: torch.from_numpy(
                np.stack([cv2.resize(im, (side, side), interpolation=cv2.INTER_AREA) for im in full])
            ).permute(0, 3, 1, 2)
            for side in {source.input_size for source in sources}
        }
        probs, maps = predict_joined(sources, inputs.__getitem__, size, flips=False, scales=[1.0])
        if probs is None:
            raise ValueError(f"{args.ckpt}: gives no image probabilities to gate the classes (add --prob_ckpt)")
        for n, image_id in enumerate(batch_ids):
            regions, centres = regions_and_centres(
                maps[n].numpy(), probs[n].numpy(), args.prob_threshold, args.min_area
            )
            height, width = full[n].shape[:2]
            scale = np.array([height / size[0], width / size[1]])
            for k in range(NUM_CLASSES):
                if len(centres[k]):
                    points = " ".join(f"{r:.0f}:{c:.0f}" for r, c in (centres[k] + 0.5) * scale)
                    rows.append((image_id, k, len(centres[k]), points))
            if truth is not None:
                cell_mask = cv2.resize(truth.read_cell_mask(image_id), size[::-1], interpolation=cv2.INTER_NEAREST)
                scores.add_image(regions, centres, cell_mask, truth.cell_labels[image_id])
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(out_dir / "cell_counts.csv", pd.DataFrame(rows, columns=["ID", "class", "count", "centres"]))
    metrics = {"images": len(ids), "cam_method": args.cam_method, "gradcam_layer": args.gradcam_layer}
    if truth is not None:
        metrics.update(scores.summary())
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main(parse_args())
