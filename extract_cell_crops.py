"""Cut every segmented cell of a split out of its image: the crop store the cell classifier trains on.

    python extract_cell_crops.py --data_dir data/synthetic --split train \
        --mask_dir data/synthetic/masks/train_classical --crop_dir outputs/synthetic/crops_64 --crop_size 64

Writes CROP_DIR/{split}/{ID}.npy ((K, S, S, C) uint8), CROP_DIR/{split}/{ID}.cells.json, CROP_DIR/{split}_index.csv
and CROP_DIR/manifest.json (crop settings and the mask backend). Masks missing from --mask_dir are computed there,
as run_cam_infer.py does. A re-run cuts only what is missing (a killed run resumes); a store or a mask cache made
with other settings is refused. Split the work with --num_shards N --shard_index i.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

from src.cell_masks.cache import MaskCacheMismatchError
from src.cell_masks.segment import BACKENDS
from src.crops.geometry import CROP_MASKS
from src.crops.store import CropSpec, CropStoreMismatchError, extract_split
from src.data.io import read_labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = parser.add_argument_group("input and output")
    io.add_argument("--data_dir", type=Path, required=True, help="Kaggle layout: train.csv, sample_submission.csv")
    io.add_argument("--split", default="train", choices=("train", "test"), help="IDs of train.csv or sample_submission")
    io.add_argument("--image_ext", default="png", choices=("png", "jpg"))
    io.add_argument("--mask_dir", type=Path, required=True, help="mask cache of the split (filled on demand)")
    io.add_argument("--mask_backend", default="classical", choices=BACKENDS)
    io.add_argument("--mask_params", default="{}", help="backend parameters as YAML, e.g. '{cell_dir: DIR}'")
    io.add_argument("--crop_dir", type=Path, required=True, help="crop store folder")
    crops = parser.add_argument_group("crops")
    crops.add_argument("--crop_size", type=int, default=64, help="side of every crop (64 at CPU scale, 128-256 on GPU)")
    crops.add_argument(
        "--crop_mask",
        default="zero",
        choices=CROP_MASKS,
        help="zero: pixels outside the cell zeroed; channel: the cell mask as a 5th channel; none: raw context",
    )
    crops.add_argument("--padding", type=float, default=0.1, help="context on each side, fraction of the cell side")
    run = parser.add_argument_group("execution")
    run.add_argument("--num_workers", type=int, default=2, help="worker processes (1: in this process)")
    run.add_argument("--num_shards", type=int, default=1)
    run.add_argument("--shard_index", type=int, default=0)
    return parser.parse_args(argv)


def split_ids(data_dir: Path, split: str) -> list[str]:
    if split == "train":
        return read_labels(data_dir / "train.csv")["ID"].tolist()
    csv = data_dir / "sample_submission.csv"
    if not csv.is_file():
        raise FileNotFoundError(f"--split test needs {csv}")
    return pd.read_csv(csv, dtype={"ID": str})["ID"].tolist()


def main(args: argparse.Namespace) -> int:
    mask_params = yaml.safe_load(args.mask_params) or {}
    if not isinstance(mask_params, dict):
        raise SystemExit(f"--mask_params must be a YAML mapping, got {args.mask_params!r}")
    if args.crop_size < 8:
        raise SystemExit(f"--crop_size must be >= 8, got {args.crop_size}")
    spec = CropSpec(args.crop_size, args.crop_mask, args.padding, 4, args.mask_backend, mask_params)
    ids = split_ids(args.data_dir, args.split)
    start = time.perf_counter()
    try:
        report = extract_split(
            args.data_dir, args.split, ids, args.mask_dir, args.crop_dir, spec,
            workers=args.num_workers, num_shards=args.num_shards, shard_index=args.shard_index, ext=args.image_ext,
        )  # fmt: skip
    except (MaskCacheMismatchError, CropStoreMismatchError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(
        f"{report.extracted} image(s) cut ({report.cells} cells) in {elapsed:.1f} s, "
        f"{report.done_before} done earlier; store {args.crop_dir}"
    )
    if report.failed:
        print(f"{len(report.failed)} image(s) failed; finished crops are kept, re-run to complete:", file=sys.stderr)
        for image_id, message in sorted(report.failed.items()):
            print(f"  {image_id}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(parse_args()))
