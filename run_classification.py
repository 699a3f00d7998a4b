"""Train the image-level classifier (SC-CAM round 0 or >= 1) with PyTorch Lightning and timm.

Round 0:  python run_classification.py --data_dir data/synthetic --timm_model_name resnet18 --input_size 256
Round 1:  python run_classification.py ... --round_nb 1 --sub_label_dir save_uni [--ckpt_path ROUND0.ckpt]
Stage 2:  python run_classification.py ... --segm_label_dir segm_labels --segm_thresh 0.225 [--segm_truth_dir DATA/truth]
          (a U-Net over the timm encoder --timm_model_name, trained on create_segm_labels.py's pseudo labels)
Cells:    python run_classification.py ... --cell_crop_dir CROPS --cell_targets image [--segm_truth_dir DATA/truth]
          (a classifier on extract_cell_crops.py's single-cell crops; --cell_targets pseudo --pseudo_csv, --mil_pool)

Logs, checkpoints (best val loss and last) and hparams.yaml land in
``{default_root_dir}/lightning_logs/version_N/``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from src.data.classes import NUM_CLASSES
from src.metrics import load_truth
from src.models.backbone import check_model_name, parse_timm_kwargs
from src.models.classifier import create_classifier
from src.models.factory import build_criterion
from src.models.losses import LOSS_NAMES
from src.models.unet import (
    DECODER_CHANNELS,
    check_input_size,
    create_segmentation_network,
    parse_decoder_channels,
)
from src.sccam.sub_labels import read_sub_label_table
from src.segm_labels.targets import SegmTargetReader
from src.training.augment import AUG_MODES
from src.training.cell_run import add_cell_arguments, run_cell_classification
from src.training.checkpoints import read_checkpoint_hparams
from src.training.datamodule import CACHE_FORMATS, EXT_DATA_MODES, HPADataModule
from src.training.lit_model import OPTIM_NAMES, LitModel

PRECISIONS = {
    "16": "16-mixed",
    "16-mixed": "16-mixed",
    "bf16": "bf16-mixed",
    "bf16-mixed": "bf16-mixed",
    "32": "32-true",
    "32-true": "32-true",
}
say = rank_zero_only(print)
# LitModel normalises uint8 batches on the device in on_after_batch_transfer, on purpose.
warnings.filterwarnings("ignore", message=".*overridden `on_after_batch_transfer`.*")
warnings.filterwarnings("ignore", message=".*all_gather is deprecated.*")


def _batches(text: str) -> int | float:
    """Lightning's limit semantics: '5' is 5 batches, '0.25' a quarter of them."""
    return float(text) if "." in text else int(text)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data")
    data.add_argument(
        "--data_dir", required=True, help="Kaggle layout: train.csv and train/{ID}_{red,green,blue,yellow}.png"
    )
    data.add_argument("--val_fold", type=int, default=0)
    data.add_argument("--n_splits", type=int, default=5, help="multilabel stratified folds")
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
    data.add_argument("--cache_format", choices=CACHE_FORMATS, default="png")
    data.add_argument("--aug_mode", type=int, default=1, choices=sorted(AUG_MODES), help=str(AUG_MODES))
    data.add_argument("--use_ext_data", action="store_true", help="add the public HPA extra images to training")
    data.add_argument(
        "--ext_data_csv", default=None, help="extra data csv (ID, Label_idx, dir, file_ext, isin_dataset...)"
    )
    data.add_argument("--ext_data_dir", default=None, help="folder of the extra images (default: the csv's folder)")
    data.add_argument("--ext_data_mode", type=int, default=0, choices=sorted(EXT_DATA_MODES), help=str(EXT_DATA_MODES))
    data.add_argument("--batch_size", type=int, default=16)
    data.add_argument("--num_workers", type=int, default=4)

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
        "--warmup_ratio", type=float, default=0.1, help="linear warm-up share of all steps, then cosine to 0"
    )
    optim.add_argument("--max_epochs", type=int, default=10)
    optim.add_argument("--seed", type=int, default=0)

    trainer = parser.add_argument_group("trainer")
    trainer.add_argument("--accelerator", default="auto", help="auto, cpu, gpu...")
    trainer.add_argument("--devices", default="auto", help="number of devices or 'auto'")
    trainer.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn...")
    trainer.add_argument("--num_nodes", type=int, default=1)
    trainer.add_argument("--gpu", type=int, default=None, help="old flag: same as --accelerator gpu --devices N")
    trainer.add_argument("--precision", default="32", choices=sorted(PRECISIONS), help="16 means 16-mixed")
    trainer.add_argument("--benchmark", action="store_true", help="cudnn.benchmark")
    trainer.add_argument("--default_root_dir", default=".")
    trainer.add_argument(
        "--ckpt_path", default=None, help="resume this run, or start round >= 1 from an earlier round's checkpoint"
    )
    trainer.add_argument("--limit_train_batches", type=_batches, default=1.0)
    trainer.add_argument("--limit_val_batches", type=_batches, default=1.0)
    trainer.add_argument("--log_every_n_steps", type=int, default=10)
    return parser.parse_args(argv)


