"""Evaluate single-cell representations: embeddings of every cell of a crop store from several models, per-image
profiles, NSC/NSCB 1-NN accuracy, a linear probe on the true cell labels and SIFLoc's bag-level scores.

    python evaluate_profiles.py --data_dir data/synthetic_domains --crop_dir outputs/domains/crops_64 \
        --model handcrafted=handcrafted --model random=random:cell_cnn:'{"widths": [16, 32, 64, 128]}' \
        --model selfsup=outputs/domains/pretrain/lightning_logs/version_0/checkpoints/last.ckpt \
        --out_dir outputs/domains/profiles --picture images/cell_embeddings.png

A --model is NAME=SPEC: ``handcrafted`` (CellProfiler-style intensity, texture and shape statistics), a checkpoint
of any run (self-supervised, cell classifier, image classifier: its backbone, pooled) or ``random:TIMM_NAME[:JSON
kwargs]`` (random init). Embeddings are written to OUT_DIR/{NAME}.npz atomically and reused while the model file
and the store are unchanged. The probe trains on the train split's cells and is scored on the test split's; 1-NN and
bags use the test images (NSCB needs metadata.csv, from make_synthetic_data.py --batches). ``--shift_column
cell_line`` (and/or ``batch``) adds ``probe_drop_cell_line``: per cell line, the probe's AP on that line's test cells
when its training images are among the probe's (a same-sized random share of all) minus when they are not, averaged
over the lines (per line in the JSON). Writes OUT_DIR/profiles.json and prints one Markdown table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from src.crops.store import read_index, read_manifest, read_mask_dir
from src.data.atomic import atomic_path, write_text_atomic
from src.data.io import labels_to_multihot, read_labels
from src.data.splits import METADATA, read_metadata
from src.profiles.cell_truth import truth_cell_labels
from src.profiles.embeddings import HANDCRAFTED, cell_embeddings, handcrafted_features, load_encoder, spec_fingerprint
from src.profiles.evaluation import (
    bag_scores,
    fit_probe,
    image_profiles,
    label_bags,
    macro_ap,
    nearest_neighbour_accuracy,
    predict_probe,
    probe_shift_drops,
    whiten,
)
from src.viz.embeddings import plot_embeddings

COLUMNS = ("NSC", "NSCB", "probe_mAP", "bag_macro_f1", "bag_micro_f1", "bag_auc")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", type=Path, required=True, help="benchmark: train.csv, truth/, metadata.csv")
    parser.add_argument("--crop_dir", type=Path, required=True, help="crop store with the train and test splits")
    parser.add_argument("--model", action="append", required=True, help="NAME=SPEC (see above); repeat")
    parser.add_argument("--out_dir", type=Path, required=True)
    parser.add_argument("--no_whiten", action="store_true", help="profiles from raw embeddings")
    parser.add_argument("--bag_size", type=int, default=20, help="images per bag (SIFLoc: 20)")
    parser.add_argument("--picture", type=Path, default=None, help="t-SNE picture of one model's embeddings")
    parser.add_argument("--picture_model", default=None, help="the model NAME drawn (default: the first)")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument(
        "--shift_column",
        choices=["cell_line", "batch"],
        action="append",
        default=[],
        help="add probe_drop_COLUMN: the probe's loss on each value of this metadata column when trained without it "
        "(repeat for both)",
    )
    args = parser.parse_args(argv)
    for item in args.model:
        if "=" not in item:
            parser.error(f"--model {item!r}: expected NAME=SPEC")
    return args


def embeddings_of(name: str, spec: str, crop_dir: Path, index: pd.DataFrame, out_dir: Path, batch_size: int):
    """The (N, F) embeddings of ``index``'s cells, from OUT_DIR/{name}.npz when it was made from the same inputs."""
    path = out_dir / f"{name}.npz"
    fingerprint = spec_fingerprint(spec, crop_dir)
    if path.is_file():
        saved = np.load(path)
        if str(saved["fingerprint"]) == fingerprint and len(saved["embeddings"]) == len(index):
            return saved["embeddings"]
    if spec == HANDCRAFTED:
        embeddings = handcrafted_features(crop_dir, index)
    else:
        encoder = load_encoder(spec, int(read_manifest(crop_dir)["channels"]))
        embeddings = cell_embeddings(encoder, crop_dir, index, batch_size)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, embeddings=embeddings, fingerprint=np.array(fingerprint))
    return embeddings


