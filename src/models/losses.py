"""Multi-label losses: sigmoid focal (gamma 2), BCE, soft F1, the SC-CAM sub-category term, Puzzle-CAM, and the
per-pixel loss of the stage-2 U-Net."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LOSS_NAMES = ("focal", "bce")


def sigmoid_focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Mean over all elements of -(1 - p_t)^gamma * log(p_t), p_t the probability of the true value.

    Args:
        logits: (N, C) or (N, C, H, W) raw scores.
        targets: same shape, values in [0, 1].
    """
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)  # exact for 0/1 targets
    return ((1.0 - p_t) ** gamma * bce).mean()


def soft_f1_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """1 - macro soft F1 over the batch: probabilities stand in for hard predictions.

    Args:
        logits: (N, C) raw scores.
        targets: (N, C) values in [0, 1].
    """
    probs = torch.sigmoid(logits)
    true_pos = (probs * targets).sum(dim=0)
    soft_f1 = 2 * true_pos / (probs.sum(dim=0) + targets.sum(dim=0) + eps)
    return 1.0 - soft_f1.mean()


class ClassificationLoss(nn.Module):
    """Image-level loss: base loss on the 19 logits (+ soft F1) + ``sub_loss_weight`` x base loss on sub-categories.

    ``forward(outputs, batch)`` takes the network's output dict (``logits`` (N, 19), maybe ``sub_logits``
    (N, 19k)) and the batch dict (``target`` (N, 19), maybe ``sub_target`` (N, 19k)); it returns the
    terms, with their weighted sum under ``loss``.
    """

    def __init__(
        self, loss_name: str = "focal", soft_f1_weight: float = 0.0, sub_loss_weight: float = 5.0, gamma: float = 2.0
    ):
        super().__init__()
        if loss_name not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {LOSS_NAMES}, got {loss_name!r}")
        self.loss_name = loss_name
        self.soft_f1_weight = soft_f1_weight
        self.sub_loss_weight = sub_loss_weight
        self.gamma = gamma

    def base_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.loss_name == "focal":
            return sigmoid_focal_loss(logits, targets, self.gamma)
        return F.binary_cross_entropy_with_logits(logits, targets)

    def forward(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        terms = {"cls_loss": self.base_loss(outputs["logits"], batch["target"])}
        loss = terms["cls_loss"]
        if self.soft_f1_weight > 0:
            terms["f1_loss"] = soft_f1_loss(outputs["logits"].float(), batch["target"])
            loss = loss + self.soft_f1_weight * terms["f1_loss"]
        if "sub_logits" in outputs:
            if "sub_target" not in batch:
                raise KeyError("the network has a sub-category head but the batch has no 'sub_target'")
            terms["sub_loss"] = self.base_loss(outputs["sub_logits"], batch["sub_target"])
            loss = loss + self.sub_loss_weight * terms["sub_loss"]
        if "puzzle_logits" in outputs:
            terms["puzzle_cls_loss"] = self.base_loss(outputs["puzzle_logits"], batch["target"])
            loss = loss + terms["puzzle_cls_loss"] + outputs["puzzle_weight"] * outputs["puzzle_re_loss"]
            terms["puzzle_re_loss"] = outputs["puzzle_re_loss"]
        terms["loss"] = loss
        return terms


def tile_images(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (4N, C, H/2, W/2): top-left, top-right, bottom-left, bottom-right tiles, tile-major."""
    height, width = images.shape[2] // 2, images.shape[3] // 2
    tiles = [
        images[:, :, :height, :width],
        images[:, :, :height, width:],
        images[:, :, height:, :width],
        images[:, :, height:, width:],
    ]
    return torch.cat(tiles, dim=0)


def merge_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`tile_images` on feature maps: (4N, C, h, w) -> (N, C, 2h, 2w)."""
    top_left, top_right, bottom_left, bottom_right = tiles.chunk(4, dim=0)
    return torch.cat([torch.cat([top_left, top_right], dim=3), torch.cat([bottom_left, bottom_right], dim=3)], dim=2)


def add_puzzle_cam_outputs(
    network: nn.Module, images: torch.Tensor, outputs: dict[str, torch.Tensor], weight: float
) -> None:
    """Puzzle-CAM: features of the 4 tiles, merged, must give the full image's CAMs (L1) and its labels.

    Adds ``puzzle_logits`` (N, 19), ``puzzle_re_loss`` (scalar) and ``puzzle_weight`` to ``outputs``.

    Args:
        network: has ``forward_features``, ``head`` and ``cam`` (:class:`~src.models.factory.HPAClassifier`).
        images: (N, C, H, W) normalised batch, H and W even.
        outputs: the network's outputs on ``images`` (with ``features``).
    """
    merged = merge_tiles(network.forward_features(tile_images(images)))
    full_features = outputs["features"]
    if merged.shape[2:] != full_features.shape[2:]:
        merged = F.interpolate(merged, size=full_features.shape[2:], mode="bilinear", align_corners=False)
    outputs["puzzle_logits"] = network.head(merged)["logits"]
    outputs["puzzle_re_loss"] = F.l1_loss(network.cam(merged).float(), network.cam(full_features).float())
    outputs["puzzle_weight"] = torch.tensor(weight)


class SegmentationLoss(nn.Module):
    """Per-pixel loss over the 20 channels: sigmoid focal (gamma 2) or BCE.

    ``forward(outputs, batch)`` takes ``outputs['logits']`` (N, 20, H, W) and ``batch['target']``
    (N, 20, H, W) in {0, 1}; it returns ``{'loss'}``.
    """

    def __init__(self, loss_name: str = "focal", gamma: float = 2.0):
        super().__init__()
        if loss_name not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {LOSS_NAMES}, got {loss_name!r}")
        self.loss_name = loss_name
        self.gamma = gamma

    def forward(self, outputs: Mapping[str, torch.Tensor], batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        logits, target = outputs["logits"].float(), batch["target"].float()
        if logits.shape != target.shape:
            raise ValueError(f"segmentation logits {tuple(logits.shape)} and target {tuple(target.shape)} differ")
        if self.loss_name == "focal":
            loss = sigmoid_focal_loss(logits, target, self.gamma)
        else:
            loss = nn.functional.binary_cross_entropy_with_logits(logits, target)
        return {"loss": loss}
