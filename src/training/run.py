"""One training run of ``run_classification.py``: checks, data, network, trainer and fit.

The script parses arguments; :func:`build_run` checks them (before any heavy work), builds the data module, the
network through :func:`src.models.factory.build_network` and the Lightning trainer; :func:`train` fits and reports.
An image classifier (SC-CAM round 0 or >= 1) and the stage-2 U-Net (``--segm_label_dir``) are the same run with
another network and target.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from src.data.classes import NUM_CLASSES
from src.metrics import load_truth
from src.models.factory import build_criterion, build_network, is_segmentation_run, num_sub_classes
from src.models.unet import check_input_size, parse_decoder_channels
from src.sccam.sub_labels import read_sub_label_table
from src.segm_labels.targets import SegmTargetReader
from src.training.cell_run import build_cell_run
from src.training.checkpoints import load_checkpoint_file, read_checkpoint_hparams
from src.training.datamodule import HPADataModule
from src.training.lit_model import LitModel
from src.training.lr_find import find_lr
from src.training.trainer import TrainingRun, build_trainer, check_shared_args, report_fit, say


def check_start_checkpoint(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(checkpoint to resume, checkpoint to initialise from) for --ckpt_path, after checking it fits the request.

    Raises:
        ValueError: other class count, input channels or backbone; a later round than the one requested.
    """
    if args.ckpt_path is None:
        return None, None
    saved = read_checkpoint_hparams(args.ckpt_path)
    if is_segmentation_run(saved) != is_segmentation_run(vars(args)):
        kinds = {True: "segmentation", False: "classification"}
        raise ValueError(
            f"--ckpt_path {args.ckpt_path} is a {kinds[is_segmentation_run(saved)]} run; "
            f"this is a {kinds[is_segmentation_run(vars(args))]} run"
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
    state = load_checkpoint_file(checkpoint_path)["state_dict"]
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
    if not is_segmentation_run(vars(args)):
        if args.segm_truth_dir is not None:
            raise ValueError("--segm_truth_dir scores segmentation runs only: add --segm_label_dir")
        return None
    if args.round_nb > 0 or args.puzzle_cam:
        raise ValueError("--segm_label_dir trains a U-Net: it cannot be combined with --round_nb >= 1 or --puzzle_cam")
    args.decoder_channels = ",".join(map(str, parse_decoder_channels(args.decoder_channels)))
    check_input_size(args.input_size)
    if args.crop_size:
        check_input_size(args.crop_size, "--crop_size")
    return SegmTargetReader(args.segm_label_dir, args.segm_thresh)


def check_run_args(args: argparse.Namespace) -> tuple[SegmTargetReader | None, dict | None]:
    """Check and resolve the arguments in place, before any heavy work.

    Returns:
        (stage-2 target reader or None, SC-CAM sub-labels or None); sets ``args.num_classes``, ``args.k_cluster``
        and the canonical ``args.timm_kwargs``.
    """
    check_shared_args(args)
    segm_reader = check_segmentation_args(args)
    args.num_classes = NUM_CLASSES
    sub_labels, args.k_cluster = None, None
    if args.round_nb > 0:
        if args.sub_label_dir is None:
            raise ValueError(
                f"--round_nb {args.round_nb} needs --sub_label_dir (the save_folder of create_pseudo_label.py)"
            )
        sub_labels, args.k_cluster = read_sub_label_table(args.sub_label_dir, args.round_nb)
    return segm_reader, sub_labels


def build_datamodule(
    args: argparse.Namespace, segm_reader: SegmTargetReader | None, sub_labels: dict | None
) -> HPADataModule:
    """The data module of a run; a stage-2 run's targets and truth are checked against its images."""
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
        num_sub_classes=num_sub_classes(vars(args)),
        mask_reader=segm_reader,
    )
    if segm_reader is not None:
        segm_reader.check_ids(datamodule.frame["ID"])
        if args.segm_truth_dir is not None:
            load_truth(args.segm_truth_dir, datamodule.frame.loc[datamodule.frame["fold"] == args.val_fold, "ID"])
    return datamodule


def build_run(args: argparse.Namespace, callbacks: Sequence[Callback] = ()) -> TrainingRun:
    """Check the arguments, then build data, network (one factory for classifier and U-Net) and trainer (with any
    further ``callbacks``). A ``--cell_crop_dir`` run is the cell classifier of :func:`src.training.cell_run.build_cell_run`.

    Raises:
        ValueError, FileNotFoundError: bad arguments or inputs, naming the flag or file, before any training.
    """
    if getattr(args, "cell_crop_dir", None):  # cell stage: a classifier on single-cell crops
        return build_cell_run(args, callbacks)
    segm_reader, sub_labels = check_run_args(args)
    resume_path, init_path = check_start_checkpoint(args)
    datamodule = build_datamodule(args, segm_reader, sub_labels)
    pl.seed_everything(args.seed, workers=True, verbose=False)
    network = build_network(vars(args), backbone_ckpt=args.backbone_ckpt)
    if init_path is not None:
        load_parent_weights(network, init_path)
        say(f"round {args.round_nb}: backbone and class head from {init_path}, new sub-category head")
    elif args.backbone_ckpt is None and resume_path is None:
        say(f"no --backbone_ckpt: {args.timm_model_name} starts from random weights")
    model = LitModel(network, build_criterion(vars(args)), **vars(args))
    trainer, checkpoint, logger = build_trainer(args, callbacks)
    return TrainingRun(args, datamodule, model, trainer, checkpoint, logger, resume_path)


def train(args: argparse.Namespace) -> TrainingRun:
    """Build the run, fit it (resuming ``--ckpt_path`` of the same round) and print where everything went;
    with ``--lr_find`` only run the learning-rate range test and print its suggestion."""
    run = build_run(args)
    if args.lr_find:
        suggestion = find_lr(run, args.default_root_dir, args.lr_find_steps)
        say(f"lr_find: suggested --lr {suggestion:.3g} (curve: {Path(args.default_root_dir) / 'lr_find.png'})")
        return run
    run.trainer.fit(run.model, datamodule=run.datamodule, ckpt_path=run.resume_path)
    report_fit(run.trainer, run.checkpoint, run.logger)
    return run
