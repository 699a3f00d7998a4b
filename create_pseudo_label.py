"""SC-CAM step 2: per-class k-means sub-category labels from the features of extract_feature.py.

python create_pseudo_label.py --save_folder save_uni --for_round_nb 1 --k_cluster 10 --is_scale_feature

Reads {save_folder}/feature/R{for_round_nb - 1}_feature.npy and writes
{save_folder}/label/R{for_round_nb}_sub_label.csv (ID, sub_labels) and R{for_round_nb}_sub_label.yaml.
"""

from __future__ import annotations

import argparse

import numpy as np

from src.data.classes import NUM_CLASSES
from src.data.io import parse_label
from src.sccam.feature_files import load_features
from src.sccam.sub_labels import cluster_sub_labels, write_sub_label_table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--save_folder", required=True, help="the --save_folder of extract_feature.py")
    parser.add_argument("--for_round_nb", type=int, default=1, help="the round these sub-labels train (>= 1)")
    parser.add_argument("--k_cluster", type=int, default=10, help="sub-categories per class")
    parser.add_argument("--is_scale_feature", action="store_true", help="standardise features per class before k-means")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--use_ext_data", action="store_true", help="check that the features include the extra data")
    parser.add_argument("--ext_data_mode", type=int, default=None, help="check the features' extra data mode")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    if args.for_round_nb < 1:
        raise ValueError(f"--for_round_nb must be >= 1, got {args.for_round_nb}")
    table, features, meta = load_features(args.save_folder, args.for_round_nb - 1)
    if args.use_ext_data and not meta.get("use_ext_data"):
        raise ValueError(
            f"--use_ext_data given but the features in {args.save_folder}/feature were extracted without extra data"
        )
    if args.ext_data_mode is not None and meta.get("use_ext_data") and meta.get("ext_data_mode") != args.ext_data_mode:
        raise ValueError(f"--ext_data_mode {args.ext_data_mode} but the features used mode {meta.get('ext_data_mode')}")
    labels = [
        parse_label(v, f"feature table row {i + 2} (ID {image_id})")
        for i, (image_id, v) in enumerate(zip(table["ID"], table["Label"], strict=True))
    ]
    sub_labels = cluster_sub_labels(features, labels, args.k_cluster, args.is_scale_feature, args.seed)
    path = write_sub_label_table(
        args.save_folder,
        args.for_round_nb,
        table["ID"].tolist(),
        sub_labels,
        args.k_cluster,
        is_scale_feature=bool(args.is_scale_feature),
        seed=args.seed,
        features_from=meta.get("checkpoint"),
    )
    used = np.unique(np.concatenate([np.asarray(s) for s in sub_labels]))
    print(f"{len(table)} images, {len(used)} of {NUM_CLASSES * args.k_cluster} sub-categories used -> {path}")


if __name__ == "__main__":
    main(parse_args())
