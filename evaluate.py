"""Score a Kaggle HPA submission per cell against per-cell truth (single-cell mAP at IoU >= 0.6).

    python evaluate.py --submission SUB.csv --truth_dir data/synthetic/truth \
        [--split_csv data/synthetic/sample_submission.csv] [--json OUT.json] [--floor]
    python evaluate.py --submission cam=CAM.csv --submission segm=SEGM.csv --truth_dir ... --floor

Prints one AP column per scored submission (class id, name, truth cells, AP) and the mAP.
``--floor`` adds the image-label floor: every truth cell given all of its image's labels at
confidence 1 (works without ``--submission``). ``--ceiling`` adds, for each submission, its
within-image ceiling ("NAME ceiling"): the same confidences with every cell of an image put in the
right order, i.e. what perfect localisation could add to that submission's image-level evidence.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import pandas as pd

from src.data.atomic import write_text_atomic
from src.metrics import (
    evaluate_submission,
    format_ap_table,
    image_label_floor_submission,
    load_truth,
    within_image_ceiling,
)
from src.submission.codec import read_submission

FLOOR_NAME = "image-label floor"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "--submission",
        action="append",
        default=[],
        metavar="[NAME=]CSV",
        help="Kaggle submission CSV (ID,ImageWidth,ImageHeight,PredictionString); repeat to compare several, "
        "each optionally named NAME=CSV",
    )
    inputs.add_argument("--truth_dir", type=Path, required=True, help="truth folder: cell_masks/, cell_labels.csv")
    inputs.add_argument(
        "--split_csv",
        type=Path,
        help="CSV with an ID column (e.g. sample_submission.csv): the images scored; "
        "default the submission's IDs (with --floor only: every truth image)",
    )
    outputs = parser.add_argument_group("outputs")
    outputs.add_argument("--floor", action="store_true", help="also score the image-label floor")
    outputs.add_argument(
        "--ceiling",
        action="store_true",
        help="also score each submission's within-image ceiling: a class of the image given to a matched cell "
        "that lacks it is demoted x 1e-3 (perfect ranking of the cells inside each image)",
    )
    outputs.add_argument("--json", type=Path, help="write the results to this JSON file")
    run = parser.add_argument_group("run")
    run.add_argument(
        "--workers", type=int, default=1, help="processes matching cells (1 is fast enough for 500 images)"
    )
    return parser.parse_args(argv)


def read_split_ids(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"--split_csv not found: {path}")
    frame = pd.read_csv(path, dtype={"ID": str}, keep_default_na=False)
    if "ID" not in frame.columns:
        raise ValueError(f"--split_csv {path} has no ID column (has {list(frame.columns)})")
    return frame["ID"].tolist()


def named_submissions(entries: list[str]) -> dict[str, Path]:
    """``NAME=CSV`` or ``CSV`` entries to {name: path}; an unnamed single entry is called 'submission'."""
    named: dict[str, Path] = {}
    for entry in entries:
        name, sep, path = entry.partition("=")
        if not sep:
            name, path = ("submission" if len(entries) == 1 else Path(entry).stem), entry
        if name in named:
            raise SystemExit(f"--submission: the name {name!r} is given twice")
        named[name] = Path(path)
    return named


def main(args: argparse.Namespace) -> dict:
    if not args.submission and not args.floor:
        raise SystemExit("nothing to score: give --submission and/or --floor")
    if args.workers < 1:
        raise SystemExit(f"--workers must be >= 1, got {args.workers}")
    paths = named_submissions(args.submission)
    submissions = {name: read_submission(path) for name, path in paths.items()}
    if args.split_csv is not None:
        ids = read_split_ids(args.split_csv)
    elif submissions:
        ids = sorted(set().union(*(frame["ID"] for frame in submissions.values())))
    else:
        ids = None
    truth = load_truth(args.truth_dir, ids)
    print(f"scoring {len(truth.ids)} images against {args.truth_dir}")

    results = {}
    for name, submission in submissions.items():
        results[name] = evaluate_submission(submission, truth, list(truth.ids), workers=args.workers)
        if args.ceiling:
            ceiling = within_image_ceiling(submission, truth, list(truth.ids))
            results[f"{name} ceiling"] = evaluate_submission(ceiling, truth, list(truth.ids), workers=args.workers)
    if args.floor:
        floor = image_label_floor_submission(truth)
        results[FLOOR_NAME] = evaluate_submission(floor, truth, list(truth.ids), workers=args.workers)
    print(format_ap_table(results))

    report = {
        "truth_dir": str(args.truth_dir),
        "submissions": {name: str(path) for name, path in paths.items()},
        "split_csv": None if args.split_csv is None else str(args.split_csv),
        "num_images": len(truth.ids),
        "results": {name: result.to_dict() for name, result in results.items()},
    }
    if args.json is not None:
        write_text_atomic(args.json, json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    main(parse_args())
