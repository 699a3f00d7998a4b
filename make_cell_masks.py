"""Compute (or complete) the nucleus and cell mask cache of a Kaggle-layout image folder.

    python make_cell_masks.py --data_dir data/synthetic --split train --mask_dir data/synthetic/masks/classical

Writes MASK_DIR/{ID}.npz (keys nuclei_mask, cell_mask; (H, W) uint16, nucleus k inside cell k)
and MASK_DIR/manifest.json (backend and parameters). Re-running computes only missing or
corrupt files; a folder made with other settings is refused. Split the work across machines
with --num_shards N --shard_index i (same command, same IDs, i = 0..N-1).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import pandas as pd

from src.cell_masks.cache import MaskCacheMismatchError, fill_mask_cache
from src.cell_masks.classical import ClassicalParams
from src.cell_masks.segment import BACKENDS
from src.data.io import read_labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    io = parser.add_argument_group("input and output")
    io.add_argument(
        "--data_dir", type=Path, required=True, help="folder holding SPLIT/{ID}_{red,green,blue,yellow}.EXT"
    )
    io.add_argument("--split", default="train", help="sub-folder of the images ('' for a flat folder)")
    io.add_argument(
        "--csv", type=Path, default=None, help="CSV with an ID column (default: every *_blue.EXT in the split)"
    )
    io.add_argument("--ext", default="png", choices=("png", "jpg"), help="channel file extension")
    io.add_argument("--mask_dir", type=Path, required=True, help="mask cache folder")
    run = parser.add_argument_group("execution")
    run.add_argument("--backend", default="classical", choices=BACKENDS)
    run.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    run.add_argument("--num_shards", type=int, default=1, help="shards the IDs are split into")
    run.add_argument("--shard_index", type=int, default=0, help="shard computed by this run (0-based)")
    classical = parser.add_argument_group("classical backend")
    classical.add_argument(
        "--nucleus_diameter",
        type=float,
        default=None,
        help="typical nucleus diameter in px (default: estimated per image)",
    )
    learned = parser.add_argument_group("learned backend")
    learned.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="weight file of train_cell_segmenter.py (e.g. outputs/cell_segmenter/weights.pt)",
    )
    learned.add_argument(
        "--learned_cells", default="learned", choices=("learned", "classical"),
        help="cells from the network's cell maps, or the classical cell watershed seeded by the learned nuclei",
    )  # fmt: skip
    hpa = parser.add_argument_group("hpacellseg backend")
    hpa.add_argument("--nuclei_model", type=Path, default=None, help="hpacellseg nuclei model weights (.pth)")
    hpa.add_argument("--cell_model", type=Path, default=None, help="hpacellseg 3-channel cell model weights (.pth)")
    hpa.add_argument("--device", default="cpu", help="torch device for hpacellseg ('cpu', 'cuda', 'cuda:0')")
    pre = parser.add_argument_group("precomputed backend")
    pre.add_argument(
        "--precomputed_dir",
        type=Path,
        default=None,
        help="folder of {ID}.npz (arr_0) or {ID}[_predictedmask].png cell masks",
    )
    pre.add_argument(
        "--precomputed_nuclei_dir", type=Path, default=None, help="optional folder of nucleus masks, same layout"
    )
    return parser.parse_args(argv)


def backend_params(args: argparse.Namespace) -> dict:
    """Parameters of the chosen backend from the command line (errors name the missing argument)."""
    if args.backend == "classical":
        params = {}
        if args.nucleus_diameter is not None:
            params["nucleus_diameter"] = args.nucleus_diameter
        ClassicalParams(**params)
        return params
    if args.backend == "learned":
        if args.weights is None:
            raise SystemExit("--backend learned needs --weights PATH (train one with train_cell_segmenter.py)")
        return {"weights": args.weights, "cells": args.learned_cells}
    if args.backend == "hpacellseg":
        return {"nuclei_model": args.nuclei_model, "cell_model": args.cell_model, "device": args.device}
    if args.precomputed_dir is None:
        raise SystemExit("--backend precomputed needs --precomputed_dir")
    return {"cell_dir": args.precomputed_dir, "nuclei_dir": args.precomputed_nuclei_dir}


def list_ids(args: argparse.Namespace) -> list[str]:
    """Image IDs from --csv, or from the blue channel files of the split."""
    if args.csv is not None:
        return read_labels(args.csv)["ID"].tolist() if _has_label(args.csv) else _read_ids(args.csv)
    folder = args.data_dir / args.split
    if not folder.is_dir():
        raise SystemExit(f"image folder not found: {folder}")
    suffix = f"_blue.{args.ext}"
    ids = sorted(path.name[: -len(suffix)] for path in folder.glob(f"*{suffix}"))
    if not ids:
        raise SystemExit(f"no *{suffix} files in {folder}")
    return ids


def _has_label(csv_path: Path) -> bool:
    with open(csv_path) as handle:
        return "Label" in handle.readline().strip().split(",")


def _read_ids(csv_path: Path) -> list[str]:
    frame = pd.read_csv(csv_path, dtype=str)
    if "ID" not in frame.columns:
        raise SystemExit(f"{csv_path}: no ID column (has {list(frame.columns)})")
    return frame["ID"].tolist()


def main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    params = backend_params(args)
    ids = list_ids(args)
    start = time.perf_counter()
    try:
        report = fill_mask_cache(
            args.data_dir, args.split, ids, args.mask_dir, args.backend, params,
            workers=args.workers, num_shards=args.num_shards, shard_index=args.shard_index, ext=args.ext,
        )  # fmt: skip
    except (MaskCacheMismatchError, ImportError, FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    elapsed = time.perf_counter() - start
    print(
        f"masks in {args.mask_dir}: {report.computed} computed, {report.recomputed} recomputed (corrupt), "
        f"{report.cached} already cached, {len(report.failed)} failed ({elapsed:.1f} s)"
    )
    for image_id, error in report.failed.items():
        print(f"FAILED {image_id}: {error}", file=sys.stderr)
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
