"""The Lightning trainer every training run shares: precision flags, logging, checkpoints and the final report.

Used by the image classifier and stage-2 U-Net (:mod:`src.training.run`) and the cell classifier
(:mod:`src.training.cell_run`), so both write the same run folder: TensorBoard events, ``hparams.yaml``, the best
checkpoint by ``--monitor`` and ``last.ckpt``.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from src.models.backbone import check_model_name, parse_timm_kwargs
from src.training.lit_model import check_backbone_lr_scale

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


def check_shared_args(args: argparse.Namespace) -> None:
    """The checks every run shares, in place: trainer flags (:func:`resolve_trainer_args`), a known timm name, the
    canonical JSON of ``--timm_kwargs`` and a ``--segm_truth_dir`` holding ``cell_labels.csv``.

    Raises:
        ValueError: an unknown model name or bad --timm_kwargs. FileNotFoundError: a truth folder without its table.
    """
    resolve_trainer_args(args)
    check_model_name(args.timm_model_name)
    args.timm_kwargs = json.dumps(parse_timm_kwargs(args.timm_kwargs), sort_keys=True)
    check_backbone_lr_scale(getattr(args, "backbone_lr_scale", 1.0))  # pretrain_cells.py has no such flag
    if args.segm_truth_dir is not None and not (Path(args.segm_truth_dir) / "cell_labels.csv").is_file():
        raise FileNotFoundError(f"--segm_truth_dir {args.segm_truth_dir} has no cell_labels.csv (a benchmark truth/)")


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


@dataclass
class TrainingRun:
    """Everything a fit needs, built and checked by :func:`src.training.run.build_run` (or the cell stage's
    :func:`src.training.cell_run.build_cell_run`)."""

    args: argparse.Namespace
    datamodule: pl.LightningDataModule
    model: pl.LightningModule
    trainer: pl.Trainer
    checkpoint: ModelCheckpoint
    logger: TensorBoardLogger
    resume_path: str | None


MONITORS = {"val/loss": "min", "val/mAP": "max", "val/F1": "max"}  # --monitor: the kept checkpoint's metric


def _batches(text: str) -> int | float:
    """Lightning's limit semantics: '5' is 5 batches, '0.25' a quarter of them."""
    return float(text) if "." in text else int(text)


def add_trainer_arguments(parser: argparse.ArgumentParser, ckpt_help: str = "resume this run") -> None:
    """The ``trainer`` argument group every training script shares (devices, precision, logging, checkpoints)."""
    trainer = parser.add_argument_group("trainer")
    trainer.add_argument("--accelerator", default="auto", help="auto, cpu, gpu...")
    trainer.add_argument("--devices", default="auto", help="number of devices or 'auto'")
    trainer.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn...")
    trainer.add_argument("--num_nodes", type=int, default=1)
    trainer.add_argument("--gpu", type=int, default=None, help="old flag: same as --accelerator gpu --devices N")
    trainer.add_argument("--precision", default="32", choices=sorted(PRECISIONS), help="16 means 16-mixed")
    trainer.add_argument("--benchmark", action="store_true", help="cudnn.benchmark")
    trainer.add_argument(
        "--compile", action="store_true", help="torch.compile the network (first steps slower; weights unchanged)"
    )
    trainer.add_argument("--default_root_dir", default=".")
    trainer.add_argument("--ckpt_path", default=None, help=ckpt_help)
    trainer.add_argument("--limit_train_batches", type=_batches, default=1.0)
    trainer.add_argument("--limit_val_batches", type=_batches, default=1.0)
    trainer.add_argument("--log_every_n_steps", type=int, default=10)
    trainer.add_argument(
        "--monitor", default="val/loss", choices=sorted(MONITORS), help="metric of the kept best checkpoint"
    )


def build_trainer(
    args: argparse.Namespace, callbacks: Sequence[Callback] = ()
) -> tuple[pl.Trainer, ModelCheckpoint, TensorBoardLogger]:
    """Lightning trainer with TensorBoard logging, the best (by ``args.monitor``) and last checkpoints, and any
    further ``callbacks``."""
    if args.monitor not in MONITORS:
        raise ValueError(f"--monitor must be one of {sorted(MONITORS)}, got {args.monitor!r}")
    logger = TensorBoardLogger(save_dir=args.default_root_dir, name="lightning_logs", default_hp_metric=False)
    checkpoint = ModelCheckpoint(
        monitor=args.monitor,
        mode=MONITORS[args.monitor],
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
        callbacks=[checkpoint, *callbacks],
        limit_train_batches=args.limit_train_batches,
        limit_val_batches=args.limit_val_batches,
        log_every_n_steps=args.log_every_n_steps,
    )
    return trainer, checkpoint, logger


def report_fit(trainer: pl.Trainer, checkpoint: ModelCheckpoint, logger: TensorBoardLogger) -> None:
    """Print where a finished fit left its logs and checkpoints, and its final validation metrics."""
    metrics = {k: round(float(v), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    say(f"log dir: {logger.log_dir}")
    say(f"best checkpoint ({checkpoint.monitor}): {checkpoint.best_model_path}")
    say(f"last checkpoint: {checkpoint.last_model_path}")
    say(f"final validation: {metrics}")
