"""SC-CAM step 1: global-average-pooled backbone features of every training image from a trained checkpoint.

python extract_feature.py --weights lightning_logs/version_0/checkpoints/last.ckpt --save_folder save_uni

Writes {save_folder}/feature/R{round}_feature.npy (N, C), R{round}_ids.csv (ID, Label) and R{round}_feature.yaml.
Data settings default to those the checkpoint was trained with.
"""

from __future__ import annotations

import argparse

import torch

from src.sccam.feature_files import save_features
from src.sccam.features import extract_features
from src.training.checkpoints import load_trained_pl_model
from src.training.datamodule import EXT_DATA_MODES, HPADataModule, default_loader_workers
from src.training.lit_model import LitModel


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", required=True, help="checkpoint of run_classification.py")
    parser.add_argument("--save_folder", required=True)
    data = parser.add_argument_group("data (default: the checkpoint's)")
    data.add_argument("--data_dir", default=None)
    data.add_argument("--input_size", type=int, default=None)
    data.add_argument("--cache_size", type=int, default=None)
    data.add_argument("--cache_dir", default=None)
    data.add_argument("--use_ext_data", action="store_true", default=None)
    data.add_argument("--ext_data_csv", default=None)
    data.add_argument("--ext_data_dir", default=None)
    data.add_argument("--ext_data_mode", type=int, default=None, choices=sorted(EXT_DATA_MODES))
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", type=int, default=default_loader_workers())
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    model, hparams = load_trained_pl_model(LitModel, args.weights)
    for key in (
        "data_dir",
        "input_size",
        "cache_size",
        "cache_dir",
        "use_ext_data",
        "ext_data_csv",
        "ext_data_dir",
        "ext_data_mode",
    ):
        if getattr(args, key) is None:
            setattr(args, key, hparams.get(key))
    datamodule = HPADataModule(
        args.data_dir,
        val_fold=0,
        n_splits=int(hparams.get("n_splits", 5)),
        input_size=args.input_size,
        cache_size=args.cache_size,
        cache_dir=args.cache_dir,
        cache_format=hparams.get("cache_format", "png"),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        aug_mode=0,
        in_chans=int(hparams["num_inchannels"]),
        use_ext_data=bool(args.use_ext_data),
        ext_data_csv=args.ext_data_csv,
        ext_data_dir=args.ext_data_dir,
        ext_data_mode=int(args.ext_data_mode or 0),
    )
    datamodule.prepare_data()
    ids, features = extract_features(model.network, datamodule.all_images_dataloader(), args.device)
    labels = datamodule.frame.set_index("ID").loc[ids, "labels"]
    round_nb = int(hparams.get("round_nb", 0))
    path = save_features(
        args.save_folder,
        round_nb,
        ids,
        ["|".join(map(str, v)) for v in labels],
        features,
        checkpoint=str(args.weights),
        data_dir=str(args.data_dir),
        use_ext_data=bool(args.use_ext_data),
        ext_data_mode=int(args.ext_data_mode or 0),
        input_size=int(args.input_size),
    )
    print(f"{len(ids)} images, {features.shape[1]}-d features of a round-{round_nb} model -> {path}")


if __name__ == "__main__":
    main(parse_args())
