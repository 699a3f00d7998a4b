"""Image-level labels of a classification checkpoint, at 0.5 and at per-class thresholds fitted on a validation fold.

    python predict_image_labels.py --data_dir data/synthetic --ckpt outputs/.../last.ckpt \\
        --fit_fold 0 --tta five_crop_max --out_dir outputs/image_labels

With ``--fit_fold F`` the thresholds are fitted on training fold F (maximising each class's F1) and written to
``--thresholds`` (default beside the checkpoint); without it they are read from there, and refused if fitted for
another checkpoint or class count. Writes ``{out_dir}/image_probs.csv``, ``labels_at_0.5.csv``,
``labels_fitted.csv`` and, when the split's truth is known, ``metrics.json`` (macro F1 both ways).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from src.data.atomic import write_csv_atomic, write_text_atomic
from src.data.folds import N_FOLDS
from src.data.splits import split_image_ids
from src.image_labels.predict import (
    image_truth,
    out_of_fold_probs,
    predict_ensemble_probs,
    predict_split_probs,
    write_labels_csv,
)
from src.image_labels.thresholds import default_thresholds_path, load_thresholds, save_thresholds
from src.image_labels.tta import IMAGE_TTA_MODES
from src.metrics.image_f1 import fit_class_thresholds, macro_f1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument("--data_dir", required=True, help="Kaggle-layout folder (train.csv, train/, test/)")
    data.add_argument("--split", default="test", choices=("train", "test"), help="split to label")
    data.add_argument("--fold", type=int, default=-1, help="with --split train: only this fold (-1: all)")
    data.add_argument("--truth_dir", default="", help="per-cell truth of the test split (default {data_dir}/truth)")
    model = parser.add_argument_group("model")
    model.add_argument(
        "--ckpt", nargs="+", required=True, help="classification checkpoint(s); several: their mean (K-fold ensemble)"
    )
    model.add_argument("--tta", default="none", choices=IMAGE_TTA_MODES, help="image-probability TTA")
    model.add_argument("--crop_fraction", type=float, default=0.75, help="crop side / image side (five-crop TTA)")
    model.add_argument("--batch_size", type=int, default=16)
    thresholds = parser.add_argument_group("thresholds")
    thresholds.add_argument("--fit_fold", type=int, default=-1, help="fit thresholds on this training fold first")
    thresholds.add_argument(
        "--fit_oof", action="store_true",
        help="fit thresholds on the out-of-fold predictions of the fold models (each on its own validation fold)",
    )  # fmt: skip
    thresholds.add_argument("--n_splits", type=int, default=N_FOLDS, help="folds of the training images")
    thresholds.add_argument(
        "--thresholds", default="", help="thresholds JSON (default {ckpt}.thresholds_{tta}.json beside the checkpoint)"
    )
    parser.add_argument("--out_dir", required=True, help="output folder")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> dict:
    if args.split == "test" and args.fold >= 0:
        raise ValueError("--fold applies to --split train only")
    ensemble = len(args.ckpt) > 1
    if ensemble and args.fit_fold >= 0:
        raise ValueError("--fit_fold fits one model on its validation fold; an ensemble of folds needs --fit_oof")
    if ensemble and not args.thresholds:
        raise ValueError("several --ckpt: name the ensemble's --thresholds file")
    checkpoints = args.ckpt if ensemble else args.ckpt[0]
    thresholds_path = Path(args.thresholds) if args.thresholds else default_thresholds_path(args.ckpt[0], args.tta)
    if args.fit_fold >= 0 or args.fit_oof:
        if args.fit_oof:
            val_ids, val_probs = out_of_fold_probs(
                args.ckpt, args.data_dir, args.tta, args.crop_fraction, args.batch_size
            )
        else:
            val_ids = split_image_ids(args.data_dir, "train", args.fit_fold, args.n_splits)
            val_probs = predict_split_probs(
                args.ckpt[0], args.data_dir, "train", val_ids, args.tta, args.crop_fraction, args.batch_size
            )
        fitted = fit_class_thresholds(image_truth(args.data_dir, "train", val_ids), val_probs)
        fold = "out-of-fold" if args.fit_oof else args.fit_fold
        save_thresholds(
            thresholds_path, fitted, checkpoints, tta=args.tta, fold=fold, n_splits=args.n_splits,
            num_images=len(val_ids),
        )  # fmt: skip
        print(f"thresholds fitted on training fold {fold} ({len(val_ids)} images): {thresholds_path}")
    fitted, _ = load_thresholds(thresholds_path, checkpoints)

    ids = split_image_ids(args.data_dir, args.split, args.fold, args.n_splits)
    probs = predict_ensemble_probs(
        args.ckpt, args.data_dir, args.split, ids, args.tta, args.crop_fraction, args.batch_size
    )
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(
        out_dir / "image_probs.csv", pd.DataFrame(probs.round(5), columns=range(probs.shape[1])).assign(ID=ids)
    )
    write_labels_csv(out_dir / "labels_at_0.5.csv", ids, probs, np.full(probs.shape[1], 0.5))
    write_labels_csv(out_dir / "labels_fitted.csv", ids, probs, fitted)
    metrics: dict = {"split": args.split, "images": len(ids), "tta": args.tta, "thresholds": str(thresholds_path)}
    has_truth = args.split == "train" or Path(args.truth_dir or Path(args.data_dir) / "truth").is_dir()
    if has_truth:
        truth = image_truth(args.data_dir, args.split, ids, args.truth_dir)
        metrics["macro_f1_at_0.5"] = round(macro_f1(truth, probs, 0.5), 4)
        metrics["macro_f1_fitted"] = round(macro_f1(truth, probs, fitted), 4)
        write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    print(json.dumps(metrics))
    return metrics


if __name__ == "__main__":
    main(parse_args())
