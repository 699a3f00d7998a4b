"""Train the image-level classifier (SC-CAM round 0 or >= 1) with PyTorch Lightning and timm.

Round 0:  python run_classification.py --data_dir data/synthetic --timm_model_name resnet18 --input_size 256
Round 1:  python run_classification.py ... --round_nb 1 --sub_label_dir save_uni [--ckpt_path ROUND0.ckpt]
Stage 2:  python run_classification.py ... --segm_label_dir segm_labels --segm_thresh 0.225 [--segm_truth_dir DATA/truth]
          (a U-Net over the timm encoder --timm_model_name, trained on create_segm_labels.py's pseudo labels)

Logs, checkpoints (best val loss and last) and hparams.yaml land in
``{default_root_dir}/lightning_logs/version_N/``.
"""

from __future__ import annotations

import argparse

from src.data.folds import N_FOLDS
from src.models.losses import LOSS_NAMES
from src.models.unet import DECODER_CHANNELS
from src.training.augment import AUG_MODES
from src.training.cell_run import add_cell_arguments
from src.training.datamodule import CACHE_FORMATS, DEFAULT_CACHE_FORMAT, EXT_DATA_MODES, default_loader_workers
from src.training.lit_model import OPTIM_NAMES, SCHEDULERS
from src.training.run import train
from src.training.trainer import add_trainer_arguments


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data_dir", required=True, help="Kaggle layout: train.csv and train/{ID}_{red,green,blue,yellow}.png"
    )
    data.add_argument("--val_fold", type=int, default=0)
    data.add_argument("--n_splits", type=int, default=N_FOLDS, help="multilabel stratified folds (seed 0)")
    data.add_argument("--input_size", type=int, default=512, help="image side at validation and inference")
    data.add_argument(
        "--crop_size",
        type=int,
        default=0,
        help="train on random crops of this side from the input_size image (0: whole image)",
    )
    data.add_argument(
        "--cache_size",
        type=int,
        default=None,
        help="side of the resized image cache (default: input_size; 0: no cache)",
    )
    data.add_argument("--cache_dir", default=None, help="default {data_dir}/cache_{cache_size}")
    data.add_argument(
        "--cache_format",
        choices=CACHE_FORMATS,
        default=DEFAULT_CACHE_FORMAT,
        help="npy: no decoding; png: half the disk",
    )
    data.add_argument("--aug_mode", type=int, default=1, choices=sorted(AUG_MODES), help=str(AUG_MODES))
    data.add_argument("--use_ext_data", action="store_true", help="add the public HPA extra images to training")
    data.add_argument(
        "--ext_data_csv", default=None, help="extra data csv (ID, Label_idx, dir, file_ext, isin_dataset...)"
    )
    data.add_argument("--ext_data_dir", default=None, help="folder of the extra images (default: the csv's folder)")
    data.add_argument("--ext_data_mode", type=int, default=0, choices=sorted(EXT_DATA_MODES), help=str(EXT_DATA_MODES))
    data.add_argument("--batch_size", type=int, default=16)
    data.add_argument(
        "--num_workers",
        type=int,
        default=default_loader_workers(),
        help="loader processes (default: usable cores, <= 8)",
    )

    model = parser.add_argument_group("model")
    model.add_argument("--timm_model_name", default="resnet50")
    model.add_argument(
        "--timm_kwargs",
        default="{}",
        help="extra timm.create_model arguments as JSON, e.g. '{\"output_stride\": 16}' for finer CAMs",
    )
    model.add_argument("--num_inchannels", type=int, default=4, choices=(3, 4), help="3: RGB, 4: RGBY")
    model.add_argument("--backbone_ckpt", default=None, help="local timm/torchvision state dict (no download ever)")
    model.add_argument("--loss", choices=LOSS_NAMES, default="focal")
    model.add_argument("--soft_f1_weight", type=float, default=0.0, help="weight of an added soft-F1 term (0: off)")
    model.add_argument("--puzzle_cam", action="store_true", help="Puzzle-CAM tile-merge consistency loss")
    model.add_argument("--puzzle_loss_weight", type=float, default=1.0)

    sccam = parser.add_argument_group("SC-CAM")
    sccam.add_argument("--round_nb", type=int, default=0, help="0: plain classifier; >= 1: add the sub-category head")
    sccam.add_argument("--sub_label_dir", default=None, help="save_folder of create_pseudo_label.py (round >= 1)")
    sccam.add_argument("--subcls_loss_weight", type=float, default=5.0)

    segm = parser.add_argument_group("stage 2 segmentation")
    segm.add_argument(
        "--segm_label_dir", default=None, help="save_folder of create_segm_labels.py: train a U-Net on these targets"
    )
    segm.add_argument(
        "--segm_thresh", type=float, default=0.15, help="pseudo-label confidence a cell needs to join a class, (0, 1)"
    )
    segm.add_argument(
        "--decoder_channels",
        default=",".join(map(str, DECODER_CHANNELS)),
        help="U-Net decoder widths, deepest first (64,32,16,16,16 trains about 3x faster on a CPU)",
    )
    segm.add_argument(
        "--segm_truth_dir", default=None, help="per-cell truth (e.g. DATA/truth): also report val/cell_mAP"
    )

    add_cell_arguments(parser)  # cell stage: --cell_crop_dir, --cell_targets, --mil_pool ...

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--optim_name", choices=OPTIM_NAMES, default="sgd")
    optim.add_argument("--lr", type=float, default=0.1)
    optim.add_argument("--weight_decay", type=float, default=4e-5)
    optim.add_argument(
        "--backbone_lr_scale", type=float, default=1.0,
        help="the backbone learns at --lr times this (heads at --lr): below 1 to fine-tune a --backbone_ckpt gently "
        "on few labels, 0 to keep its weights (a linear probe)",
    )  # fmt: skip
    optim.add_argument(
        "--warmup_ratio", type=float, default=0.1, help="share of all steps rising to --lr (warm-up / one-cycle rise)"
    )
    optim.add_argument(
        "--scheduler", choices=SCHEDULERS, default="cosine",
        help="cosine: linear warm-up then cosine to 0; onecycle: the one-cycle policy (OneCycleLR, peak --lr)",
    )  # fmt: skip
    optim.add_argument(
        "--lr_find", action="store_true",
        help="only run the learning-rate range test: {default_root_dir}/lr_find.png and .json, suggestion printed",
    )  # fmt: skip
    optim.add_argument("--lr_find_steps", type=int, default=100, help="steps of the range test")
    optim.add_argument("--max_epochs", type=int, default=10)
    optim.add_argument("--seed", type=int, default=0)

    add_trainer_arguments(parser, ckpt_help="resume this run, or start round >= 1 from an earlier round's checkpoint")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> None:
    train(args)


if __name__ == "__main__":
    main(parse_args())