def resolve_trainer_args(args: argparse.Namespace) -> None:
    """Map the old --gpu flag and --precision 16; fall back to 32-bit on CPU (16-bit autocast is a GPU feature)."""
    if args.gpu is not None:
        say(f"--gpu {args.gpu} is the old flag: using --accelerator gpu --devices {args.gpu}")
        args.accelerator, args.devices = "gpu", args.gpu
    if isinstance(args.devices, str) and args.devices.isdigit():
        args.devices = int(args.devices)
    args.precision = PRECISIONS[str(args.precision)]
    on_cpu = args.accelerator == "cpu" or (args.accelerator == "auto" and not torch.cuda.is_available())
    if on_cpu and args.precision == "16-mixed":
        warnings.warn("--precision 16-mixed needs a GPU; training in 32-bit on CPU", stacklevel=2)
        args.precision = "32-true"


def check_start_checkpoint(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(checkpoint to resume, checkpoint to initialise from) for --ckpt_path, after checking it fits the request.

    Raises:
        ValueError: other class count, input channels or backbone; a later round than the one requested.
    """
    if args.ckpt_path is None:
        return None, None
    saved = read_checkpoint_hparams(args.ckpt_path)
    if bool(saved.get("segm_label_dir")) != bool(args.segm_label_dir):
        kinds = {True: "segmentation", False: "classification"}
        raise ValueError(
            f"--ckpt_path {args.ckpt_path} is a {kinds[bool(saved.get('segm_label_dir'))]} run; "
            f"this is a {kinds[bool(args.segm_label_dir)]} run"
        )
    for key, want in (
        ("num_classes", NUM_CLASSES),
        ("num_inchannels", args.num_inchannels),
        ("timm_model_name", args.timm_model_name),
        ("timm_kwargs", args.timm_kwargs),
    ):
        have = saved.get(key, {"num_classes": NUM_CLASSES, "timm_kwargs": "{}"}.get(key))
        if have != want:
            raise ValueError(f"--ckpt_path {args.ckpt_path} has {key}={have!r} but this run asks for {want!r}")
    saved_round = int(saved.get("round_nb", 0))
    if saved_round == args.round_nb:
        if args.round_nb > 0 and saved.get("k_cluster") != args.k_cluster:
            raise ValueError(
                f"--ckpt_path {args.ckpt_path} has k_cluster={saved.get('k_cluster')} but the sub-labels have {args.k_cluster}"
            )
        return args.ckpt_path, None
    if saved_round < args.round_nb:
        return None, args.ckpt_path
    raise ValueError(
        f"--ckpt_path {args.ckpt_path} is a round-{saved_round} model; it cannot start round {args.round_nb}"
    )


def load_parent_weights(network: torch.nn.Module, checkpoint_path: str) -> None:
    """Backbone and 19-class head from an earlier round's checkpoint; the sub-category head stays new."""
    state = torch.load(checkpoint_path, map_location="cpu", weights_only=False)["state_dict"]
    state = {
        k[len("network.") :]: v
        for k, v in state.items()
        if k.startswith("network.") and not k.startswith("network.sub_classifier.")
    }
    missing, unexpected = network.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("sub_classifier.")]
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint_path} does not fit the network: missing {missing[:4]}, unexpected {unexpected[:4]}"
        )


def check_segmentation_args(args: argparse.Namespace) -> SegmTargetReader | None:
    """The target reader of a stage-2 run (None for a classifier), after checking the stage-2 arguments.

    Raises:
        ValueError: --segm_thresh outside (0, 1), an input size the U-Net cannot take, options of the
            classifier stages (round >= 1, Puzzle-CAM) or --segm_truth_dir without --segm_label_dir.
        FileNotFoundError: a missing --segm_label_dir or --segm_truth_dir.
    """
    if args.segm_label_dir is None:
        if args.segm_truth_dir is not None:
            raise ValueError("--segm_truth_dir scores segmentation runs only: add --segm_label_dir")
        return None
    if args.round_nb > 0 or args.puzzle_cam:
        raise ValueError("--segm_label_dir trains a U-Net: it cannot be combined with --round_nb >= 1 or --puzzle_cam")
    args.decoder_channels = ",".join(map(str, parse_decoder_channels(args.decoder_channels)))
    check_input_size(args.input_size)
    if args.crop_size:
        check_input_size(args.crop_size, "--crop_size")
    if args.segm_truth_dir is not None and not (Path(args.segm_truth_dir) / "cell_labels.csv").is_file():
        raise FileNotFoundError(f"--segm_truth_dir {args.segm_truth_dir} has no cell_labels.csv (a benchmark truth/)")
    return SegmTargetReader(args.segm_label_dir, args.segm_thresh)


