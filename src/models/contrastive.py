"""Contrastive self-supervised learning on cell crops (SimCLR, as SIFLoc and the SimCLR cell-profiling work use it).

The network is a timm backbone with global average pooling (the embedding) and lightly's two-layer
``SimCLRProjectionHead`` (the projection the loss sees); the loss is lightly's NT-Xent. Batches hold two views of
every sample stacked, ``(2N, C, S, S)``: rows ``i`` and ``N + i`` are a positive pair, every other row a negative.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

import src.models.cell_cnn  # noqa: F401  (registers the timm model ``cell_cnn``)
from src.models.backbone import create_backbone, load_backbone_weights

PROJECTION_DIM = 128  # SIFLoc's 128-d head
TEMPERATURE = 0.1  # SIFLoc's tau


class ContrastiveNetwork(nn.Module):
    """Backbone + pooled embedding + projection head.

    Args:
        backbone: timm backbone without pooling (``forward_features`` gives (N, F, h, w)).
        num_features: F.
        projection_dim: output size of the projection head.
    """

    def __init__(self, backbone: nn.Module, num_features: int, projection_dim: int = PROJECTION_DIM):
        super().__init__()
        self.backbone = backbone
        self.projection = SimCLRProjectionHead(num_features, num_features, projection_dim)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, S, S) normalised crops -> (N, F) embeddings (global average of the backbone's feature map)."""
        return self.backbone.forward_features(images).mean(dim=(2, 3))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.embed(images)
        return {"embedding": embedding, "projection": self.projection(embedding)}


def create_contrastive_network(
    name: str,
    in_chans: int = 4,
    projection_dim: int = PROJECTION_DIM,
    backbone_ckpt: str | os.PathLike | None = None,
    timm_kwargs: Mapping[str, Any] | None = None,
) -> ContrastiveNetwork:
    """A :class:`ContrastiveNetwork` over ``timm.create_model(name, pretrained=False, in_chans=in_chans, ...)``."""
    backbone = create_backbone(name, in_chans, timm_kwargs)
    if backbone_ckpt is not None:
        load_backbone_weights(backbone, backbone_ckpt, name)
    return ContrastiveNetwork(backbone, backbone.num_features, projection_dim)


class ContrastiveLoss(nn.Module):
    """NT-Xent over the two stacked halves of ``outputs['projection']``; returns ``{'loss'}``."""

    def __init__(self, temperature: float = TEMPERATURE):
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"--temperature must be > 0, got {temperature}")
        self.ntxent = NTXentLoss(temperature=temperature)

    def forward(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        projection = outputs["projection"].float()
        if projection.shape[0] % 2:
            raise ValueError(f"contrastive batches stack two views: got an odd {projection.shape[0]} rows")
        first, second = projection.chunk(2)
        return {"loss": self.ntxent(first, second)}
