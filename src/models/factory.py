"""One factory for every network and loss a run trains: the image classifier, the stage-2 U-Net, the cell
classifier or the self-supervised cell encoder.

``is_segmentation_run(hparams)`` is the one answer to "is this a stage-2 run?"; ``build_network`` and
``build_criterion`` read a run's hyperparameters (``run_classification.py``'s arguments or a checkpoint's hparams).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from src.data.classes import NUM_CLASSES
from src.models.backbone import parse_timm_kwargs
from src.models.cell_classifier import CellLoss, create_cell_classifier
from src.models.classifier import create_classifier
from src.models.contrastive import PROJECTION_DIM, TEMPERATURE, ContrastiveLoss, create_contrastive_network
from src.models.losses import ClassificationLoss, SegmentationLoss
from src.models.unet import DECODER_CHANNELS, create_segmentation_network, parse_decoder_channels


def is_segmentation_run(hparams: Mapping[str, Any]) -> bool:
    """Whether a run's hyperparameters describe a stage-2 segmentation model (it has ``segm_label_dir``)."""
    return bool(hparams.get("segm_label_dir"))


def is_cell_run(hparams: Mapping[str, Any]) -> bool:
    """Whether a run's hyperparameters describe a cell classifier trained on crops (it has ``cell_crop_dir``)."""
    return bool(hparams.get("cell_crop_dir"))


def is_contrastive_run(hparams: Mapping[str, Any]) -> bool:
    """Whether a run's hyperparameters describe self-supervised pre-training on crops (``pretrain_cells.py``)."""
    return bool(hparams.get("contrastive"))


def num_sub_classes(hparams: Mapping[str, Any]) -> int:
    """SC-CAM sub-category head size: 19 * k_cluster from round 1 on, else 0."""
    if int(hparams.get("round_nb", 0)) <= 0:
        return 0
    return int(hparams.get("num_classes", NUM_CLASSES)) * int(hparams["k_cluster"])


def build_network(hparams: Mapping[str, Any], backbone_ckpt: str | os.PathLike | None = None) -> nn.Module:
    """The network a run's hyperparameters describe (what ``run_classification.py`` trains).

    Reads ``timm_model_name``, ``timm_kwargs``, ``num_inchannels``, ``num_classes``, ``round_nb``, ``k_cluster``
    and, for stage 2, ``decoder_channels``. ``backbone_ckpt`` (a local timm/torchvision state dict) initialises the
    backbone or U-Net encoder; it is never read from ``hparams``, since a checkpoint's own weights replace it.
    A segmentation run (:func:`is_segmentation_run`) gets the U-Net of
    :func:`src.models.unet.create_segmentation_network`.
    """
    timm_kwargs = parse_timm_kwargs(hparams.get("timm_kwargs"))
    in_chans = int(hparams.get("num_inchannels", 4))
    if is_contrastive_run(hparams):
        return create_contrastive_network(
            hparams["timm_model_name"],
            in_chans,
            int(hparams.get("projection_dim", PROJECTION_DIM)),
            backbone_ckpt=backbone_ckpt,
            timm_kwargs=timm_kwargs,
        )
    if is_cell_run(hparams):
        return create_cell_classifier(
            hparams["timm_model_name"],
            in_chans,
            int(hparams.get("num_classes", NUM_CLASSES)),
            backbone_ckpt=backbone_ckpt,
            timm_kwargs=timm_kwargs,
            mil_pool=hparams.get("mil_pool", "none"),
        )
    if is_segmentation_run(hparams):
        return create_segmentation_network(
            hparams["timm_model_name"],
            in_chans,
            backbone_ckpt=backbone_ckpt,
            timm_kwargs=timm_kwargs,
            decoder_channels=parse_decoder_channels(hparams.get("decoder_channels", DECODER_CHANNELS)),
        )
    return create_classifier(
        hparams["timm_model_name"],
        in_chans,
        int(hparams.get("num_classes", NUM_CLASSES)),
        num_sub_classes=num_sub_classes(hparams),
        backbone_ckpt=backbone_ckpt,
        timm_kwargs=timm_kwargs,
    )


def build_criterion(hparams: Mapping[str, Any]) -> nn.Module:
    """The loss a run's hyperparameters describe (``loss``, ``soft_f1_weight``, ``subcls_loss_weight``).

    A segmentation run gets the per-pixel :class:`src.models.losses.SegmentationLoss`.
    """
    if is_contrastive_run(hparams):
        return ContrastiveLoss(float(hparams.get("temperature", TEMPERATURE)))
    if is_cell_run(hparams):
        return CellLoss(
            hparams.get("loss", "focal"), hparams.get("mil_pool", "none"), float(hparams.get("mil_weight", 0.5))
        )
    if is_segmentation_run(hparams):
        return SegmentationLoss(loss_name=hparams.get("loss", "focal"))
    return ClassificationLoss(
        loss_name=hparams.get("loss", "focal"),
        soft_f1_weight=float(hparams.get("soft_f1_weight", 0.0)),
        sub_loss_weight=float(hparams.get("subcls_loss_weight", 5.0)),
    )
