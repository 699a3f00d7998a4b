"""Per-image pseudo segmentation targets from a CAM pseudo-label submission (stage 2 input).

    python run_cam_infer.py --yaml_path src/config/generate_pseudo_label.yaml --sub_path SEGM/pseudo_label.csv
    python create_segm_labels.py --save_folder SEGM --sub_csv SEGM/pseudo_label.csv
    python run_classification.py ... --segm_label_dir SEGM --segm_thresh 0.225

``--sub_csv`` is a submission CSV (ID,ImageWidth,ImageHeight,PredictionString) or a folder of
shard CSVs. Each image becomes ``SEGM/{ID}.npz`` (cell mask + per-cell class confidences; the
threshold is chosen at training time). Rows whose PredictionString is empty or cannot be decoded
are listed in ``SEGM/segm_label_errors.csv`` and make the script exit with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from src.data.atomic import write_csv_atomic
from src.segm_labels.targets import (
    ERROR_COLUMNS,
    ERROR_FILE,
    pseudo_labels_from_prediction_string,
    target_path,
    write_pseudo_labels,
)
from src.submission.codec import SUBMISSION_COLUMNS

Row = tuple[str, str, object, object, object]  # ID, where (file, line, ID), width, height, PredictionString


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save_folder", type=Path, required=True, help="folder of the per-image targets")
    parser.add_argument(
        "--sub_csv", type=Path, required=True, help="pseudo-label CSV of run_cam_infer.py, or a folder of shard CSVs"
    )
    parser.add_argument(
        "--max_side", type=int, default=0, help="store cell masks with the longer side at most this (0: full size)"
    )
    parser.add_argument("--num_workers", type=int, default=min(4, os.cpu_count() or 1), help="decoding processes")
    return parser.parse_args(argv)


def pseudo_label_files(sub_csv: Path) -> list[Path]:
    """The CSV itself, or the ``*.csv`` files of a folder (sorted)."""
    if sub_csv.is_dir():
        files = sorted(sub_csv.glob("*.csv"))
        if not files:
            raise FileNotFoundError(f"--sub_csv {sub_csv} is a folder without *.csv files")
        return files
    if not sub_csv.is_file():
        raise FileNotFoundError(f"--sub_csv not found: {sub_csv}")
    return [sub_csv]


def read_rows(files: list[Path]) -> list[Row]:
    """(ID, where, width, height, PredictionString) per row of every file.

    Raises:
        ValueError: a file without the submission columns, or an ID found twice (names both places).
    """
    rows: list[Row] = []
    seen: dict[str, str] = {}
    for path in files:
        frame = pd.read_csv(path, dtype={"ID": str, "PredictionString": str}, keep_default_na=False)
        missing = [c for c in SUBMISSION_COLUMNS if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing} (has {list(frame.columns)}); not a pseudo-label CSV")
        for line, (image_id, width, height, text) in enumerate(
            zip(frame["ID"], frame["ImageWidth"], frame["ImageHeight"], frame["PredictionString"]), start=2
        ):
            where = f"{path.name} line {line} (ID {image_id})"
            if image_id in seen:
                raise ValueError(f"ID {image_id} appears twice: {seen[image_id]} and {where}")
            seen[image_id] = where
            rows.append((image_id, where, width, height, text))
    return rows


def _convert(job: tuple[Row, str, int]) -> tuple[str, str | None]:
    """Worker: decode one row and write its npz; (ID, None) or (ID, error message)."""
    (image_id, where, width, height, text), save_folder, max_side = job
    try:
        try:
            height, width = int(height), int(width)
        except (TypeError, ValueError):
            raise ValueError(f"{where}: ImageWidth {width!r} / ImageHeight {height!r} are not integers") from None
        labels = pseudo_labels_from_prediction_string(text, height, width, where, max_side)
        write_pseudo_labels(target_path(save_folder, image_id), labels)
        return image_id, None
    except ValueError as error:
        return image_id, str(error)


def main(args: argparse.Namespace) -> int:
    if args.num_workers < 1:
        raise SystemExit(f"--num_workers must be >= 1, got {args.num_workers}")
    if args.max_side < 0:
        raise SystemExit(f"--max_side must be >= 0, got {args.max_side}")
    rows = read_rows(pseudo_label_files(args.sub_csv))
    args.save_folder.mkdir(parents=True, exist_ok=True)
    jobs = [(row, str(args.save_folder), args.max_side) for row in rows]
    progress = {"total": len(jobs), "desc": "segmentation targets", "unit": "img"}
    if args.num_workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=args.num_workers) as pool:
            results = list(tqdm(pool.map(_convert, jobs, chunksize=8), **progress))
    else:
        results = [_convert(job) for job in tqdm(jobs, **progress)]
    errors = [(image_id, message) for image_id, message in results if message is not None]
    for image_id, _ in errors:  # a stale file of an earlier run must not stand in for a failed row
        target_path(args.save_folder, image_id).unlink(missing_ok=True)
    write_csv_atomic(args.save_folder / ERROR_FILE, pd.DataFrame(errors, columns=ERROR_COLUMNS))
    print(f"{len(results) - len(errors)} image(s) written to {args.save_folder}")
    if errors:
        print(f"{len(errors)} row(s) failed, listed in {args.save_folder / ERROR_FILE}:", file=sys.stderr)
        for image_id, message in errors[:10]:
            print(f"  {image_id}: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
