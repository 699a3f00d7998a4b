"""Near-duplicate images by perceptual hash (pHash, 64 bits) across the train and test splits.

    python find_duplicates.py --data_dir data/synthetic --splits train test

Writes ``--out`` (default ``{data_dir}/duplicate_groups.csv``: split, ID, group, size, hash), one row per
hashed image; images of one group differ in at most ``--max_distance`` of 64 bits (4: similarity >= 0.9375).
The fold builder (``src/data/folds.py``) reads that file when it lies beside ``train.csv`` and keeps each group in
one fold (folds cache ``folds_k{n}_seed{seed}_grouped.csv``). An unreadable image is named and skipped.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from src.data.atomic import write_csv_atomic
from src.data.duplicates import DUPLICATE_GROUPS_CSV, HASH_CHANNELS, group_near_duplicates, hash_images
from src.data.splits import split_image_ids


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="Kaggle-layout folder (train.csv, sample_submission.csv)")
    parser.add_argument("--splits", nargs="+", default=["train", "test"], choices=("train", "test"))
    parser.add_argument("--channel", default="green", choices=HASH_CHANNELS, help="channel hashed (mean: all four)")
    parser.add_argument("--max_distance", type=int, default=4, help="largest Hamming distance of near duplicates")
    parser.add_argument("--image_ext", default="png", choices=("png", "jpg"))
    parser.add_argument("--out", default="", help=f"groups CSV (default {{data_dir}}/{DUPLICATE_GROUPS_CSV})")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> pd.DataFrame:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 0 <= args.max_distance < 64:
        raise SystemExit(f"find_duplicates.py: --max_distance must lie in 0..63, got {args.max_distance}")
    images = [(split, image_id) for split in args.splits for image_id in split_image_ids(args.data_dir, split)]
    kept, hashes, errors = hash_images(args.data_dir, images, args.channel, args.image_ext)
    groups = group_near_duplicates(hashes, args.max_distance)
    sizes = np.bincount(groups)[groups] if len(groups) else np.zeros(0, dtype=np.int64)
    frame = pd.DataFrame(
        {
            "split": [s for s, _ in kept],
            "ID": [i for _, i in kept],
            "group": groups,
            "size": sizes,
            "hash": ["".join("1" if b else "0" for b in h) for h in hashes],
        }
    )
    out = Path(args.out) if args.out else Path(args.data_dir) / DUPLICATE_GROUPS_CSV
    write_csv_atomic(out, frame)
    summary = {
        "images": len(images),
        "hashed": len(kept),
        "unreadable": errors,
        "duplicate_groups": int((np.bincount(groups) > 1).sum()) if len(groups) else 0,
        "images_in_duplicate_groups": int((sizes > 1).sum()),
        "out": str(out),
    }
    print(json.dumps(summary))
    return frame


if __name__ == "__main__":
    main(parse_args())