def score(
    embeddings: np.ndarray, index: pd.DataFrame, cell_truth: list, image_table: pd.DataFrame, args
) -> dict[str, float | dict[str, float]]:
    features = embeddings if args.no_whiten else whiten(embeddings)
    test = (index["split"] == "test").to_numpy()
    keys, profiles = image_profiles(index.loc[test, "ID"].to_numpy(), features[test])
    table = image_table.set_index("ID").loc[keys]
    row = {"NSC": nearest_neighbour_accuracy(profiles, list(table["label_set"]))}
    row["NSCB"] = nearest_neighbour_accuracy(profiles, list(table["label_set"]), list(table["batch"]))
    known = np.array([labels is not None for labels in cell_truth])
    train_cells, test_cells = known & ~test, known & test
    targets = labels_to_multihot([labels or [] for labels in cell_truth])
    probe = fit_probe(features[train_cells], targets[train_cells])
    row["probe_mAP"] = macro_ap(predict_probe(probe, features[test_cells]), targets[test_cells])
    for column in args.shift_column:
        domains = index["ID"].map(dict(zip(image_table["ID"], image_table[column]))).to_numpy()
        drops = probe_shift_drops(features, targets, index["ID"].to_numpy(), domains, train_cells, test_cells)
        row[f"probe_drop_{column}"] = float(np.mean(list(drops.values())))
        row[f"probe_drop_{column}_each"] = drops
    train_keys, train_profiles = image_profiles(index.loc[~test, "ID"].to_numpy(), features[~test])
    image_targets = labels_to_multihot(list(image_table.set_index("ID").loc[train_keys, "labels"]))
    image_probe = fit_probe(train_profiles, image_targets)
    test_targets = labels_to_multihot(list(table["labels"]))
    row |= bag_scores(
        predict_probe(image_probe, profiles), test_targets, label_bags(list(table["label_set"]), args.bag_size)
    )
    return row


def main(args: argparse.Namespace) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    index = pd.concat([read_index(args.crop_dir, split) for split in ("train", "test")], ignore_index=True)
    if index.empty:
        raise SystemExit(f"--crop_dir {args.crop_dir}: no cells")
    train = read_labels(args.data_dir / "train.csv")
    truth_path = args.data_dir / "truth" / "cell_labels.csv"
    if not truth_path.is_file():
        raise SystemExit(f"{truth_path} not found: the evaluation needs a benchmark with per-cell truth")
    truth = pd.read_csv(truth_path, dtype={"ID": str, "Label": str})
    test_labels = (
        truth[~truth["ID"].isin(train["ID"])]
        .groupby("ID")["Label"]
        .apply(lambda v: sorted({int(c) for label in v for c in label.split("|")}))
    )
    image_table = pd.concat(
        [train[["ID", "labels"]], pd.DataFrame({"ID": test_labels.index, "labels": test_labels.to_numpy()})],
        ignore_index=True,
    )
    image_table["label_set"] = ["|".join(map(str, sorted(labels))) for labels in image_table["labels"]]
    if args.shift_column or (args.data_dir / METADATA).is_file():
        metadata = read_metadata(args.data_dir, "--shift_column")
    else:
        metadata = pd.DataFrame({"ID": [], "cell_line": [], "batch": []})
    for column in ("cell_line", "batch"):
        image_table[column] = image_table["ID"].map(dict(zip(metadata["ID"], metadata[column]))).fillna("default")
    mask_dirs = {split: read_mask_dir(args.crop_dir, split) for split in ("train", "test")}
    cell_truth = truth_cell_labels(index, mask_dirs, args.data_dir / "truth")
    results = {}
    for item in args.model:
        name, spec = item.split("=", 1)
        embeddings = embeddings_of(name, spec, args.crop_dir, index, args.out_dir, args.batch_size)
        results[name] = score(embeddings, index, cell_truth, image_table, args)
        if args.picture is not None and name == (args.picture_model or args.model[0].split("=", 1)[0]):
            plot_embeddings(embeddings, index, cell_truth, image_table, args.picture, title=name)
    write_text_atomic(args.out_dir / "profiles.json", json.dumps(results, indent=1) + "\n")
    columns = COLUMNS + tuple(f"probe_drop_{column}" for column in args.shift_column)
    print("| model | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns))
    for name, row in results.items():
        print(f"| {name} | " + " | ".join(f"{round(row[c], 3) or 0.0:.3f}" for c in columns) + " |")


if __name__ == "__main__":
    sys.exit(main(parse_args()))
