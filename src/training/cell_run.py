"""Training the cell classifier on the crop store with the LitModel of every other stage.

``run_classification.py --cell_crop_dir DIR`` lands here: the network is a
:class:`src.models.cell_classifier.CellClassifier` from the common factory, the loss its :class:`CellLoss`, the
data a :class:`src.training.cell_datamodule.CellCropDataModule` (folds by image), and the validation adds
:class:`src.training.cell_validation.CellValidation`. Logs, checkpoints and hparams.yaml are those of the other
stages; the store's manifest is saved as ``crop_spec`` so inference cuts the same crops.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from src.crops.store import read_mask_dir
from src.crops.targets import CELL_TARGETS
from src.data.classes import NUM_CLASSES
from src.models.cell_classifier import MIL_POOLS
from src.models.factory import build_criterion, build_network
from src.training.cell_datamodule import CellCropDataModule
from src.training.cell_validation import CellValidation
from src.training.checkpoints import read_checkpoint_hparams
from src.training.lit_model import LitModel
from src.training.trainer import TrainingRun, build_trainer, check_shared_args


def add_cell_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``cell stage`` argument group of ``run_classification.py``."""
    cell = parser.add_argument_group("cell stage")
    cell.add_argument(
        "--cell_crop_dir", default=None, help="crop store of extract_cell_crops.py: train a classifier on its cells"
    )
    cell.add_argument("--cell_targets", choices=CELL_TARGETS, default="image", help="per-cell targets")
    cell.add_argument("--pseudo_csv", default=None, help="gen_pseudo CSV of run_cam_infer.py (pseudo, mixed)")
    cell.add_argument("--pseudo_weight", type=float, default=0.5, help="share of the pseudo labels in 'mixed'")
    cell.add_argument("--mil_pool", choices=MIL_POOLS, default="none", help="multiple-instance bag pooling")
    cell.add_argument("--mil_weight", type=float, default=0.5, help="share of the bag loss with --mil_pool")
    cell.add_argument("--bag_images", type=int, default=8, help="images per batch with --mil_pool")
    cell.add_argument(
        "--label_fraction", type=float, default=1.0, help="train on the cells of this share of the training images"
    )
    cell.add_argument(
        "--exclude_cell_lines",
        default="",
        metavar="LINE[,LINE]",
        help="neither train nor validate on the images of these cell lines (names in the data's metadata.csv)",
    )
    cell.add_argument(
        "--exclude_batches",
        default="",
        metavar="BATCH[,BATCH]",
        help="neither train nor validate on the images of these acquisition batches (names in metadata.csv)",
    )


def build_cell_run(args: argparse.Namespace, callbacks: Sequence[Callback] = ()) -> TrainingRun:
    """Check the arguments and build the cell classifier's data, network and trainer (with the per-cell validation
    and any further ``callbacks``); ``args`` are run_classification.py's resolved arguments.

    Raises:
        ValueError: options of the image stages (round >= 1, Puzzle-CAM, --segm_label_dir), a resumed checkpoint
            of another kind or crop format.
    """
    if args.round_nb > 0 or args.puzzle_cam or args.segm_label_dir:
        raise ValueError(
            "--cell_crop_dir trains the cell classifier: drop --round_nb, --puzzle_cam and --segm_label_dir"
        )
    check_shared_args(args)
    datamodule = CellCropDataModule(
        args.cell_crop_dir,
        args.data_dir,
        val_fold=args.val_fold,
        n_splits=args.n_splits,
        targets=args.cell_targets,
        pseudo_csv=args.pseudo_csv,
        pseudo_weight=args.pseudo_weight,
        batch_size=args.batch_size,
        bag_images=args.bag_images if args.mil_pool != "none" else 0,
        num_workers=args.num_workers,
        seed=args.seed,
        label_fraction=args.label_fraction,
        exclude_cell_lines=[name for name in args.exclude_cell_lines.split(",") if name],
        exclude_batches=[name for name in args.exclude_batches.split(",") if name],
    )
    args.num_classes = NUM_CLASSES
    datamodule.record_crop_format(args)
    args.round_nb, args.k_cluster = 0, None
    resume_path = None
    if args.ckpt_path is not None:
        saved = read_checkpoint_hparams(args.ckpt_path)
        if saved.get("crop_spec") != args.crop_spec:
            raise ValueError(
                f"--ckpt_path {args.ckpt_path} was trained on crops {saved.get('crop_spec')}, "
                f"the store {args.cell_crop_dir} holds {args.crop_spec}"
            )
        resume_path = args.ckpt_path
    pl.seed_everything(args.seed, workers=True, verbose=False)
    model = LitModel(build_network(vars(args), args.backbone_ckpt), build_criterion(vars(args)), **vars(args))
    val_rows = datamodule.val_rows
    val_index = datamodule.index[val_rows]
    image_ids = list(dict.fromkeys(val_index["ID"]))
    first = [int(np.flatnonzero((val_index["ID"] == i).to_numpy())[0]) for i in image_ids]
    validation = CellValidation(
        val_index,
        image_ids,
        datamodule.image_targets[val_rows][first],
        read_mask_dir(args.cell_crop_dir, "train"),
        args.segm_truth_dir,
    )
    trainer, checkpoint, logger = build_trainer(args, [validation, *callbacks])
    return TrainingRun(args, datamodule, model, trainer, checkpoint, logger, resume_path)
