"""The LightningModule of every training stage: it receives a network and a loss and holds the steps,
validation metrics, optimiser and schedule.

The network maps normalised (N, C, H, W) images to a dict with ``logits``; the loss maps
(outputs, batch) to a dict of terms with ``loss``. Classification validation reports macro
mAP and macro F1 over the image labels; segmentation targets (N, 20, H, W) report the loss and,
when ``segm_truth_dir`` names per-cell truth, the single-cell mAP of the validation images.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.metrics import average_precision_score, f1_score
from torch import nn

from src.models.factory import build_criterion, build_network
from src.models.losses import add_puzzle_cam_outputs
from src.models.preprocess import normalize_images
from src.models.unet import segmentation_maps
from src.segm_labels.validation import truth_cell_map

logger = logging.getLogger(__name__)

OPTIM_NAMES = ("sgd", "adam")
HP_METRICS = {"val/mAP": 0.0, "val/F1": 0.0, "val/loss": 0.0}


def macro_average_precision(probs: np.ndarray, targets: np.ndarray) -> float:
    """Mean over classes with at least one positive of sklearn's average precision; (N, C) inputs. Soft targets
    (the cell classifier's pseudo labels) count as positive above 0.5, as in :func:`macro_f1`."""
    positives = targets > 0.5
    present = positives.any(axis=0)
    if not present.any():
        return float("nan")
    return float(np.mean([average_precision_score(positives[:, c], probs[:, c]) for c in np.flatnonzero(present)]))


def macro_f1(probs: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> float:
    """Macro F1 at ``threshold`` over classes that occur in the targets or the predictions; (N, C) inputs."""
    predicted = probs >= threshold
    used = (targets.sum(axis=0) > 0) | predicted.any(axis=0)
    if not used.any():
        return float("nan")
    return float(f1_score(targets[:, used] > 0.5, predicted[:, used], average="macro", zero_division=0))


def warmup_cosine(step: int, total_steps: int, warmup_ratio: float = 0.1) -> float:
    """Learning-rate factor: linear from ~0 to 1 over the first ``warmup_ratio`` of steps, then cosine to 0."""
    warmup = max(1, int(total_steps * warmup_ratio))
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


SCHEDULERS = ("cosine", "onecycle")  # --scheduler: warm-up + cosine, or the one-cycle policy (Atlas 2018)


def check_backbone_lr_scale(backbone_lr_scale: float) -> None:
    """ValueError, naming the flag, for a negative ``--backbone_lr_scale``."""
    if backbone_lr_scale < 0:
        raise ValueError(f"--backbone_lr_scale must be >= 0 (0 keeps the backbone's weights), got {backbone_lr_scale}")


def parameter_groups(module: nn.Module, lr: float, backbone_lr_scale: float = 1.0) -> list[dict[str, Any]]:
    """The optimiser's parameter groups: ``module.network.backbone`` at ``lr * backbone_lr_scale``, the rest
    (heads, decoders, a trainable loss) at ``lr``.

    A scale below 1 keeps a pre-trained backbone close to its weights while a new head learns (the usual
    fine-tuning of a self-supervised backbone on few labels); 0 fixes the backbone's weights (a linear probe,
    though its batch-norm statistics still follow the data). One group when the scale is 1 or there is no backbone.
    """
    check_backbone_lr_scale(backbone_lr_scale)
    params = [p for p in module.parameters() if p.requires_grad]
    backbone = getattr(getattr(module, "network", None), "backbone", None)
    if backbone is None or backbone_lr_scale == 1.0:
        return [{"params": params, "lr": lr}]
    in_backbone = {id(p) for p in backbone.parameters()}
    groups = [
        {"params": [p for p in params if id(p) in in_backbone], "lr": lr * backbone_lr_scale},
        {"params": [p for p in params if id(p) not in in_backbone], "lr": lr},
    ]
    return [group for group in groups if group["params"]]


def build_scheduler(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LRScheduler:
    """A per-step learning-rate schedule around the optimiser's ``lr``.

    Args:
        name: 'cosine' (linear warm-up over ``warmup_ratio`` of the steps, then cosine to 0) or 'onecycle'
            (``OneCycleLR``: up to ``lr`` over ``warmup_ratio`` of the steps, then annealed far below it, with
            momentum cycled the other way).
        optimizer: its ``lr`` is the peak.
        total_steps: optimiser steps of the whole run.
        warmup_ratio: share of the steps rising to the peak.
    """
    if name == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: warmup_cosine(step, total_steps, warmup_ratio))
    if name == "onecycle":
        peak = [group["lr"] for group in optimizer.param_groups]
        pct_start = min(max(warmup_ratio, 1e-3), 0.99)
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peak, total_steps=total_steps, pct_start=pct_start)
    raise ValueError(f"--scheduler must be one of {SCHEDULERS}, got {name!r}")


def validation_maps(logits: torch.Tensor, size: int = 64) -> torch.Tensor:
    """(N, 20, H, W) segmentation logits -> (N, 19, size, size) float16 maps, each class divided by its maximum."""
    maps = torch.nn.functional.interpolate(segmentation_maps(logits), size=(size, size), mode="bilinear")
    return (maps / (maps.amax(dim=(2, 3), keepdim=True) + 1e-5)).half()


class LitModel(pl.LightningModule):
    """Training wrapper around a network and a loss.

    Args:
        network: the nn.Module to train; None builds it from the hyperparameters
            (:func:`src.models.factory.build_network`), as checkpoint loading does.
        criterion: the loss module; None builds it from the hyperparameters.
        **hparams: the run's resolved arguments (``lr``, ``optim_name``, ``weight_decay``,
            ``warmup_ratio``, ``puzzle_cam``...); saved to the checkpoint and hparams.yaml.
    """

    # Network and batches are channels_last on CUDA; a subclass sets this to use it on the CPU as well.
    CHANNELS_LAST_ON_CPU = False

    def __init__(self, network: nn.Module | None = None, criterion: nn.Module | None = None, **hparams: Any):
        super().__init__()
        self.save_hyperparameters(hparams)
        self.network = network if network is not None else build_network(self.hparams)
        self.criterion = criterion if criterion is not None else build_criterion(self.hparams)
        self._val_probs: list[torch.Tensor] = []
        self._val_targets: list[torch.Tensor] = []
        self._val_ids: list[str] = []
        self._val_maps: list[torch.Tensor] = []

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Normalised (N, C, H, W) float images -> network outputs."""
        return self.network(images)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        images = batch["image"]
        if images.dtype == torch.uint8:
            images = normalize_images(images)
        batch["image"] = self._to_memory_format(images)
        return batch

    def _to_memory_format(self, images: torch.Tensor) -> torch.Tensor:
        if images.is_cuda or self.CHANNELS_LAST_ON_CPU:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def setup(self, stage: str) -> None:
        # channels_last before the strategy moves and wraps the network (DDP buckets keep this layout)
        if self.trainer.strategy.root_device.type == "cuda" or self.CHANNELS_LAST_ON_CPU:
            self.network.to(memory_format=torch.channels_last)
        if self.hparams.get("compile", False):
            self.network.compile()  # in place: the state dict keeps its keys, checkpoints load without it

    def on_fit_start(self) -> None:
        # Declares the metrics of TensorBoard's HPARAMS tab; later val/* values fill it in.
        if self.logger is not None:
            self.logger.log_hyperparams(self.hparams, HP_METRICS)

    def _step(self, batch: dict[str, Any], train: bool) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        outputs = self.network(batch["image"])
        if train and self.hparams.get("puzzle_cam", False):
            add_puzzle_cam_outputs(
                self.network, batch["image"], outputs, float(self.hparams.get("puzzle_loss_weight", 1.0))
            )
        return outputs, self.criterion(outputs, batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        _, terms = self._step(batch, train=True)
        size = batch["image"].shape[0]
        self.log("train/loss", terms["loss"], prog_bar=True, batch_size=size, sync_dist=False)
        for name, value in terms.items():
            if name != "loss":
                self.log(f"train/{name}", value, batch_size=size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=size)
        return terms["loss"]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        outputs, terms = self._step(batch, train=False)
        size = batch["image"].shape[0]
        for name, value in terms.items():
            self.log(f"val/{name}", value, prog_bar=name == "loss", batch_size=size, sync_dist=True)
        if outputs["logits"].ndim == 2:
            self._val_probs.append(torch.sigmoid(outputs["logits"].float()).detach())
            self._val_targets.append(batch["target"].detach())
        elif self.hparams.get("segm_truth_dir"):
            self._val_ids.extend(batch["id"])
            self._val_maps.append(validation_maps(outputs["logits"].detach()).cpu())

    def on_validation_epoch_end(self) -> None:
        if self._val_maps:
            maps, ids = torch.cat(self._val_maps).numpy(), list(self._val_ids)
            self._val_maps.clear()
            self._val_ids.clear()
            # each rank scores its own share of the images; the synced value is their mean
            self.log("val/cell_mAP", truth_cell_map(ids, maps, self.hparams["segm_truth_dir"]), sync_dist=True)
        if not self._val_probs:
            return
        probs, targets = torch.cat(self._val_probs), torch.cat(self._val_targets)
        self._val_probs.clear()
        self._val_targets.clear()
        if self.trainer.world_size > 1:
            probs = self.all_gather(probs).flatten(0, 1)
            targets = self.all_gather(targets).flatten(0, 1)
        probs_np, targets_np = probs.cpu().numpy(), targets.cpu().numpy()
        # every rank holds the gathered arrays: the synced mean is that same value
        self.log("val/mAP", macro_average_precision(probs_np, targets_np), prog_bar=True, sync_dist=True)
        self.log("val/F1", macro_f1(probs_np, targets_np), sync_dist=True)

    def configure_optimizers(self):
        name = self.hparams.get("optim_name", "sgd")
        lr = float(self.hparams.get("lr", 0.1))
        weight_decay = float(self.hparams.get("weight_decay", 4e-5))
        groups = parameter_groups(self, lr, float(self.hparams.get("backbone_lr_scale", 1.0)))
        if name == "sgd":
            optimizer = torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=weight_decay)
        elif name == "adam":
            optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)
        else:
            raise ValueError(f"--optim_name must be one of {OPTIM_NAMES}, got {name!r}")
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        warmup_ratio = float(self.hparams.get("warmup_ratio", 0.1))
        scheduler = build_scheduler(self.hparams.get("scheduler", "cosine"), optimizer, total_steps, warmup_ratio)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
