"""The cell classifier: a timm backbone on single-cell crops, 19 logits per cell, and its loss.

The network is :class:`src.models.classifier.HPAClassifier` over crops of 4 (RGBY) or 5 (RGBY + cell mask)
channels; with attention pooling it also scores each cell's weight in its image's bag. The loss supervises every
cell with its target and, with multiple-instance learning, each image's pooled bag logit with the image label.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import src.models.cell_cnn  # noqa: F401  (registers the timm model ``cell_cnn``)
from src.data.classes import NUM_CLASSES
from src.models.backbone import create_backbone, load_backbone_weights
from src.models.classifier import HPAClassifier
from src.models.losses import ClassificationLoss

MIL_POOLS = ("none", "lse", "max", "attention")
LSE_SHARPNESS = 4.0  # r of log-sum-exp pooling: (1/r) log mean exp(r z)


class CellClassifier(HPAClassifier):
    """:class:`HPAClassifier` on crops; with ``attention`` also a per-cell attention score (N,) for bag pooling."""

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int = NUM_CLASSES, attention: bool = False):
        super().__init__(backbone, num_features, num_classes)
        self.attention = nn.Linear(num_features, 1) if attention else None

    def head(self, features: torch.Tensor) -> dict[str, torch.Tensor]:
        outputs = super().head(features)
        if self.attention is not None:
            outputs["attention"] = self.attention(features.mean(dim=(2, 3))).squeeze(1)
        return outputs


def create_cell_classifier(
    name: str,
    in_chans: int = 4,
    num_classes: int = NUM_CLASSES,
    backbone_ckpt: str | os.PathLike | None = None,
    timm_kwargs: Mapping[str, Any] | None = None,
    mil_pool: str = "none",
) -> CellClassifier:
    """A :class:`CellClassifier` over ``timm.create_model(name, pretrained=False, in_chans=in_chans, ...)``."""
    if in_chans not in (3, 4, 5):
        raise ValueError(f"crops have 3, 4 or 5 channels, got {in_chans}")
    if mil_pool not in MIL_POOLS:
        raise ValueError(f"--mil_pool must be one of {MIL_POOLS}, got {mil_pool!r}")
    backbone = create_backbone(name, in_chans, timm_kwargs)
    if backbone_ckpt is not None:
        load_backbone_weights(backbone, backbone_ckpt, name)
    return CellClassifier(backbone, backbone.num_features, num_classes, attention=mil_pool == "attention")


def pool_bags(
    logits: torch.Tensor, bags: torch.Tensor, pool: str, attention: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One logit vector per bag.

    Args:
        logits: (N, C) cell logits.
        bags: (N,) bag number of each cell.
        pool: 'lse', 'max' or 'attention'.
        attention: (N,) attention scores (pool 'attention').

    Returns:
        (B, C) bag logits and the (B,) bag numbers, ascending.
    """
    names, inverse = torch.unique(bags, return_inverse=True)
    pooled = []
    for b in range(len(names)):
        z = logits[inverse == b]
        if pool == "max":
            pooled.append(z.amax(dim=0))
        elif pool == "lse":
            r = LSE_SHARPNESS
            pooled.append((torch.logsumexp(r * z, dim=0) - torch.log(torch.tensor(float(len(z))))) / r)
        elif pool == "attention":
            if attention is None:
                raise ValueError("attention pooling needs the network's 'attention' output")
            weights = torch.softmax(attention[inverse == b], dim=0)
            pooled.append((weights[:, None] * z).sum(dim=0))
        else:
            raise ValueError(f"pool must be one of {MIL_POOLS[1:]}, got {pool!r}")
    return torch.stack(pooled), names


class CellLoss(ClassificationLoss):
    """``(1 - mil_weight) x`` the cell loss on ``target`` ``+ mil_weight x`` the loss of each image's pooled bag logit
    on its label (``image_target``); ``mil_pool='none'`` is the cell loss alone."""

    def __init__(self, loss_name: str = "focal", mil_pool: str = "none", mil_weight: float = 0.5):
        super().__init__(loss_name=loss_name)
        if mil_pool not in MIL_POOLS:
            raise ValueError(f"--mil_pool must be one of {MIL_POOLS}, got {mil_pool!r}")
        if not 0.0 <= mil_weight <= 1.0:
            raise ValueError(f"--mil_weight must lie in [0, 1], got {mil_weight}")
        self.mil_pool, self.mil_weight = mil_pool, mil_weight

    def forward(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        terms = {"cell_loss": self.base_loss(outputs["logits"], batch["target"])}
        if self.mil_pool == "none":
            terms["loss"] = terms["cell_loss"]
            return terms
        bag_logits, names = pool_bags(outputs["logits"].float(), batch["bag"], self.mil_pool, outputs.get("attention"))
        first = torch.stack([torch.nonzero(batch["bag"] == n)[0, 0] for n in names])
        terms["mil_loss"] = F.binary_cross_entropy_with_logits(bag_logits, batch["image_target"][first])
        terms["loss"] = (1.0 - self.mil_weight) * terms["cell_loss"] + self.mil_weight * terms["mil_loss"]
        return terms