def main(args: argparse.Namespace) -> None:
    resolve_trainer_args(args)
    if args.cell_crop_dir:  # cell stage: a classifier on single-cell crops (src/training/cell_run.py)
        run_cell_classification(args)
        return
    check_model_name(args.timm_model_name)
    timm_kwargs = parse_timm_kwargs(args.timm_kwargs)
    args.timm_kwargs = json.dumps(timm_kwargs, sort_keys=True)
    segm_reader = check_segmentation_args(args)
    args.num_classes = NUM_CLASSES
    sub_labels, args.k_cluster = None, None
    if args.round_nb > 0:
        if args.sub_label_dir is None:
            raise ValueError(
                f"--round_nb {args.round_nb} needs --sub_label_dir (the save_folder of create_pseudo_label.py)"
            )
        sub_labels, args.k_cluster = read_sub_label_table(args.sub_label_dir, args.round_nb)
    resume_path, init_path = check_start_checkpoint(args)
    datamodule = HPADataModule(
        args.data_dir,
        val_fold=args.val_fold,
        n_splits=args.n_splits,
        input_size=args.input_size,
        crop_size=args.crop_size,
        cache_size=args.cache_size,
        cache_dir=args.cache_dir,
        cache_format=args.cache_format,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        aug_mode=args.aug_mode,
        in_chans=args.num_inchannels,
        use_ext_data=args.use_ext_data,
        ext_data_csv=args.ext_data_csv,
        ext_data_dir=args.ext_data_dir,
        ext_data_mode=args.ext_data_mode,
        sub_labels=sub_labels,
        num_sub_classes=NUM_CLASSES * (args.k_cluster or 0),
        mask_reader=segm_reader,
        seed=args.seed,
    )
    if segm_reader is not None:
        segm_reader.check_ids(datamodule.frame["ID"])
        if args.segm_truth_dir is not None:
            load_truth(args.segm_truth_dir, datamodule.frame.loc[datamodule.frame["fold"] == args.val_fold, "ID"])
    pl.seed_everything(args.seed, workers=True, verbose=False)
    if segm_reader is not None:
        network = create_segmentation_network(
            args.timm_model_name,
            args.num_inchannels,
            args.backbone_ckpt,
            timm_kwargs,
            parse_decoder_channels(args.decoder_channels),
        )
    else:
        network = create_classifier(
            args.timm_model_name,
            args.num_inchannels,
            NUM_CLASSES,
            NUM_CLASSES * (args.k_cluster or 0),
            args.backbone_ckpt,
            timm_kwargs,
        )
    if init_path is not None:
        load_parent_weights(network, init_path)
        say(f"round {args.round_nb}: backbone and class head from {init_path}, new sub-category head")
    elif args.backbone_ckpt is None and resume_path is None:
        say(f"no --backbone_ckpt: {args.timm_model_name} starts from random weights")
    model = LitModel(network, build_criterion(vars(args)), **vars(args))
    logger = TensorBoardLogger(save_dir=args.default_root_dir, name="lightning_logs", default_hp_metric=False)
    checkpoint = ModelCheckpoint(
        monitor="val/loss",
        mode="min",
        save_last=True,
        filename="epoch-{epoch}-step-{step}",
        auto_insert_metric_name=False,
    )
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        strategy=args.strategy,
        num_nodes=args.num_nodes,
        precision=args.precision,
        benchmark=args.benchmark,
        max_epochs=args.max_epochs,
        default_root_dir=args.default_root_dir,
        logger=logger,
        callbacks=[checkpoint],
        limit_train_batches=args.limit_train_batches,
        limit_val_batches=args.limit_val_batches,
        log_every_n_steps=args.log_every_n_steps,
    )
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_path)
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    say(f"log dir: {logger.log_dir}")
    say(f"best checkpoint (val/loss): {checkpoint.best_model_path}")
    say(f"last checkpoint: {checkpoint.last_model_path}")
    say(f"final validation: {metrics}")


if __name__ == "__main__":
    main(parse_args())
